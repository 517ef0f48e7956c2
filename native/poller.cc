// The worker servicer's event source: one epoll set over the userfaultfds of every region it
// serves, plus an eventfd so the owner can wake it. Events land in a caller-owned Float64Array,
// already translated from addresses to (region, page), so the JS hot path allocates nothing.
#include <napi.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>

#include <algorithm>
#include <pthread.h>
#include <sched.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdint>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

#include "napi_util.h"
#include "region.h"
#include "registry.h"
#include "servicer_thread.h"
#include "trace.h"

namespace uffdhmm {

namespace {

struct Poller {
  UniqueFd epoll;
  UniqueFd wakeFd;
  // Events read but not reported yet: faults at addresses a region does not cover yet (a remap's
  // new address, queued before its EVENT_REMAP), or overflow while a fork holds us in native code.
  // A fixed array: the waiting thread must not allocate. Only that thread uses it.
  struct Parked {
    int handle;
    struct uffd_msg msg;
  };
  static constexpr int kMaxParked = 1024;
  Parked parked[kMaxParked];
  int nparked = 0;
  bool kicked = false;
  void park(int h, const struct uffd_msg& m) {
    if (nparked < kMaxParked) parked[nparked++] = {h, m};
  }
  // Batches read per region since the worker last came back (Region#settleZaps): at the next
  // pollerWait the worker has applied their zaps, unless some of the region's messages are parked.
  struct ReadMark {
    int handle;
    int32_t batch;
  };
  static constexpr int kMaxReadMarks = 64;
  ReadMark readMarks[kMaxReadMarks];
  int nReadMarks = 0;
  void markRead(int h, int32_t batch) {
    for (int i = 0; i < nReadMarks; i++)
      if (readMarks[i].handle == h) {
        readMarks[i].batch = batch;
        return;
      }
    if (nReadMarks < kMaxReadMarks) readMarks[nReadMarks++] = {h, batch};
  }
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
};

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

// A worker still starting is given this long, while faults wait, to reach pollerAttach.
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
      // a main thread blocked on one of their faults never hears of the death: faults waiting that
      // long for a worker that never attached are served by guards.
      if (p->attachedTid.load() != 0 || !eventsWaiting(*p)) {
        since = now;
        continue;
      }
      if (now - since < startDeadline) continue;
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

// pollerWatch(poller, deadlineMs): starts the stall watchdog (once). pollerDead(poller) says
// whether, and why, the poller's regions went to native guards.
Napi::Value PollerWatch(const Napi::CallbackInfo& info) {
  auto p = argPoller(info, 0);
  uint32_t deadline = argU32(info, 1, "deadlineMs");
  if (deadline < 10) throw rangeError(info.Env(), "deadlineMs must be at least 10");
  if (!p->watchdog.joinable()) {
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

void markApplied(Poller& p);

// pollerApplied(poller): the worker has applied the zaps it was given (see markApplied).
Napi::Value PollerApplied(const Napi::CallbackInfo& info) {
  markApplied(*argPoller(info, 0));
  return info.Env().Undefined();
}

// pollerKick(poller): wakes a pollerWait in progress (new messages, or stop).
Napi::Value PollerKick(const Napi::CallbackInfo& info) {
  auto p = argPoller(info, 0);
  uint64_t one = 1;
  (void)!::write(p->wakeFd.get(), &one, sizeof one);
  return info.Env().Undefined();
}

// One event into out (or into the parked list when out is full, or for a fault at an address the
// region does not cover yet). FORK and REMAP are handled right here, in native code.
void record(Poller& p, int h, RegionState& r, const struct uffd_msg& m, double* out, int capacity, int& written) {
  if (m.event == UFFD_EVENT_REMAP) {
    r.applyRemap(m.arg.remap.from);
    return;
  }
  if (m.event == UFFD_EVENT_FORK) {
    onForkEvent(r, static_cast<int>(m.arg.fork.ufd));
    return;
  }
  if (m.event == UFFD_EVENT_PAGEFAULT && r.pageOf(m.arg.pagefault.address) < 0) {
    p.park(h, m);
    return;
  }
  if (written >= capacity) {
    p.park(h, m);
    return;
  }
  double* rec = out + size_t(written) * kStride;
  if (m.event == UFFD_EVENT_REMOVE || m.event == UFFD_EVENT_UNMAP) {
    // As page numbers clamped to the region: [first, first + count).
    const uint64_t base = reinterpret_cast<uint64_t>(r.base);
    uint64_t lo = std::max<uint64_t>(m.arg.remove.start, base);
    uint64_t hi = std::min<uint64_t>(m.arg.remove.end, base + r.length);
    if (hi <= lo) return;
    rec[0] = h;
    rec[1] = m.event == UFFD_EVENT_REMOVE ? layout::kEventRemove : layout::kEventUnmap;
    rec[2] = 0;
    rec[3] = static_cast<double>((lo - base) / r.pageSize);
    rec[4] = static_cast<double>((hi - lo + r.pageSize - 1) / r.pageSize);
    written++;
    return;
  }
  if (m.event != UFFD_EVENT_PAGEFAULT) return;
  uint32_t flags = static_cast<uint32_t>(m.arg.pagefault.flags);
  if (r.classifyFaults && faultInSyscall(m.arg.pagefault.feat.ptid)) flags |= layout::kFaultKernel;
  rec[0] = h;
  rec[1] = layout::kEventPagefault;
  rec[2] = static_cast<double>(flags);
  rec[3] = static_cast<double>(r.pageOf(m.arg.pagefault.address));
  rec[4] = static_cast<double>(m.arg.pagefault.feat.ptid);
  rec[5] = r.trace ? double(monoNs()) / 1000.0 : 0;  // read time, µs, for the trace
  written++;
}

// The worker is back for more: it has applied the zaps of every batch it was given. A region with
// messages still parked keeps its mark until they have been reported too.
void markApplied(Poller& p) {
  int kept = 0;
  for (int i = 0; i < p.nReadMarks; i++) {
    const Poller::ReadMark m = p.readMarks[i];
    bool parked = false;
    for (int k = 0; k < p.nparked && !parked; k++) parked = p.parked[k].handle == m.handle;
    if (parked) {
      p.readMarks[kept++] = m;
      continue;
    }
    auto r = regions().get(m.handle);
    if (r) __atomic_store_n(r->stat(layout::kZapBatchesDone), m.batch, __ATOMIC_SEQ_CST);
  }
  p.nReadMarks = kept;
}

// Re-reports parked events; record() parks again what still cannot be reported.
void unpark(Poller& p, double* out, int capacity, int& written) {
  const int n = p.nparked;
  p.nparked = 0;
  for (int i = 0; i < n; i++) {
    const Poller::Parked e = p.parked[i];  // a copy: record() may park into slots already read
    auto r = regions().get(e.handle);
    if (r) record(p, e.handle, *r, e.msg, out, capacity, written);  // a closed region's threads were woken
  }
}

// One round: wait up to timeoutMs for ready userfaultfds, read their messages, record them.
void pump(Poller& p, double* out, int capacity, int& written, int timeoutMs) {
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
    // Leave messages in the kernel's queue rather than overflow ours (unless a fork waits).
    int room = std::min(kBatch, std::max(capacity - written, 0) + (Poller::kMaxParked - p.nparked));
    if (room <= 0) continue;
    __atomic_store_n(r->stat(layout::kZapReading), 1, __ATOMIC_SEQ_CST);
    int n = readMessages(r->uffd.get(), msgs, room);
    if (hasZaps(msgs, n)) p.markRead(h, __atomic_add_fetch(r->stat(layout::kZapBatchesRead), 1, __ATOMIC_SEQ_CST));
    __atomic_store_n(r->stat(layout::kZapReading), 0, __ATOMIC_SEQ_CST);
    if (n > 0) testHoldPoint(*r, r->stopServicer);  // test only: see RegionState::testHoldBatches
    for (int k = 0; k < n; k++) record(p, h, *r, msgs[k], out, capacity, written);
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

// pollerWait(poller, out: Float64Array, timeoutMs) -> number of events written (may be 0), or
// -1 when woken by pollerKick with no event. Records: [region, type, flags, page, tid] for faults,
// [region, type, 0, first page, page count] for zaps (REMOVE, UNMAP).
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
  int written = 0;
  p->kicked = false;
  markApplied(*p);
  unpark(*p, out, capacity, written);
  pump(*p, out, capacity, written, p->nparked == 0 && written == 0 ? static_cast<int>(timeout) : 0);
  // Never go back to JS (which may allocate) while a fork is in progress: see prepareFork.
  while (gForkGate.load(std::memory_order_acquire) != 0) {
    p->holding.store(true, std::memory_order_release);
    pump(*p, out, capacity, written, 1);
  }
  p->holding.store(false, std::memory_order_release);
  p->beat.fetch_add(1, std::memory_order_relaxed);
  p->inWait.store(false, std::memory_order_relaxed);
  return Napi::Number::New(env, written == 0 && p->kicked ? -1 : written);
}

}  // namespace

void initPoller(Napi::Env env, Napi::Object exports) {
  installForkHandlers();
  exports.Set("pollerCreate", Napi::Function::New(env, PollerCreate));
  exports.Set("pollerDestroy", Napi::Function::New(env, PollerDestroy));
  exports.Set("pollerAdd", Napi::Function::New(env, PollerAdd));
  exports.Set("pollerRemove", Napi::Function::New(env, PollerRemove));
  exports.Set("pollerKick", Napi::Function::New(env, PollerKick));
  exports.Set("pollerApplied", Napi::Function::New(env, PollerApplied));
  exports.Set("pollerWait", Napi::Function::New(env, PollerWait));
  exports.Set("pollerAttach", Napi::Function::New(env, PollerAttach));
  exports.Set("pollerWatch", Napi::Function::New(env, PollerWatch));
  exports.Set("pollerDead", Napi::Function::New(env, PollerDead));
}

}  // namespace uffdhmm
