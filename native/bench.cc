// Benchmark touchers: native threads that time each first touch with clock_gettime in the
// faulting thread (of one of our regions, or of plain anonymous memory: the no-userfaultfd floor),
// optionally recovering from a SIGBUS a driver raised on purpose. Percentiles are computed by the
// caller; this only records.
#include <napi.h>
#include <setjmp.h>
#include <signal.h>
#include <sys/mman.h>

#include <cerrno>
#include <cstring>
#include <thread>
#include <vector>

#include "bench.h"
#include "napi_util.h"
#include "region.h"

namespace uffdhmm {
namespace bench {

namespace {

// A toucher thread that may take SIGBUS on purpose (a driver refusing a page) jumps back here.
// Written once at thread start, before any touch: dynamic TLS is allocated on first use, which a
// signal handler must not be the one to do. Volatile: the stores around the touch would otherwise
// be dead to the compiler, which does not know a signal handler reads them.
thread_local sigjmp_buf* volatile tRecover = nullptr;
struct sigaction gRecoverPrevious;
uint64_t gRecoverBase = 0;
uint64_t gRecoverLength = 0;

}  // namespace

void chainSigbus(const struct sigaction& prev, int sig, siginfo_t* info, void* uctx) {
  if (prev.sa_flags & SA_SIGINFO) {
    if (prev.sa_sigaction) return prev.sa_sigaction(sig, info, uctx);
  } else if (prev.sa_handler != SIG_DFL && prev.sa_handler != SIG_IGN) {
    return prev.sa_handler(sig);
  }
  // Default action: the access repeats and the kernel delivers SIGBUS again, fatally.
  signal(SIGBUS, SIG_DFL);
  if (info->si_code <= 0) raise(SIGBUS);
}

namespace {

void onRecoverableSigbus(int sig, siginfo_t* info, void* uctx) {
  const uint64_t addr = reinterpret_cast<uint64_t>(info->si_addr);
  if (tRecover && addr - gRecoverBase < gRecoverLength) siglongjmp(*tRecover, 1);
  chainSigbus(gRecoverPrevious, sig, info, uctx);
}

inline void touch(volatile uint8_t* p, bool write) {
  if (write)
    *p = static_cast<uint8_t>(*p + 1);
  else
    (void)*p;
}

// One touch that may raise SIGBUS; false when it did. Its own frame, so the jump back restores
// nothing the caller's loop keeps in registers.
__attribute__((noinline)) bool touchRecovering(volatile uint8_t* p, bool write) {
  sigjmp_buf jb;
  if (sigsetjmp(jb, 1) != 0) {
    tRecover = nullptr;
    return false;
  }
  tRecover = &jb;
  touch(p, write);
  tRecover = nullptr;
  return true;
}

}  // namespace

// Thread t touches order[i] for every i with i % threads == t; out[i] is that touch's latency in ns.
void runTouchers(uint8_t* base, size_t pageSize, size_t pages, const Touches& a) {
  const bool recover = a.refused != nullptr;
  if (recover) {
    gRecoverBase = reinterpret_cast<uint64_t>(base);
    gRecoverLength = uint64_t(pages) * pageSize;
    struct sigaction sa;
    std::memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = onRecoverableSigbus;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGBUS, &sa, &gRecoverPrevious);
  }
  std::vector<std::thread> ts;
  for (uint32_t t = 0; t < a.threads; t++) {
    ts.emplace_back([=] {
      tRecover = nullptr;
      for (size_t i = t; i < a.n; i += a.threads) {
        uint32_t page = static_cast<uint32_t>(a.order[i]);
        if (page >= pages) {
          a.out[i] = -1;
          continue;
        }
        volatile uint8_t* p = base + size_t(page) * pageSize;
        const bool write = a.writes ? a.writes[i] != 0 : a.write;
        uint64_t t0 = nowNs();
        if (recover && !touchRecovering(p, write)) {
          a.refused[i] = 1;
          a.out[i] = static_cast<double>(nowNs() - t0);
          continue;
        }
        if (!recover) touch(p, write);
        a.out[i] = static_cast<double>(nowNs() - t0);
      }
    });
  }
  for (auto& th : ts) th.join();
  if (recover) sigaction(SIGBUS, &gRecoverPrevious, nullptr);
}

Touches touchArgs(const Napi::CallbackInfo& info, size_t first) {
  auto [order, n] = argInt32Array(info, first, "order");
  uint32_t threads = argU32(info, first + 1, "threads");
  if (threads < 1 || threads > 64) throw rangeError(info.Env(), "threads must be 1..64");
  auto [out, outLen] = argFloat64Array(info, first + 2, "out");
  if (outLen < n) throw rangeError(info.Env(), "out is shorter than order");
  Touches a;
  a.order = order;
  a.n = n;
  a.threads = threads;
  a.out = out;
  return a;
}

// An optional Uint8Array argument with one byte per touch; null when absent or undefined.
uint8_t* optionalTouchBytes(const Napi::CallbackInfo& info, size_t i, const char* name, size_t n) {
  if (info.Length() <= i || info[i].IsUndefined() || info[i].IsNull()) return nullptr;
  auto [bytes, len] = argBytes(info, i, name);
  if (len < n) throw rangeError(info.Env(), "a per-touch array is shorter than order");
  return bytes;
}

namespace {

// benchTouch(region, order: Int32Array, threads, out: Float64Array, write[, writes: Uint8Array,
// refused: Uint8Array]) touches pages of one of our regions from native threads; the region's own
// servicer serves the faults. With `refused`, a touch that raises SIGBUS (a driver's refusal) is
// marked there and the thread goes on.
Napi::Value BenchTouch(const Napi::CallbackInfo& info) {
  auto r = regions().get(static_cast<int>(argU32(info, 0, "region")));
  if (!r || r->closed.load()) throw codedError(info.Env(), "ERR_REGION_CLOSED", kRegionClosed);
  Touches a = touchArgs(info, 1);
  a.write = argBool(info, 4, "write");
  a.writes = optionalTouchBytes(info, 5, "writes", a.n);
  a.refused = optionalTouchBytes(info, 6, "refused", a.n);
  runTouchers(r->base, r->pageSize, r->pages, a);
  return info.Env().Undefined();
}

}  // namespace

// First touches of fresh anonymous memory, no userfaultfd: a read maps the shared zero page, a
// write allocates and zeroes a page (what UFFDIO_COPY's page allocation costs at the least).
void plainTouch(Napi::Env env, uint32_t pages, Touches a, bool write) {
  size_t ps = static_cast<size_t>(::sysconf(_SC_PAGESIZE));
  void* mem = ::mmap(nullptr, pages * ps, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (mem == MAP_FAILED) throw systemError(env, errno, "mmap");
  ::madvise(mem, pages * ps, MADV_NOHUGEPAGE);
  a.write = write;
  runTouchers(static_cast<uint8_t*>(mem), ps, pages, a);
  ::munmap(mem, pages * ps);
}

namespace {

// benchPlain(pages, order, threads, out): first reads of fresh anonymous memory, no userfaultfd.
Napi::Value BenchPlain(const Napi::CallbackInfo& info) {
  uint32_t pages = argU32(info, 0, "pages");
  plainTouch(info.Env(), pages, touchArgs(info, 1), false);
  return info.Env().Undefined();
}

// benchPlainTouch(pages, order, threads, out, write): benchPlain, with a choice of access.
Napi::Value BenchPlainTouch(const Napi::CallbackInfo& info) {
  uint32_t pages = argU32(info, 0, "pages");
  plainTouch(info.Env(), pages, touchArgs(info, 1), argBool(info, 4, "write"));
  return info.Env().Undefined();
}

}  // namespace

void initBenchTouch(Napi::Env env, Napi::Object exports) {
  exports.Set("benchTouch", Napi::Function::New(env, BenchTouch));
  exports.Set("benchPlain", Napi::Function::New(env, BenchPlain));
  exports.Set("benchPlainTouch", Napi::Function::New(env, BenchPlainTouch));
}

}  // namespace bench

void initBench(Napi::Env env, Napi::Object exports) {
  bench::initBenchTouch(env, exports);
  bench::initBenchHandlers(env, exports);
  bench::initBenchHost(env, exports);
  bench::initBenchMove(env, exports);
}

}  // namespace uffdhmm
