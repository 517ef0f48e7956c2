// The shared-memory protocol of the page table, the device bookkeeping, the trace ring and the
// worker's event records: both sides read and write these words with atomics. native/layout.h is
// the C++ side; test/layout.test.ts fails when the two differ. docs/PROTOCOL.md explains them.

/** Int32 words before the page table in a region's shared buffer. */
export const REGION_HEADER = 16;
export const STAT_FAULTS = 0;
export const STAT_WRITE_FAULTS = 1;
export const STAT_WP_FAULTS = 2;
export const STAT_KERNEL_FAULTS = 3;
export const STAT_MIGRATED_BACK = 4;
export const STAT_ZERO_FILLS = 5;
/** Faults a driver refused (its fault hook answered 'sigbus'). */
export const STAT_REFUSED = 6;
/** Bumped after every page unlock so waiters can re-check. */
export const UNLOCK_SEQ = 7;
/**
 * Fills refused with EAGAIN because the mm was changing (an EVENT_REMOVE, UNMAP, REMAP or FORK not
 * read yet) and tried again later.
 */
export const STAT_FILL_RETRIES = 8;
/** Fills that found the page already there (EEXIST: another path filled it first): woken only. */
export const STAT_FILL_RACED = 9;
/** 1 while the servicer is inside read() of messages (see native/layout.h). */
export const ZAP_READING = 10;
/** Batches of messages the servicer has read. */
export const ZAP_BATCHES_READ = 11;
/** Of those, the batches whose REMOVE/UNMAP events are applied. */
export const ZAP_BATCHES_DONE = 12;
/**
 * Times the worker servicer's JS got control back after its poller read this region's messages
 * (native/layout.h kStatJsEntries): 0 per fault while no fault needs a driver's hook, 1 with one.
 */
export const STAT_JS_ENTRIES = 13;
/** JS threads sleeping on UNLOCK_SEQ: native unlockers bump it only while one does (native/layout.h). */
export const UNLOCK_WAITERS = 14;

export const KIND_MASK = 0x3;
export const KIND_NONE = 0;
export const KIND_PRESENT = 1;
export const KIND_DEVICE = 2;
export const KIND_POISON = 3;
export const WRITE = 0x4;
export const LOCKED = 0x8;
/** The page was munmapped by someone else (EVENT_UNMAP): nothing may be migrated there. */
export const UNMAPPED = 0x10;
/**
 * Set by the thread holding the page locked while it zaps the page itself; the servicer clears it
 * on the resulting EVENT_REMOVE, so that thread knows its own event was seen and not mistaken for
 * someone else's zap.
 */
export const ZAPPING = 0x20;
/**
 * Part of a huge device entry: a THP migrated whole into one huge device page (the PMD-level
 * device-private entry). It holds while all entries of its PMD-aligned block stay alike.
 */
export const HUGE = 0x40;
/**
 * Someone else zapped (MADV_DONTNEED / munmap) this page while another thread held it locked: the
 * holder applies the zap when it publishes (the page becomes none), as zap_pte_range would have.
 */
export const ZAP_PENDING = 0x80;
/**
 * Who holds a locked page (bits 8-9), set in the same CAS as LOCKED and cleared with it: a takeover
 * of a stalled or dead servicer releases only that servicer's locks (docs/PROTOCOL.md).
 */
export const HOLDER_SHIFT = 8;
export const HOLDER_MASK = 0x300;
/** The region's owner thread: every operation that locks through lib/pagelock.ts. */
export const HOLDER_OWNER = 0x100;
/** The fault engine for the region's servicer, from a driver ask to its faultServe too. */
export const HOLDER_SERVICER = 0x200;
/** A thread serving another mapping of the page: a fork sharer's migration back, region.fork's children. */
export const HOLDER_PEER = 0x300;
/**
 * A refusal of a fault taken inside a system call is in progress on this locked device entry: a
 * poison marker makes the faulting thread's system call fail with EFAULT, and that thread zaps it on
 * its way back (native/refusal.cc); the servicer then unlocks the page with the entry as it was.
 */
export const REFUSAL_POISON = 0x400;
/** A PMD's span (x86-64, and arm64 with 4 KiB pages): the size of a THP and of a huge device entry. */
export const PMD_SIZE = 2 << 20;
export const DEVICE_SHIFT = 16;
export const MAX_DEVICE_SLOT = 0x7fff;

