// Benchmark primitives: native toucher threads that time each first touch with clock_gettime in
// the faulting thread, the raw C userfaultfd handlers every servicer is compared against (a poll
// thread and an in-thread SIGBUS handler), the no-userfaultfd floor, host facts, CPU placement,
// and the memcpy+madvise migration baseline. Percentiles are computed by the caller; this only records.
#include <dirent.h>
#include <napi.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sched.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <time.h>

#include <sys/ioctl.h>

#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <algorithm>
#include <cstring>
#include <thread>
#include <vector>

#include "napi_util.h"
#include "region.h"
#include "dispatch.h"
#include "uffd.h"

namespace uffdhmm {

namespace {

inline uint64_t nowNs() {
  struct timespec ts;
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return uint64_t(ts.tv_sec) * 1000000000ull + uint64_t(ts.tv_nsec);
}

// A toucher thread that may take SIGBUS on purpose (a driver refusing a page) jumps back here.
// Written once at thread start, before any touch: dynamic TLS is allocated on first use, which a
// signal handler must not be the one to do. Volatile: the stores around the touch would otherwise
// be dead to the compiler, which does not know a signal handler reads them.
thread_local sigjmp_buf* volatile tRecover = nullptr;
struct sigaction gRecoverPrevious;
uint64_t gRecoverBase = 0;
uint64_t gRecoverLength = 0;

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

struct Touches {
  const int32_t* order;
  size_t n;
  uint32_t threads;
  double* out;
  // Per touch: nonzero to write (null: every touch reads, or every touch writes when `write`).
  const uint8_t* writes = nullptr;
  bool write = false;
  // Per touch, set to 1 when the touch raised SIGBUS (null: a SIGBUS is fatal, as it would be to
  // any program).
  uint8_t* refused = nullptr;
};

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

// The C handlers' source pages, populated once and kept for the process: every run of a benchmark
// copies from memory that exists, as device memory does, and none pays again for populating it
// (on a slow host a first touch costs 10 µs: seconds per run). Grown when a run needs more.
uint8_t* gSource = nullptr;
size_t gSourceLen = 0;

uint8_t* sharedSource(Napi::Env env, size_t len, size_t ps) {
  if (len <= gSourceLen) return gSource;
  void* s = ::mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (s == MAP_FAILED) throw systemError(env, errno, "mmap");
  auto* bytes = static_cast<uint8_t*>(s);
  ::madvise(bytes, len, MADV_NOHUGEPAGE);
  for (size_t off = 0; off < len; off += ps) std::memset(bytes + off, static_cast<int>(0x5a ^ (off / ps)), ps);
  if (gSource) ::munmap(gSource, gSourceLen);
  gSource = bytes;
  gSourceLen = len;
  return gSource;
}

// A region of `pages` pages registered (MISSING) with a fresh userfaultfd, and the source pages
// the C handlers copy from: one page per region page (distinct pages, as a device's memory is), or
// a single cache-hot page (the first of the same source).
struct CRegion {
  UniqueFd fd;
  uint8_t* mem = nullptr;
  size_t len = 0;
  uint8_t* source = nullptr;
  size_t ps = 0;
  bool hot = false;

  CRegion(Napi::Env env, uint32_t pages, bool hotSource, uint64_t features) {
    try {
      init(env, pages, hotSource, features);
    } catch (...) {
      release();
      throw;
    }
  }
  ~CRegion() { release(); }
  CRegion(const CRegion&) = delete;
  CRegion& operator=(const CRegion&) = delete;

  void init(Napi::Env env, uint32_t pages, bool hotSource, uint64_t features) {
    ps = static_cast<size_t>(::sysconf(_SC_PAGESIZE));
    hot = hotSource;
    // The touches are user-mode accesses: a user-mode-only userfaultfd serves them as well.
    OpenResult o = openUffd(true);
    if (!o.fd.valid()) throw systemError(env, o.err, "userfaultfd");
    fd = std::move(o.fd);
    int rc = apiHandshake(fd.get(), features, nullptr, nullptr);
    if (rc != 0) throw systemError(env, -rc, "ioctl(UFFDIO_API)");
    len = size_t(pages) * ps;
    source = sharedSource(env, hot ? ps : len, ps);
    const int flags = MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE;
    void* m = ::mmap(nullptr, len, PROT_READ | PROT_WRITE, flags, -1, 0);
    if (m == MAP_FAILED) throw systemError(env, errno, "mmap");
    mem = static_cast<uint8_t*>(m);
    ::madvise(mem, len, MADV_NOHUGEPAGE);
    rc = registerRange(fd.get(), reinterpret_cast<uint64_t>(mem), len, UFFDIO_REGISTER_MODE_MISSING, nullptr);
    if (rc != 0) throw systemError(env, -rc, "ioctl(UFFDIO_REGISTER)");
  }
  void release() {
    if (mem) ::munmap(mem, len);
    mem = nullptr;
  }

