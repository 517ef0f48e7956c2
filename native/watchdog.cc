// The worker poller's watchdog (no kernel twin: a stuck driver in the kernel takes the machine with
// it). One thread per poller, started with it: while the worker lives it watches the worker's
// progress (Poller::phase); once the worker is gone, or stayed out of pollerWait past the stall
// deadline, it takes the regions over and serves them itself. Nothing here allocates or takes a
// lock that a thread blocked in malloc may hold: a fork() waiting in the kernel for a FORK event
// holds malloc's locks, and this thread may be the only one left to read that event.
#include <signal.h>
#include <sys/epoll.h>
#include <sys/syscall.h>
#include <time.h>

#include <algorithm>
#include <cerrno>
#include <chrono>

#include "poller.h"
#include "region.h"

namespace uffdhmm {

namespace {

// Whether some region of p has a fault or event nobody has read yet (the set is only looked at).
bool eventsWaiting(Poller& p) {
  struct epoll_event evs[8];
  int n = ::epoll_wait(p.epoll.get(), evs, 8, 0);
  for (int i = 0; i < n; i++)
    if (evs[i].data.u64 != kWakeTag) return true;
  return false;
}

// Hands every region of p to the watchdog. Under p.mu, which nothing holds while it allocates: no
// copy of the list, no thread to start.
void takeOverAll(Poller& p) {
  std::lock_guard<std::mutex> lock(p.mu);
  for (int h : p.members) {
    auto r = regions().get(h);
    if (r) guardByWatchdog(*r);
  }
}

// The regions of a dead worker, served with the default policy (no driver is asked): the same epoll
// set, the same queue of deferred faults. Each pass over a region is a WatchdogPass, so a region
// that closes, or was handed to a thread of its own, is left alone (and out of the set).
void guardLoop(Poller& p) {
  constexpr int kMaxReady = 16;
  constexpr int kBatch = 64;
  struct epoll_event ready[kMaxReady];
  struct uffd_msg msgs[kBatch];  // on this thread's stack: no allocation, no TLS
  while (!p.destroyed.load()) {
    p.deferred.retry([&](const PendingFault& f) {
      auto r = regions().get(f.handle);
      if (!r) return false;  // closing woke its threads
      WatchdogPass pass(*r);
      if (!pass.ok) return false;  // not ours now: the takeover that made it so woke its threads
      Served rc = serveAt(*r, f.handle, f, nullptr);
      if (rc == Served::Failed) wake(r->uffd.get(), f.address & ~uint64_t(r->pageSize - 1), r->pageSize);
      return rc == Served::Deferred;
    });
    if (p.deferred.size() > 0) {
      struct timespec ts = {0, 20 * 1000};  // a migration holds a page for microseconds
      ::nanosleep(&ts, nullptr);
    }
    int n = ::epoll_wait(p.epoll.get(), ready, kMaxReady, p.deferred.size() > 0 ? 0 : 100);
    for (int i = 0; i < n; i++) {
      if (ready[i].data.u64 == kWakeTag) {
        uint64_t v;
        (void)!::read(p.wakeFd.get(), &v, sizeof v);
        continue;
      }
      int h = static_cast<int>(ready[i].data.u64);
      auto r = regions().get(h);
      if (!r) continue;  // closed: retireRegion takes it out of the set
      if (r->guardMode.load() == kGuardNone) guardByWatchdog(*r);  // joined after the takeover
      WatchdogPass pass(*r);
      if (!pass.ok) {
        // Someone else's now (a guard thread of its own): not ours to read.
        if (!r->closed.load() && r->guardMode.load() != kGuardTaking) ::epoll_ctl(p.epoll.get(), EPOLL_CTL_DEL, r->uffd.get(), nullptr);
        continue;
      }
      // Leave messages in the kernel's queue rather than overflow ours.
      int room = std::min(kBatch, FaultQueue::kCapacity - p.deferred.size());
      if (room <= 0) continue;
      int32_t zapBatch = 0;
      int got = readBatch(*r, msgs, room, &zapBatch);
      if (got > 0) dispatchBatch(*r, h, msgs, got, zapBatch, p.deferred, nullptr);
    }
  }
}

}  // namespace

bool startThreadsGone(const Poller& p) {
  // A thread id is reused only after the pid space wraps; a live stranger among them (a thread
  // someone else started meanwhile) only makes us wait for the start deadline.
  if (!p.startTidsReady.load(std::memory_order_acquire)) return false;
  for (pid_t tid : p.startTids)
    if (::syscall(SYS_tgkill, ::getpid(), tid, 0) == 0 || errno != ESRCH) return false;
  return true;
}

// A worker still starting (its thread alive, or not known to be dead) is given this long, while
// faults wait, to reach pollerAttach.
constexpr uint32_t kMinStartDeadlineMs = 10000;

void watchLoop(std::shared_ptr<Poller> p) {
  uint64_t last = p->phase.load();
  auto since = std::chrono::steady_clock::now();
  while (!p->destroyed.load()) {
    const uint32_t deadlineMs = p->deadlineMs.load();
    const int tickMs = deadlineMs == 0 ? 1000 : static_cast<int>(std::max<uint32_t>(10, std::min<uint32_t>(100, deadlineMs / 4)));
    {
      std::unique_lock<std::mutex> lock(p->watchMu);
      p->watchCv.wait_for(lock, std::chrono::milliseconds(tickMs));
    }
    uint64_t now = p->phase.load();
    if ((now & 3) == Poller::kDead) break;  // the worker went away (onWorkerGone)
    auto t = std::chrono::steady_clock::now();
    // Waiting in pollerWait is idle, not stuck.
    if (now != last || (now & 3) == Poller::kIn || deadlineMs == 0) {
      last = now;
      since = t;
      continue;
    }
    if ((now >> 2) == 0) {
      // Before its first pollerWait the worker is starting. One that dies before pollerAttach (it
      // could not load: EMFILE, a broken install) has no cleanup hook to hand its regions over, and
      // a main thread blocked on one of their faults never hears of the death. Its thread is gone:
      // the watchdog serves those faults at once, and its 'error' or 'exit' event says why
      // (workerGone). A worker still loading keeps its regions: faults wait up to the start deadline.
      if (p->attachedTid.load() != 0 || !eventsWaiting(*p)) {
        since = t;
        continue;
      }
      if (startThreadsGone(*p)) p->workerGone.store(true);
      else if (t - since < std::chrono::milliseconds(std::max(deadlineMs, kMinStartDeadlineMs))) continue;
    } else if (t - since < std::chrono::milliseconds(deadlineMs)) {
      // Out of pollerWait that long, the worker is stuck serving what it read (a hook that hangs):
      // those faults, and every later one, would wait for it forever.
      continue;
    }
    // Dead only if the worker did not move meanwhile: entering pollerWait changes the word.
    if (p->phase.compare_exchange_strong(now, (now & ~uint64_t(3)) | Poller::kDead)) break;
    last = now;
    since = t;
  }
  if (!p->dead() || p->destroyed.load()) return;  // destroyed: its regions are retired, nothing to take over
  takeOverAll(*p);
  guardLoop(*p);
}

void onWorkerGone(void* arg) {
  int handle = static_cast<int>(reinterpret_cast<intptr_t>(arg));
  auto p = pollers().get(handle);
  if (!p) return;
  p->dropCached();  // on the worker's own thread, the cache's only user: its regions are not read again
  p->workerGone.store(true);
  uint64_t v = p->phase.load();
  while ((v & 3) != Poller::kDead && !p->phase.compare_exchange_weak(v, (v & ~uint64_t(3)) | Poller::kDead)) {
  }
  p->kickWatchdog();
}

void onPollerOwnerGone(void* arg) {
  auto p = pollers().get(static_cast<int>(reinterpret_cast<intptr_t>(arg)));
  if (!p) return;
  p->destroyed.store(true);
  p->kickWatchdog();
}

}  // namespace uffdhmm
