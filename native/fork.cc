// region.fork(steps): fork a child that runs a few memory steps in native code only (a forked Node
// process cannot run JS), with EVENT_FORK so its faults arrive on its own userfaultfd. A native
// thread in the parent serves those faults from the same device pages; another collects the
// child's results from a pipe and its exit status, then drops the child's device references.
#include <napi.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <mutex>
#include <thread>
#include <vector>

#include "device.h"
#include "napi_util.h"
#include "fault.h"
#include "region.h"
#include "registry.h"
#include "servicer_thread.h"

namespace uffdhmm {

namespace {

// The step encoding is the protocol's (layout.h, kForkOp*).
using layout::kForkOpChecksum;
using layout::kForkOpRead;
using layout::kForkOpSleep;
using layout::kForkOpWrite;
using layout::kForkStepStride;
constexpr int kMaxSteps = 4096;

struct ForkJob {
  pid_t pid = -1;
  UniqueFd go;  // closing it (or writing to it) lets the child start its steps
  std::shared_ptr<RegionState> child;
  std::shared_ptr<RegionState> parent;
  std::thread waiter;
  std::atomic<bool> done{false};
  std::mutex reapMu;    // orders a kill from retireForkJobsOf against the waiter's waitpid
  bool reaped = false;  // the pid is gone (and may be reused): never signal it again
  const void* ownerEnv = nullptr;
  std::vector<double> results;
  int exitCode = -1;
  int termSignal = 0;
};

Registry<ForkJob>& jobs() {
  static auto* registry = new Registry<ForkJob>;  // never destroyed: threads may still use it during exit()
  return *registry;
}

// Runs in the child after fork(): only async-signal-safe calls, then _exit.
[[noreturn]] void runChild(const RegionState& r, const int32_t* steps, int n, int out, int go, int goWriteEnd) {
  // Wait for the parent to finish the fork's bookkeeping (it holds every page locked until then):
  // EOF once the parent closes its write end, so ours must go first.
  close(goWriteEnd);
  char byte;
  while (read(go, &byte, 1) < 0 && errno == EINTR) {
  }
  for (int i = 0; i < n; i++) {
    const int32_t* st = steps + kForkStepStride * i;
    double result = 0;
    switch (st[0]) {
      case kForkOpRead:
        result = *reinterpret_cast<volatile uint8_t*>(r.base + size_t(st[1]) * r.pageSize + st[2]);
        break;
      case kForkOpWrite:
        *reinterpret_cast<volatile uint8_t*>(r.base + size_t(st[1]) * r.pageSize + st[2]) = static_cast<uint8_t>(st[3]);
        break;
      case kForkOpChecksum:
        result = crc32(0, r.base + size_t(st[1]) * r.pageSize, size_t(st[2]) * r.pageSize);
        break;
      case kForkOpSleep: {
        struct timespec ts = {st[1] / 1000, (st[1] % 1000) * 1000000L};
        while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
        }
        break;
      }
      default:
        _exit(3);
    }
    const char* p = reinterpret_cast<const char*>(&result);
    size_t left = sizeof result;
    while (left > 0) {
      ssize_t w = write(out, p, left);
      if (w < 0 && errno == EINTR) continue;
      if (w <= 0) _exit(4);
      p += w;
      left -= size_t(w);
    }
  }
  _exit(0);
}

// Locks page `page` of a child's table, waiting out its holder (a servicer migrating it back, which
// takes microseconds and waits for no one); returns the state it held, or -1 past the deadline.
int32_t lockChildPage(RegionState& c, uint32_t page) {
  int32_t* st = c.state(page);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  for (int spins = 0;; spins++) {
    int32_t s = __atomic_load_n(st, __ATOMIC_ACQUIRE);
    if (!(s & layout::kLocked) && lockPage(st, s, layout::kHolderPeer)) return s;
    if (spins > 64) {
      if (std::chrono::steady_clock::now() > deadline) return -1;
      struct timespec ts = {0, 20 * 1000};
      nanosleep(&ts, nullptr);
    }
  }
}

// The child is gone: its mappings are too, so each device entry it still held drops its reference.
// Under each page's lock: device removal may be migrating the same entries back (evictChild).
void releaseChild(RegionState& c) {
  for (uint32_t page = 0; page < c.pages; page++) {
    int32_t* st = c.state(page);
    if ((__atomic_load_n(st, __ATOMIC_ACQUIRE) & layout::kKindMask) != layout::kKindDevice) continue;
    int32_t s = lockChildPage(c, page);
    if (s < 0) s = unlocked(__atomic_load_n(st, __ATOMIC_ACQUIRE));  // its holder is gone with the child
    if ((s & layout::kKindMask) == layout::kKindDevice) {
      auto dev = devices().get((s >> layout::kDeviceShift) & layout::kMaxDeviceSlot);
      if (dev) dev->putPage(static_cast<uint32_t>(st[1]));
      st[1] = 0;
      s = layout::kKindNone;
    }
    __atomic_store_n(st, s, __ATOMIC_RELEASE);
    noteUnlock(c);
  }
}

// Device removal for one live child (dmirror_device_evict_chunk reaches every mapping through the
// rmap): each of its entries on device `slot` migrates back into the child, where it stays as the
// copy-on-write view the child would have had. Returns 0, or the first -errno of a fill that failed
// (that entry stays, with its reference).
int evictChild(RegionState& c, int slot, DeviceStore& dev) {
  int firstErr = 0;
  for (uint32_t page = 0; page < c.pages; page++) {
    int32_t* st = c.state(page);
    int32_t seen = __atomic_load_n(st, __ATOMIC_ACQUIRE);
    if ((seen & layout::kKindMask) != layout::kKindDevice || ((seen >> layout::kDeviceShift) & layout::kMaxDeviceSlot) != slot) continue;
    const int32_t s = lockChildPage(c, page);
    if (s < 0) {
      if (!firstErr) firstErr = -ETIMEDOUT;
      continue;
    }
    if ((s & layout::kKindMask) != layout::kKindDevice || ((s >> layout::kDeviceShift) & layout::kMaxDeviceSlot) != slot) {
      __atomic_store_n(st, s, __ATOMIC_RELEASE);  // migrated back meanwhile
      noteUnlock(c);
      continue;
    }
    const uint32_t pfn = static_cast<uint32_t>(st[1]);
    const bool write = s & layout::kWrite;
    int rc = -EAGAIN;
    // EAGAIN: the child's mm is changing (an event its servicer has not read yet); it reads it soon.
    for (int tries = 0; rc == -EAGAIN && tries < 5000; tries++) {
      rc = copy(c.uffd.get(), c.addr(page), reinterpret_cast<uint64_t>(dev.page(pfn)), c.pageSize,
                UFFDIO_COPY_MODE_DONTWAKE | (write ? 0 : UFFDIO_COPY_MODE_WP), nullptr);
      if (rc == -EAGAIN) {
        struct timespec ts = {0, 100 * 1000};
        nanosleep(&ts, nullptr);
      }
    }
    if (rc == -EEXIST) __atomic_fetch_add(c.stat(layout::kStatFillRaced), 1, __ATOMIC_RELAXED);
    // ESRCH: the child has exited (its mm is gone); ENOENT: its mapping is gone with it, as it
    // exits. Nothing to fill: the entry only drops its reference, as releaseChild would.
    const bool gone = rc == -ESRCH || rc == -ENOENT;
    if (rc != 0 && rc != -EEXIST && !gone) {
      if (!firstErr) firstErr = rc;
      __atomic_store_n(st, s, __ATOMIC_RELEASE);
      noteUnlock(c);
      continue;
    }
    st[1] = 0;
    __atomic_store_n(st, gone ? layout::kKindNone : layout::kKindPresent | (write ? layout::kWrite : 0), __ATOMIC_RELEASE);
    noteUnlock(c);
    dev.putPage(pfn);
    if (!gone) {
      __atomic_fetch_add(c.stat(layout::kStatMigratedBack), 1, __ATOMIC_RELAXED);
      __atomic_fetch_add(&dev.shared[layout::kDevMigratedToRam], 1, __ATOMIC_RELAXED);
      wake(c.uffd.get(), c.addr(page), c.pageSize);
    }
  }
  return firstErr;
}

// regionFork(region, steps: Int32Array, childShared: Int32Array, timeoutMs) -> job handle.
// The caller (lib/fork.ts) has locked the parent's pages, applied the fork's entry changes to
// both tables and taken the child's device references.
Napi::Value RegionFork(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto r = regions().get(static_cast<int>(argU32(info, 0, "region")));
  if (!r || r->closed.load()) throw codedError(env, "ERR_REGION_CLOSED", kRegionClosed);
  if (!r->forkEvents)
    throw codedError(env, "ERR_UFFD_FEATURE_MISSING",
                     "region.fork needs UFFD_FEATURE_EVENT_FORK, which the kernel grants only to a process with CAP_SYS_PTRACE; "
                     "run as root with its full capabilities, or grant it (`sudo setcap cap_sys_ptrace+ep \"$(command -v node)\"`, "
                     "`docker run --cap-add SYS_PTRACE`), then map the region again");
  auto [stepsPtr, stepWords] = argInt32Array(info, 1, "steps");
  auto [childShared, childWords] = argSharedInt32(info, 2, "childShared");
  uint32_t timeoutMs = argU32(info, 3, "timeoutMs");
  if (stepWords % kForkStepStride != 0 || stepWords / kForkStepStride > kMaxSteps) throw rangeError(env, "steps must be 4 words each, at most 4096 steps");
  if (childWords < layout::kRegionHeader + 2 * r->pages) throw rangeError(env, "childShared is too small");
  const int n = static_cast<int>(stepWords / kForkStepStride);
  for (int i = 0; i < n; i++) {
    const int32_t* st = stepsPtr + kForkStepStride * i;
    bool ok = false;
    switch (st[0]) {
      case kForkOpRead:
      case kForkOpWrite:
        ok = st[1] >= 0 && size_t(st[1]) < r->pages && st[2] >= 0 && size_t(st[2]) < r->pageSize;
        break;
      case kForkOpChecksum:
        ok = st[1] >= 0 && st[2] >= 0 && r->contains(uint64_t(st[1]), uint64_t(st[2]));
        break;
      case kForkOpSleep:
        ok = st[1] >= 0 && st[1] <= 60000;
        break;
    }
    if (!ok) throw rangeError(env, "a fork step is outside the region or malformed");
  }
  std::vector<int32_t> steps(stepsPtr, stepsPtr + stepWords);

  int pipefd[2], gofd[2];
  if (::pipe2(pipefd, O_CLOEXEC) != 0) throw systemError(env, errno, "pipe2", "the pipes of a region.fork child");
  UniqueFd readEnd(pipefd[0]), writeEnd(pipefd[1]);
  if (::pipe2(gofd, O_CLOEXEC) != 0) throw systemError(env, errno, "pipe2", "the pipes of a region.fork child");
  UniqueFd goRead(gofd[0]), goWrite(gofd[1]);
  (void)crc32(0, nullptr, 0);  // build the table now: the child must not run lazy initialisation

  r->forkFd.store(-1);
  r->expectingFork.store(true);
  pid_t pid = ::fork();
  if (pid == 0) runChild(*r, steps.data(), n, writeEnd.get(), goRead.get(), goWrite.get());
  if (pid < 0) {
    int err = errno;
    r->expectingFork.store(false);
    throw systemError(env, err, "fork", "forking the child of region.fork");
  }
  writeEnd.reset();
  goRead.reset();
  // fork() returned, so the servicer has read the FORK event; it hands the fd over right after.
  int ufd = -1;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while ((ufd = r->forkFd.exchange(-1)) < 0) {
    if (std::chrono::steady_clock::now() > deadline) {
      r->expectingFork.store(false);
      ::kill(pid, SIGKILL);
      ::waitpid(pid, nullptr, 0);
      throw codedError(env, "ERR_FORK_EVENT",
                       "the servicer never delivered the child's userfaultfd (EVENT_FORK) within 10 s, so the child was killed; "
                       "look for 'error' events on the region (a stuck servicer), then retry region.fork");
    }
    std::this_thread::yield();
  }

  auto child = std::make_shared<RegionState>();
  child->base = r->base;
  child->length = r->length;
  child->pages = r->pages;
  child->pageSize = r->pageSize;
  child->uffd = UniqueFd(ufd);
  child->shared = childShared;
  child->ownsMapping = false;
  child->parent = r;
  int efd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (efd < 0) throw systemError(env, errno, "eventfd", "the wake-up eventfd of a region.fork child");
  child->wakeFd = UniqueFd(efd);
  // The family lock is taken on servicer threads (forEachSharer): never allocate under it.
  appendOutsideLock(r->familyMu, r->children, child);
  startNativeServicer(child);

  auto job = std::make_shared<ForkJob>();
  job->go = std::move(goWrite);
  job->pid = pid;
  job->child = child;
  job->parent = r;
  job->ownerEnv = env;
  int h = jobs().add(job);
  keepAlive(env, KeepKind::Fork, h, info[2]);
  ForkJob* jp = job.get();
  int rfd = readEnd.get();
  job->waiter = std::thread([jp, rfd, timeoutMs, rd = std::move(readEnd)]() mutable {
    auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeoutMs);
    double value;
    size_t got = 0;
    char* p = reinterpret_cast<char*>(&value);
    struct pollfd pfd = {rfd, POLLIN, 0};
    for (;;) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(until - std::chrono::steady_clock::now()).count();
      if (left <= 0) {
        ::kill(jp->pid, SIGKILL);  // the steps overran their deadline: never leave a child behind
        break;
      }
      int pr = ::poll(&pfd, 1, static_cast<int>(std::min<long long>(left, 1000)));
      if (pr < 0 && errno != EINTR) break;
      if (pr <= 0) continue;
      ssize_t k = ::read(rfd, p + got, sizeof value - got);
      if (k < 0 && errno == EINTR) continue;
      if (k <= 0) break;
      got += size_t(k);
      if (got == sizeof value) {
        jp->results.push_back(value);
        got = 0;
      }
    }
    int status = 0;
    {
      std::lock_guard<std::mutex> lock(jp->reapMu);
      while (::waitpid(jp->pid, &status, 0) < 0 && errno == EINTR) {
      }
      jp->reaped = true;
    }
    if (WIFEXITED(status)) jp->exitCode = WEXITSTATUS(status);
    if (WIFSIGNALED(status)) jp->termSignal = WTERMSIG(status);
    stopNativeServicer(*jp->child);
    releaseChild(*jp->child);
    {
      std::lock_guard<std::mutex> lock(jp->parent->familyMu);
      auto& kids = jp->parent->children;
      for (size_t i = 0; i < kids.size(); i++)
        if (kids[i] == jp->child) {
          kids.erase(kids.begin() + long(i));
          break;
        }
    }
    jp->done.store(true, std::memory_order_release);
  });
  return Napi::Number::New(env, h);
}

