// The shared-memory protocol that TypeScript (lib/layout.ts) and C++ both read and write with
// atomics. Change one side and the other in the same commit: test/layout.test.ts compares every
// constant here with lib/layout.ts through the addon's protocolConstants() (native/protocol.cc),
// and fails on a constant that either side lacks. docs/PROTOCOL.md explains the state machine.
#pragma once

#include <cstddef>
#include <cstdint>

namespace uffdhmm::layout {

// Our own fault flag, beside UFFD_PAGEFAULT_FLAG_*: the fault was taken inside a system call.
constexpr uint32_t kFaultKernel = 1u << 16;

// Region shared buffer: kRegionHeader int32 words, then two int32 words per page: state, pfn.
constexpr int kRegionHeader = 16;
constexpr int kStatFaults = 0;
constexpr int kStatWriteFaults = 1;
constexpr int kStatWpFaults = 2;
constexpr int kStatKernelFaults = 3;
constexpr int kStatMigratedBack = 4;
constexpr int kStatZeroFills = 5;
constexpr int kStatRefused = 6;  // faults a driver refused (its fault hook answered 'sigbus')
constexpr int kUnlockSeq = 7;  // bumped after every page unlock, so waiters can sleep on it
// Fills (UFFDIO_COPY / ZEROPAGE / WRITEPROTECT / POISON) refused with EAGAIN because the mm was
// changing (an EVENT_REMOVE / UNMAP / REMAP / FORK not read yet) and tried again later.
constexpr int kStatFillRetries = 8;
// Fills that found the page already there (EEXIST: another path filled it first): woken only.
constexpr int kStatFillRaced = 9;
// Zaps by others racing a main-thread holder of the page lock (migrate, migrateToRam). The
// servicer sets kZapReading around each read() of messages and counts the batches it has read and
// the batches whose REMOVE/UNMAP events it has applied; a holder waits until every batch read
// before its fill is applied, then checks its pages for kZapPending (see settleZaps in lib/mm/zap.ts).
constexpr int kZapReading = 10;
constexpr int kZapBatchesRead = 11;
constexpr int kZapBatchesDone = 12;
// Times the worker servicer's JS got control back after its poller read this region's messages (a
// driver's fault hook to ask, or the end of a time slice): 0 per fault while no fault needs a hook,
// 1 with one. Counted by the poller (native/poller.cc) as pollerWait returns.
constexpr int kStatJsEntries = 13;
// Threads of the main thread's JS sleeping on kUnlockSeq (Atomics.wait, with a timeout of a
// millisecond at most): native unlockers bump kUnlockSeq only while one does, saving a fault an
// atomic read-modify-write. A waiter an unlocker misses sleeps out its short timeout and looks again.
constexpr int kUnlockWaiters = 14;

// A page's state word.
constexpr int32_t kKindMask = 0x3;
constexpr int32_t kKindNone = 0;     // pte_none: never touched, or discarded
constexpr int32_t kKindPresent = 1;  // a CPU page
constexpr int32_t kKindDevice = 2;   // a device entry (swp_entry(SWP_DEVICE[_WRITE], pfn))
constexpr int32_t kKindPoison = 3;   // hwpoison entry: any access gets SIGBUS
constexpr int32_t kWrite = 0x4;      // write device entry / writable CPU page
constexpr int32_t kLocked = 0x8;     // a migration entry: the page is being moved, faults wait
constexpr int32_t kUnmapped = 0x10;  // munmapped behind our back (EVENT_UNMAP): no page, no access
// Set by the thread that holds the page locked and is zapping it itself: the servicer clears it when
// the resulting EVENT_REMOVE arrives, which tells that thread its own event has been dealt with.
constexpr int32_t kZapping = 0x20;
// Part of a huge device entry: a THP migrated whole into one huge device page (the PMD-level
// device-private entry). It holds while all entries of its PMD-aligned block stay alike.
constexpr int32_t kHuge = 0x40;
// Someone else zapped (MADV_DONTNEED / munmap) this page while another thread held it locked: the
// holder applies the zap when it publishes (the page becomes none), as zap_pte_range would have.
constexpr int32_t kZapPending = 0x80;
// Who holds a locked page, in the same CAS that sets kLocked and cleared with it: a takeover of a
// stalled or dead servicer releases only that servicer's locks, and an operation of the region's
// owner or of a peer that holds a page completes as if nothing happened.
constexpr int kHolderShift = 8;
constexpr int32_t kHolderMask = 0x300;
constexpr int32_t kHolderOwner = 0x100;     // the region's owner thread: its JS operations (lib/pagelock.ts lockPage)
constexpr int32_t kHolderServicer = 0x200;  // the fault engine for the region's servicer (from an ask to its faultServe too)
constexpr int32_t kHolderPeer = 0x300;      // a thread serving another mapping: migrateSharers, region.fork's children
// A refusal of a fault taken inside a system call is in progress on this locked device entry: a
// poison marker in the kernel's page table makes the faulting thread's retry fail with EFAULT, and
// that thread zaps it as its system call returns (native/refusal.cc). The servicer, reading that
// zap's REMOVE, unlocks the page with the entry as it was. Set with kZapping by the lock holder.
constexpr int32_t kRefusalPoison = 0x400;
// A PMD's span (x86-64, and arm64 with 4 KiB pages): the size of a THP and of a huge device entry.
constexpr size_t kPmdSize = size_t(2) << 20;
constexpr int kDeviceShift = 16;     // device slot in bits 16..30
constexpr int32_t kMaxDeviceSlot = 0x7fff;

// Trace buffer: kTraceHeader int32 words, then capacity records of kTraceStride doubles:
// [seq (0 while written), t0 µs (CLOCK_MONOTONIC), page, flags, tid, device slot, outcome, service µs,
// device pfn, µs inside the driver's fault hook].
constexpr int kTraceHeader = 4;
constexpr int kTraceEnabled = 0;
constexpr int kTraceNext = 1;         // records ever reserved
constexpr int kTraceOverwritten = 2;  // records lost to the ring wrapping
constexpr int kTraceCapacity = 3;
constexpr int kTraceStride = 10;
// A record's fields, in doubles from its start.
constexpr int kTraceSeq = 0;  // the record's index + 1, stored last with release; 0 while written
constexpr int kTraceT0 = 1;
constexpr int kTracePage = 2;
constexpr int kTraceFlags = 3;
constexpr int kTraceTid = 4;
constexpr int kTraceSlot = 5;
constexpr int kTraceOutcome = 6;
constexpr int kTraceServiceUs = 7;
constexpr int kTracePfn = 8;     // the device page the entry named (device faults only)
constexpr int kTraceHookUs = 9;  // time in the driver's fault hook (worker servicer; 0 when none ran)
constexpr int32_t kOutcomeMigrated = 1;
constexpr int32_t kOutcomeZeroPage = 2;
constexpr int32_t kOutcomeUnprotected = 3;
constexpr int32_t kOutcomeSigbus = 4;
constexpr int32_t kOutcomePageCache = 6;  // a minor fault: the file's own page mapped (UFFDIO_CONTINUE)
constexpr int32_t kOutcomeWoken = 5;  // already there (EEXIST): the thread was only woken

// Device shared buffer: kDeviceHeader int32 words, refcount[capacity], freeStack[capacity],
// freedLog[capacity].
constexpr int kDeviceHeader = 14;
constexpr int kDevLock = 0;  // spinlock over the free stack
constexpr int kDevFreeTop = 1;
constexpr int kDevUsed = 2;
constexpr int kDevFaults = 3;
constexpr int kDevMigratedToDevice = 4;
constexpr int kDevMigratedToRam = 5;
constexpr int kDevFreed = 6;
constexpr int kDevFailAlloc = 7;  // HMM_DMIRROR_FLAG_FAIL_ALLOC: the next huge allocation fails (one-shot)
// Free pages given back to the kernel (native/device.cc DeviceStore::release): free-stack entries
// below kDevReleased hold no memory; while a release runs, entries below kDevReleasing (> 0) are
// being given back and may not be popped.
constexpr int kDevReleased = 8;
constexpr int kDevReleasing = 9;
// Free pages that keep their memory (the most recently freed, handed out first), and how many more
// must hold memory before the release tick gives any back.
constexpr int32_t kReleaseWarm = 1024;
constexpr int32_t kReleaseBatch = 256;
// The driver has a pageFree hook: every page freed by native code (any servicer, a guard, a
// migration back, a fork child's references) is logged in freedLog under kDevLock, and the main
// thread drains the log and calls the hook, so it runs once per freed page whoever freed it.
constexpr int kDevLogFrees = 10;
constexpr int kDevFreedLogged = 11;  // entries in freedLog not yet drained
// The driver may have a fault hook (dev_pagemap_ops.migrate_to_ram's decision): the worker
// servicer's poller hands this device's faults to JS to ask it (kEventAsk) instead of serving them.
// Set by the main thread for a device with a driver; cleared by the worker once the driver module
// turns out to have no fault hook (or failed to load).
constexpr int kDevAskFault = 12;
// Pages whose last reference the fault engine dropped before the fill that wakes the faulting
// thread, and that it has not pushed on the free stack yet (DeviceStore::dropRef/freeDropped). A
// page is free from the woken thread's point of view: an allocator that finds the stack short
// waits for these instead of reporting the device full.
constexpr int kDevFreeing = 13;

// A driver's answer to a fault hook, passed back to the engine (faultServe) and carried across
// retries of the same fault.
constexpr int32_t kVerdictNone = 0;
constexpr int32_t kVerdictMigrate = 1;
constexpr int32_t kVerdictSigbus = 2;

// The records pollerWait writes for the worker servicer: faults whose driver must be asked (every
// other fault and event is served in native code), kEventStride doubles each: [region handle,
// kEventAsk, flags, page, tid, t0 µs, state word, pfn, offset of the faulting address in its page]
// (native/poller.cc writes them).
constexpr int kEventStride = 9;
constexpr int kEventAsk = 1;

// region.fork's steps, as lib/fork.ts encodes them for native/fork.cc: kForkStepStride int32 per
// step, [op, a, b, c].
constexpr int kForkStepStride = 4;
constexpr int32_t kForkOpRead = 1;      // [op, page, offset, _]      -> the byte
constexpr int32_t kForkOpWrite = 2;     // [op, page, offset, value]  -> 0
constexpr int32_t kForkOpChecksum = 3;  // [op, first, count, _]      -> CRC32 of those pages
constexpr int32_t kForkOpSleep = 4;     // [op, ms, _, _]             -> 0

}  // namespace uffdhmm::layout
