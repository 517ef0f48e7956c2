// The worker servicer's native half: one epoll set over the userfaultfds of every region it
// serves, plus an eventfd so the owner can wake it. It dispatches what it reads through the fault
// engine (dispatch.h) and hands JS only the faults a driver's fault hook must decide, in a
// caller-owned Float64Array, so the JS hot path allocates nothing.
#include <dirent.h>
#include <fcntl.h>
#include <napi.h>
#include <poll.h>
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
#include "poller.h"
#include "region.h"
#include "registry.h"
#include "dispatch.h"
#include "servicer_thread.h"
#include "trace.h"

namespace uffdhmm {

// /proc/self/task, opened once when the addon loads (initPoller).
int gTaskDir = -1;
std::mutex gTaskDirMu;

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

Registry<Poller>& pollers() {
  static auto* registry = new Registry<Poller>;  // never destroyed: threads may still use it during exit()
  return *registry;
}

// One event in the output array: layout::kEventStride doubles (native/layout.h has the fields).
constexpr int kStride = layout::kEventStride;

// A fault whose driver must decide, into the worker's array: [region, kEventAsk, flags, page, tid,
// t0 µs, state word, pfn, offset in the page]. No room: the fault waits in the queue and is asked about next time.
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
  rec[8] = static_cast<double>(entry.offset);
  written++;
  return true;
}

namespace {

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
  p->members.reserve(64);
  // The watchdog exists before any region does: a takeover must never have to start a thread.
  try {
    std::thread(watchLoop, p).detach();  // it ends with the poller's destruction, never joined at exit
  } catch (const std::system_error& e) {
    throw systemError(env, e.code().value(), "pthread_create", "starting the worker servicer's watchdog");
  }
  // The worker is created next: the threads that appear until pollerWatch are its own (listed after
  // the watchdog started, which is not one of them).
  p->tidsBeforeKnown = listThreads(p->tidsBefore);
  int h = pollers().add(p);
  // Its owner's regions are retired with the owner's environment: the watchdog ends then too.
  napi_add_env_cleanup_hook(env, onPollerOwnerGone, reinterpret_cast<void*>(static_cast<intptr_t>(h)));
  return Napi::Number::New(env, h);
}