// forkEvictDevice(device) -> 0 | -errno: device removal's part in region.fork children. Every
// child still running has its entries on the device migrated back (the parents' own entries are
// the regions' business: Region#evictDevice). Called by Device#close before the device goes.
Napi::Value ForkEvictDevice(const Napi::CallbackInfo& info) {
  const int slot = static_cast<int>(argU32(info, 0, "device"));
  auto dev = devices().get(slot);
  if (!dev) throw codedError(info.Env(), "ERR_DEVICE_CLOSED", kDeviceClosed);
  std::vector<std::shared_ptr<ForkJob>> live;
  jobs().forEach([&](const std::shared_ptr<ForkJob>& j) {
    if (!j->done.load(std::memory_order_acquire)) live.push_back(j);
  });
  int firstErr = 0;
  for (auto& j : live) {
    int rc = evictChild(*j->child, slot, *dev);
    if (rc != 0 && firstErr == 0) firstErr = rc;
  }
  return Napi::Number::New(info.Env(), firstErr);
}

// forkStart(job): the parent's bookkeeping is done; the child may run its steps.
Napi::Value ForkStart(const Napi::CallbackInfo& info) {
  auto job = jobs().get(static_cast<int>(argU32(info, 0, "job")));
  if (job) job->go.reset();  // EOF on the child's end
  return info.Env().Undefined();
}

