// Background toucher threads for tests and the soak: native threads that read or increment
// counters in a region's pages while JS keeps running (migrating, discarding, closing).
// They start and finish under JS control, and every wait on them has a deadline.
#include <napi.h>
#include <pthread.h>
#include <time.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <thread>
#include <vector>

#include "napi_util.h"
#include "region.h"
#include "registry.h"

namespace uffdhmm {

namespace {

struct Toucher {
  std::vector<std::thread> threads;
  std::mutex mu;
  std::condition_variable cv;
  int running = 0;
  std::atomic<bool> stop{false};
  std::vector<uint64_t> counts;  // touches made by each thread
  std::shared_ptr<RegionState> region;  // keeps the mapping alive while threads run
};

Registry<Toucher>& touchers() {
  static auto* registry = new Registry<Toucher>;  // never destroyed: threads may still use it during exit()
  return *registry;
}

// Mode 2 (lock) is uffd-stress's locking test: the page holds a process-private pthread mutex at
// byte 256, which starts as zeroed bytes (glibc's PTHREAD_MUTEX_INITIALIZER), and a page counter at
// byte 512. A contended lock sleeps in futex(2) on the page, where a device-resident page is a
// kernel-mode fault: waiters, faults taken inside the system call and migrations race.
constexpr size_t kLockOffset = 256;
constexpr size_t kPageCounterOffset = 512;
static_assert(kLockOffset >= 4 * 64 && kLockOffset + sizeof(pthread_mutex_t) <= kPageCounterOffset,
              "the mutex must sit between the 64 per-thread counters and the page counter");

// Zeroed bytes must be an unlocked mutex, or 'lock' mode would read garbage as a lock.
bool zeroIsUnlockedMutex() {
  static const pthread_mutex_t init = PTHREAD_MUTEX_INITIALIZER;
  static const unsigned char zero[sizeof(pthread_mutex_t)] = {};
  return std::memcmp(&init, zero, sizeof init) == 0;
}

// A small xorshift so every thread walks its own reproducible random sequence.
inline uint64_t next(uint64_t& s) {
  s ^= s << 13;
  s ^= s >> 7;
  s ^= s << 17;
  return s;
}

// toucherStart(region, threads, iterations, mode, seed, pages: Int32Array) -> handle
// Each thread makes `iterations` touches (0: until toucherStop) of pages chosen at random from `pages`.
// mode 0: read one byte. mode 1: increment the page's uint32 counter at offset 4*thread with an
// ordinary (non-atomic) read-modify-write, so a lost write shows as a short count. mode 2: under
// the page's mutex (above), a plain += 1 of the page counter and of the thread's counter.
Napi::Value ToucherStart(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto r = regions().get(static_cast<int>(argU32(info, 0, "region")));
  if (!r || r->closed.load()) throw codedError(env, "ERR_REGION_CLOSED", kRegionClosed);
  uint32_t nthreads = argU32(info, 1, "threads");
  uint32_t iterations = argU32(info, 2, "iterations");
  uint32_t mode = argU32(info, 3, "mode");
  uint32_t seed = argU32(info, 4, "seed");
  auto [pagesPtr, npages] = argInt32Array(info, 5, "pages");
  if (nthreads < 1 || nthreads > 64) throw rangeError(env, "threads must be 1..64");
  if (mode > 2) throw rangeError(env, "mode must be 0 (read), 1 (increment) or 2 (lock)");
  if (mode == 2 && (r->pageSize < kPageCounterOffset + 4 || !zeroIsUnlockedMutex()))
    throw rangeError(env, "lock mode needs pages of at least 516 bytes and a C library whose unlocked mutex is zeroed bytes");
  if (npages == 0) throw rangeError(env, "pages must not be empty");
  std::vector<uint32_t> pages(npages);
  for (size_t i = 0; i < npages; i++) {
    if (pagesPtr[i] < 0 || static_cast<size_t>(pagesPtr[i]) >= r->pages) throw rangeError(env, "page is outside the region");
    pages[i] = static_cast<uint32_t>(pagesPtr[i]);
  }
  auto t = std::make_shared<Toucher>();
  t->region = r;
  t->running = static_cast<int>(nthreads);
  r->activeTouchers.fetch_add(1);
  t->counts.assign(nthreads, 0);
  Toucher* tp = t.get();
  RegionState* rp = r.get();
  for (uint32_t k = 0; k < nthreads; k++) {
    t->threads.emplace_back([tp, rp, pages, iterations, mode, k, seed] {
      uint64_t s = (uint64_t(seed) << 32) ^ (0x9E3779B97F4A7C15ull * (k + 1));
      if (s == 0) s = 1;
      uint64_t done = 0;
      for (; iterations == 0 || done < iterations; done++) {
        if ((done & 255) == 0 && tp->stop.load(std::memory_order_relaxed)) break;
        uint32_t page = pages[next(s) % pages.size()];
        uint8_t* base = rp->base + size_t(page) * rp->pageSize;
        volatile uint32_t* p = reinterpret_cast<volatile uint32_t*>(base) + k;
        if (mode == 2) {
          auto* mu = reinterpret_cast<pthread_mutex_t*>(base + kLockOffset);
          volatile uint32_t* pageCount = reinterpret_cast<volatile uint32_t*>(base + kPageCounterOffset);
          pthread_mutex_lock(mu);
          *pageCount = *pageCount + 1;
          *p = *p + 1;
          pthread_mutex_unlock(mu);
        } else if (mode == 1) {
          *p = *p + 1;
        } else {
          (void)*p;
        }
      }
      tp->counts[k] = done;
      std::lock_guard<std::mutex> lock(tp->mu);
      if (--tp->running == 0) {
        rp->activeTouchers.fetch_sub(1);
        tp->cv.notify_all();
      }
    });
  }
  return Napi::Number::New(env, touchers().add(t));
}

// toucherStop(handle): asks every thread to finish after its current touch.
Napi::Value ToucherStop(const Napi::CallbackInfo& info) {
  auto t = touchers().get(static_cast<int>(argU32(info, 0, "toucher")));
  if (t) t->stop.store(true);
  return info.Env().Undefined();
}

// toucherWait(handle, timeoutMs, counts: Float64Array) -> true when every thread finished; then
// joins them and writes each thread's touch count into counts.
Napi::Value ToucherWait(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int h = static_cast<int>(argU32(info, 0, "toucher"));
  uint32_t timeout = argU32(info, 1, "timeoutMs");
  auto [counts, ncounts] = argFloat64Array(info, 2, "counts");
  auto t = touchers().get(h);
  if (!t) throw codedError(env, "ERR_TOUCHER_GONE", (std::string("no such toucher") + kInternal).c_str());
  if (ncounts < t->counts.size()) throw rangeError(env, "counts is shorter than the thread count");
  {
    std::unique_lock<std::mutex> lock(t->mu);
    if (!t->cv.wait_for(lock, std::chrono::milliseconds(timeout), [&] { return t->running == 0; }))
      return Napi::Boolean::New(env, false);
  }
  for (auto& th : t->threads) th.join();
  for (size_t k = 0; k < t->counts.size(); k++) counts[k] = static_cast<double>(t->counts[k]);
  touchers().remove(h);
  return Napi::Boolean::New(env, true);
}

}  // namespace

void initToucher(Napi::Env env, Napi::Object exports) {
  exports.Set("toucherStart", Napi::Function::New(env, ToucherStart));
  exports.Set("toucherWait", Napi::Function::New(env, ToucherWait));
  exports.Set("toucherStop", Napi::Function::New(env, ToucherStop));
}

}  // namespace uffdhmm
