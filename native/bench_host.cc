// What the host charges every program (a null system call, a first touch), CPU placement for the
// one-CPU runs, and the memcpy+madvise migration baseline.
#include <dirent.h>
#include <fcntl.h>
#include <napi.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "bench.h"
#include "napi_util.h"
#include "proc.h"
#include "uffd.h"

namespace uffdhmm {
namespace bench {

namespace {

double medianOf(std::vector<double>& v) {
  std::nth_element(v.begin(), v.begin() + v.size() / 2, v.end());
  return v[v.size() / 2];
}

// Median µs of one UFFDIO_COPY per page of `into`, each page from the page of `from` at its index.
double copyMedianUs(Napi::Env env, CRegion& into, const uint8_t* from, uint32_t pages) {
  std::vector<double> lat(pages);
  for (uint32_t i = 0; i < pages; i++) {
    const uint64_t dst = reinterpret_cast<uint64_t>(into.mem) + uint64_t(i) * into.ps;
    const uint64_t t0 = nowNs();
    const int rc = copy(into.fd.get(), dst, reinterpret_cast<uint64_t>(from) + uint64_t(i) * into.ps, into.ps, 0, nullptr);
    lat[i] = static_cast<double>(nowNs() - t0);
    if (rc != 0) throw systemError(env, -rc, "ioctl(UFFDIO_COPY)");
  }
  return medianOf(lat) / 1000;
}

// benchHost(out: Float64Array): what this host charges everyone, userfaultfd or not. out[0]: a
// null system call (getppid, never cached by libc), ns, the median of 64 batches of 1000;
// out[1], out[2]: the median first read and first write of a fresh anonymous page, µs, over 4096
// pages. out[3], out[4]: the median UFFDIO_COPY of a page, µs, over 4096 pages, from source pages
// user space has just written and no kernel has read, then from the same pages again: a host that
// shadows the guest's page tables charges the kernel's first read of each user page (a device page
// a migration just wrote) with a host fault, others charge nothing. A slow host shows here as much
// as in any servicer.
Napi::Value BenchHost(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto [out, outLen] = argFloat64Array(info, 0, "out");
  if (outLen < 5) throw rangeError(env, "out must hold 5 values");
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
  CRegion first(env, pages, false, 0);
  out[3] = copyMedianUs(env, first, first.source, pages);
  // A second region (its own fresh pages to fill) copying from the first one's source again; its
  // own source is unused, so it takes the one-page hot source rather than writing 4096 pages.
  CRegion again(env, pages, true, 0);
  out[4] = copyMedianUs(env, again, first.source, pages);
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

// The C migration to the device again, doing what any migration that loses no concurrent write
// must do first, as migrate_vma does with its migration entries: stop writers
// (UFFDIO_WRITEPROTECT over the range) and find which pages hold data (/proc/self/pagemap, so a
// hole is never read through memory), then memcpy and MADV_DONTNEED. Returns ns, or -errno.
int64_t stopWritersMigration(uint8_t* ram, uint8_t* dev, size_t len, size_t ps) {
  OpenResult o = openUffd(true);
  if (!o.fd.valid()) return -o.err;
  const int fd = o.fd.get();
  int rc = apiHandshake(fd, 0, nullptr, nullptr);
  const uint64_t start = reinterpret_cast<uint64_t>(ram);
  if (rc == 0) rc = registerRange(fd, start, len, UFFDIO_REGISTER_MODE_MISSING | UFFDIO_REGISTER_MODE_WP, nullptr);
  if (rc != 0) return rc;
  UniqueFd pagemap(::open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC));
  if (!pagemap.valid()) return -errno;
  constexpr size_t kChunk = 512;
  uint64_t pm[kChunk];
  const uint64_t t0 = nowNs();
  rc = writeProtect(fd, start, len, true, false);
  if (rc != 0) return rc;
  for (size_t off = 0; off < len; off += kChunk * ps) {
    const size_t n = std::min(kChunk, (len - off) / ps);
    if (::pread(pagemap.get(), pm, n * sizeof(uint64_t), static_cast<off_t>((start + off) / ps * sizeof(uint64_t))) < 0) return -errno;
    for (size_t i = 0; i < n; i++) {
      if (pm[i] & (kPmPresent | kPmSwap)) std::memcpy(dev + off + i * ps, ram + off + i * ps, ps);
      else std::memset(dev + off + i * ps, 0, ps);
    }
  }
  if (::madvise(ram, len, MADV_DONTNEED) != 0) return -errno;
  const uint64_t t1 = nowNs();
  unregisterRange(fd, start, len);
  return static_cast<int64_t>(t1 - t0);
}

// benchMigrateBaseline(pages, out: Float64Array): the simplest C migration of `pages` pages, to
// compare region.migrate/migrateToRam with. To the device: memcpy into device memory, then
// madvise(MADV_DONTNEED) frees the CPU pages. Back: memcpy into the freed range, which the kernel
// refills page by page on first touch. out[0] and out[1] get the two times in ns. Both buffers
// are populated first, as a real device's memory and a used region would be. out[2]: the same
// migration to the device that first stops writers (stopWritersMigration), ns.
Napi::Value BenchMigrateBaseline(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  uint32_t pages = argU32(info, 0, "pages");
  auto [out, outLen] = argFloat64Array(info, 1, "out");
  if (pages == 0) throw rangeError(env, "pages must be at least 1");
  if (outLen < 3) throw rangeError(env, "out must hold 3 values");
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
  // The memory is as before the first round: the CPU's pages written by user space, the device's
  // populated.
  const int64_t stopped = rc == 0 ? stopWritersMigration(static_cast<uint8_t*>(ram), static_cast<uint8_t*>(dev), len, ps) : 0;
  ::munmap(ram, len);
  ::munmap(dev, len);
  if (rc != 0) throw systemError(env, e, "madvise(MADV_DONTNEED)");
  if (stopped < 0) throw systemError(env, static_cast<int>(-stopped), "userfaultfd", "the C migration baseline that stops writers first");
  out[0] = static_cast<double>(t1 - t0);
  out[1] = static_cast<double>(t2 - t1);
  out[2] = static_cast<double>(stopped);
  return env.Undefined();
}

}  // namespace

void initBenchHost(Napi::Env env, Napi::Object exports) {
  exports.Set("benchHost", Napi::Function::New(env, BenchHost));
  exports.Set("benchSetAffinity", Napi::Function::New(env, BenchSetAffinity));
  exports.Set("benchMigrateBaseline", Napi::Function::New(env, BenchMigrateBaseline));
}

}  // namespace bench
}  // namespace uffdhmm
