// Reading a batch of userfaultfd messages and dispatching it, the same for the native servicer
// thread and the worker's poller: events first (REMAP, FORK, then zaps), then faults, each through
// the fault engine (fault.h). Faults that cannot be served yet wait in a FaultQueue.
#pragma once

#include <cstdint>

#include "fault.h"
#include "uffd.h"

namespace uffdhmm {

// Reads up to `max` pending messages from a non-blocking userfaultfd; returns the count, 0 when
// none are pending, or -errno.
int readMessages(int fd, struct uffd_msg* msgs, int max);

// Reads one batch from r's userfaultfd for dispatchBatch. A main-thread holder of page locks waits
// for every batch read before its fill to be applied (settleZaps in lib/mm/zap.ts): the read is flagged
// (kZapReading) and a batch holding a zap numbered in *zapBatch (0 when it holds none).
int readBatch(RegionState& r, struct uffd_msg* msgs, int max, int32_t* zapBatch);

// A fault read but not served yet: its page is locked (a migration in progress), the mm is
// changing (EAGAIN), or its address is not ours yet (a remap's new address, queued before the
// EVENT_REMAP that moves the region there). The address is translated when it is served.
struct PendingFault {
  int handle;
  uint64_t address;
  uint32_t flags;
  uint32_t tid;
  uint64_t t0Ns;
};

// Deferred faults, in a fixed array: the threads that use it must not allocate (a fork in
// progress holds malloc's locks; see poller.cc). At most one fault per blocked thread.
class FaultQueue {
 public:
  static constexpr int kCapacity = 4096;
  int size() const { return n_; }
  bool full() const { return n_ == kCapacity; }
  void push(const PendingFault& f) {
    if (n_ < kCapacity) items_[n_++] = f;
  }
  // Calls keep(fault) for each queued fault and keeps those it returns true for.
  template <class Keep>
  void retry(Keep keep) {
    int kept = 0;
    const int n = n_;
    n_ = 0;
    for (int i = 0; i < n; i++) {
      const PendingFault f = items_[i];
      if (keep(f)) items_[kept++] = f;
    }
    // Faults pushed while retrying (none today) would sit past n: keep them too.
    for (int i = n; i < n_; i++) items_[kept++] = items_[i];
    n_ = kept;
  }

 private:
  PendingFault items_[kCapacity];
  int n_ = 0;
};

// Where faults whose driver must decide go (the worker's poller hands them to JS, the page locked
// until its faultServe). False: no room now; the page is unlocked, the fault queued and asked
// about again later.
struct AskSink {
  virtual bool ask(int handle, uint32_t page, uint32_t flags, uint32_t tid, uint64_t t0Ns, const Carried& entry) = 0;
};

// Serves one fault at an address of r (see serveFault); a fault at an address not yet ours waits
// for the remap that makes it ours. With a sink, a fault to ask about goes there.
Served serveAt(RegionState& r, int handle, const PendingFault& f, AskSink* sink);

// Dispatches one batch read by readBatch: events first, then faults. read() hands out every
// pending fault before any event (userfaultfd_ctx_read), so a batch can hold a fault together with
// the REMOVE or UNMAP that explains it, the fault first. Served in that order, the fault would
// migrate back device data the zap has dropped, possibly after the kernel's zap is done: stale
// bytes where the page must read zero. Applied first, the zap leaves a hole, and the fault gets
// zeroes. The zap batch is marked applied before any fault is served, so a waiting migration
// resumes at once. A fault that fails is woken, to fault afresh: no thread is left blocked.
void dispatchBatch(RegionState& r, int handle, const struct uffd_msg* msgs, int n, int32_t zapBatch, FaultQueue& deferred,
                   AskSink* sink);

// Serves the queued faults again: all of `only`'s when given (a servicer thread's one region, which
// may be a fork child's that no handle names), else each by its handle (gone: woken by its close).
void retryDeferred(FaultQueue& deferred, RegionState* only, AskSink* sink);

}  // namespace uffdhmm