// forkPoll(job) -> undefined while the child runs; then { results, exitCode, signal, stats }.
Napi::Value ForkPoll(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int h = static_cast<int>(argU32(info, 0, "job"));
  auto job = jobs().get(h);
  if (!job) throw codedError(env, "ERR_FORK_GONE", (std::string("no such fork job") + kInternal).c_str());
  if (!job->done.load(std::memory_order_acquire)) return env.Undefined();
  job->waiter.join();
  Napi::Object out = Napi::Object::New(env);
  Napi::Array results = Napi::Array::New(env, job->results.size());
  for (size_t i = 0; i < job->results.size(); i++) results.Set(uint32_t(i), job->results[i]);
  out.Set("results", results);
  out.Set("exitCode", job->termSignal ? env.Null() : Napi::Number::New(env, job->exitCode));
  const char* sig = job->termSignal ? sigabbrev_np(job->termSignal) : nullptr;
  out.Set("signal", sig ? Napi::Value(Napi::String::New(env, std::string("SIG") + sig)) : env.Null());
  Napi::Object stats = Napi::Object::New(env);
  stats.Set("faults", job->child->shared[layout::kStatFaults]);
  stats.Set("wpFaults", job->child->shared[layout::kStatWpFaults]);
  stats.Set("migratedBack", job->child->shared[layout::kStatMigratedBack]);
  out.Set("stats", stats);
  jobs().remove(h);
  dropKeepAlive(env, KeepKind::Fork, h);
  return out;
}

}  // namespace

void retireForkJobsOf(const void* env) {
  std::vector<std::shared_ptr<ForkJob>> owned;
  jobs().forEach([&](const std::shared_ptr<ForkJob>& j) {
    if (j->ownerEnv == env) owned.push_back(j);
  });
  for (auto& j : owned) {
    if (!j->waiter.joinable()) continue;  // forkPoll joined it already
    {
      std::lock_guard<std::mutex> lock(j->reapMu);
      if (!j->reaped) ::kill(j->pid, SIGKILL);
    }
    // The waiter stops the child's servicer and drops the child's device references: both write
    // tables that V8 frees once this environment is gone.
    j->waiter.join();
  }
}

void initFork(Napi::Env env, Napi::Object exports) {
  exports.Set("regionFork", Napi::Function::New(env, RegionFork));
  exports.Set("forkPoll", Napi::Function::New(env, ForkPoll));
  exports.Set("forkStart", Napi::Function::New(env, ForkStart));
  exports.Set("forkEvictDevice", Napi::Function::New(env, ForkEvictDevice));
}

}  // namespace uffdhmm
