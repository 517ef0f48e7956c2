// Shared by the benchmark's native files: toucher threads that time each first touch in the
// faulting thread, and the userfaultfd region the raw C handlers serve.
#pragma once

#include <napi.h>
#include <poll.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <time.h>

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <thread>

#include <sys/mman.h>

#include "napi_util.h"
#include "dispatch.h"
#include "uffd.h"

namespace uffdhmm {
namespace bench {

inline uint64_t nowNs() {
  struct timespec ts;
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return uint64_t(ts.tv_sec) * 1000000000ull + uint64_t(ts.tv_nsec);
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
void runTouchers(uint8_t* base, size_t pageSize, size_t pages, const Touches& a);
// order, threads, out from info[first..first+2], checked.
Touches touchArgs(const Napi::CallbackInfo& info, size_t first);
// An optional Uint8Array argument with one byte per touch; null when absent or undefined.
uint8_t* optionalTouchBytes(const Napi::CallbackInfo& info, size_t i, const char* name, size_t n);
// First touches of `pages` fresh anonymous pages, no userfaultfd.
void plainTouch(Napi::Env env, uint32_t pages, Touches a, bool write);
// Hands a SIGBUS that is not ours to the handler installed before ours, or to the default action.
void chainSigbus(const struct sigaction& prev, int sig, siginfo_t* info, void* uctx);
// The hot baseline's one source page, populated once for the process.
uint8_t* hotSourcePage(Napi::Env env, size_t ps);
// `len` bytes of fresh source pages, each written by user space with its own pattern and not yet
// read by the kernel (munmap them when done).
uint8_t* freshSource(Napi::Env env, size_t len, size_t ps);

// A region of `pages` pages registered (MISSING) with a fresh userfaultfd, and the source pages
// the C handlers copy from: one page per region page, or a single cache-hot page.
//
// Distinct source pages are the same work as a servicer's only in the same state as its device
// pages: a migration wrote them from user space just before, and no kernel has read them yet. On a
// host that shadows the guest's page tables (PVM) the kernel's first read of each such page costs a
// host fault of its own (the bench's host.copy_fresh_source_us), which a source reused from an
// earlier run would not pay. So each run writes its own source, untimed, and unmaps it after.
struct CRegion {
  UniqueFd fd;
  uint8_t* mem = nullptr;
  size_t len = 0;
  uint8_t* source = nullptr;
  size_t ps = 0;
  bool hot = false;
  bool ownsSource = false;

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
    source = hot ? hotSourcePage(env, ps) : freshSource(env, len, ps);
    ownsSource = !hot;
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
    if (ownsSource && source) ::munmap(source, len);
    source = nullptr;
  }

  uint64_t sourceFor(uint64_t pageAddr) const {
    return reinterpret_cast<uint64_t>(source) + (hot ? 0 : pageAddr - reinterpret_cast<uint64_t>(mem));
  }
};

// A raw C handler thread: blocks in poll() on the userfaultfd, reads faults in batches and hands
// each faulting page's address to `serve` (which must answer it), until stop() or destruction.
class PollHandler {
 public:
  template <class Serve>
  PollHandler(int fd, size_t ps, Serve serve) : stop_(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) {
    thread_ = std::thread([this, fd, ps, serve]() mutable {
      struct pollfd fds[2] = {{fd, POLLIN, 0}, {stop_.get(), POLLIN, 0}};
      struct uffd_msg msgs[64];
      for (;;) {
        if (::poll(fds, 2, -1) < 0 && errno != EINTR) return;
        if (fds[1].revents & POLLIN) return;
        int n = readMessages(fd, msgs, 64);
        for (int i = 0; i < n; i++) {
          if (msgs[i].event == UFFD_EVENT_PAGEFAULT) serve(msgs[i].arg.pagefault.address & ~(uint64_t(ps) - 1));
        }
      }
    });
  }
  ~PollHandler() { stop(); }
  PollHandler(const PollHandler&) = delete;
  PollHandler& operator=(const PollHandler&) = delete;
  void stop() {
    if (!thread_.joinable()) return;
    uint64_t one = 1;
    (void)!::write(stop_.get(), &one, sizeof one);
    thread_.join();
  }

 private:
  UniqueFd stop_;
  std::thread thread_;
};

void initBenchHandlers(Napi::Env env, Napi::Object exports);
void initBenchHost(Napi::Env env, Napi::Object exports);
void initBenchMove(Napi::Env env, Napi::Object exports);

}  // namespace bench
}  // namespace uffdhmm
