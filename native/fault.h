// The fault engine: the one place where a fault is served and a page migrated back to system
// memory. Every path calls it: the native servicer thread and the worker's poller (through
// dispatch.h), the worker's JS once a driver hook has decided (faultServe), the in-thread SIGBUS
// handler, the guard that takes over a dead worker, and Region#migrateToRam (regionFillFromDevice).
// The page-state word it reads and writes is described in docs/PROTOCOL.md.
#pragma once

#include <cstdint>

#include "pagelock.h"
#include "region.h"

namespace uffdhmm {

struct DeviceStore;

// Ask: the page holds a device entry whose driver must decide (only for callers that pass a
// Carried, i.e. the worker servicer); *carried says which entry, and the page is left LOCKED for
// the caller, as the kernel holds the page lock across dev_pagemap_ops.migrate_to_ram.
enum class Served { Done, Deferred, Failed, Ask };

// A driver's decision (layout::kVerdict*) for one entry, carried across retries of the same fault
// so that one CPU access asks the hook once and a refusal never turns into a migration on a retry.
// It applies while the page holds the same entry (state word and device page).
struct Carried {
  int32_t verdict = layout::kVerdictNone;
  int32_t state = 0;
  uint32_t pfn = 0;
  uint32_t offset = 0;  // of the faulting address in its page (UFFD_FEATURE_EXACT_ADDRESS): a refusal's si_addr
  double hookUs = 0;    // time the driver's fault hook took to give the verdict, for the trace
  // Set when a refusal failed an access inside a system call: a poison marker is in the page's pte
  // until this servicer reads the zap that takes it away, so the caller reads events before it asks
  // any other hook (lib/servicer/worker.ts settleRefusal).
  bool refusedInSyscall = false;
};

// Serves one userfaultfd page fault on `page` of `r` from the shared table: device entry ->
// migrate back (read entries come back write-protected; with fault-around and whole huge
// entries), or SIGBUS if the driver refused; hole -> zero page; write-protect fault -> un-protect;
// minor fault -> the file's page. Publishes the new state, counts, traces and wakes the thread.
// Deferred when the page is locked or the mm is changing (EAGAIN); Failed when the page is not
// ours (the caller wakes the thread so it faults afresh). `ask` null: never ask a driver.
// `held`: the caller holds the page locked since an Ask; with ask->verdict kVerdictNone the page
// is only unlocked (Deferred): the caller could not ask yet.
Served serveFault(RegionState& r, uint32_t page, uint32_t flags, uint32_t tid, uint64_t t0Ns, Carried* ask, bool held = false);

// The main thread's migrate back of pages it holds locked, [page, page + count) from device pages
// [pfn, pfn + count) of dev: one UFFDIO_COPY for the run, page by page where the run crosses a vma
// boundary (ENOENT) or part of it is there already (EEXIST, counted as raced). Never wakes and
// publishes nothing: the caller checks for zaps first (settleZaps in lib/mm/zap.ts), then calls
// publishMigratedBack. 0 or -errno (EAGAIN: read events first, then try again).
int fillFromDevice(RegionState& r, uint32_t page, DeviceStore& dev, uint32_t pfn, uint32_t count, bool writeProtect);

// A page that came back from device page `pfn` of dev: stores `next` (unlocking it; pfn word 0),
// drops the device page's reference (freed, and logged for pageFree, on the last) and counts one
// migration back on the region and the device.
void publishMigratedBack(RegionState& r, uint32_t page, int32_t next, DeviceStore& dev, uint32_t pfn);

// A zap of [start, end) (addresses) reported by EVENT_REMOVE / EVENT_UNMAP, as zap_pte_range
// treats device entries. Pages locked by someone are their holder's to settle (flagged
// kZapPending, or kZapping cleared when it is that holder's own zap); every other page loses its
// entry: a device entry drops its reference (the device page is freed on the last), all read zero.
void zapRange(RegionState& r, uint64_t start, uint64_t end, bool unmapped);

// A minor fault (private file mapping) on a page with no private copy: UFFDIO_CONTINUE maps the
// page cache's page; a page the file no longer has reads as zeroes. Wakes unless dontwake. 0 or -errno.
int continueOrZero(RegionState& r, uint32_t page, bool dontwake = true);

// After `page` of r came back from device page (slot, pfn) that other processes still map (after
// fork): migrate it back for each of them too, write-protected, dropping their references, as
// migrate_device_unmap()/remove_migration_ptes() do for every mapping through the rmap.
void migrateSharers(RegionState& r, uint32_t page, DeviceStore& dev, int32_t slot, uint32_t pfn);

// UFFDIO_COPY of `count` pages of r at `page` from `src`; *filled: how many of them the kernel
// filled: all on success, a prefix (possibly none) on failure, since mfill_atomic stops at the
// first page it cannot fill and answers EAGAIN with its count, having woken that prefix unless
// DONTWAKE. 0 or -errno. (testCutCopy in native/test_hooks.cc can make it stop, for tests.)
int copyRun(RegionState& r, uint32_t page, const uint8_t* src, uint32_t count, uint64_t mode, uint32_t* filled);

}  // namespace uffdhmm
