// The worker servicer's native half: one epoll set over the userfaultfds of every region it
// serves, plus an eventfd so the owner can wake it. It dispatches what it reads through the fault
// engine (dispatch.h) and hands JS only the faults a driver's fault hook must decide, in a
// caller-owned Float64Array, so the JS hot path allocates nothing.
#include <dirent.h>
#include <fcntl.h>
#include <napi.h>
#include <poll.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/syscall.h>

#include <algorithm>
#include <pthread.h>
#include <sched.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

#include "napi_util.h"
#include "region.h"
#include "registry.h"
#include "dispatch.h"
#include "servicer_thread.h"
#include "trace.h"

namespace uffdhmm {

namespace {

struct Poller {
  UniqueFd epoll;
  UniqueFd wakeFd;
  // Faults read but not served yet (dispatch.h), and the JS side's array of faults to ask about.
  // Fixed arrays: the waiting thread must not allocate. Only that thread uses them.
  FaultQueue deferred;
  struct Asks : AskSink {
    double* out = nullptr;
    int capacity = 0;
    int written = 0;
    bool ask(int handle, uint32_t page, uint32_t flags, uint32_t tid, uint64_t t0Ns, const Carried& entry) override;
  } asks;
  bool kicked = false;
  std::atomic<bool> holding{false};     // held in pollerWait while a fork is in progress
  std::atomic<pid_t> attachedTid{0};    // the worker thread that waits on this poller
  std::atomic<bool> hasMembers{false};
  std::mutex mu;             // guards members
  std::vector<int> members;  // handles of the regions in the epoll set

  // The stall watchdog (pollerWatch): the worker bumps `beat` on every pollerWait; if it stays out
  // of pollerWait for longer than the deadline, native guards take its regions over and the
  // poller is dead: pollerWait then returns -2 at once.
  std::atomic<uint64_t> beat{0};
  std::atomic<bool> inWait{false};
  std::atomic<bool> dead{false};
  std::atomic<bool> workerGone{false};  // dead because the worker's environment went away, not stuck
  std::thread watchdog;

