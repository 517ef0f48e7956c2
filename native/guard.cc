// The guard (no kernel twin: a dead driver in the kernel takes the machine with it). When a worker
// servicer dies, a native servicer thread takes over its region's faults with the default policy,
// after putting right the pages the dead servicer left locked.
#include <napi.h>
#include <sched.h>
#include <sys/eventfd.h>

#include <system_error>

#include "device.h"
#include "napi_util.h"
#include "fault.h"
#include "proc.h"
#include "region.h"
#include "servicer_thread.h"
#include "span.h"

namespace uffdhmm {

// Puts right the pages the replaced servicer left locked (holder kHolderServicer: a fault it was
// serving, a page held for its driver's decision); whether its fill happened is read from the
// kernel's pagemap, so the table ends up as the kernel sees the page. Locks of the region's owner
// and of peers stay: their operations are in progress and complete (a discard waiting for the
// REMOVE of its own zap gets it from the guard, which sees kZapping on a locked page).
static void releaseServicerLocks(RegionState& r) {
  for (uint32_t page = 0; page < r.pages; page++) {
    int32_t* st = r.state(page);
    const int32_t s = __atomic_load_n(st, __ATOMIC_ACQUIRE);
    // A refusal in progress (fault.cc refuse) ends with the faulting thread's own zap, which the guard
    // reads: the page stays locked for it.
    if (!heldBy(s, layout::kHolderServicer) || (s & layout::kRefusalPoison)) continue;
    uint64_t pm = 0;
    const bool filled = readPagemap(r, page, 1, &pm) == 0 && (pm & kPmPresent);
    const int32_t kind = s & layout::kKindMask;
    auto dev = kind == layout::kKindDevice ? devices().get((s >> layout::kDeviceShift) & layout::kMaxDeviceSlot) : nullptr;
    if (s & layout::kZapPending) {
      // Zapped while it was held: the zap wins, as for every holder (lib/pagelock.ts publish).
      if (dev) dev->putPage(static_cast<uint32_t>(st[1]));
      st[1] = 0;
      unlockPage(r, st, layout::kKindNone | (s & layout::kUnmapped));
    } else if (dev && filled) {
      // Its migration back was filled: the engine's own books for it.
      publishMigratedBack(r, page, layout::kKindPresent | (s & layout::kWrite), *dev, static_cast<uint32_t>(st[1]));
    } else if (kind == layout::kKindDevice && filled) {
      st[1] = 0;
      unlockPage(r, st, layout::kKindPresent | (s & layout::kWrite));
    } else if (kind == layout::kKindNone && filled) {
      unlockPage(r, st, layout::kKindPresent | layout::kWrite);
    } else {
      unlockPage(r, st, s & ~layout::kZapping);
    }
  }
}

// The part of a takeover that every guard does first, with r's mode kGuardTaking: later faultServe
// calls refuse, those in flight finish, the replaced servicer's locks are put right. No allocation.
static void takeLocks(RegionState& r) {
  r.guarded.store(true);
  // A faultServe already past its check of `guarded` finishes first; every later one refuses.
  while (r.faultServes.load() != 0) sched_yield();
  releaseServicerLocks(r);
  // Zap events the dead servicer read but never applied are lost with it: holders must not wait
  // for them (settleZaps in lib/mm/zap.ts).
  __atomic_store_n(r.stat(layout::kZapBatchesDone), __atomic_load_n(r.stat(layout::kZapBatchesRead), __ATOMIC_SEQ_CST),
                   __ATOMIC_SEQ_CST);
}

// Faults the dead servicer read but never served: wakes their threads so they fault afresh, every
// page but those under a refusal's poison marker (fault.cc refuse), whose sleepers would fault into
// it (hwpoison) instead of waiting for the zap that takes it away; that zap's REMOVE wakes nobody,
// so they wake then, when the guard serves the page (the kernel retries a woken fault).
static void wakeAllButRefusals(RegionState& r) {
  uint32_t from = 0;
  for (uint32_t page = 0; page <= r.pages; page++) {
    if (page < r.pages && !(__atomic_load_n(r.state(page), __ATOMIC_ACQUIRE) & layout::kRefusalPoison)) continue;
    if (page > from) wake(r.uffd.get(), r.addr(from), uint64_t(page - from) * r.pageSize);
    from = page + 1;
  }
}

bool guardByWatchdog(RegionState& r) {
  // A borrower from before the check of `closed` on: retireRegion (a region closing, or its owner's
  // environment going away with the table it writes) waits for the takeover to finish.
  WatchdogPass hold(r);
  int mode = kGuardNone;
  if (r.closed.load() || !r.guardMode.compare_exchange_strong(mode, kGuardTaking)) return false;
  takeLocks(r);
  r.guardMode.store(kGuardWatchdog);
  wakeAllButRefusals(r);
  return true;
}

TakeOver takeOver(const std::shared_ptr<RegionState>& r, int* err) {
  int mode = r->guardMode.load();
  for (;;) {
    if (r->closed.load(std::memory_order_acquire) || mode == kGuardWatchdog || mode == kGuardThread) return TakeOver::Already;
    if (mode == kGuardTaking) {
      // The watchdog is putting its locks right, which takes a pagemap read per locked page.
      sched_yield();
      mode = r->guardMode.load();
      continue;
    }
    if (r->guardMode.compare_exchange_weak(mode, kGuardTaking)) break;
  }
  takeLocks(*r);
  if (!r->servicer.joinable()) {
    // The worker may have died of the very shortage that fails this eventfd (EMFILE at start-up).
    // The guard serves without it: the eventfd only makes its stop prompt, and a guard without one
    // looks at its stop flag every few milliseconds instead (servicer_thread.cc).
    int efd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (efd >= 0) r->wakeFd = UniqueFd(efd);
    try {
      startNativeServicer(r);
    } catch (const std::system_error& e) {
      // No thread (EAGAIN): nobody serves r. Say so rather than look guarded, and let a later try run.
      if (err) *err = e.code().value();
      r->guarded.store(false);
      r->guardMode.store(mode);
      return TakeOver::NoThread;
    }
  }
  r->guardMode.store(kGuardThread);
  wakeAllButRefusals(*r);
  return TakeOver::Done;
}

// regionTakeOver(region) -> true if this call took over (false: already guarded or closed); throws
// a SystemError (pthread_create) when no guard thread could be started.
static Napi::Value RegionTakeOver(const Napi::CallbackInfo& info) {
  auto r = argRegion(info, 0);
  int err = 0;
  TakeOver done = takeOver(r, &err);
  if (done == TakeOver::NoThread)
    throw systemError(info.Env(), err, "pthread_create", "starting a native guard to serve the region's faults");
  return Napi::Boolean::New(info.Env(), done == TakeOver::Done);
}

// regionGuarded(region) -> whether a native guard took over (it can happen while JS is blocked).
static Napi::Value RegionGuarded(const Napi::CallbackInfo& info) {
  auto r = regions().get(static_cast<int>(argU32(info, 0, "region")));
  return Napi::Boolean::New(info.Env(), r && r->guarded.load());
}

void initGuard(Napi::Env env, Napi::Object exports) {
  exports.Set("regionTakeOver", Napi::Function::New(env, RegionTakeOver));
  exports.Set("regionGuarded", Napi::Function::New(env, RegionGuarded));
}

}  // namespace uffdhmm
