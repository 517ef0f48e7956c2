// Migrations back to system memory other than a fault's own (mm/migrate_device.c): the main
// thread's migrate back of pages it holds (fillFromDevice, publishMigratedBack; the guard uses the
// latter too), the mappings that share a device page after fork (migrateSharers, the rmap walk of
// migrate_device_unmap/remove_migration_ptes), and the one multi-page UFFDIO_COPY they and the
// fault engine (fault.cc) share (copyRun).
#include <cerrno>

#include "device.h"
#include "fault.h"

namespace uffdhmm {

using namespace layout;

static inline void bump(RegionState& r, int index) { __atomic_fetch_add(r.stat(index), 1, __ATOMIC_RELAXED); }

int copyRun(RegionState& r, uint32_t page, const uint8_t* src, uint32_t count, uint64_t mode, uint32_t* filled) {
  int64_t done = 0;
  bool counted = true;
  const uint32_t cut = count > 1 ? testCutCopy(r, page, count, &counted) : 0;
  int rc = copy(r.uffd.get(), r.addr(page), reinterpret_cast<uint64_t>(src), uint64_t(cut ? cut : count) * r.pageSize, mode, &done);
  if (cut && rc == 0) rc = -EAGAIN;
  if (!counted) done = 0;
  *filled = static_cast<uint32_t>(done / int64_t(r.pageSize));
  return rc;
}

int fillFromDevice(RegionState& r, uint32_t page, DeviceStore& dev, uint32_t pfn, uint32_t count, bool writeProtect) {
  const uint64_t mode = UFFDIO_COPY_MODE_DONTWAKE | (writeProtect ? UFFDIO_COPY_MODE_WP : 0);
  uint32_t done = 0;
  bool byPage = count == 1;
  while (done < count) {
    uint32_t filled = 0;
    const uint32_t n = byPage ? 1 : count - done;
    int rc = copyRun(r, page + done, dev.page(pfn + done), n, mode, &filled);
    done += filled;
    if (rc == 0 || filled > 0) continue;  // stopped partway: go on from the first page it left
    if (rc == -EEXIST) {
      // There already: nobody fills a page the caller holds, so an earlier try of this very fill
      // did (its copy stopped with EAGAIN after that page, and the caller tried again).
      if (n > 1) {
        byPage = true;
        continue;
      }
      bump(r, kStatFillRaced);
      done++;
      continue;
    }
    // ENOENT: the run crosses a vma boundary (mprotect split it): page by page from here.
    if (rc == -ENOENT && n > 1) {
      byPage = true;
      continue;
    }
    return rc;  // EAGAIN: the caller reads events and tries again; the pages filled stay
  }
  return 0;
}

void publishMigratedBack(RegionState& r, uint32_t page, int32_t next, DeviceStore& dev, uint32_t pfn) {
  int32_t* st = r.state(page);
  st[1] = 0;
  unlockPage(r, st, next);
  dev.putPage(pfn);
  bump(r, kStatMigratedBack);
  __atomic_fetch_add(&dev.shared[kDevMigratedToRam], 1, __ATOMIC_RELAXED);
}

void migrateSharers(RegionState& r, uint32_t page, DeviceStore& dev, int32_t slot, uint32_t pfn) {
  if (pfn >= dev.capacity) return;
  // Mapped once (every fault but those after a fork): nobody else to bring it back for.
  if (__atomic_load_n(&dev.refcount()[pfn], __ATOMIC_ACQUIRE) <= 1) return;
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
    if ((s & kLocked) || (s & kKindMask) != kKindDevice || ((s >> kDeviceShift) & kMaxDeviceSlot) != slot) return;
    if (!lockPage(st, s, kHolderPeer)) return;
    testPause(m, kTestPointSharerLocked);  // test only: a no-op unless a test armed it
    // The pfn word is the holder's to change: only under the lock does it say which device page
    // this entry names (the word may have been re-migrated to another pfn with the same state).
    if (static_cast<uint32_t>(st[1]) != pfn) {
      unlockPage(m, st, s);
      return;
    }
    // That mapping's servicer applies its zaps while we hold the page: publish through a CAS that
    // honours a zap it flagged (kZapPending), as every holder does. A zap already flagged is applied
    // without a fill.
    int rc = -ECANCELED;
    const uint64_t addr = m.addr(page);
    if (!(__atomic_load_n(st, __ATOMIC_ACQUIRE) & kZapPending))
      rc = copy(m.uffd.get(), addr, reinterpret_cast<uint64_t>(dev.page(pfn)), m.pageSize,
                UFFDIO_COPY_MODE_DONTWAKE | UFFDIO_COPY_MODE_WP, nullptr);
    if (rc != 0 && rc != -EEXIST) {
      if (rc == -EAGAIN) bump(m, kStatFillRetries);
      if (!publishUnlessZapped(m, st, s)) dev.putPage(pfn);  // zapped: the entry's reference goes with it
      return;
    }
    if (rc == -EEXIST) bump(m, kStatFillRaced);
    st[1] = 0;
    const bool kept = publishUnlessZapped(m, st, kKindPresent);
    dev.putPage(pfn);
    if (!kept) return;
    // That mapping's page came back; the device page migrated once (counted by the faulting side).
    bump(m, kStatMigratedBack);
    wake(m.uffd.get(), addr, m.pageSize);
  });
}

}  // namespace uffdhmm