  // The worker's thread, for the start-up rule of watchLoop: the threads of the process that
  // appeared while the worker was created (Node creates its thread inside `new Worker`), found by
  // listing /proc/self/task in pollerCreate and again in pollerWatch. Written before the watchdog
  // starts, read only by it. Unknown when a listing failed.
  std::vector<pid_t> tidsBefore;
  std::vector<pid_t> startTids;
  bool startTidsKnown = false;
};

// /proc/self/task, opened when the addon loads: a worker fails to start when the process is out of
// descriptors, and telling that from a slow start must not need one more.
int gTaskDir = -1;
std::mutex gTaskDirMu;

// The thread ids of this process; false when they cannot be listed.
bool listThreads(std::vector<pid_t>& out) {
  out.clear();
  std::lock_guard<std::mutex> lock(gTaskDirMu);
  if (gTaskDir < 0 || ::lseek(gTaskDir, 0, SEEK_SET) != 0) return false;
  alignas(8) char buf[4096];
  for (;;) {
    long n = ::syscall(SYS_getdents64, gTaskDir, buf, sizeof buf);
    if (n < 0) return false;
    if (n == 0) return true;
    for (long at = 0; at < n;) {
      auto* d = reinterpret_cast<struct dirent64*>(buf + at);
      if (d->d_name[0] >= '1' && d->d_name[0] <= '9') out.push_back(static_cast<pid_t>(std::strtol(d->d_name, nullptr, 10)));
      at += d->d_reclen;
    }
  }
}

// Whether the worker's thread ended: none of the threads created with it is alive. (A thread id is
// reused only after the pid space wraps; a live stranger among them only makes us wait longer.)
bool startThreadsGone(const Poller& p) {
  if (!p.startTidsKnown) return false;
  for (pid_t tid : p.startTids)
    if (::syscall(SYS_tgkill, ::getpid(), tid, 0) == 0 || errno != ESRCH) return false;
  return true;
}

Registry<Poller>& pollers() {
  static auto* registry = new Registry<Poller>;  // never destroyed: threads may still use it during exit()
  return *registry;
}

// Hands every region of p to a native guard, so that no fault waits for a worker that is gone.
void takeOverAll(Poller& p) {
  std::vector<int> members;
  {
    std::lock_guard<std::mutex> lock(p.mu);
    members = p.members;
  }
  for (int h : members) {
    auto r = regions().get(h);
    if (r) {
      ::epoll_ctl(p.epoll.get(), EPOLL_CTL_DEL, r->uffd.get(), nullptr);
      takeOver(r);
    }
  }
}

constexpr uint64_t kWakeTag = 0;  // epoll data of the eventfd; regions are tagged by handle (>= 1)

// Whether some region of p has a fault or event nobody has read yet (the set is only looked at).
bool eventsWaiting(Poller& p) {
  struct epoll_event evs[8];
  int n = ::epoll_wait(p.epoll.get(), evs, 8, 0);
  for (int i = 0; i < n; i++)
    if (evs[i].data.u64 != kWakeTag) return true;
  return false;
}

// A worker still starting (its thread alive, or not known to be dead) is given this long, while
// faults wait, to reach pollerAttach.
constexpr uint32_t kMinStartDeadlineMs = 10000;

void watchLoop(std::shared_ptr<Poller> p, uint32_t deadlineMs) {
  uint64_t lastBeat = p->beat.load();
  auto since = std::chrono::steady_clock::now();
  const auto tick = std::chrono::milliseconds(std::max<uint32_t>(10, std::min<uint32_t>(100, deadlineMs / 4)));
  const auto startDeadline = std::chrono::milliseconds(std::max(deadlineMs, kMinStartDeadlineMs));
  while (!p->dead.load()) {
    std::this_thread::sleep_for(tick);
    uint64_t b = p->beat.load();
    auto now = std::chrono::steady_clock::now();
    // Waiting in pollerWait is idle, not stuck.
    if (b != lastBeat || p->inWait.load()) {
      lastBeat = b;
      since = now;
      continue;
    }
    if (b == 0) {
      // Before its first pollerWait the worker is starting. One that dies before pollerAttach (it
      // could not load: EMFILE, a broken install) has no cleanup hook to hand its regions over, and
      // a main thread blocked on one of their faults never hears of the death. Its thread is gone:
      // guards serve those faults at once, and its 'error' or 'exit' event says why (workerGone).
      // A worker still loading keeps its regions: faults wait up to the start deadline for it.
      if (p->attachedTid.load() != 0 || !eventsWaiting(*p)) {
        since = now;
        continue;
      }
      if (startThreadsGone(*p)) {
        p->workerGone.store(true);
      } else if (now - since < startDeadline) {
        continue;
      }
    } else if (now - since < std::chrono::milliseconds(deadlineMs)) {
      // Out of pollerWait that long, the worker is stuck serving what it read (a hook that hangs):
      // those faults, and every later one, would wait for it forever.
      continue;
    }
    p->dead.store(true);
    takeOverAll(*p);
  }
}

// Runs when the worker's environment goes away (terminated, crashed, or at process exit) on the
// worker's own thread, before its 'exit' event can reach the main thread, whose event loop may be
// blocked (e.g. in a madvise or fork that waits for this servicer to read an event).
void onWorkerGone(void* arg) {
  int handle = static_cast<int>(reinterpret_cast<intptr_t>(arg));
  auto p = pollers().get(handle);
  if (!p) return;
  p->workerGone.store(true);
  p->dead.store(true);
  takeOverAll(*p);
}


// One event in the output array: layout::kEventStride doubles (native/layout.h has the fields).
constexpr int kStride = layout::kEventStride;

std::shared_ptr<Poller> argPoller(const Napi::CallbackInfo& info, size_t i) {
  auto p = pollers().get(static_cast<int>(argU32(info, i, "poller")));
  if (!p) throw codedError(info.Env(), "ERR_POLLER_CLOSED", (std::string("the servicer poller is closed") + kInternal).c_str());
  return p;
}

Napi::Value PollerCreate(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto p = std::make_shared<Poller>();
  int ep = ::epoll_create1(EPOLL_CLOEXEC);
  if (ep < 0) throw systemError(env, errno, "epoll_create1", "starting the worker servicer");
  p->epoll = UniqueFd(ep);
  int efd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (efd < 0) throw systemError(env, errno, "eventfd", "starting the worker servicer");
  p->wakeFd = UniqueFd(efd);
  struct epoll_event ev = {};
  ev.events = EPOLLIN;
  ev.data.u64 = kWakeTag;
  if (::epoll_ctl(ep, EPOLL_CTL_ADD, efd, &ev) != 0) throw systemError(env, errno, "epoll_ctl", "starting the worker servicer");
  p->startTidsKnown = listThreads(p->tidsBefore);  // the worker is created next; pollerWatch looks again
  return Napi::Number::New(env, pollers().add(p));
}

Napi::Value PollerDestroy(const Napi::CallbackInfo& info) {
  pollers().remove(static_cast<int>(argU32(info, 0, "poller")));
  return info.Env().Undefined();
}

// pollerAdd(poller, region): the region's faults are now read by this poller.
Napi::Value PollerAdd(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto p = argPoller(info, 0);
  int h = static_cast<int>(argU32(info, 1, "region"));
  auto r = regions().get(h);
  if (!r) throw codedError(env, "ERR_REGION_CLOSED", kRegionClosed);
  struct epoll_event ev = {};
  ev.events = EPOLLIN;
  ev.data.u64 = static_cast<uint64_t>(h);
  if (::epoll_ctl(p->epoll.get(), EPOLL_CTL_ADD, r->uffd.get(), &ev) != 0)
    throw systemError(env, errno, "epoll_ctl", "adding a region to the worker servicer");
  {
    std::lock_guard<std::mutex> lock(p->mu);
    p->members.push_back(h);
    p->hasMembers.store(true);
  }
  // The worker may have died since the caller last looked (its 'exit' not yet delivered): a region
  // joining a dead poller is served by a guard at once. takeOverAll sets dead before it reads
  // members, so the region is taken either there or here.
  if (p->dead.load()) takeOver(r);
  return env.Undefined();
}

// pollerAttach(poller): called by the worker that will wait on this poller; if that worker's
// environment is torn down, its regions are taken over by native guards (onWorkerGone).
Napi::Value PollerAttach(const Napi::CallbackInfo& info) {
  // TEST ONLY (testDelayWorkerAttach): a worker slow to start, its thread alive.
  if (uint32_t ms = gTestAttachDelayMs.exchange(0)) std::this_thread::sleep_for(std::chrono::milliseconds(ms));
  int h = static_cast<int>(argU32(info, 0, "poller"));
  if (!pollers().get(h)) throw codedError(info.Env(), "ERR_POLLER_CLOSED", (std::string("the servicer poller is closed") + kInternal).c_str());
  pollers().get(h)->attachedTid.store(gettid());
  napi_add_env_cleanup_hook(info.Env(), onWorkerGone, reinterpret_cast<void*>(static_cast<intptr_t>(h)));
  return info.Env().Undefined();
}

// pollerRemove(poller, region): called before the region closes, so no fd number is reused in the set.
Napi::Value PollerRemove(const Napi::CallbackInfo& info) {
  auto p = argPoller(info, 0);
  int h = static_cast<int>(argU32(info, 1, "region"));
  auto r = regions().get(h);
  if (r) ::epoll_ctl(p->epoll.get(), EPOLL_CTL_DEL, r->uffd.get(), nullptr);
  std::lock_guard<std::mutex> lock(p->mu);
  for (size_t i = 0; i < p->members.size(); i++)
    if (p->members[i] == h) {
      p->members.erase(p->members.begin() + long(i));
      break;
    }
  p->hasMembers.store(!p->members.empty());
  return info.Env().Undefined();
}

// pollerWatch(poller, deadlineMs): starts the stall watchdog (once), right after the worker was
// created: the threads that appeared since pollerCreate are the worker's. pollerDead(poller) says
// whether, and why, the poller's regions went to native guards.
Napi::Value PollerWatch(const Napi::CallbackInfo& info) {
  auto p = argPoller(info, 0);
  uint32_t deadline = argU32(info, 1, "deadlineMs");
  if (deadline < 10) throw rangeError(info.Env(), "deadlineMs must be at least 10");
  if (!p->watchdog.joinable()) {
    std::vector<pid_t> now;
    p->startTidsKnown = p->startTidsKnown && listThreads(now);
    p->startTids.clear();
    for (pid_t tid : now)
      if (std::find(p->tidsBefore.begin(), p->tidsBefore.end(), tid) == p->tidsBefore.end()) p->startTids.push_back(tid);
    p->tidsBefore.clear();
    p->watchdog = std::thread(watchLoop, p, deadline);
    p->watchdog.detach();  // it ends by itself once the poller is dead; never joined at exit
  }
  return info.Env().Undefined();
}

// -> 0 alive, 1 handed over by the watchdog, 2 handed over as the worker went away (its 'exit'
// or 'error' event, which says why, is on its way to the owner).
Napi::Value PollerDead(const Napi::CallbackInfo& info) {
  auto p = argPoller(info, 0);
  return Napi::Number::New(info.Env(), !p->dead.load() ? 0 : p->workerGone.load() ? 2 : 1);
}

// pollerKick(poller): wakes a pollerWait in progress (new messages, or stop).
Napi::Value PollerKick(const Napi::CallbackInfo& info) {
  auto p = argPoller(info, 0);
  uint64_t one = 1;
  (void)!::write(p->wakeFd.get(), &one, sizeof one);
  return info.Env().Undefined();
}

// A fault whose driver must decide, into the worker's array: [region, kEventAsk, flags, page, tid,
// t0 µs, state word, pfn]. No room: the fault waits in the queue and is asked about next time.
bool Poller::Asks::ask(int handle, uint32_t page, uint32_t flags, uint32_t tid, uint64_t t0Ns, const Carried& entry) {
  if (written >= capacity) return false;
  double* rec = out + size_t(written) * kStride;
  rec[0] = handle;
  rec[1] = layout::kEventAsk;
  rec[2] = static_cast<double>(flags);
  rec[3] = static_cast<double>(page);
  rec[4] = static_cast<double>(tid);
  rec[5] = double(t0Ns) / 1000.0;
  rec[6] = static_cast<double>(entry.state);
  rec[7] = static_cast<double>(entry.pfn);
  written++;
  return true;
}

// One round: wait up to timeoutMs for ready userfaultfds, read and dispatch their messages. Every
// event and every fault that needs no driver decision is served here, in native code.
void pump(Poller& p, int timeoutMs) {
  constexpr int kMaxReady = 16;
  struct epoll_event ready[kMaxReady];
  int nready;
  do {
    nready = ::epoll_wait(p.epoll.get(), ready, kMaxReady, timeoutMs);
  } while (nready < 0 && errno == EINTR);
  constexpr int kBatch = 64;
  struct uffd_msg msgs[kBatch];
  for (int i = 0; i < nready; i++) {
    if (ready[i].data.u64 == kWakeTag) {
      uint64_t v;
      (void)!::read(p.wakeFd.get(), &v, sizeof v);
      p.kicked = true;
      continue;
    }
    int h = static_cast<int>(ready[i].data.u64);
    auto r = regions().get(h);
    if (!r) continue;
    // Leave messages in the kernel's queue rather than overflow ours.
    int room = std::min(kBatch, FaultQueue::kCapacity - p.deferred.size());
    if (room <= 0) continue;
    int32_t zapBatch = 0;
    int n = readBatch(*r, msgs, room, &zapBatch);
    if (n > 0) dispatchBatch(*r, h, msgs, n, zapBatch, p.deferred, &p.asks);
  }
}

}  // namespace

// Forks and the worker servicer. glibc's fork() takes malloc's locks and holds them until the child
// exists, and the kernel holds the fork until every userfaultfd with EVENT_FORK has had its FORK
// message read. A worker thread that needs malloc before it gets back to read() would deadlock the
// fork. So, from pthread_atfork's prepare handler (before glibc takes the locks), every worker is
// brought into pollerWait and kept there, in native code that does not allocate, until the fork is
// done; FORK messages are handled there.
std::atomic<int> gForkGate{0};

static void prepareFork() {
  gForkGate.fetch_add(1, std::memory_order_acq_rel);
  std::shared_ptr<Poller> waitFor[16];
  int n = 0;
  pollers().forEach([&](const std::shared_ptr<Poller>& p) {
    if (n < 16 && p->hasMembers.load() && p->attachedTid.load() != gettid()) waitFor[n++] = p;
  });
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  for (int i = 0; i < n; i++) {
    uint64_t one = 1;
    (void)!::write(waitFor[i]->wakeFd.get(), &one, sizeof one);
    // A worker still starting, or busy in a driver hook, gets there in time; past the deadline the
    // fork goes ahead (and may wait in the kernel until that worker reads its FORK message).
    while (!waitFor[i]->holding.load(std::memory_order_acquire) && std::chrono::steady_clock::now() < deadline)
      sched_yield();
  }
}

static void afterForkParent() {
  gForkGate.fetch_sub(1, std::memory_order_acq_rel);
}

static void afterForkChild() { gForkGate.store(0); }

void installForkHandlers() {
  static std::once_flag once;
  std::call_once(once, [] { pthread_atfork(prepareFork, afterForkParent, afterForkChild); });
}

namespace {

// pollerWait(poller, out: Float64Array, timeoutMs) -> number of faults to ask a driver about written
// to out (may be 0), or -1 when woken by pollerKick with none. Everything else read meanwhile
// (events, and faults that need no decision) is served before it returns.
Napi::Value PollerWait(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto p = argPoller(info, 0);
  auto [out, len] = argFloat64Array(info, 1, "out");
  uint32_t timeout = argU32(info, 2, "timeoutMs");
  if (timeout > 60000) throw rangeError(env, "timeoutMs must be at most 60000");
  const int capacity = static_cast<int>(len / kStride);
  if (capacity < 1) throw rangeError(env, "out must hold at least one event");

  if (p->dead.load()) return Napi::Number::New(env, -2);  // guards serve these regions now
  p->beat.fetch_add(1, std::memory_order_relaxed);
  p->inWait.store(true, std::memory_order_relaxed);
  p->asks.out = out;
  p->asks.capacity = capacity;
  p->asks.written = 0;
  p->kicked = false;
  retryDeferred(p->deferred, nullptr, &p->asks);
  pump(*p, p->asks.written == 0 && p->deferred.size() == 0 ? static_cast<int>(timeout) : 0);
  // Faults on locked pages: a migration holds a page for microseconds. Look again shortly, here,
  // until one needs JS, a kick comes, or the caller's timeout is up.
  for (uint32_t waited = 0; p->asks.written == 0 && !p->kicked && p->deferred.size() > 0 && waited < timeout * 50; waited++) {
    struct timespec ts = {0, 20 * 1000};
    ::nanosleep(&ts, nullptr);
    retryDeferred(p->deferred, nullptr, &p->asks);
    pump(*p, 0);
  }
  // Never go back to JS (which may allocate) while a fork is in progress: see prepareFork.
  while (gForkGate.load(std::memory_order_acquire) != 0) {
    p->holding.store(true, std::memory_order_release);
    retryDeferred(p->deferred, nullptr, &p->asks);
    pump(*p, 1);
  }
  p->holding.store(false, std::memory_order_release);
  p->beat.fetch_add(1, std::memory_order_relaxed);
  p->inWait.store(false, std::memory_order_relaxed);
  const int written = p->asks.written;
  p->asks.out = nullptr;
  return Napi::Number::New(env, written == 0 && p->kicked ? -1 : written);
}

}  // namespace

void initPoller(Napi::Env env, Napi::Object exports) {
  installForkHandlers();
  static std::once_flag taskDirOnce;
  std::call_once(taskDirOnce, [] { gTaskDir = ::open("/proc/self/task", O_RDONLY | O_DIRECTORY | O_CLOEXEC); });
  exports.Set("pollerCreate", Napi::Function::New(env, PollerCreate));
  exports.Set("pollerDestroy", Napi::Function::New(env, PollerDestroy));
  exports.Set("pollerAdd", Napi::Function::New(env, PollerAdd));
  exports.Set("pollerRemove", Napi::Function::New(env, PollerRemove));
  exports.Set("pollerKick", Napi::Function::New(env, PollerKick));
  exports.Set("pollerWait", Napi::Function::New(env, PollerWait));
  exports.Set("pollerAttach", Napi::Function::New(env, PollerAttach));
  exports.Set("pollerWatch", Napi::Function::New(env, PollerWatch));
  exports.Set("pollerDead", Napi::Function::New(env, PollerDead));
}

}  // namespace uffdhmm
