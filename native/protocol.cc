// The addon's side of the shared-memory protocol, handed to JS so that test/layout.test.ts can hold
// lib/layout.ts against native/layout.h: a constant either side lacks, or a differing value, fails.
#include <linux/userfaultfd.h>
#include <napi.h>

#include "layout.h"

namespace uffdhmm {
namespace {

// Every constexpr of native/layout.h, by its C++ name; the test checks this list against the header.
#define PROTOCOL_CONSTANTS(X)                                                                                        \
  X(kFaultKernel) X(kRegionHeader) X(kStatFaults) X(kStatWriteFaults) X(kStatWpFaults) X(kStatKernelFaults)         \
  X(kStatMigratedBack) X(kStatZeroFills) X(kStatRefused) X(kUnlockSeq) X(kStatFillRetries) X(kStatFillRaced)       \
  X(kZapReading) X(kZapBatchesRead) X(kZapBatchesDone) X(kStatJsEntries) X(kUnlockWaiters) X(kKindMask) X(kKindNone)                \
  X(kKindPresent) X(kKindDevice) X(kKindPoison) X(kWrite) X(kLocked) X(kUnmapped) X(kZapping) X(kHuge)              \
  X(kZapPending) X(kHolderShift) X(kHolderMask) X(kHolderOwner) X(kHolderServicer) X(kHolderPeer) X(kRefusalPoison) X(kPmdSize) X(kDeviceShift) X(kMaxDeviceSlot) X(kTraceHeader) X(kTraceEnabled) X(kTraceNext)       \
  X(kTraceOverwritten) X(kTraceCapacity) X(kTraceStride) X(kTraceSeq) X(kTraceT0) X(kTracePage) X(kTraceFlags)      \
  X(kTraceTid) X(kTraceSlot) X(kTraceOutcome) X(kTraceServiceUs) X(kTracePfn) X(kTraceHookUs) X(kOutcomeMigrated) X(kOutcomeZeroPage)            \
  X(kOutcomeUnprotected) X(kOutcomeSigbus) X(kOutcomePageCache) X(kOutcomeWoken) X(kDeviceHeader) X(kDevLock)       \
  X(kDevFreeTop) X(kDevUsed) X(kDevFaults) X(kDevMigratedToDevice) X(kDevMigratedToRam) X(kDevFreed)                \
  X(kDevFailAlloc) X(kDevReleased) X(kDevReleasing) X(kReleaseWarm) X(kReleaseBatch) X(kDevLogFrees) X(kDevFreedLogged) X(kDevAskFault) X(kDevFreeing) X(kVerdictNone) X(kVerdictMigrate) X(kVerdictSigbus) X(kEventStride) X(kEventAsk) X(kForkStepStride) X(kForkOpRead) X(kForkOpWrite) X(kForkOpChecksum) X(kForkOpSleep)

// protocolConstants(): { kStatFaults: 0, …, UFFD_PAGEFAULT_FLAG_WRITE: 1, … }. The kernel's fault
// flags come along because lib/layout.ts restates them for the worker, which has no header to read.
Napi::Value protocolConstants(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object out = Napi::Object::New(env);
#define PROTOCOL_SET(name) out.Set(#name, Napi::Number::New(env, static_cast<double>(layout::name)));
  PROTOCOL_CONSTANTS(PROTOCOL_SET)
#undef PROTOCOL_SET
  out.Set("UFFD_PAGEFAULT_FLAG_WRITE", Napi::Number::New(env, UFFD_PAGEFAULT_FLAG_WRITE));
  out.Set("UFFD_PAGEFAULT_FLAG_WP", Napi::Number::New(env, UFFD_PAGEFAULT_FLAG_WP));
  out.Set("UFFD_PAGEFAULT_FLAG_MINOR", Napi::Number::New(env, UFFD_PAGEFAULT_FLAG_MINOR));
  return out;
}

}  // namespace

void initProtocol(Napi::Env env, Napi::Object exports) {
  exports.Set("protocolConstants", Napi::Function::New(env, protocolConstants, "protocolConstants"));
}

}  // namespace uffdhmm
