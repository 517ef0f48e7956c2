// The raw C userfaultfd handlers every servicer is compared against, doing the same work (one
// UFFDIO_COPY per fault from the page's own source page): a poll thread (c-baseline) and an
// in-thread SIGBUS handler (c-sigbus).
#include <napi.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>

#include "bench.h"
#include "napi_util.h"
#include "uffd.h"

namespace uffdhmm {
namespace bench {

namespace {

// c-baseline-hot's page: populated once and kept, so every copy reads memory the caches and the
// kernel have seen, which is what that run is for.
uint8_t* gHot = nullptr;

}  // namespace

uint8_t* freshSource(Napi::Env env, size_t len, size_t ps) {
  void* s = ::mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (s == MAP_FAILED) throw systemError(env, errno, "mmap");
  auto* bytes = static_cast<uint8_t*>(s);
  // Device pages are base pages; a THP source would copy from one TLB entry per 2 MiB.
  ::madvise(bytes, len, MADV_NOHUGEPAGE);
  for (size_t off = 0; off < len; off += ps) std::memset(bytes + off, static_cast<int>(0x5a ^ (off / ps)), ps);
  return bytes;
}

uint8_t* hotSourcePage(Napi::Env env, size_t ps) {
  if (!gHot) gHot = freshSource(env, ps, ps);
  return gHot;
}

namespace {

// benchBaseline(pages, order, threads, out[, hot, writes, around]) -> ns spent touching (the
// source's population and the mapping left out): the best simple C handler. A dedicated thread
// blocks in poll() on the userfaultfd, reads faults in batches and fills each page with one
// UFFDIO_COPY: from the device page of the same index (the same work a servicer does), or with
// `hot` from one cache-hot page. With `around` > 1 (c-fault-around-16) one UFFDIO_COPY fills the
// whole aligned block of `around` pages holding the fault from as many source pages: the floor of
// a fault-around servicer, which brings the same pages back. The same touchers as benchTouch time
// each fault.
Napi::Value BenchBaseline(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  uint32_t pages = argU32(info, 0, "pages");
  Touches a = touchArgs(info, 1);
  const bool hot = info.Length() > 4 && !info[4].IsUndefined() && argBool(info, 4, "hot");
  a.writes = optionalTouchBytes(info, 5, "writes", a.n);
  const uint32_t around = info.Length() > 6 && !info[6].IsUndefined() ? argU32(info, 6, "around") : 1;
  if (around < 1 || around > 512) throw rangeError(env, "around must be 1..512");
  if (hot && around > 1) throw rangeError(env, "a hot source serves one page at a time");
  CRegion c(env, pages, hot, 0);
  const int fd = c.fd.get();
  const size_t ps = c.ps;
  const uint64_t base = reinterpret_cast<uint64_t>(c.mem);
  const uint64_t block = uint64_t(around) * ps;
  PollHandler handler(fd, ps, [&](uint64_t addr) {
    if (around > 1) {
      const uint64_t first = base + (addr - base) / block * block;
      const uint64_t len = std::min<uint64_t>(block, base + c.len - first);
      // EEXIST: part of the block is already there (another order touched it): the one page then.
      if (copy(fd, first, c.sourceFor(first), len, 0, nullptr) != -EEXIST) return;
    }
    if (copy(fd, addr, c.sourceFor(addr), ps, 0, nullptr) == -EEXIST) wake(fd, addr, ps);
  });
  const uint64_t t0 = nowNs();
  runTouchers(c.mem, ps, pages, a);
  const uint64_t wall = nowNs() - t0;
  handler.stop();
  return Napi::Number::New(env, static_cast<double>(wall));
}

// The c-sigbus handler's region: one at a time (benchSigbus is synchronous on the main thread).
std::atomic<CRegion*> gSigbusRegion{nullptr};
struct sigaction gSigbusPrevious;

// The floor for an in-thread servicer: one UFFDIO_COPY from the page's source, then return.
void onBaselineSigbus(int sig, siginfo_t* info, void* uctx) {
  const CRegion* c = gSigbusRegion.load(std::memory_order_acquire);
  const uint64_t addr = reinterpret_cast<uint64_t>(info->si_addr);
  const uint64_t base = c ? reinterpret_cast<uint64_t>(c->mem) : 0;
  if (c && info->si_code == BUS_ADRERR && addr - base < c->len) {
    const uint64_t page = addr & ~(uint64_t(c->ps) - 1);
    const int savedErrno = errno;
    struct uffdio_copy cp;
    cp.dst = page;
    cp.src = c->sourceFor(page);
    cp.len = c->ps;
    cp.mode = 0;
    cp.copy = 0;
    // EEXIST: another thread's fault filled it; EAGAIN: retried by the access itself.
    int rc = ::ioctl(c->fd.get(), UFFDIO_COPY, &cp);
    errno = savedErrno;
    if (rc == 0 || errno == EEXIST || errno == EAGAIN) return;
  }
  chainSigbus(gSigbusPrevious, sig, info, uctx);
}

// benchSigbus(pages, order, threads, out[, writes]) -> ns spent touching: c-sigbus, a minimal in-thread handler
// (UFFD_FEATURE_SIGBUS): the faulting thread's SIGBUS handler fills the page with one UFFDIO_COPY
// from its own source page and returns. The floor for the 'inline' servicer.
Napi::Value BenchSigbus(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  uint32_t pages = argU32(info, 0, "pages");
  Touches a = touchArgs(info, 1);
  a.writes = optionalTouchBytes(info, 4, "writes", a.n);
  CRegion c(env, pages, false, UFFD_FEATURE_SIGBUS);
  struct sigaction sa;
  std::memset(&sa, 0, sizeof sa);
  sa.sa_sigaction = onBaselineSigbus;
  sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
  sigemptyset(&sa.sa_mask);
  gSigbusRegion.store(&c, std::memory_order_release);
  // Cannot fail: SIGBUS may always be caught, and both structs are ours.
  sigaction(SIGBUS, &sa, &gSigbusPrevious);
  const uint64_t t0 = nowNs();
  runTouchers(c.mem, c.ps, pages, a);
  const uint64_t wall = nowNs() - t0;
  sigaction(SIGBUS, &gSigbusPrevious, nullptr);
  gSigbusRegion.store(nullptr, std::memory_order_release);
  return Napi::Number::New(env, static_cast<double>(wall));
}

}  // namespace

void initBenchHandlers(Napi::Env env, Napi::Object exports) {
  exports.Set("benchBaseline", Napi::Function::New(env, BenchBaseline));
  exports.Set("benchSigbus", Napi::Function::New(env, BenchSigbus));
}

}  // namespace bench
}  // namespace uffdhmm
