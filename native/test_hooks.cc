// TEST ONLY: hooks that hold a servicer between reading a batch of messages and serving it
// (test/ordering.test.ts; see RegionState::testHoldBatches for why), delay a worker's start
// (test/servicer-start.test.ts), make the library's own madvise fail (RegionState::testMadviseErrno),
// and zap a page behind the library's back from a native thread (test/migrate-zap-race.test.ts).
// Nothing in lib/ calls them.
#include <napi.h>
#include <sys/mman.h>
#include <time.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <climits>
#include <map>
#include <memory>
#include <mutex>
#include <thread>

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

int testMadviseFault(RegionState& r) {
  if (r.testMadviseErrno.load(std::memory_order_relaxed) == 0) return 0;
  if (r.testMadviseSkip.fetch_sub(1) > 0) return 0;
  return r.testMadviseErrno.exchange(0);
}

// TEST ONLY. testFailMadvise(region, skip, errno): the region's next `skip` madvise calls through
// regionDiscard succeed, the one after fails with `errno` and changes nothing (one shot); errno 0
// disarms. See RegionState::testMadviseErrno.
static Napi::Value TestFailMadvise(const Napi::CallbackInfo& info) {
  auto r = argRegion(info, 0);
  uint32_t skip = argU32(info, 1, "skip");
  uint32_t err = argU32(info, 2, "errno");
  if (skip > 1000 || err > 4095) throw rangeError(info.Env(), "skip must be at most 1000 and errno at most 4095");
  r->testMadviseErrno.store(0);
  r->testMadviseSkip.store(static_cast<int>(skip));
  r->testMadviseErrno.store(static_cast<int>(err));
  return info.Env().Undefined();
}

// A thread that MADV_DONTNEEDs one page of a region over and over, as any other code in the process
// could: only the servicer's EVENT_REMOVE tells the library.
struct TestZapper {
  std::shared_ptr<RegionState> region;  // keeps the mapping until the thread is joined
  uint32_t page = 0;
  uint32_t intervalUs = 0;
  std::atomic<bool> stop{false};
  std::atomic<uint32_t> zaps{0};
  std::thread thread;
};

static std::mutex gZappersMu;
static std::map<int, std::unique_ptr<TestZapper>> gZappers;
static int gNextZapper = 1;

static void zapLoop(TestZapper* z) {
  RegionState& r = *z->region;
  while (!z->stop.load(std::memory_order_acquire) && !r.closed.load(std::memory_order_acquire)) {
    uint8_t* base = __atomic_load_n(&r.base, __ATOMIC_ACQUIRE);
    if (z->page < __atomic_load_n(&r.pages, __ATOMIC_ACQUIRE) && ::madvise(base + size_t(z->page) * r.pageSize, r.pageSize, MADV_DONTNEED) == 0)
      z->zaps.fetch_add(1, std::memory_order_relaxed);
    struct timespec ts = {0, long(z->intervalUs) * 1000};
    nanosleep(&ts, nullptr);
  }
}

// TEST ONLY. testZapperStart(region, page, intervalUs) -> id: starts a native thread that zaps
// `page` of the region (madvise MADV_DONTNEED, bypassing the table) every intervalUs (at least 100,
// at most 1 s) until testZapperStop(id) -> the zaps it made. Stop it before closing the region.
static Napi::Value TestZapperStart(const Napi::CallbackInfo& info) {
  auto r = argRegion(info, 0);
  uint32_t page = argU32(info, 1, "page");
  checkRange(info, *r, page, 1);
  uint32_t interval = argU32(info, 2, "intervalUs");
  if (interval < 100 || interval > 1000000) throw rangeError(info.Env(), "intervalUs must be from 100 to 1000000");
  auto z = std::make_unique<TestZapper>();
  z->region = r;
  z->page = page;
  z->intervalUs = interval;
  z->thread = std::thread(zapLoop, z.get());
  std::lock_guard<std::mutex> lock(gZappersMu);
  const int id = gNextZapper++;
  gZappers[id] = std::move(z);
  return Napi::Number::New(info.Env(), id);
}

static Napi::Value TestZapperStop(const Napi::CallbackInfo& info) {
  const int id = static_cast<int>(argU32(info, 0, "zapper"));
  std::unique_ptr<TestZapper> z;
  {
    std::lock_guard<std::mutex> lock(gZappersMu);
    auto it = gZappers.find(id);
    if (it == gZappers.end()) throw rangeError(info.Env(), "no such zapper");
    z = std::move(it->second);
    gZappers.erase(it);
  }
  z->stop.store(true, std::memory_order_release);
  z->thread.join();
  return Napi::Number::New(info.Env(), z->zaps.load());
}

void initTestHooks(Napi::Env env, Napi::Object exports) {
  exports.Set("testDelayWorkerAttach", Napi::Function::New(env, TestDelayWorkerAttach));
  exports.Set("testHoldServicer", Napi::Function::New(env, TestHoldServicer));
  exports.Set("testReleaseServicer", Napi::Function::New(env, TestReleaseServicer));
  exports.Set("testFailMadvise", Napi::Function::New(env, TestFailMadvise));
  exports.Set("testZapperStart", Napi::Function::New(env, TestZapperStart));
  exports.Set("testZapperStop", Napi::Function::New(env, TestZapperStop));
}

}  // namespace uffdhmm