Napi::Value PollerDestroy(const Napi::CallbackInfo& info) {
  auto p = pollers().remove(static_cast<int>(argU32(info, 0, "poller")));
  if (p) {
    p->destroyed.store(true);
    p->kickWatchdog();
  }
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
  r->pollerEpoll.store(p->epoll.get());
  appendOutsideLock(p->mu, p->members, h);
  p->hasMembers.store(true);
  // The worker may have died since the caller last looked (its 'exit' not yet delivered): a region
  // joining a dead poller is served by its watchdog at once. The watchdog turns dead before it reads
  // members, so the region is taken either there or here (guardByWatchdog takes it once).
  if (p->dead()) guardByWatchdog(*r);
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

// pollerRemove(poller, region): called before the region closes, so no fd number is reused in the
// set, and when its worker failed, before a guard thread of its own takes it over. A region the
// watchdog serves already stays in the set: the watchdog serves it until it closes (retireRegion).
Napi::Value PollerRemove(const Napi::CallbackInfo& info) {
  auto p = argPoller(info, 0);
  int h = static_cast<int>(argU32(info, 1, "region"));
  auto r = regions().get(h);
  bool keep = false;
  if (r) {
    int mode = r->guardMode.load();
    for (;;) {
      if (mode == kGuardTaking) {  // the watchdog is taking it: see how that ends
        sched_yield();
        mode = r->guardMode.load();
        continue;
      }
      // Out of the watchdog's reach before it leaves the set, in one step.
      if (mode != kGuardNone || r->guardMode.compare_exchange_weak(mode, kGuardDetached)) break;
    }
    keep = mode == kGuardWatchdog;
    if (!keep) {
      ::epoll_ctl(p->epoll.get(), EPOLL_CTL_DEL, r->uffd.get(), nullptr);
      r->pollerEpoll.store(-1);
    }
  }
  std::lock_guard<std::mutex> lock(p->mu);
  for (size_t i = 0; i < p->members.size(); i++)
    if (p->members[i] == h) {
      p->members.erase(p->members.begin() + long(i));
      break;
    }
  p->hasMembers.store(!p->members.empty());
  return info.Env().Undefined();
}

// pollerWatch(poller, deadlineMs): sets the stall deadline of the poller's watchdog. pollerDead(poller)
// says whether, and why, the poller's regions went to the watchdog.
Napi::Value PollerWatch(const Napi::CallbackInfo& info) {
  auto p = argPoller(info, 0);
  uint32_t deadline = argU32(info, 1, "deadlineMs");
  if (deadline < 10) throw rangeError(info.Env(), "deadlineMs must be at least 10");
  uint32_t unset = 0;
  // Once, as before: the first deadline holds. Right after the worker was created: the threads that
  // appeared since pollerCreate are the worker's.
  if (p->deadlineMs.compare_exchange_strong(unset, deadline) && p->tidsBeforeKnown) {
    std::vector<pid_t> now;
    if (listThreads(now)) {
      for (pid_t tid : now)
        if (std::find(p->tidsBefore.begin(), p->tidsBefore.end(), tid) == p->tidsBefore.end()) p->startTids.push_back(tid);
      p->startTidsReady.store(true, std::memory_order_release);
    }
    p->tidsBefore.clear();
  }
  p->kickWatchdog();
  return info.Env().Undefined();
}

// -> 0 alive, 1 handed over by the watchdog, 2 handed over as the worker went away (its 'exit'
// or 'error' event, which says why, is on its way to the owner).
Napi::Value PollerDead(const Napi::CallbackInfo& info) {
  auto p = argPoller(info, 0);
  return Napi::Number::New(info.Env(), !p->dead() ? 0 : p->workerGone.load() ? 2 : 1);
}

// pollerKick(poller): wakes a pollerWait in progress (new messages, or stop).
Napi::Value PollerKick(const Napi::CallbackInfo& info) {
  auto p = argPoller(info, 0);
  uint64_t one = 1;
  (void)!::write(p->wakeFd.get(), &one, sizeof one);
  return info.Env().Undefined();
}

Poller::Cached* cachedRegion(Poller& p, int h);

// One round: wait up to timeoutMs for ready userfaultfds, read and dispatch their messages. Every
// event and every fault that needs no driver decision is served here, in native code. Returns how
// many userfaultfds (or the eventfd) were ready.
int pump(Poller& p, int timeoutMs) {
  constexpr int kMaxReady = 16;
  struct epoll_event ready[kMaxReady];
  int nready;
  do {
    // The system call itself, not libc's cancellation point (see readMessages in dispatch.cc).
    nready = static_cast<int>(::syscall(SYS_epoll_wait, p.epoll.get(), ready, kMaxReady, timeoutMs));
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
    Poller::Cached* c = cachedRegion(p, h);
    std::shared_ptr<RegionState> uncached;  // past kMaxCached regions at once: looked up each time
    RegionState* r = c ? c->region.get() : (uncached = regions().get(h)).get();
    if (!r || r->closed.load(std::memory_order_acquire)) continue;  // closing woke its threads
    // Leave messages in the kernel's queue rather than overflow ours.
    int room = std::min(kBatch, FaultQueue::kCapacity - p.deferred.size());
    if (room <= 0) continue;
    int32_t zapBatch = 0;
    int n = readBatch(*r, msgs, room, &zapBatch);
    if (n <= 0) continue;
    dispatchBatch(*r, h, msgs, n, zapBatch, p.deferred, &p.asks);
    if (c) c->served = true;
  }
  return nready;
}

// The cache entry of region h, looked up in the registry on its first batch; null when the cache
// is full (or h is closed already). Linear: a worker serves a handful of regions at once.
Poller::Cached* cachedRegion(Poller& p, int h) {
  for (int i = 0; i < p.ncached; i++)
    if (p.cached[i].handle == h) return &p.cached[i];
  if (p.ncached == Poller::kMaxCached) return nullptr;
  auto r = regions().get(h);
  if (!r) return nullptr;
  Poller::Cached& c = p.cached[p.ncached++];
  c.handle = h;
  c.region = std::move(r);  // a move into a slot that holds none: no allocation
  c.served = false;
  return &c;
}

// At pollerWait's return: a JS entry for each region it read from, and the references to regions
// that left the poller (pollerRemove, before a close) or closed let go, outside the fork gate: the
// last reference frees the region, its userfaultfd with it.
void settleCached(Poller& p) {
  std::unique_lock<std::mutex> lock(p.mu);
  for (int i = 0; i < p.ncached;) {
    Poller::Cached& c = p.cached[i];
    if (c.served) __atomic_fetch_add(c.region->stat(layout::kStatJsEntries), 1, __ATOMIC_RELAXED);
    c.served = false;
    const bool member = std::find(p.members.begin(), p.members.end(), c.handle) != p.members.end();
    if (member && !c.region->closed.load(std::memory_order_acquire)) {
      i++;
      continue;
    }
    // Moved out, and dropped once the lock is released: a region's destructor closes files.
    std::shared_ptr<RegionState> gone = std::move(c.region);
    p.cached[i] = std::move(p.cached[--p.ncached]);
    lock.unlock();
    gone.reset();
    lock.lock();
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
    // A dead poller's regions are its watchdog's, which reads their FORK events itself.
    if (n < 16 && p->hasMembers.load() && p->attachedTid.load() != gettid() && !p->dead()) waitFor[n++] = p;
  });
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  for (int i = 0; i < n; i++) {
    uint64_t one = 1;
    (void)!::write(waitFor[i]->wakeFd.get(), &one, sizeof one);
    // A worker still starting, or busy in a driver hook, gets there in time; past the deadline the
    // fork goes ahead, and waits in the kernel until that worker, or the watchdog that takes over
    // from it at the stall deadline, reads its FORK message.
    while (!waitFor[i]->holding.load(std::memory_order_acquire) && !waitFor[i]->dead() &&
           std::chrono::steady_clock::now() < deadline)
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

  // In, unless the watchdog declared us dead: one CAS, so it can never do so once we are in.
  for (uint64_t v = p->phase.load();;) {
    if ((v & 3) == Poller::kDead) {
      p->dropCached();  // the watchdog serves these regions now; this thread reads none of them again
      return Napi::Number::New(env, -2);
    }
    if (p->phase.compare_exchange_weak(v, (((v >> 2) + 1) << 2) | Poller::kIn)) break;
  }
  p->asks.out = out;
  p->asks.capacity = capacity;
  p->asks.written = 0;
  p->kicked = false;
  // JS runs only when it must: a fault a driver's hook must decide (an ask), a kick (new messages,
  // a stop), or the end of the caller's time slice, so that the worker's event loop still turns.
  // Every other fault and event is served here, batch after batch, with no JS round trip. The
  // clock is read once per kSliceCheck batches, not per fault: a slice ends at most that many
  // batches late.
  constexpr int kSliceCheck = 64;
  const auto sliceEnd = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout);
  int waitMs = static_cast<int>(timeout);
  for (int round = 1;; round++) {
    retryDeferred(p->deferred, nullptr, &p->asks);
    const bool idle = p->asks.written == 0 && p->deferred.size() == 0;
    const int ready = pump(*p, idle ? waitMs : 0);
    if (p->asks.written > 0 || p->kicked) break;
    if (idle && ready == 0) break;  // waited out the rest of the slice with nothing to serve
    if (p->deferred.size() > 0) {
      // Faults on locked pages: a migration holds a page for microseconds. Look again shortly.
      struct timespec ts = {0, 20 * 1000};
      ::nanosleep(&ts, nullptr);
    }
    if (round % kSliceCheck == 0 || !idle || ready == 0) {
      const auto left = sliceEnd - std::chrono::steady_clock::now();
      if (left <= std::chrono::steady_clock::duration::zero()) break;
      waitMs = static_cast<int>(std::chrono::ceil<std::chrono::milliseconds>(left).count());
    }
  }
  // Never go back to JS (which may allocate) while a fork is in progress: see prepareFork.
  while (gForkGate.load(std::memory_order_acquire) != 0) {
    p->holding.store(true, std::memory_order_release);
    retryDeferred(p->deferred, nullptr, &p->asks);
    pump(*p, 1);
  }
  p->holding.store(false, std::memory_order_release);
  // Out. Nobody else changes the word while we are in (onWorkerGone runs on this thread).
  p->phase.store((((p->phase.load() >> 2) + 1) << 2) | Poller::kOut);
  const int written = p->asks.written;
  p->asks.out = nullptr;
  settleCached(*p);  // JS gets control back now
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
