// The page lock of docs/PROTOCOL.md in C++ (lib/pagelock.ts is its TypeScript side): LOCKED and who
// holds it (kHolder*) are taken by compare-and-swap from an unlocked word, and the holder publishes
// the page's next state with both clear in one store, or in a CAS where someone else may have
// flagged a zap meanwhile.
#pragma once

#include <cstdint>

#include "layout.h"
#include "region.h"

namespace uffdhmm {

// Bumps the unlock sequence so waiters on a locked page re-check it: only while one sleeps on it
// (kUnlockWaiters), since a fault would otherwise pay an atomic read-modify-write per page for
// nobody. A waiter that registers just after this load sleeps out its timeout (a millisecond at most).
inline void noteUnlock(RegionState& r) {
  if (__atomic_load_n(r.stat(layout::kUnlockWaiters), __ATOMIC_RELAXED) != 0) __atomic_fetch_add(r.stat(layout::kUnlockSeq), 1, __ATOMIC_RELEASE);
}

constexpr int32_t kLockBits = layout::kLocked | layout::kHolderMask;

// Locks a page whose word was `seen` (unlocked) for `holder`; false when the word changed meanwhile.
inline bool lockPage(int32_t* st, int32_t seen, int32_t holder) {
  return __atomic_compare_exchange_n(st, &seen, seen | layout::kLocked | holder, false, __ATOMIC_ACQUIRE, __ATOMIC_RELAXED);
}

// The word's state without the lock: what the page holds, whoever holds it.
inline int32_t unlocked(int32_t s) { return s & ~kLockBits; }

// Whether `s` is locked by `holder`.
inline bool heldBy(int32_t s, int32_t holder) { return (s & kLockBits) == (layout::kLocked | holder); }

// Publishes `value` unlocked. Only where nobody else can have flagged the page meanwhile: the
// region's own servicer, which applies every zap of the region itself.
inline void unlockPage(RegionState& r, int32_t* st, int32_t value) {
  __atomic_store_n(st, unlocked(value), __ATOMIC_RELEASE);
  noteUnlock(r);
}

// The new state, stored before a fill that wakes the faulting thread, still locked: the thread
// resumes on a word that already says what its page is, and nobody else takes the page before
// the books are done. A failed fill stores the old word back.
inline void publishLocked(int32_t* st, int32_t value, int32_t holder) {
  __atomic_store_n(st, unlocked(value) | layout::kLocked | holder, __ATOMIC_RELEASE);
}

// Unlocks a page held by a thread that is not the region's servicer (a peer migrating back a page
// that another mapping shares) with `next`, unless that servicer flagged a zap meanwhile
// (kZapPending): then the page becomes none (unmapped if it was munmapped) with pfn word 0, as the
// zap leaves it, and this returns false: the caller drops what the entry held. lib/pagelock.ts's
// publish, in C++.
inline bool publishUnlessZapped(RegionState& r, int32_t* st, int32_t next) {
  int32_t cur = __atomic_load_n(st, __ATOMIC_ACQUIRE);
  for (;;) {
    const bool zapped = cur & layout::kZapPending;
    if (zapped) st[1] = 0;
    const int32_t want = unlocked(zapped ? layout::kKindNone | (cur & layout::kUnmapped) : next);
    if (__atomic_compare_exchange_n(st, &cur, want, false, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
      noteUnlock(r);
      return !zapped;
    }
  }
}

}  // namespace uffdhmm
