// UFFDIO_MOVE (Linux 6.8+) against UFFDIO_COPY for bringing device pages back: a device page the
// process owns alone can be moved into place (no allocation, no copy), but it leaves a hole in the
// device store that the device fills again (a first touch) when it takes a page back. These
// entry points measure both sides, so the round trip can be compared honestly; no servicer uses
// MOVE, this only informs whether one should.
#include <napi.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <vector>

#include "bench.h"
#include "napi_util.h"
#include "uffd.h"

namespace uffdhmm {
namespace bench {

namespace {

// Layout of struct uffdio_move (Linux 6.8); named apart so it never clashes with newer headers.
struct UffdioMove {
  uint64_t dst;
  uint64_t src;
  uint64_t len;
  uint64_t mode;
  int64_t move;
};
constexpr unsigned long kUffdioMove = _IOWR(UFFDIO, _UFFDIO_MOVE, UffdioMove);

int movePages(int fd, uint64_t dst, uint64_t src, uint64_t len) {
  UffdioMove m = {dst, src, len, 0, 0};
  return ::ioctl(fd, kUffdioMove, &m) == 0 ? 0 : -errno;
}

// A byte that names its page, so a page moved or copied to the wrong place is caught.
inline uint8_t mark(size_t page) { return static_cast<uint8_t>(0xa5 ^ (page * 7)); }

// An anonymous private mapping without huge pages (MOVE splits a huge page first, which is not
// what a device page costs), unmapped on scope exit.
struct Mapping {
  uint8_t* mem = nullptr;
  size_t len = 0;
  Mapping(Napi::Env env, size_t bytes) : len(bytes) {
    void* m = ::mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (m == MAP_FAILED) throw systemError(env, errno, "mmap");
    mem = static_cast<uint8_t*>(m);
    ::madvise(mem, len, MADV_NOHUGEPAGE);
  }
  ~Mapping() { ::munmap(mem, len); }
  Mapping(const Mapping&) = delete;
  Mapping& operator=(const Mapping&) = delete;
  uint64_t addr(size_t off = 0) const { return reinterpret_cast<uint64_t>(mem) + off; }
  void fill(size_t ps) {
    for (size_t p = 0; p < len / ps; p++) std::memset(mem + p * ps, mark(p), ps);
  }
};

UniqueFd openMoveUffd(Napi::Env env) {
  OpenResult o = openUffd(true);
  if (!o.fd.valid()) throw systemError(env, o.err, "userfaultfd");
  int rc = apiHandshake(o.fd.get(), UFFD_FEATURE_MOVE, nullptr, nullptr);
  if (rc != 0) throw systemError(env, -rc, "ioctl(UFFDIO_API)", "asking for UFFD_FEATURE_MOVE");
  return std::move(o.fd);
}

void registerMissing(Napi::Env env, int fd, const Mapping& m) {
  int rc = registerRange(fd, m.addr(), m.len, UFFDIO_REGISTER_MODE_MISSING, nullptr);
  if (rc != 0) throw systemError(env, -rc, "ioctl(UFFDIO_REGISTER)");
}

// Whether every page holds its own mark; the caller reports a mismatch as a failed self-check.
bool marksHold(const uint8_t* mem, size_t pages, size_t ps) {
  for (size_t p = 0; p < pages; p++) {
    if (mem[p * ps] != mark(p) || mem[p * ps + ps - 1] != mark(p)) return false;
  }
  return true;
}

void mustCopy(Napi::Env env, int fd, uint64_t dst, uint64_t src, uint64_t len) {
  int rc = copy(fd, dst, src, len, 0, nullptr);
  if (rc != 0) throw systemError(env, -rc, "ioctl(UFFDIO_COPY)");
}

void mustMove(Napi::Env env, int fd, uint64_t dst, uint64_t src, uint64_t len) {
  int rc = movePages(fd, dst, src, len);
  if (rc != 0) throw systemError(env, -rc, "ioctl(UFFDIO_MOVE)");
}

void mustDontneed(Napi::Env env, const Mapping& m) {
  if (::madvise(m.mem, m.len, MADV_DONTNEED) != 0) throw systemError(env, errno, "madvise(MADV_DONTNEED)");
}

// benchMoveProbe() -> boolean: whether this kernel offers UFFD_FEATURE_MOVE.
Napi::Value BenchMoveProbe(const Napi::CallbackInfo& info) {
  OpenResult o = openUffd(true);
  if (!o.fd.valid()) return Napi::Boolean::New(info.Env(), false);
  uint64_t supported = 0;
  int rc = apiHandshake(o.fd.get(), 0, &supported, nullptr);
  return Napi::Boolean::New(info.Env(), rc == 0 && (supported & UFFD_FEATURE_MOVE) != 0);
}

// benchServe(pages, order, threads, out, move, around, stats) -> what went wrong | undefined: a raw poll handler thread, like
// c-baseline, whose device store is its own populated mapping; each fault brings back `around`
// pages from the faulting one on (fewer at the end, or one where a page of the run is already
// there) with one UFFDIO_MOVE (`move`) or one UFFDIO_COPY. Every page's data is checked after;
// pages holding the wrong data are named in the return value.
// stats[0]: faults served, stats[1]: ns spent in those ioctls (the handler's side of a fault).
Napi::Value BenchServe(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  uint32_t pages = argU32(info, 0, "pages");
  Touches a = touchArgs(info, 1);
  const bool move = argBool(info, 4, "move");
  const uint32_t around = argU32(info, 5, "around");
  auto [stats, statsLen] = argFloat64Array(info, 6, "stats");
  if (statsLen < 2) throw rangeError(env, "stats must hold 2 values");
  if (pages == 0 || around < 1 || around > 512) throw rangeError(env, "pages must be at least 1 and around 1..512");
  const size_t ps = static_cast<size_t>(::sysconf(_SC_PAGESIZE));
  Mapping store(env, size_t(pages) * ps);
  store.fill(ps);
  Mapping region(env, size_t(pages) * ps);
  UniqueFd uffd = openMoveUffd(env);
  registerMissing(env, uffd.get(), region);
  const int fd = uffd.get();
  int failed = 0;
  uint64_t ioctlNs = 0;
  uint64_t served = 0;
  PollHandler handler(fd, ps, [&](uint64_t addr) {
    const uint64_t off = addr - region.addr();
    const uint64_t count = std::min<uint64_t>(around, pages - off / ps);
    auto serve = [&](uint64_t len) {
      if (move) return movePages(fd, region.addr(off), store.addr(off), len);
      return copy(fd, region.addr(off), store.addr(off), len, 0, nullptr);
    };
    const uint64_t t0 = nowNs();
    int rc = serve(count * ps);
    ioctlNs += nowNs() - t0;
    served++;
    if (rc != 0 && rc != -EEXIST && count > 1) rc = serve(ps);
    if (rc == -EAGAIN) rc = serve(ps);
    if (rc == -EEXIST) rc = wake(fd, addr, ps);
    if (rc != 0) {
      // Reported after the run; the faulting thread must not wait forever meanwhile (a page
      // served wrong fails the data check).
      if (failed == 0) failed = -rc;
      if (copy(fd, addr, store.addr(off), ps, 0, nullptr) != 0) wake(fd, addr, ps);
    }
  });
  runTouchers(region.mem, ps, pages, a);
  handler.stop();
  if (failed != 0 && move) throw systemError(env, failed, "ioctl(UFFDIO_MOVE)");
  if (failed != 0) throw systemError(env, failed, "ioctl(UFFDIO_COPY)");
  stats[0] = double(served);
  stats[1] = double(ioctlNs);
  if (!marksHold(region.mem, pages, ps)) return Napi::String::New(env, move ? "pages served by UFFDIO_MOVE" : "pages served by UFFDIO_COPY");
  return env.Undefined();
}

// benchMoveBulk(pages, out: Float64Array) -> what went wrong | undefined: one round trip of `pages` pages each way, timed in ns:
// out[0] back by one UFFDIO_COPY from a populated device store; out[1] to the device by memcpy
// into that store's pages + MADV_DONTNEED (the pair the COPY design uses); out[2] back by one
// UFFDIO_MOVE; out[3] to the device by memcpy into the holes the MOVE left (first touches: the
// refill MOVE costs the device) + MADV_DONTNEED; out[4] to the device by one UFFDIO_MOVE into
// those holes (the store registered with the userfaultfd, as MOVE's destination must be);
// out[5], out[6]: back again one UFFDIO_COPY / one UFFDIO_MOVE per page.
Napi::Value BenchMoveBulk(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  uint32_t pages = argU32(info, 0, "pages");
  auto [out, outLen] = argFloat64Array(info, 1, "out");
  if (pages == 0) throw rangeError(env, "pages must be at least 1");
  if (outLen < 7) throw rangeError(env, "out must hold 7 values");
  const size_t ps = static_cast<size_t>(::sysconf(_SC_PAGESIZE));
  const size_t len = size_t(pages) * ps;
  Mapping store(env, len);
  store.fill(ps);
  Mapping cpu(env, len);
  UniqueFd uffd = openMoveUffd(env);
  const int fd = uffd.get();
  registerMissing(env, fd, cpu);
  auto toDeviceByCopy = [&] {
    std::memcpy(store.mem, cpu.mem, len);
    mustDontneed(env, cpu);
  };
  const char* wrong = nullptr;
  auto check = [&](const uint8_t* mem, const char* what) {
    if (!wrong && !marksHold(mem, pages, ps)) wrong = what;
  };
  uint64_t t0 = nowNs();
  mustCopy(env, fd, cpu.addr(), store.addr(), len);
  out[0] = double(nowNs() - t0);
  check(cpu.mem, "pages back by a bulk UFFDIO_COPY");
  t0 = nowNs();
  toDeviceByCopy();
  out[1] = double(nowNs() - t0);
  t0 = nowNs();
  mustMove(env, fd, cpu.addr(), store.addr(), len);
  out[2] = double(nowNs() - t0);
  check(cpu.mem, "pages back by a bulk UFFDIO_MOVE");
  t0 = nowNs();
  toDeviceByCopy();
  out[3] = double(nowNs() - t0);
  // Once more back by MOVE, untimed, then to the device by MOVE into the holes it left.
  mustMove(env, fd, cpu.addr(), store.addr(), len);
  registerMissing(env, fd, store);
  t0 = nowNs();
  mustMove(env, fd, store.addr(), cpu.addr(), len);
  out[4] = double(nowNs() - t0);
  check(store.mem, "pages moved to the device by a bulk UFFDIO_MOVE");
  unregisterRange(fd, store.addr(), len);
  // The same pages back one ioctl per page, as single faults are served, but with nothing waiting
  // to be woken: the kernel's work per served fault, without the wake-up and scheduling around it.
  mustDontneed(env, cpu);
  t0 = nowNs();
  for (size_t off = 0; off < len; off += ps) mustCopy(env, fd, cpu.addr(off), store.addr(off), ps);
  out[5] = double(nowNs() - t0);
  check(cpu.mem, "pages back by single-page UFFDIO_COPYs");
  mustDontneed(env, cpu);
  t0 = nowNs();
  for (size_t off = 0; off < len; off += ps) mustMove(env, fd, cpu.addr(off), store.addr(off), ps);
  out[6] = double(nowNs() - t0);
  check(cpu.mem, "pages back by single-page UFFDIO_MOVEs");
  if (wrong) return Napi::String::New(env, wrong);
  return env.Undefined();
}

}  // namespace

void initBenchMove(Napi::Env env, Napi::Object exports) {
  exports.Set("benchMoveProbe", Napi::Function::New(env, BenchMoveProbe));
  exports.Set("benchServe", Napi::Function::New(env, BenchServe));
  exports.Set("benchMoveBulk", Napi::Function::New(env, BenchMoveBulk));
}

}  // namespace bench
}  // namespace uffdhmm
