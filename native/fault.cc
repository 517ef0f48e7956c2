// The fault engine; see fault.h. How a fault is served, in one place for every servicer.
#include "fault.h"

#include <time.h>

#include <algorithm>
#include <cerrno>

#include "device.h"
#include "proc.h"
#include "refusal.h"
#include "trace.h"

namespace uffdhmm {

using namespace layout;

static const uint8_t* zeroPage() {
  alignas(4096) static const uint8_t zeros[65536] = {};
  return zeros;
}

static inline void bump(RegionState& r, int index) { __atomic_fetch_add(r.stat(index), 1, __ATOMIC_RELAXED); }

// Waits (50 ms at most: the zapping thread is running its madvise) until the page's pte no longer
// holds a refusal's poison marker, which pagemap shows as a swap entry.
static void awaitMarkerGone(RegionState& r, uint32_t page) {
  for (int tries = 0; tries < 2500; tries++) {
    uint64_t pm = kPmSwap;
    if (readPagemap(r, page, 1, &pm) != 0 || !(pm & kPmSwap)) return;
    struct timespec ts = {0, 20 * 1000};
    ::nanosleep(&ts, nullptr);
  }
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
        if ((s & (kZapping | kRefusalPoison)) == (kZapping | kRefusalPoison) && heldBy(s, kHolderServicer)) {
          // A refusal's marker zapped by the faulting thread (refuse): the entry stays as it was,
          // unless someone else zapped the page meanwhile. Its madvise zaps only once this REMOVE
          // is read, so the page stays held until the marker is gone: filled before that (a
          // deferred fault on it), the zap would take the filled page too.
          awaitMarkerGone(r, page);
          const uint32_t pfn = static_cast<uint32_t>(st[1]);
          if (!publishUnlessZapped(r, st, s & ~(kZapping | kRefusalPoison | kZapPending)) && (s & kKindMask) == kKindDevice) {
            auto dev = devices().get((s >> kDeviceShift) & kMaxDeviceSlot);
            if (dev) dev->putPage(pfn);
          }
          // Threads asleep on the page whose faults nobody holds any more (their servicer was taken
          // over: the guard woke every page but this one) fault afresh now that the marker is gone.
          wake(r.uffd.get(), r.addr(page), r.pageSize);
        } else if (s & kZapping) {
          __atomic_fetch_and(st, ~kZapping, __ATOMIC_RELEASE);
          noteUnlock(r);
        } else {
          __atomic_fetch_or(st, kZapPending | (unmapped ? kUnmapped : 0), __ATOMIC_RELEASE);
        }
        break;
      }
      if (!lockPage(st, s, kHolderServicer)) continue;
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

// Fault-around: locks the pages after `page` (locked already, state s, device page pfn) whose
// entries name the following device pages with the same kind, up to r.faultAround in all, and
// returns how many pages from `page` on are locked. A page other processes still map must come back
// for them too: it is left to its own fault.
static uint32_t lockNeighbours(RegionState& r, uint32_t page, int32_t s, uint32_t pfn, const DeviceStore& dev) {
  uint32_t k = 1;
  while (k < r.faultAround && page + k < r.pages && pfn + k < dev.capacity) {
    int32_t* st = r.state(page + k);
    // Same kind, write bit and device (the whole state word): only the pfn differs. The pfn word is
    // the holder's to change, so it is read once the lock is ours: a neighbour migrated away and
    // back meanwhile has the same state word and another device page.
    if (__atomic_load_n(st, __ATOMIC_ACQUIRE) != s) break;
    testPause(r, kTestPointNeighbourLock);  // test only: a no-op unless a test armed it
    if (!lockPage(st, s, kHolderServicer)) break;
    if (static_cast<uint32_t>(st[1]) != pfn + k || __atomic_load_n(&dev.refcount()[pfn + k], __ATOMIC_ACQUIRE) != 1) {
      unlockPage(r, st, s);
      break;
    }
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
  uint32_t i = 0;
  for (; i < n; i++) {
    if (i == off) continue;
    int32_t* st = r.state(first + i);
    // The pfn word checked under the lock, as in lockNeighbours.
    if (__atomic_load_n(st, __ATOMIC_ACQUIRE) != s || !lockPage(st, s, kHolderServicer)) break;
    if (static_cast<uint32_t>(st[1]) != pfn0 + i || __atomic_load_n(&dev.refcount()[pfn0 + i], __ATOMIC_ACQUIRE) != 1) {
      unlockPage(r, st, s);
      break;
    }
  }
  const bool whole = i == n && __atomic_exchange_n(&dev.shared[kDevFailAlloc], 0, __ATOMIC_ACQ_REL) == 0;
  if (!whole) {
    for (uint32_t j = 0; j < i; j++)
      if (j != off) unlockPage(r, r.state(first + j), s);
    return page;
  }
  *count = n;
  return first;
}

int continueOrZero(RegionState& r, uint32_t page, bool dontwake) {
  const int fd = r.uffd.get();
  int rc = continueRange(fd, r.addr(page), r.pageSize, dontwake ? UFFDIO_CONTINUE_MODE_DONTWAKE : 0);
  if (rc == -EFAULT) rc = zeropage(fd, r.addr(page), r.pageSize, dontwake ? UFFDIO_ZEROPAGE_MODE_DONTWAKE : 0, nullptr);
  return rc;
}

// What a served fault did, for its trace record.
static int32_t outcomeOf(int32_t kind, int32_t s, int32_t next, uint32_t flags) {
  if (next == s) return kOutcomeWoken;
  if (next == kKindPoison) return kOutcomeSigbus;
  if (kind == kKindDevice) return kOutcomeMigrated;
  if (kind == kKindPresent && (flags & UFFD_PAGEFAULT_FLAG_WP)) return kOutcomeUnprotected;
  if (flags & UFFD_PAGEFAULT_FLAG_MINOR) return kOutcomePageCache;
  return kOutcomeZeroPage;
}

// Pages that came back from a device (a fault's run, or the part of it a partial copy filled).
static void countMigrated(RegionState& r, DeviceStore* dev, uint32_t n, int sign) {
  __atomic_fetch_add(r.stat(kStatMigratedBack), sign * static_cast<int32_t>(n), __ATOMIC_RELAXED);
  __atomic_fetch_add(&dev->shared[kDevMigratedToRam], sign * static_cast<int32_t>(n), __ATOMIC_RELAXED);
}

// The counters one served fault adds (sign +1) or, when a fill that was to wake fails, takes back.
static void countFault(RegionState& r, DeviceStore* dev, int32_t kind, int32_t s, int32_t next, uint32_t flags, uint32_t k,
                       int sign) {
  auto add = [sign](int32_t* word, uint32_t n) { __atomic_fetch_add(word, sign * static_cast<int32_t>(n), __ATOMIC_RELAXED); };
  add(r.stat(kStatFaults), 1);
  if (flags & kFaultKernel) add(r.stat(kStatKernelFaults), 1);
  if (flags & UFFD_PAGEFAULT_FLAG_WRITE) add(r.stat(kStatWriteFaults), 1);
  if (kind == kKindDevice && next != s) {
    add(&dev->shared[kDevFaults], 1);
    if (next == kKindPoison) add(r.stat(kStatRefused), 1);
    else countMigrated(r, dev, k, sign);
  } else if (kind == kKindPresent && (flags & UFFD_PAGEFAULT_FLAG_WP)) {
    add(r.stat(kStatWpFaults), 1);
  } else if (kind == kKindNone && next != s && !(flags & UFFD_PAGEFAULT_FLAG_MINOR)) {
    add(r.stat(kStatZeroFills), 1);
  }
}

namespace {

enum class Fill { FromDevice, Poison, Unprotect, PageCache, Zero };

}  // namespace

// The fill itself: UFFDIO_COPY from the device / ZEROPAGE / COPY of zeroes / WRITEPROTECT / CONTINUE
// / POISON over [first, first + k). 0 or -errno; *filled: the pages of it the kernel filled (only a
// multi-page copy can fill part of its pages and fail, see copyRun).
static int doFill(RegionState& r, Fill fill, uint32_t first, uint32_t k, const DeviceStore* dev, uint32_t pfn0, bool writable,
                  uint32_t flags, bool wake, uint32_t* filled) {
  const int fd = r.uffd.get();
  const uint64_t addr = r.addr(first);
  int rc = -EINVAL;
  switch (fill) {
    case Fill::FromDevice:
      return copyRun(r, first, dev->page(pfn0), k, (wake ? 0 : UFFDIO_COPY_MODE_DONTWAKE) | (writable ? 0 : UFFDIO_COPY_MODE_WP), filled);
    case Fill::Poison:
      rc = poison(fd, addr, r.pageSize, wake ? 0 : kPoisonModeDontwake, nullptr);
      break;
    case Fill::Unprotect:
      rc = writeProtect(fd, addr, r.pageSize, false, wake);
      break;
    case Fill::PageCache:
      rc = continueOrZero(r, first, !wake);
      break;
    case Fill::Zero:
      // A write fault gets a zeroed private page in one step; a read maps the shared zero page.
      if (flags & UFFD_PAGEFAULT_FLAG_WRITE)
        rc = copy(fd, addr, reinterpret_cast<uint64_t>(zeroPage()), r.pageSize, wake ? 0 : UFFDIO_COPY_MODE_DONTWAKE, nullptr);
      else
        rc = zeropage(fd, addr, r.pageSize, wake ? 0 : UFFDIO_ZEROPAGE_MODE_DONTWAKE, nullptr);
      break;
  }
  *filled = rc == 0 ? k : 0;
  return rc;
}

// The driver refused (VM_FAULT_SIGBUS): that access fails and nothing else changes. The page, held
// since the ask, keeps its entry, its device page and its references; no pageFree. From user mode
// the thread gets SIGBUS (BUS_ADRERR at the faulting address) and the pte stays a hole: if a handler
// returns, the access faults again and the driver is asked again. From inside a system call a
// poison marker fails its retry with EFAULT, and the thread zaps the marker on its way back (native/
// refusal.cc): the page stays locked, kZapping | kRefusalPoison, until this servicer reads that zap
// (zapRange), so nobody takes the page meanwhile. False, with the page still held and its word as it
// was, when the refusal could not reach a thread inside a system call (its signal could not be
// queued, or the thread is gone): the caller migrates the page back instead, and that copy replaces
// the marker (UFFDIO_COPY fills over pte markers), so no poison is ever left behind.
static bool refuse(RegionState& r, uint32_t page, int32_t s, uint32_t flags, uint32_t tid, uint64_t t0Ns, DeviceStore& dev,
                   uint32_t pfn, bool kernel, Carried* ask, Served* served) {
  const uint32_t offset = ask ? ask->offset : 0;
  int32_t* st = r.state(page);
  const uint64_t addr = r.addr(page);
  if (!kernel) {
    refuseUserAccess(tid, addr + offset);
    unlockPage(r, st, s);
    // The signal ends the thread's wait; woken besides, in case it blocks that signal too: it then
    // faults again, and the driver is asked again.
    wake(r.uffd.get(), addr, r.pageSize);
  } else {
    // The marker before the signal: a thread woken before it is there faults on the hole again, and
    // again, its pending signal cutting every wait short.
    publishLocked(st, s | kZapping | kRefusalPoison, kHolderServicer);
    int rc = poison(r.uffd.get(), addr, r.pageSize, kPoisonModeDontwake, nullptr);
    if (rc != 0) {
      unlockPage(r, st, s);
      if (rc != -EAGAIN) {
        *served = Served::Failed;
        return true;
      }
      bump(r, kStatFillRetries);
      *served = Served::Deferred;  // the mm is changing: tried again, with the verdict, after the event
      return true;
    }
    if (!refuseKernelAccess(tid, addr)) {
      publishLocked(st, s, kHolderServicer);  // still held, as it was: the caller migrates it
      return false;
    }
    // No UFFDIO_WAKE here: the signal ends the refused thread's wait, and any other thread asleep on
    // this page, woken now, would fault into the marker (hwpoison) instead of waiting for its turn.
    if (ask) ask->refusedInSyscall = true;
  }
  countFault(r, &dev, kKindDevice, s, kKindPoison, flags, 1, +1);
  if (r.trace)
    traceRecord(r, page, flags, tid, (s >> kDeviceShift) & kMaxDeviceSlot, kOutcomeSigbus, t0Ns ? t0Ns : monoNs(), pfn, ask ? ask->hookUs : 0.0);
  *served = Served::Done;
  return true;
}

Served serveFault(RegionState& r, uint32_t page, uint32_t flags, uint32_t tid, uint64_t t0Ns, Carried* ask, bool held) {
  if (page >= r.pages) return Served::Failed;
  int32_t* st = r.state(page);
  const int fd = r.uffd.get();
  // Under UFFD_FEATURE_SIGBUS (inline) no thread ever sleeps on the userfaultfd: nothing to wake.
  const bool wakes = !r.inlineMode;
  for (;;) {
    int32_t s;
    if (held) {
      s = unlocked(__atomic_load_n(st, __ATOMIC_ACQUIRE));
      held = false;
      if (!ask || ask->verdict == kVerdictNone) {
        unlockPage(r, st, s);
        return Served::Deferred;
      }
    } else {
      s = __atomic_load_n(st, __ATOMIC_ACQUIRE);
      if (s & kLocked) return Served::Deferred;
      if (!lockPage(st, s, kHolderServicer)) continue;
    }
    const int32_t kind = s & kKindMask;
    Fill fill;
    int32_t next;
    DeviceStore* dev = nullptr;  // borrowed: this page's lock keeps the device it names open
    uint32_t pfn = 0, first = page, k = 1;  // pages [first, first + k) come back together
    if (kind == kKindDevice) {
      pfn = static_cast<uint32_t>(st[1]);
      dev = devices().borrow((s >> kDeviceShift) & kMaxDeviceSlot);
      if (!dev) {
        // The device vanished with an entry still naming it: refuse rather than invent data.
        unlockPage(r, st, s);
        return Served::Failed;
      }
      int32_t verdict = kVerdictMigrate;
      if (ask) {
        // A retry of this very fault on the same entry keeps the answer it had.
        if (ask->verdict != kVerdictNone && ask->state == s && ask->pfn == pfn) {
          verdict = ask->verdict;
        } else if (__atomic_load_n(&dev->shared[kDevAskFault], __ATOMIC_ACQUIRE) != 0) {
          *ask = {kVerdictNone, s, pfn, ask->offset};
          return Served::Ask;  // still locked: the caller asks the driver, then serves it held
        }
      }
      if (verdict == kVerdictSigbus) {
        const bool kernel = (flags & kFaultKernel) || (tid != 0 && faultInSyscall(tid));
        Served served;
        if (tid != 0 && !(kernel && (!(kernelFeatures().features & UFFD_FEATURE_POISON) || threadBlocks(tid, refusalSignal()))) &&
            refuse(r, page, s, flags, tid, t0Ns, *dev, pfn, kernel, ask, &served))
          return served;
        // Not deliverable (no thread id; inside a system call, a kernel without UFFDIO_POISON, a
        // thread that blocks the refusal signal, or one whose signal could not be queued): served by
        // the default policy instead, and the caller says so (ask->verdict).
        ask->verdict = kVerdictMigrate;
      }
      {
        fill = Fill::FromDevice;
        next = kKindPresent | (s & kWrite);
        if (s & kHuge)
          first = lockHugeBlock(r, page, s, pfn, *dev, &k);
        else if (r.faultAround > 1 && dev->refcount()[pfn] == 1)
          k = lockNeighbours(r, page, s, pfn, *dev);
        // Shared with forked children: they get the page back too, as the kernel's rmap walk does.
        if (pfn < dev->capacity && __atomic_load_n(&dev->refcount()[pfn], __ATOMIC_ACQUIRE) > 1)
          migrateSharers(r, page, *dev, (s >> kDeviceShift) & kMaxDeviceSlot, pfn);
      }
    } else if (kind == kKindPresent && (flags & UFFD_PAGEFAULT_FLAG_WP)) {
      fill = Fill::Unprotect;
      next = kKindPresent | kWrite;
    } else if (kind == kKindPoison) {
      fill = Fill::Poison;
      next = s;
    } else if (flags & UFFD_PAGEFAULT_FLAG_MINOR) {
      // A private file page with no private copy: the file's own bytes, mapped read-only.
      fill = Fill::PageCache;
      next = kKindPresent;
    } else {
      // A hole, or a CPU page zapped behind our back: it reads as zeroes.
      fill = Fill::Zero;
      next = kKindPresent | kWrite;
    }
    uint32_t pfn0 = pfn - (page - first);  // the device page of `first`: it moves with the run
    // Where a thread sleeps on the fault, the fill wakes it itself: one system call fewer than a
    // fill and a UFFDIO_WAKE. So everything that thread may look at once it runs (the state words,
    // the counters, the device's books) is done first, the pages staying locked until the end, and
    // taken back if the fill fails. Not for a trace (its record times the fill), nor for a zero
    // fill of a page the table already calls present (most likely there: a fault-around
    // neighbour's thread, or a racing fill; its word must not change until the fill says so), nor
    // for a run of pages: a copy that stops partway wakes the threads of what it filled while the
    // rest still shows the state it is about to be taken back from (one UFFDIO_WAKE per run instead).
    bool early = wakes && !r.trace && k == 1 && next != s && !(fill == Fill::Zero && kind == kKindPresent);
    bool dropped = false, lastRef = false;  // early: the page's device reference went before the fill
    if (early) {
      publishLocked(st, next, kHolderServicer);
      if (kind == kKindDevice) {
        lastRef = dev->dropRef(pfn);
        dropped = true;
      }
      countFault(r, dev, kind, s, next, flags, 1, +1);
    }
    uint32_t filled = 0;
    int rc = doFill(r, fill, first, k, dev, pfn0, next & kWrite, flags, early, &filled);
    if (rc != 0 && early) {
      // Nothing was filled (one page) and nobody woken: take it all back.
      countFault(r, dev, kind, s, next, flags, 1, -1);
      if (dropped) dev->undoDrop(pfn, lastRef);
      publishLocked(st, s, kHolderServicer);
      dropped = false;
      early = false;
    }
    // Run page i came back: the entry's device reference goes, dropped before the fill or now.
    auto settle = [&](uint32_t i) {
      int32_t* sq = r.state(first + i);
      sq[1] = 0;
      unlockPage(r, sq, next);
      if (!dropped) dev->putPage(pfn0 + i);
      else if (lastRef) dev->freeDropped(pfn0 + i);
    };
    if (rc != 0 && filled > 0) {
      // A copy that stopped partway (EAGAIN and its count): the kernel has the pages it filled, so
      // the table says so too; only the rest go back as they were. If the faulting page is among
      // them the fault is served, else it is tried again alone.
      for (uint32_t i = filled; i < k; i++)
        if (first + i != page) unlockPage(r, r.state(first + i), s);
      if (page - first < filled) {
        k = filled;
        rc = 0;
      } else {
        for (uint32_t i = 0; i < filled; i++) settle(i);
        countMigrated(r, dev, filled, +1);  // pages came back; the fault is still to serve
        if (wakes) wake(fd, r.addr(first), uint64_t(filled) * r.pageSize);
        first = page;
        k = 1;
        pfn0 = pfn;
        rc = doFill(r, fill, page, 1, dev, pfn, next & kWrite, flags, false, &filled);
      }
    } else if (rc != 0 && k > 1) {
      // Nothing filled: part of the run is there already, or it crosses a vma boundary: this page alone.
      for (uint32_t i = 0; i < k; i++)
        if (first + i != page) unlockPage(r, r.state(first + i), s);
      first = page;
      k = 1;
      pfn0 = pfn;
      rc = doFill(r, fill, page, 1, dev, pfn, next & kWrite, flags, false, &filled);
    }
    if (rc == -EEXIST) {
      rc = 0;  // another path filled it first: just wake
      next = s;
      bump(r, kStatFillRaced);
      uint64_t pm = 0;
      if (fill == Fill::FromDevice && readPagemap(r, page, 1, &pm) == 0 && (pm & kPmPresent)) {
        // Nobody else fills a page we hold: the kernel has it from a fill whose count went
        // missing. The entry is gone as the kernel sees it; the table follows the kernel, or every
        // later fault there (a write to a write-protected page) would be "already there" for ever.
        next = kKindPresent | ((pm & kPmUffdWp) ? 0 : kWrite);
      }
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
    const bool migrated = kind == kKindDevice && next != s;
    for (uint32_t i = 0; i < k; i++) {
      if (migrated) settle(i);
      else unlockPage(r, r.state(first + i), next);
    }
    if (early) return Served::Done;
    countFault(r, dev, kind, s, next, flags, k, +1);
    if (r.trace) {
      traceRecord(r, page, flags, tid, kind == kKindDevice ? (s >> kDeviceShift) & kMaxDeviceSlot : 0, outcomeOf(kind, s, next, flags),
                  t0Ns ? t0Ns : monoNs(), pfn, ask ? ask->hookUs : 0.0);
    }
    if (wakes) wake(fd, r.addr(first), uint64_t(k) * r.pageSize);
    return Served::Done;
  }
}

}  // namespace uffdhmm
