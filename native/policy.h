// The default fault policy in C++, for servicers that cannot run JS (the native thread; later the
// in-thread SIGBUS handler and the guard). lib/servicer/policy.ts is its TypeScript twin.
#pragma once

#include <cstdint>

#include "region.h"

namespace uffdhmm {

struct DeviceStore;

enum class Served { Done, Deferred, Failed };

// Serves one userfaultfd page fault on `page` of `r` from the shared table:
// device entry -> migrate back (read entries come back write-protected), hole -> zero page,
// write-protect fault -> un-protect. Deferred when the page is locked or the mm is changing.
Served serveFaultDefault(RegionState& r, uint32_t page, uint32_t flags, uint32_t tid = 0, uint64_t t0Ns = 0);

// Fault-around: locks the pages after `page` (locked already, state s, device page pfn) that hold
// device entries of the same kind on the following device pages, up to r.faultAround in all;
// returns how many pages (>= 1) are now locked from `page` on.
uint32_t lockNeighbours(RegionState& r, uint32_t page, int32_t s, uint32_t pfn, const struct DeviceStore& dev);

// A zap of [start, end) (addresses) reported by EVENT_REMOVE / EVENT_UNMAP. Pages locked by us
// are our own migration or discard, which keeps its own books; every other page loses its entry:
// a device entry drops its reference (the device page is freed on the last), all read as zero.
// A minor fault (private file mapping) on a page with no private copy: UFFDIO_CONTINUE maps the
// page cache's page; a page the file no longer has reads as zeroes. Never wakes. 0 or -errno.
int continueOrZero(RegionState& r, uint32_t page);

void zapRange(RegionState& r, uint64_t start, uint64_t end, bool unmapped);

// After `page` of r came back from device page (slot, pfn) that other processes still map (after
// fork): migrate it back for each of them too, write-protected, dropping their references, as
// migrate_device_unmap()/remove_migration_ptes() do for every mapping through the rmap.
void migrateSharers(RegionState& r, uint32_t page, int32_t slot, uint32_t pfn);

// Bumps the unlock sequence so waiters on a locked page re-check it.
inline void noteUnlock(RegionState& r) { __atomic_fetch_add(r.stat(layout::kUnlockSeq), 1, __ATOMIC_RELEASE); }

}  // namespace uffdhmm