/** Trace buffer (native/trace.h): Int32 header, then records of TRACE_STRIDE float64. */
export const TRACE_HEADER = 4;
export const TRACE_ENABLED = 0;
export const TRACE_NEXT = 1;
export const TRACE_OVERWRITTEN = 2;
export const TRACE_CAPACITY = 3;
export const TRACE_STRIDE = 10;
// A record's fields, in float64 from its start; TRACE_SEQ (index + 1) is stored last, 0 while written.
export const TRACE_SEQ = 0;
export const TRACE_T0 = 1;
export const TRACE_PAGE = 2;
export const TRACE_FLAGS = 3;
export const TRACE_TID = 4;
export const TRACE_SLOT = 5;
export const TRACE_OUTCOME = 6;
export const TRACE_SERVICE_US = 7;
export const TRACE_PFN = 8;
export const TRACE_HOOK_US = 9;
export const OUTCOME_MIGRATED = 1;
export const OUTCOME_ZERO_PAGE = 2;
export const OUTCOME_UNPROTECTED = 3;
export const OUTCOME_SIGBUS = 4;
export const OUTCOME_WOKEN = 5;
export const OUTCOME_PAGE_CACHE = 6;

/** Int32 words before refcount[capacity], freeStack[capacity] and freedLog[capacity] in a device's shared buffer. */
export const DEVICE_HEADER = 14;
export const DEV_LOCK = 0;
export const DEV_FREE_TOP = 1;
export const DEV_USED = 2;
export const DEV_FAULTS = 3;
export const DEV_MIGRATED_TO_DEVICE = 4;
export const DEV_MIGRATED_TO_RAM = 5;
export const DEV_FREED = 6;
/** HMM_DMIRROR_FLAG_FAIL_ALLOC: the next huge (PMD-sized) allocation fails, once. */
export const DEV_FAIL_ALLOC = 7;
/** Free-stack entries below this index were given back to the kernel (native/device.cc DeviceStore::release). */
export const DEV_RELEASED = 8;
/** While a release runs (> 0): entries below this index are being given back and may not be popped. */
export const DEV_RELEASING = 9;
/** Free pages that keep their memory (the most recently freed, handed out first). */
export const RELEASE_WARM = 1024;
/** How many free pages beyond RELEASE_WARM must hold memory before the release tick gives any back. */
export const RELEASE_BATCH = 256;
/**
 * 1 when the driver has a pageFree hook: every page freed by native code (any servicer, a guard, a
 * migration back, a fork child's references) is logged in freedLog under DEV_LOCK, and the main
 * thread drains the log and calls the hook, so it runs once per freed page whoever freed it.
 */
export const DEV_LOG_FREES = 10;
/** Entries in freedLog not yet drained. */
export const DEV_FREED_LOGGED = 11;
/**
 * 1 while the device's driver may have a fault hook: the worker servicer's poller hands its faults
 * to JS (EVENT_ASK) instead of serving them natively. Set by Device for a device with a driver,
 * cleared by the worker once the module turns out to have no fault hook or fails to load.
 */
export const DEV_ASK_FAULT = 12;
/**
 * Pages whose last reference the fault engine dropped before the fill that wakes the faulting
 * thread and not yet pushed on the free stack: an allocator that finds the stack short waits for them.
 */
export const DEV_FREEING = 13;

/** A driver's answer to a fault hook, handed to native.faultServe and carried across retries. */
export const VERDICT_NONE = 0;
export const VERDICT_MIGRATE = 1;
export const VERDICT_SIGBUS = 2;

/** The device slot a device entry's state word names. */
export function deviceSlotOf(state: number): number {
  return (state >>> DEVICE_SHIFT) & MAX_DEVICE_SLOT;
}

/** Index of a page's state word in the region's Int32Array; its pfn word follows it. */
export function stateIndex(page: number): number {
  return REGION_HEADER + 2 * page;
}

// userfaultfd page-fault flags (linux/userfaultfd.h).
export const UFFD_PAGEFAULT_FLAG_WRITE = 1;
export const UFFD_PAGEFAULT_FLAG_WP = 2;
/** A minor fault: the page cache has the page, the pte does not (private file regions only). */
export const UFFD_PAGEFAULT_FLAG_MINOR = 4;
/** Ours, beside the kernel's flags: the fault was taken inside a system call (kernel mode). */
export const FAULT_KERNEL = 1 << 16;

// The records pollerWait writes (native/poller.cc): faults whose driver must be asked; every other
// fault and event is served in native code. [region handle, EVENT_ASK, flags, page, tid, t0 µs,
// state word, pfn, offset of the faulting address in its page (where a refusal's SIGBUS points)].
export const EVENT_STRIDE = 9;
export const EVENT_ASK = 1;

// region.fork's steps, as lib/fork.ts encodes them for native/fork.cc: FORK_STEP_STRIDE int32 per
// step, [op, a, b, c].
export const FORK_STEP_STRIDE = 4;
/** [op, page, offset, _] -> the byte. */
export const FORK_OP_READ = 1;
/** [op, page, offset, value] -> 0. */
export const FORK_OP_WRITE = 2;
/** [op, first, count, _] -> CRC32 of those pages. */
export const FORK_OP_CHECKSUM = 3;
/** [op, ms, _, _] -> 0. */
export const FORK_OP_SLEEP = 4;