  uint64_t sourceFor(uint64_t pageAddr) const {
    return reinterpret_cast<uint64_t>(source) + (hot ? 0 : pageAddr - reinterpret_cast<uint64_t>(mem));
  }
};

// benchBaseline(pages, order, threads, out[, hot, writes]): the best simple C handler. A dedicated
// thread blocks in poll() on the userfaultfd, reads faults in batches and fills each page with one
// UFFDIO_COPY: from the device page of the same index (the same work a servicer does), or with
// `hot` from one cache-hot page. The same touchers as benchTouch time each fault.
Napi::Value BenchBaseline(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  uint32_t pages = argU32(info, 0, "pages");
  Touches a = touchArgs(info, 1);
  const bool hot = info.Length() > 4 && !info[4].IsUndefined() && argBool(info, 4, "hot");
  a.writes = optionalTouchBytes(info, 5, "writes", a.n);
  CRegion c(env, pages, hot, 0);
  UniqueFd stop(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  const int fd = c.fd.get();
  const size_t ps = c.ps;
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
        int rc = copy(fd, addr, c.sourceFor(addr), ps, 0, nullptr);
        if (rc == -EEXIST) wake(fd, addr, ps);
      }
    }
  });
  runTouchers(c.mem, ps, pages, a);
  uint64_t one = 1;
  (void)!::write(stop.get(), &one, sizeof one);
  handler.join();
  return env.Undefined();
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

// benchSigbus(pages, order, threads, out[, writes]): c-sigbus, a minimal in-thread handler
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
  runTouchers(c.mem, c.ps, pages, a);
  sigaction(SIGBUS, &gSigbusPrevious, nullptr);
  gSigbusRegion.store(nullptr, std::memory_order_release);
  return env.Undefined();
}

double medianOf(std::vector<double>& v) {
  std::nth_element(v.begin(), v.begin() + v.size() / 2, v.end());
  return v[v.size() / 2];
}

// benchHost(out: Float64Array): what this host charges everyone, userfaultfd or not. out[0]: a
// null system call (getppid, never cached by libc), ns, the median of 64 batches of 1000;
// out[1], out[2]: the median first read and first write of a fresh anonymous page, µs, over 4096
// pages. A slow host shows here as much as in any servicer.
Napi::Value BenchHost(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto [out, outLen] = argFloat64Array(info, 0, "out");
  if (outLen < 3) throw rangeError(env, "out must hold 3 values");
  std::vector<double> batches(64);
  for (auto& b : batches) {
    uint64_t t0 = nowNs();
    for (int i = 0; i < 1000; i++) (void)::syscall(SYS_getppid);
    b = static_cast<double>(nowNs() - t0) / 1000;
  }
  out[0] = medianOf(batches);
  const uint32_t pages = 4096;
  std::vector<int32_t> order(pages);
  for (uint32_t i = 0; i < pages; i++) order[i] = static_cast<int32_t>(i);
  std::vector<double> lat(pages);
  for (int w = 0; w < 2; w++) {
    Touches a;
    a.order = order.data();
    a.n = pages;
    a.threads = 1;
    a.out = lat.data();
    plainTouch(env, pages, a, w == 1);
    out[1 + w] = medianOf(lat) / 1000;
  }
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
  exports.Set("benchSigbus", Napi::Function::New(env, BenchSigbus));
  exports.Set("benchHost", Napi::Function::New(env, BenchHost));
  exports.Set("benchSetAffinity", Napi::Function::New(env, BenchSetAffinity));
  exports.Set("benchMigrateBaseline", Napi::Function::New(env, BenchMigrateBaseline));
}

}  // namespace uffdhmm
