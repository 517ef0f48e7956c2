// Default fault policy over the shared page table; see policy.h. Mirrors lib/servicer/policy.ts.
#include "policy.h"

#include <time.h>

#include <algorithm>
#include <cerrno>

#include "device.h"
#include "trace.h"

namespace uffdhmm {

using namespace layout;

static const uint8_t* zeroPage() {
  alignas(4096) static const uint8_t zeros[65536] = {};
  return zeros;
}

static inline void bump(RegionState& r, int index) { __atomic_fetch_add(r.stat(index), 1, __ATOMIC_RELAXED); }

static inline bool lockPage(int32_t* st, int32_t seen) {
  return __atomic_compare_exchange_n(st, &seen, seen | kLocked, false, __ATOMIC_ACQUIRE, __ATOMIC_RELAXED);
}

static inline void unlockPage(RegionState& r, int32_t* st, int32_t value) {
  __atomic_store_n(st, value, __ATOMIC_RELEASE);
  noteUnlock(r);
}

void migrateSharers(RegionState& r, uint32_t page, int32_t slot, uint32_t pfn) {
  auto dev = devices().get(slot);
  if (!dev || pfn >= dev->capacity) return;
  if (__atomic_load_n(&dev->refcount()[pfn], __ATOMIC_ACQUIRE) <= 1) return;
  forEachSharer(r, [&](RegionState& m) {
    if (page >= m.pages || m.closed.load(std::memory_order_acquire)) return;
    int32_t* st = m.state(page);
    int32_t s = __atomic_load_n(st, __ATOMIC_ACQUIRE);
    // Locked: its own servicer is migrating it back right now (several processes faulting the same
    // page at once), or its owner is moving it. Never wait for that lock: this thread holds our
    // page's lock, and that holder may be waiting for it (each sharer's servicer migrating back for
    // the others), so waits would chain across every sharer, under the family lock besides. The
    // holder keeps the books: that mapping keeps its entry and its reference until it comes back
    // by its holder or on its own fault, from the same device page.
    if ((s & kLocked) || (s & kKindMask) != kKindDevice || ((s >> kDeviceShift) & kMaxDeviceSlot) != slot ||
        static_cast<uint32_t>(st[1]) != pfn)
      return;
    if (!lockPage(st, s)) return;
    const uint64_t addr = m.addr(page);
    int rc = copy(m.uffd.get(), addr, reinterpret_cast<uint64_t>(dev->page(pfn)), m.pageSize,
                  UFFDIO_COPY_MODE_DONTWAKE | UFFDIO_COPY_MODE_WP, nullptr);
    if (rc != 0 && rc != -EEXIST) {
      if (rc == -EAGAIN) bump(m, kStatFillRetries);
      unlockPage(m, st, s);
      return;
    }
    if (rc == -EEXIST) bump(m, kStatFillRaced);
    st[1] = 0;
    unlockPage(m, st, kKindPresent);
    dev->putPage(pfn);
    // That mapping's page came back; the device page migrated once (counted by the faulting side).
    bump(m, kStatMigratedBack);
    wake(m.uffd.get(), addr, m.pageSize);
  });
}

void zapRange(RegionState& r, uint64_t start, uint64_t end, bool unmapped) {
  const uint64_t base = reinterpret_cast<uint64_t>(r.base);
  const uint64_t lo = std::max(start, base), hi = std::min(end, base + r.length);
  for (uint64_t a = lo; a < hi; a += r.pageSize) {
    uint32_t page = static_cast<uint32_t>((a - base) / r.pageSize);
    int32_t* st = r.state(page);
    for (;;) {
      int32_t s = __atomic_load_n(st, __ATOMIC_ACQUIRE);
      if (s & kLocked) {
        // Our own zap (the lock holder flagged it) or a page mid-migration: its holder keeps the
        // books. A migration must learn of the zap, or it would publish what the zap dropped.
        if (s & kZapping) {
          __atomic_fetch_and(st, ~kZapping, __ATOMIC_RELEASE);
          noteUnlock(r);
        } else {
          __atomic_fetch_or(st, kZapPending | (unmapped ? kUnmapped : 0), __ATOMIC_RELEASE);
        }
        break;
      }
      if (!lockPage(st, s)) continue;
      if ((s & kKindMask) == kKindDevice) {
        auto dev = devices().get((s >> kDeviceShift) & kMaxDeviceSlot);
        uint32_t pfn = static_cast<uint32_t>(st[1]);
        st[1] = 0;
        if (dev) dev->putPage(pfn);
      }
      unlockPage(r, st, kKindNone | (unmapped || (s & kUnmapped) ? kUnmapped : 0));
      break;
    }
  }
}

uint32_t lockNeighbours(RegionState& r, uint32_t page, int32_t s, uint32_t pfn, const DeviceStore& dev) {
  uint32_t k = 1;
  const int32_t want = s & ~kLocked;  // same kind, write bit and device: only the pfn differs
  while (k < r.faultAround && page + k < r.pages && pfn + k < dev.capacity) {
    int32_t* st = r.state(page + k);
    int32_t sq = __atomic_load_n(st, __ATOMIC_ACQUIRE);
    if (sq != want || static_cast<uint32_t>(st[1]) != pfn + k) break;
    // A page other processes still map must come back for them too: leave it to its own fault.
    if (__atomic_load_n(&dev.refcount()[pfn + k], __ATOMIC_ACQUIRE) != 1) break;
    if (!lockPage(st, sq)) break;
    k++;
  }
  return k;
}

// A huge device entry comes back whole, as the kernel migrates the folio back (migrate_to_ram of a
// PMD device entry): locks the other entries of page's PMD-aligned block if they still make one
// huge entry with it (same state word, the matching pfns of one aligned huge device page, mapped
// once) and returns the block's first page with *count set to its size. Otherwise (the block was
// split: part of it discarded, protected or faulted back; or the CPU side's huge allocation is
// made to fail, HMM_DMIRROR_FLAG_FAIL_ALLOC) only `page` comes back: returns page, *count 1.
static uint32_t lockHugeBlock(RegionState& r, uint32_t page, int32_t s, uint32_t pfn, DeviceStore& dev, uint32_t* count) {
  *count = 1;
  const uint32_t n = static_cast<uint32_t>(kPmdSize / r.pageSize);
  const uint32_t off = static_cast<uint32_t>((r.addr(page) / r.pageSize) % n);
  if (off > page || page - off + n > r.pages || off > pfn || (pfn - off) % n != 0 || pfn - off + n > dev.capacity) return page;
  const uint32_t first = page - off;
  const uint32_t pfn0 = pfn - off;
  const int32_t want = s & ~kLocked;
  uint32_t i = 0;
  for (; i < n; i++) {
    if (i == off) continue;
    int32_t* st = r.state(first + i);
    if (__atomic_load_n(st, __ATOMIC_ACQUIRE) != want || static_cast<uint32_t>(st[1]) != pfn0 + i) break;
    if (__atomic_load_n(&dev.refcount()[pfn0 + i], __ATOMIC_ACQUIRE) != 1) break;
    if (!lockPage(st, want)) break;
  }
  const bool whole = i == n && __atomic_exchange_n(&dev.shared[kDevFailAlloc], 0, __ATOMIC_ACQ_REL) == 0;
  if (!whole) {
    for (uint32_t j = 0; j < i; j++)
      if (j != off) unlockPage(r, r.state(first + j), want);
    return page;
  }
  *count = n;
  return first;
}

int continueOrZero(RegionState& r, uint32_t page) {
  const int fd = r.uffd.get();
  int rc = continueRange(fd, r.addr(page), r.pageSize, UFFDIO_CONTINUE_MODE_DONTWAKE);
  if (rc == -EFAULT) rc = zeropage(fd, r.addr(page), r.pageSize, UFFDIO_ZEROPAGE_MODE_DONTWAKE, nullptr);
  return rc;
}

Served serveFaultDefault(RegionState& r, uint32_t page, uint32_t flags, uint32_t tid, uint64_t t0Ns) {
  if (page >= r.pages) return Served::Failed;
  int32_t* st = r.state(page);
  const int fd = r.uffd.get();
  const uint64_t addr = r.addr(page);
  const bool wpFault = flags & UFFD_PAGEFAULT_FLAG_WP;
  for (;;) {
    int32_t s = __atomic_load_n(st, __ATOMIC_ACQUIRE);
    if (s & kLocked) return Served::Deferred;
    if (!lockPage(st, s)) continue;
    int32_t kind = s & kKindMask;
    int rc = 0;
    int32_t next = s;
    std::shared_ptr<DeviceStore> dev;
    uint32_t pfn = 0;
    // Fill without waking, publish the new state, then wake, so the thread never runs on a page
    // whose word still says otherwise (docs/PROTOCOL.md, "Who sets what").
    if (kind == kKindDevice) {
      pfn = static_cast<uint32_t>(st[1]);
      dev = devices().get((s >> kDeviceShift) & kMaxDeviceSlot);
      if (!dev) {
        // The device vanished with an entry still naming it: refuse rather than invent data.
        unlockPage(r, st, s);
        return Served::Failed;
      }
      const bool write = s & kWrite;
      const uint64_t mode = UFFDIO_COPY_MODE_DONTWAKE | (write ? 0 : UFFDIO_COPY_MODE_WP);
      // The pages [first, first + k) come back in one COPY: a whole huge entry, or fault-around
      // (neighbours whose device pages follow this one).
      uint32_t first = page, k = 1;
      if (s & kHuge)
        first = lockHugeBlock(r, page, s, pfn, *dev, &k);
      else if (r.faultAround > 1 && dev->refcount()[pfn] == 1)
        k = lockNeighbours(r, page, s, pfn, *dev);
      const uint32_t pfn0 = pfn - (page - first);
      rc = copy(fd, r.addr(first), reinterpret_cast<uint64_t>(dev->page(pfn0)), uint64_t(k) * r.pageSize, mode, nullptr);
      if (rc != 0 && k > 1) {
        for (uint32_t i = 0; i < k; i++)
          if (first + i != page) unlockPage(r, r.state(first + i), s & ~kLocked);
        rc = copy(fd, addr, reinterpret_cast<uint64_t>(dev->page(pfn)), r.pageSize, mode, nullptr);
      } else if (rc == 0 && k > 1) {
        next = kKindPresent | (write ? kWrite : 0);
        for (uint32_t i = 0; i < k; i++) {
          if (first + i == page) continue;
          int32_t* sq = r.state(first + i);
          sq[1] = 0;
          unlockPage(r, sq, next);
          dev->putPage(pfn0 + i);
          bump(r, kStatMigratedBack);
          __atomic_fetch_add(&dev->shared[kDevMigratedToRam], 1, __ATOMIC_RELAXED);
        }
        // Everyone but the faulting thread: it is woken last, once its own page is published.
        if (!r.inlineMode && page > first) wake(fd, r.addr(first), uint64_t(page - first) * r.pageSize);
        if (!r.inlineMode && first + k > page + 1) wake(fd, addr + r.pageSize, uint64_t(first + k - page - 1) * r.pageSize);
      }
      if (rc == 0) next = kKindPresent | (write ? kWrite : 0);
    } else if (kind == kKindPresent && wpFault) {
      rc = writeProtect(fd, addr, r.pageSize, false, false);
      if (rc == 0) next = kKindPresent | kWrite;
    } else if (kind == kKindPoison) {
      rc = poison(fd, addr, r.pageSize, kPoisonModeDontwake, nullptr);
    } else if (flags & UFFD_PAGEFAULT_FLAG_MINOR) {
      rc = continueOrZero(r, page);
      if (rc == 0) next = kKindPresent;
    } else {
      // A hole (or a CPU page that was zapped behind our back): it reads as zeroes.
      if (flags & UFFD_PAGEFAULT_FLAG_WRITE)
        rc = copy(fd, addr, reinterpret_cast<uint64_t>(zeroPage()), r.pageSize, UFFDIO_COPY_MODE_DONTWAKE, nullptr);
      else
        rc = zeropage(fd, addr, r.pageSize, UFFDIO_ZEROPAGE_MODE_DONTWAKE, nullptr);
      if (rc == 0) next = kKindPresent | kWrite;
    }
    if (rc == -EEXIST) {
      rc = 0;  // another path filled it first: keep the state, just wake
      bump(r, kStatFillRaced);
    }
    if (rc == -EAGAIN) {
      // The mm is changing: an event (REMOVE, UNMAP, REMAP, FORK) waits to be read, and the kernel
      // refuses every fill until it is. The caller reads it, then serves this fault again.
      bump(r, kStatFillRetries);
      unlockPage(r, st, s);
      return Served::Deferred;
    }
    if (rc != 0) {
      unlockPage(r, st, s);
      return Served::Failed;
    }
    if (kind == kKindDevice && next != s) {
      migrateSharers(r, page, (s >> kDeviceShift) & kMaxDeviceSlot, pfn);
      st[1] = 0;
      unlockPage(r, st, next);
      dev->putPage(pfn);
      bump(r, kStatMigratedBack);
      __atomic_fetch_add(&dev->shared[kDevFaults], 1, __ATOMIC_RELAXED);
      __atomic_fetch_add(&dev->shared[kDevMigratedToRam], 1, __ATOMIC_RELAXED);
    } else {
      unlockPage(r, st, next);
      if (kind == kKindPresent && wpFault) bump(r, kStatWpFaults);
      else if (kind == kKindNone && next != s && !(flags & UFFD_PAGEFAULT_FLAG_MINOR)) bump(r, kStatZeroFills);
    }
    bump(r, kStatFaults);
    if (flags & kFaultKernel) bump(r, kStatKernelFaults);
    if (flags & UFFD_PAGEFAULT_FLAG_WRITE) bump(r, kStatWriteFaults);
    if (r.trace) {
      const int32_t outcome = next == s                                ? kOutcomeWoken
                              : kind == kKindDevice                    ? kOutcomeMigrated
                              : kind == kKindPresent && wpFault        ? kOutcomeUnprotected
                              : (flags & UFFD_PAGEFAULT_FLAG_MINOR)    ? kOutcomePageCache
                                                                       : kOutcomeZeroPage;
      traceRecord(r, page, flags, tid, kind == kKindDevice ? (s >> kDeviceShift) & kMaxDeviceSlot : 0, outcome,
                  t0Ns ? t0Ns : monoNs());
    }
    // Under UFFD_FEATURE_SIGBUS (inline) no thread ever sleeps on the userfaultfd: nothing to wake,
    // and a system call saved on every fault.
    if (!r.inlineMode) wake(fd, addr, r.pageSize);
    return Served::Done;
  }
}

}  // namespace uffdhmm
