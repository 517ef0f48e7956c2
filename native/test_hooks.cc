// TEST ONLY: hooks that hold a servicer between reading a batch of messages and serving it
// (test/ordering.test.ts; see RegionState::testHoldBatches for why), cut a multi-page UFFDIO_COPY
// short (test/fill-partial.test.ts; testCutCopyPages), pause the engine in its race windows, poison
// pages and record SIGBUS, delay a worker's start (test/servicer-start.test.ts), make the library's
// own madvise fail (RegionState::testMadviseErrno), and zap a page behind the library's back from a
// native thread (test/migrate-zap-race.test.ts). Nothing in lib/ calls them.
#include <fcntl.h>
#include <napi.h>
#include <sys/mman.h>
#include <signal.h>
#include <unistd.h>
#include <time.h>

#include <algorithm>
#include <thread>
#include <mutex>
#include <memory>
#include <map>
#include <chrono>
#include <climits>
#include <cstring>
#include <string>

#include "device.h"
#include "napi_util.h"
#include "pagelock.h"
#include "refusal.h"
#include "region.h"
#include "span.h"

namespace uffdhmm {

// Waits as held batch (or pause) number testHeld + 1 until released, the hold's time is up, r closes
// or `stop` is set.
static void holdHere(RegionState& r, const std::atomic<bool>& stop) {
  const int me = r.testHeld.fetch_add(1) + 1;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(r.testHoldMs.load());
  while (r.testReleased.load() < me && std::chrono::steady_clock::now() < deadline &&
         !r.closed.load(std::memory_order_acquire) && !stop.load(std::memory_order_acquire)) {
    struct timespec ts = {0, 100 * 1000};
    nanosleep(&ts, nullptr);
  }
}

void testHoldPoint(RegionState& r, const std::atomic<bool>& stop) {
  if (r.testHoldBatches.load(std::memory_order_relaxed) <= 0) return;
  if (r.testHoldBatches.fetch_sub(1) <= 0) {
    r.testHoldBatches.fetch_add(1);  // released meanwhile
    return;
  }
  holdHere(r, stop);
}

void testPause(RegionState& r, int point) {
  int armed = r.testPausePoint.load(std::memory_order_relaxed);
  if (armed != point || !r.testPausePoint.compare_exchange_strong(armed, 0)) return;
  holdHere(r, r.stopServicer);
}

// TEST ONLY. testPauseAt(region, point, ms) -> pauses counted so far: the next engine thread to reach
// `point` (native/region.h, kTestPoint*) on the region waits there for at most `ms` (at most
// 10 s), or until testReleaseServicer. point 0 disarms.
static Napi::Value TestPauseAt(const Napi::CallbackInfo& info) {
  auto r = argRegion(info, 0);
  uint32_t point = argU32(info, 1, "point");
  uint32_t ms = argU32(info, 2, "ms");
  if (point > kTestPointSharerLocked || ms > 10000) throw rangeError(info.Env(), "point must be at most 2 and ms at most 10000");
  r->testHoldMs.store(static_cast<int>(ms));
  r->testReleased.store(r->testHeld.load());
  r->testPausePoint.store(static_cast<int>(point));
  return Napi::Number::New(info.Env(), r->testHeld.load());
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

// Whether [start, end) lies in one mapping of /proc/self/maps. The kernel refuses a UFFDIO_COPY
// that crosses a vma boundary before it fills anything (ENOENT), so a cut copy must not fill part
// of such a range. Async-signal-safe (the inline servicer's copies run in a signal handler): read(2)
// and hand parsing only.
static bool inOneMapping(uint64_t start, uint64_t end) {
  int fd = ::open("/proc/self/maps", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  char buf[4096];
  size_t have = 0;
  bool found = false, eof = false;
  while (!found && !eof) {
    ssize_t n = ::read(fd, buf + have, sizeof buf - have);
    if (n <= 0) eof = true;
    else have += size_t(n);
    size_t line = 0;
    for (size_t i = 0; i < have; i++) {
      if (buf[i] != '\n') continue;
      uint64_t lo = 0, hi = 0;
      size_t j = line;
      for (; j < i && buf[j] != '-'; j++) lo = lo * 16 + uint64_t(buf[j] <= '9' ? buf[j] - '0' : buf[j] - 'a' + 10);
      for (j++; j < i && buf[j] != ' '; j++) hi = hi * 16 + uint64_t(buf[j] <= '9' ? buf[j] - '0' : buf[j] - 'a' + 10);
      if (lo <= start && end <= hi) found = true;
      line = i + 1;
    }
    std::memmove(buf, buf + line, have - line);
    have -= line;
  }
  ::close(fd);
  return found;
}

uint32_t testCutCopy(RegionState& r, uint32_t page, uint32_t pages, bool* counted) {
  uint32_t cut = r.testCutCopyPages.load(std::memory_order_relaxed);
  if (cut == 0 || cut >= pages || !inOneMapping(r.addr(page), r.addr(page) + uint64_t(pages) * r.pageSize) ||
      !r.testCutCopyPages.compare_exchange_strong(cut, 0))
    return 0;
  *counted = !r.testCutCopyUncounted.load();
  return cut;
}

// TEST ONLY. testCutCopy(region, pages, counted = true): the region's next UFFDIO_COPY of more than
// `pages` pages (a fault-around run, a huge entry, a migration back) fills its first `pages` pages
// and stops with EAGAIN and that count, as the kernel's mfill_atomic does when it cannot go on; 0
// cancels. The only way to reach the engine's handling of partial progress on demand. counted
// false reports no progress: a table that lost track of pages the kernel has (what the engine did
// before it honoured the count), to check that such a page is put right on its next fault.
static Napi::Value TestCutCopy(const Napi::CallbackInfo& info) {
  auto r = argRegion(info, 0);
  r->testCutCopyUncounted.store(info.Length() > 2 && !argBool(info, 2, "counted"));
  r->testCutCopyPages.store(argU32(info, 1, "pages"));
  return info.Env().Undefined();
}

// TEST ONLY. testPoisonPage(region, page): the page becomes hardware poison (S8), as
// madvise(MADV_HWPOISON) would make it: its entry is dropped (a device page loses its reference)
// and a poison marker takes its place (UFFDIO_POISON), KIND_POISON in the table. The page must
// have no CPU page (a hole or a device entry). Refusals no longer leave poison: this is the only
// way a test reaches KIND_POISON.
static Napi::Value TestPoisonPage(const Napi::CallbackInfo& info) {
  const PageSpan span = argPages(info, 0, 1, 2);
  RegionState& r = *span.r;
  for (uint32_t page = span.first; page < span.first + span.count; page++) {
    int32_t* st = r.state(page);
    int32_t s = __atomic_load_n(st, __ATOMIC_ACQUIRE);
    if ((s & layout::kLocked) || !lockPage(st, s, layout::kHolderOwner)) throw rangeError(info.Env(), "the page is locked");
    const int32_t kind = s & layout::kKindMask;
    if (kind == layout::kKindPresent) {
      unlockPage(r, st, s);
      throw rangeError(info.Env(), "the page has a CPU page: discard it first");
    }
    int rc = poison(r.uffd.get(), r.addr(page), r.pageSize, kPoisonModeDontwake, nullptr);
    if (rc != 0) {
      unlockPage(r, st, s);
      throw rangeError(info.Env(), (std::string("the poison marker was refused: ") + std::strerror(-rc)).c_str());
    }
    if (kind == layout::kKindDevice) {
      auto dev = devices().get((s >> layout::kDeviceShift) & layout::kMaxDeviceSlot);
      if (dev) dev->putPage(static_cast<uint32_t>(st[1]));
    }
    st[1] = 0;
    unlockPage(r, st, layout::kKindPoison);
  }
  return info.Env().Undefined();
}

namespace {
std::atomic<int> gBusCount{0};
std::atomic<int> gBusCode{0};
std::atomic<uint64_t> gBusAddr{0};
void recordSigbus(int, siginfo_t* si, void*) {
  gBusCode.store(si->si_code);
  gBusAddr.store(reinterpret_cast<uint64_t>(si->si_addr));
  gBusCount.fetch_add(1);
}
}  // namespace

// TEST ONLY (a child process of test/semantics-sigbus.test.ts; not with inline regions, whose
// handler this replaces). testRecordSigbus(): from now on a SIGBUS is recorded and its handler
// returns, so the access is made again, as after any handler that returns. testSigbusRecord() ->
// [count, si_code of the last, si_addr of the last (bigint)].
static Napi::Value TestRecordSigbus(const Napi::CallbackInfo& info) {
  struct sigaction sa;
  std::memset(&sa, 0, sizeof sa);
  sa.sa_sigaction = recordSigbus;
  sa.sa_flags = SA_SIGINFO;
  sigemptyset(&sa.sa_mask);
  ::sigaction(SIGBUS, &sa, nullptr);
  return info.Env().Undefined();
}

static Napi::Value TestSigbusRecord(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Array out = Napi::Array::New(env, 3);
  out.Set(0u, Napi::Number::New(env, gBusCount.load()));
  out.Set(1u, Napi::Number::New(env, gBusCode.load()));
  out.Set(2u, Napi::BigInt::New(env, gBusAddr.load()));
  return out;
}

// TEST ONLY. testBlockRefusalSignal(block): the calling thread blocks (or unblocks) the signal a
// refusal travels by (native/refusal.cc), as a thread of a native library might.
static Napi::Value TestBlockRefusalSignal(const Napi::CallbackInfo& info) {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, refusalSignal());
  pthread_sigmask(argBool(info, 0, "block") ? SIG_BLOCK : SIG_UNBLOCK, &set, nullptr);
  return info.Env().Undefined();
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
  exports.Set("testFailMadvise", Napi::Function::New(env, TestFailMadvise));
  exports.Set("testZapperStart", Napi::Function::New(env, TestZapperStart));
  exports.Set("testZapperStop", Napi::Function::New(env, TestZapperStop));
  exports.Set("testBlockRefusalSignal", Napi::Function::New(env, TestBlockRefusalSignal));
  exports.Set("testPoisonPage", Napi::Function::New(env, TestPoisonPage));
  exports.Set("testRecordSigbus", Napi::Function::New(env, TestRecordSigbus));
  exports.Set("testSigbusRecord", Napi::Function::New(env, TestSigbusRecord));
  exports.Set("testCutCopy", Napi::Function::New(env, TestCutCopy));
  exports.Set("testPauseAt", Napi::Function::New(env, TestPauseAt));
  exports.Set("testHoldServicer", Napi::Function::New(env, TestHoldServicer));
  exports.Set("testReleaseServicer", Napi::Function::New(env, TestReleaseServicer));
}

}  // namespace uffdhmm
