// The worker servicer's native half (native/poller.cc) and its watchdog (native/watchdog.cc): one
// epoll set over the userfaultfds of every region the worker serves, the worker's progress, and a
// thread that takes the regions over when the worker is gone or stuck.
#pragma once

#include <sys/types.h>
#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "dispatch.h"
#include "registry.h"
#include "uffd.h"

namespace uffdhmm {

struct Poller {
  UniqueFd epoll;
  UniqueFd wakeFd;
  // Faults read but not served yet (dispatch.h), and the JS side's array of faults to ask about.
  // Fixed arrays: the waiting thread must not allocate. Only that thread uses them: the worker in
  // pollerWait while it lives, the watchdog once it is dead.
  FaultQueue deferred;
  struct Asks : AskSink {
    double* out = nullptr;
    int capacity = 0;
    int written = 0;
    bool ask(int handle, uint32_t page, uint32_t flags, uint32_t tid, uint64_t t0Ns, const Carried& entry) override;
  } asks;
  bool kicked = false;
  // The regions pollerWait has read from, each with a reference, so that a batch costs no registry
  // lookup (a mutex and a reference count, more than the rest of a fault's bookkeeping). Only the
  // thread in pollerWait uses them. A closed region's reference goes when pollerWait returns
  // (releaseClosed), never inside it: the last reference frees the region, and a fork in progress
  // holds malloc's locks. `served` marks those read by the current call: a JS entry each
  // (kStatJsEntries) when it returns.
  struct Cached {
    int handle = 0;
    std::shared_ptr<RegionState> region;
    bool served = false;
  };
  static constexpr int kMaxCached = 64;
  Cached cached[kMaxCached];
  int ncached = 0;
  // Lets every cached reference go: the worker reads no region again (dead, or gone). Its thread only.
  void dropCached() {
    for (int i = 0; i < ncached; i++) cached[i].region.reset();
    ncached = 0;
  }
  std::atomic<bool> holding{false};     // held in pollerWait while a fork is in progress
  std::atomic<pid_t> attachedTid{0};    // the worker thread that waits on this poller
  std::atomic<bool> hasMembers{false};
  std::mutex mu;             // guards members; nothing allocates under it (appendOutsideLock)
  std::vector<int> members;  // handles of the regions in the epoll set

  // The worker's progress and fate in one word, so that "the worker enters pollerWait" and "the
  // watchdog declares it dead" are one compare-and-swap and never both happen: (beat << 2) | kOut,
  // kIn or kDead. The worker bumps beat and sets kIn entering pollerWait, kOut leaving it; the
  // watchdog turns a kOut word that stayed unchanged past the deadline (a hook that does not
  // return) into kDead, and onWorkerGone does so from the worker's own thread. Dead, pollerWait
  // returns -2 at once, and the watchdog serves the regions.
  std::atomic<uint64_t> phase{0};
  static constexpr uint64_t kOut = 0, kIn = 1, kDead = 2;
  bool dead() const { return (phase.load() & 3) == kDead; }
  std::atomic<bool> workerGone{false};  // dead because the worker's environment went away, not stuck
  std::atomic<uint32_t> deadlineMs{0};  // pollerWatch's stall deadline; 0: only a gone worker is dead
  std::atomic<bool> destroyed{false};  // pollerDestroy, or its owner's environment went away
  // The worker's thread, for the watchdog's start-up rule: the threads of the process that
  // appeared while the worker was created (Node creates its thread inside `new Worker`), found by
  // listing /proc/self/task in pollerCreate (after the watchdog started) and again in pollerWatch.
  // startTids is written once, before startTidsReady is set; the watchdog reads it only after.
  std::vector<pid_t> tidsBefore;
  std::vector<pid_t> startTids;
  bool tidsBeforeKnown = false;
  std::atomic<bool> startTidsReady{false};
  // Wakes the watchdog (a gone worker, a new deadline, destroy): a condition variable, not an fd,
  // since a worker that failed for want of descriptors must still be watched. Never held while
  // allocating.
  std::mutex watchMu;
  std::condition_variable watchCv;
  void kickWatchdog() {
    { std::lock_guard<std::mutex> lock(watchMu); }
    watchCv.notify_all();
    uint64_t one = 1;
    (void)!::write(wakeFd.get(), &one, sizeof one);  // and out of guardLoop's epoll_wait
  }
};

constexpr uint64_t kWakeTag = 0;  // epoll data of the eventfd; regions are tagged by handle (>= 1)

Registry<Poller>& pollers();

// The watchdog (native/watchdog.cc), started with the poller so that a takeover has nothing to
// allocate: it watches the worker while it lives, then takes its regions over (guardByWatchdog) and
// serves them itself through the poller's epoll set and `deferred`, with the default policy.
void watchLoop(std::shared_ptr<Poller> p);

// The threads of this process (/proc/self/task, opened when the addon loads: a worker fails to start
// when the process is out of descriptors, and telling that from a slow start must not need one
// more); false when they cannot be listed. Allocates: only the JS thread calls it.
bool listThreads(std::vector<pid_t>& out);

// Whether the worker's thread ended before it attached: none of the threads created with it is
// alive (no allocation: the watchdog calls it). False while that is not known.
bool startThreadsGone(const Poller& p);

// The worker's environment is going away (a cleanup hook on the worker's own thread): the poller
// is dead, and its watchdog takes over at once.
void onWorkerGone(void* arg);

// The environment that created the poller is going away: its regions are retired, and the watchdog
// thread ends.
void onPollerOwnerGone(void* arg);

}  // namespace uffdhmm
