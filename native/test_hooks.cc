// TEST ONLY: hooks that hold a servicer between reading a batch of messages and serving it, for
// test/ordering.test.ts, and that delay a worker's start, for test/servicer-start.test.ts (nothing
// in lib/ calls them). See RegionState::testHoldBatches for why.
#include <napi.h>
#include <time.h>

#include <algorithm>
#include <chrono>
#include <climits>

#include "napi_util.h"
#include "region.h"
#include "span.h"

namespace uffdhmm {

void testHoldPoint(RegionState& r, const std::atomic<bool>& stop) {
  if (r.testHoldBatches.load(std::memory_order_relaxed) <= 0) return;
  if (r.testHoldBatches.fetch_sub(1) <= 0) {
    r.testHoldBatches.fetch_add(1);  // released meanwhile
    return;
  }
  const int me = r.testHeld.fetch_add(1) + 1;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(r.testHoldMs.load());
  while (r.testReleased.load() < me && std::chrono::steady_clock::now() < deadline &&
         !r.closed.load(std::memory_order_acquire) && !stop.load(std::memory_order_acquire)) {
    struct timespec ts = {0, 100 * 1000};
    nanosleep(&ts, nullptr);
  }
}

// TEST ONLY. testHoldServicer(region, batches, ms) -> batches held so far: the servicer holds each of
// the next `batches` batches it reads between reading and serving them, for at most `ms` each
// (at most 10 s), or until testReleaseServicer. batches 0 only asks the count. See RegionState.
static Napi::Value TestHoldServicer(const Napi::CallbackInfo& info) {
  auto r = argRegion(info, 0);
  uint32_t batches = argU32(info, 1, "batches");
  uint32_t ms = argU32(info, 2, "ms");
  if (batches > 64 || ms > 10000) throw rangeError(info.Env(), "batches must be at most 64 and ms at most 10000");
  if (batches > 0) {
    r->testHoldMs.store(static_cast<int>(ms));
    r->testReleased.store(r->testHeld.load());  // batches held from now on wait for a new release
    r->testHoldBatches.store(static_cast<int>(batches));
  }
  return Napi::Number::New(info.Env(), r->testHeld.load());
}

// TEST ONLY. testReleaseServicer(region, upTo) -> batches held so far: lets held batches number
// 1..upTo go (numbered as testHoldServicer counts them); upTo 0 lets every batch go and cancels the
// holds not taken yet.
static Napi::Value TestReleaseServicer(const Napi::CallbackInfo& info) {
  auto r = argRegion(info, 0);
  int upTo = static_cast<int>(std::min<uint32_t>(argU32(info, 1, "upTo"), INT32_MAX));
  if (upTo == 0) {
    r->testHoldBatches.store(0);
    upTo = INT32_MAX;  // every batch, even one being held just now
  }
  int seen = r->testReleased.load();
  while (seen < upTo && !r->testReleased.compare_exchange_weak(seen, upTo)) {
  }
  return Napi::Number::New(info.Env(), r->testHeld.load());
}

std::atomic<uint32_t> gTestAttachDelayMs{0};

// TEST ONLY. testDelayWorkerAttach(ms): the next worker servicer waits `ms` (at most 15 s) before it
// attaches to its poller, its thread alive: a worker slow to start (test/servicer-start.test.ts).
static Napi::Value TestDelayWorkerAttach(const Napi::CallbackInfo& info) {
  uint32_t ms = argU32(info, 0, "ms");
  if (ms > 15000) throw rangeError(info.Env(), "ms must be at most 15000");
  gTestAttachDelayMs.store(ms);
  return info.Env().Undefined();
}

void initTestHooks(Napi::Env env, Napi::Object exports) {
  exports.Set("testDelayWorkerAttach", Napi::Function::New(env, TestDelayWorkerAttach));
  exports.Set("testHoldServicer", Napi::Function::New(env, TestHoldServicer));
  exports.Set("testReleaseServicer", Napi::Function::New(env, TestReleaseServicer));
}

}  // namespace uffdhmm
