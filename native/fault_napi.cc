// The fault engine's two entries for JS: the worker servicer's faultServe, once a driver's fault
// hook has decided, and Region#migrateToRam's fill (regionFillFromDevice). Everything else about a
// fault is done in native code (fault.h, dispatch.h).
#include <napi.h>

#include <cerrno>

#include "device.h"
#include "dispatch.h"
#include "fault.h"
#include "napi_util.h"
#include "refusal.h"
#include "span.h"

namespace uffdhmm {
namespace {

// Return codes of faultServe; lib/servicer/policy.ts names them.
constexpr int kServed = 0;
constexpr int kDeferred = 1;
constexpr int kAsk = 2;
constexpr int kFailed = 3;
// The driver refused a fault taken inside a system call that cannot be failed here (the thread blocks
// the refusal signal, or no UFFDIO_POISON; native/refusal.cc): served by the default policy
// instead; the caller reports it.
constexpr int kServedNotRefused = 4;
// The driver refused a fault taken inside a system call, and it failed: a poison marker stands in
// the page's pte until this servicer reads the zap that takes it away (the caller reads events next).
constexpr int kRefusedInSyscall = 5;

// faultServe(region, page, flags, tid, t0Us, verdict, state, pfn, held, offset[, hookUs]) -> 0 served, 1 deferred
// (keep the verdict and try again), 2 ask the driver about the entry the page holds now (the page
// is locked for the caller: serve it with held), 3 failed (the thread was woken to fault afresh),
// 4 served by migration although the driver refused (the refusal could not reach the thread), 5
// refused inside a system call (read events before asking any other hook).
// offset: the faulting address's offset in the page (the ask record's), where a refusal points.
// verdict/state/pfn: the driver's decision and the entry it was for. held: the caller holds the
// page locked since an ask (a pollerWait record or a 2 from here); verdict 0 then just unlocks it.
// After a takeover of the region by a guard: 3, and nothing done.
// All in one call, so that a worker terminated at any point leaves nothing half done.
Napi::Value FaultServe(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto r = argRegion(info, 0);
  const uint32_t page = argU32(info, 1, "page");
  checkRange(info, *r, page, 1);
  const uint32_t flags = argU32(info, 2, "flags");
  const uint32_t tid = argU32(info, 3, "tid");
  const double t0Us = info[4].As<Napi::Number>().DoubleValue();
  Carried carried;
  carried.verdict = static_cast<int32_t>(argU32(info, 5, "verdict"));
  if (carried.verdict > layout::kVerdictSigbus) throw rangeError(env, "verdict must be 0, 1 or 2");
  carried.state = static_cast<int32_t>(argU32(info, 6, "state"));
  carried.pfn = argU32(info, 7, "pfn");
  const bool held = argBool(info, 8, "held");
  carried.offset = info.Length() > 9 ? argU32(info, 9, "offset") : 0;
  if (carried.offset >= r->pageSize) throw rangeError(env, "offset must be less than the page size");
  // Optional: how long the driver's fault hook took (µs), recorded in the fault's trace record.
  if (info.Length() > 10 && info[10].IsNumber()) carried.hookUs = info[10].As<Napi::Number>().DoubleValue();
  const int32_t verdictGiven = carried.verdict;
  // A takeover (guard.cc) waits for calls in progress, then releases the pages this servicer held:
  // from then on every call refuses, since the pages are no longer its own (their threads were
  // woken to fault afresh, for the guard).
  struct InServe {
    RegionState& r;
    explicit InServe(RegionState& region) : r(region) { r.faultServes.fetch_add(1); }
    ~InServe() { r.faultServes.fetch_sub(1); }
  } inServe(*r);
  if (r->guarded.load()) return Napi::Number::New(env, kFailed);
  if (held && !heldBy(__atomic_load_n(r->state(page), __ATOMIC_ACQUIRE), layout::kHolderServicer))
    throw rangeError(env, "held: the page is not locked for the servicer");
  switch (serveFault(*r, page, flags, tid, t0Us > 0 ? static_cast<uint64_t>(t0Us * 1000.0) : 0, &carried, held)) {
    case Served::Done:
      return Napi::Number::New(env, carried.verdict != verdictGiven ? kServedNotRefused : carried.refusedInSyscall ? kRefusedInSyscall : kServed);
    case Served::Deferred:
      return Napi::Number::New(env, kDeferred);
    case Served::Ask:
      return Napi::Number::New(env, kAsk);
    case Served::Failed:
      break;
  }
  wake(r->uffd.get(), r->addr(page), r->pageSize);
  return Napi::Number::New(env, kFailed);
}

// regionFillFromDevice(region, page, count, device, pfn, writeProtect) -> 0 | -errno: see
// fillFromDevice in fault.h. The caller holds the pages locked.
Napi::Value RegionFillFromDevice(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const PageSpan span = argPages(info, 0, 1, 2);
  RegionState& r = *span.r;
  const uint32_t page = span.first, count = span.count;
  if (count < 1) throw rangeError(env, "count must be at least 1");
  auto dev = devices().get(static_cast<int>(argU32(info, 3, "device")));
  if (!dev) throw codedError(env, "ERR_DEVICE_CLOSED", kDeviceClosed);
  const uint32_t pfn = argU32(info, 4, "pfn");
  if (pfn >= dev->capacity || count > dev->capacity - pfn) throw rangeError(env, "pfn run is outside the device's memory");
  return Napi::Number::New(env, fillFromDevice(r, page, *dev, pfn, count, argBool(info, 5, "writeProtect")));
}

}  // namespace

void initFault(Napi::Env env, Napi::Object exports) {
  installRefusalHandler();
  exports.Set("faultServe", Napi::Function::New(env, FaultServe, "faultServe"));
  exports.Set("regionFillFromDevice", Napi::Function::New(env, RegionFillFromDevice, "regionFillFromDevice"));
}

}  // namespace uffdhmm
