// Benchmark primitives: native toucher threads that time each first touch with clock_gettime in
// the faulting thread, the raw C userfaultfd handler that every servicer is compared against, the
// no-userfaultfd floor, CPU placement, and the memcpy+madvise migration baseline. Percentiles are
// computed by the caller; this only records.
#include <dirent.h>
#include <napi.h>
#include <poll.h>
#include <sched.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <time.h>

#include <cerrno>
#include <cstdlib>
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
  if (!r || r->closed.load()) throw codedError(info.Env(), "ERR_REGION_CLOSED", kRegionClosed);
  Args a = touchArgs(info, 1);
  bool write = argBool(info, 4, "write");
  runTouchers(r->base, r->pageSize, r->pages, a.order, a.n, a.threads, a.out, write);
  return info.Env().Undefined();
}

// First touches of fresh anonymous memory, no userfaultfd: a read maps the shared zero page, a
// write allocates and zeroes a page (what UFFDIO_COPY's page allocation costs at the least).
void plainTouch(Napi::Env env, uint32_t pages, const Args& a, bool write) {
  size_t ps = static_cast<size_t>(::sysconf(_SC_PAGESIZE));
  void* mem = ::mmap(nullptr, pages * ps, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (mem == MAP_FAILED) throw systemError(env, errno, "mmap");
  ::madvise(mem, pages * ps, MADV_NOHUGEPAGE);
  runTouchers(static_cast<uint8_t*>(mem), ps, pages, a.order, a.n, a.threads, a.out, write);
  ::munmap(mem, pages * ps);
}

// benchPlain(pages, order, threads, out): first reads of fresh anonymous memory, no userfaultfd.
Napi::Value BenchPlain(const Napi::CallbackInfo& info) {
  uint32_t pages = argU32(info, 0, "pages");
  plainTouch(info.Env(), pages, touchArgs(info, 1), false);
  return info.Env().Undefined();
}

// benchPlainTouch(pages, order, threads, out, write): benchPlain, with a choice of access.
Napi::Value BenchPlainTouch(const Napi::CallbackInfo& info) {
  uint32_t pages = argU32(info, 0, "pages");
  Args a = touchArgs(info, 1);
  plainTouch(info.Env(), pages, a, argBool(info, 4, "write"));
  return info.Env().Undefined();
}

// benchBaseline(pages, order, threads, out): the best simple C handler. A dedicated thread blocks
// in poll() on the userfaultfd, reads faults in batches and fills each page with one UFFDIO_COPY
// from a prepared source page. The same touchers as benchTouch time each fault.
Napi::Value BenchBaseline(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  uint32_t pages = argU32(info, 0, "pages");
  Args a = touchArgs(info, 1);
  size_t ps = static_cast<size_t>(::sysconf(_SC_PAGESIZE));
  // The touches are user-mode accesses: a user-mode-only userfaultfd serves them as well.
  OpenResult o = openUffd(true);
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

std::vector<int32_t> cpuList(const cpu_set_t& set) {
  std::vector<int32_t> cpus;
  for (int c = 0; c < CPU_SETSIZE; c++)
    if (CPU_ISSET(c, &set)) cpus.push_back(c);
  return cpus;
}

// benchSetAffinity(cpus: Int32Array) -> Int32Array: moves every thread of the process (the
// servicer threads, the worker servicer, V8's helpers) onto `cpus`; threads started later inherit
// it from their creator. Returns the calling thread's CPUs before the call, to restore them.
// Placement decides fault latency on a VM: a wake-up across vCPUs costs more than the fault.
Napi::Value BenchSetAffinity(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto [cpus, n] = argInt32Array(info, 0, "cpus");
  if (n == 0) throw rangeError(env, "cpus must name at least one CPU");
  cpu_set_t set;
  CPU_ZERO(&set);
  for (size_t i = 0; i < n; i++) {
    if (cpus[i] < 0 || cpus[i] >= CPU_SETSIZE) throw rangeError(env, "cpu number out of range");
    CPU_SET(cpus[i], &set);
  }
  cpu_set_t before;
  if (::sched_getaffinity(0, sizeof before, &before) != 0) throw systemError(env, errno, "sched_getaffinity");
  DIR* dir = ::opendir("/proc/self/task");
  if (!dir) throw systemError(env, errno, "opendir(/proc/self/task)");
  int err = 0;
  while (struct dirent* d = ::readdir(dir)) {
    if (d->d_name[0] == '.') continue;
    pid_t tid = static_cast<pid_t>(std::strtol(d->d_name, nullptr, 10));
    // A thread that exits between the listing and the call is not an error.
    if (::sched_setaffinity(tid, sizeof set, &set) != 0 && errno != ESRCH) err = errno;
  }
  ::closedir(dir);
  if (err != 0)
    throw systemError(env, err, "sched_setaffinity", "moving the benchmark's threads onto the CPU it measures on",
                      err == EINVAL ? "that CPU is not one this process may run on (offline, or outside its cpuset); "
                                      "pass --cpu with one that `taskset -pc $$` lists"
                                    : nullptr);
  std::vector<int32_t> prev = cpuList(before);
  Napi::Int32Array out = Napi::Int32Array::New(env, prev.size());
  for (size_t i = 0; i < prev.size(); i++) out[i] = prev[i];
  return out;
}

// benchMigrateBaseline(pages, out: Float64Array): the simplest C migration of `pages` pages, to
// compare region.migrate/migrateToRam with. To the device: memcpy into device memory, then
// madvise(MADV_DONTNEED) frees the CPU pages. Back: memcpy into the freed range, which the kernel
// refills page by page on first touch. out[0] and out[1] get the two times in ns. Both buffers
// are populated first, as a real device's memory and a used region would be.
Napi::Value BenchMigrateBaseline(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  uint32_t pages = argU32(info, 0, "pages");
  auto [out, outLen] = argFloat64Array(info, 1, "out");
  if (pages == 0) throw rangeError(env, "pages must be at least 1");
  if (outLen < 2) throw rangeError(env, "out must hold 2 values");
  size_t ps = static_cast<size_t>(::sysconf(_SC_PAGESIZE));
  size_t len = size_t(pages) * ps;
  const int flags = MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE;
  void* ram = ::mmap(nullptr, len, PROT_READ | PROT_WRITE, flags, -1, 0);
  if (ram == MAP_FAILED) throw systemError(env, errno, "mmap");
  void* dev = ::mmap(nullptr, len, PROT_READ | PROT_WRITE, flags, -1, 0);
  if (dev == MAP_FAILED) {
    int e = errno;
    ::munmap(ram, len);
    throw systemError(env, e, "mmap");
  }
  // Regions are mapped without transparent huge pages; so is the baseline, or it would copy 2 MiB at a time.
  ::madvise(ram, len, MADV_NOHUGEPAGE);
  ::madvise(dev, len, MADV_NOHUGEPAGE);
  std::memset(ram, 0x5a, len);
  std::memset(dev, 0, len);
  uint64_t t0 = nowNs();
  std::memcpy(dev, ram, len);
  int rc = ::madvise(ram, len, MADV_DONTNEED);
  uint64_t t1 = nowNs();
  std::memcpy(ram, dev, len);
  uint64_t t2 = nowNs();
  int e = errno;
  ::munmap(ram, len);
  ::munmap(dev, len);
  if (rc != 0) throw systemError(env, e, "madvise(MADV_DONTNEED)");
  out[0] = static_cast<double>(t1 - t0);
  out[1] = static_cast<double>(t2 - t1);
  return env.Undefined();
}

}  // namespace

void initBench(Napi::Env env, Napi::Object exports) {
  exports.Set("benchTouch", Napi::Function::New(env, BenchTouch));
  exports.Set("benchPlain", Napi::Function::New(env, BenchPlain));
  exports.Set("benchBaseline", Napi::Function::New(env, BenchBaseline));
  exports.Set("benchPlainTouch", Napi::Function::New(env, BenchPlainTouch));
  exports.Set("benchSetAffinity", Napi::Function::New(env, BenchSetAffinity));
  exports.Set("benchMigrateBaseline", Napi::Function::New(env, BenchMigrateBaseline));
}

}  // namespace uffdhmm
