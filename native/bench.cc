// Benchmark primitives: native toucher threads that time each first touch with clock_gettime in
// the faulting thread, the raw C userfaultfd handler that every servicer is compared against, and
// the no-userfaultfd floor. Percentiles are computed by the caller; this only records.
#include <napi.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <time.h>

#include <cerrno>
#include <cstring>
#include <thread>
#include <vector>

#include "napi_util.h"
#include "region.h"
#include "servicer_thread.h"
#include "uffd.h"

namespace uffdhmm {

namespace {

inline uint64_t nowNs() {
  struct timespec ts;
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return uint64_t(ts.tv_sec) * 1000000000ull + uint64_t(ts.tv_nsec);
}

// Thread t touches order[i] for every i with i % threads == t; out[i] is that touch's latency in ns.
void runTouchers(uint8_t* base, size_t pageSize, size_t pages, const int32_t* order, size_t n, uint32_t threads,
                 double* out, bool write) {
  std::vector<std::thread> ts;
  for (uint32_t t = 0; t < threads; t++) {
    ts.emplace_back([=] {
      for (size_t i = t; i < n; i += threads) {
        uint32_t page = static_cast<uint32_t>(order[i]);
        if (page >= pages) {
          out[i] = -1;
          continue;
        }
        volatile uint8_t* p = base + size_t(page) * pageSize;
        uint64_t t0 = nowNs();
        if (write)
          *p = static_cast<uint8_t>(*p + 1);
        else
          (void)*p;
        uint64_t t1 = nowNs();
        out[i] = static_cast<double>(t1 - t0);
      }
    });
  }
  for (auto& th : ts) th.join();
}

struct Args {
  const int32_t* order;
  size_t n;
  uint32_t threads;
  double* out;
};

Args touchArgs(const Napi::CallbackInfo& info, size_t first) {
  auto [order, n] = argInt32Array(info, first, "order");
  uint32_t threads = argU32(info, first + 1, "threads");
  if (threads < 1 || threads > 64) throw rangeError(info.Env(), "threads must be 1..64");
  auto [out, outLen] = argFloat64Array(info, first + 2, "out");
  if (outLen < n) throw rangeError(info.Env(), "out is shorter than order");
  return {order, n, threads, out};
}

// benchTouch(region, order: Int32Array, threads, out: Float64Array, write) touches pages of one
// of our regions from native threads; the region's own servicer serves the faults.
Napi::Value BenchTouch(const Napi::CallbackInfo& info) {
  auto r = regions().get(static_cast<int>(argU32(info, 0, "region")));
  if (!r || r->closed.load()) throw codedError(info.Env(), "ERR_REGION_CLOSED", "the region is closed");
  Args a = touchArgs(info, 1);
  bool write = argBool(info, 4, "write");
  runTouchers(r->base, r->pageSize, r->pages, a.order, a.n, a.threads, a.out, write);
  return info.Env().Undefined();
}

// benchPlain(pages, order, threads, out): first touches of fresh anonymous memory, no userfaultfd.
Napi::Value BenchPlain(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  uint32_t pages = argU32(info, 0, "pages");
  Args a = touchArgs(info, 1);
  size_t ps = static_cast<size_t>(::sysconf(_SC_PAGESIZE));
  void* mem = ::mmap(nullptr, pages * ps, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (mem == MAP_FAILED) throw systemError(env, errno, "mmap");
  ::madvise(mem, pages * ps, MADV_NOHUGEPAGE);
  runTouchers(static_cast<uint8_t*>(mem), ps, pages, a.order, a.n, a.threads, a.out, false);
  ::munmap(mem, pages * ps);
  return env.Undefined();
}

// benchBaseline(pages, order, threads, out): the best simple C handler. A dedicated thread blocks
// in poll() on the userfaultfd, reads faults in batches and fills each page with one UFFDIO_COPY
// from a prepared source page. The same touchers as benchTouch time each fault.
Napi::Value BenchBaseline(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  uint32_t pages = argU32(info, 0, "pages");
  Args a = touchArgs(info, 1);
  size_t ps = static_cast<size_t>(::sysconf(_SC_PAGESIZE));
  OpenResult o = openUffd(false);
  if (!o.fd.valid()) throw systemError(env, o.err, "userfaultfd");
  int rc = apiHandshake(o.fd.get(), 0, nullptr, nullptr);
  if (rc != 0) throw systemError(env, -rc, "ioctl(UFFDIO_API)");
  size_t len = size_t(pages) * ps;
  void* mem = ::mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (mem == MAP_FAILED) throw systemError(env, errno, "mmap");
  ::madvise(mem, len, MADV_NOHUGEPAGE);
  rc = registerRange(o.fd.get(), reinterpret_cast<uint64_t>(mem), len, UFFDIO_REGISTER_MODE_MISSING, nullptr);
  if (rc != 0) {
    ::munmap(mem, len);
    throw systemError(env, -rc, "ioctl(UFFDIO_REGISTER)");
  }
  std::vector<uint8_t> source(ps, 0x5a);
  UniqueFd stop(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  const int fd = o.fd.get();
  std::thread handler([&] {
    struct pollfd fds[2] = {{fd, POLLIN, 0}, {stop.get(), POLLIN, 0}};
    struct uffd_msg msgs[64];
    for (;;) {
      if (::poll(fds, 2, -1) < 0 && errno != EINTR) return;
      if (fds[1].revents & POLLIN) return;
      int n = readMessages(fd, msgs, 64);
      for (int i = 0; i < n; i++) {
        if (msgs[i].event != UFFD_EVENT_PAGEFAULT) continue;
        uint64_t addr = msgs[i].arg.pagefault.address & ~(uint64_t(ps) - 1);
        int c = copy(fd, addr, reinterpret_cast<uint64_t>(source.data()), ps, 0, nullptr);
        if (c == -EEXIST) wake(fd, addr, ps);
      }
    }
  });
  runTouchers(static_cast<uint8_t*>(mem), ps, pages, a.order, a.n, a.threads, a.out, false);
  uint64_t one = 1;
  (void)!::write(stop.get(), &one, sizeof one);
  handler.join();
  ::munmap(mem, len);
  return env.Undefined();
}

}  // namespace

void initBench(Napi::Env env, Napi::Object exports) {
  exports.Set("benchTouch", Napi::Function::New(env, BenchTouch));
  exports.Set("benchPlain", Napi::Function::New(env, BenchPlain));
  exports.Set("benchBaseline", Napi::Function::New(env, BenchBaseline));
}

}  // namespace uffdhmm
