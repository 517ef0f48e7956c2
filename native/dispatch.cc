// Batches of userfaultfd messages, dispatched the same way by every servicer; see dispatch.h.
#include "dispatch.h"

#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>

#include "trace.h"

namespace uffdhmm {

int readMessages(int fd, struct uffd_msg* msgs, int max) {
  for (;;) {
    // The system call itself: libc's read(2) is a cancellation point, whose bookkeeping costs a
    // served fault more instructions than the rest of this function, for a thread never cancelled.
    ssize_t n = ::syscall(SYS_read, fd, msgs, sizeof(struct uffd_msg) * size_t(max));
    if (n >= 0) return static_cast<int>(n / ssize_t(sizeof(struct uffd_msg)));
    if (errno == EINTR) continue;
    if (errno == EAGAIN) return 0;
    return -errno;
  }
}

static bool hasZaps(const struct uffd_msg* msgs, int n) {
  for (int i = 0; i < n; i++)
    if (msgs[i].event == UFFD_EVENT_REMOVE || msgs[i].event == UFFD_EVENT_UNMAP) return true;
  return false;
}

int readBatch(RegionState& r, struct uffd_msg* msgs, int max, int32_t* zapBatch) {
  __atomic_store_n(r.stat(layout::kZapReading), 1, __ATOMIC_SEQ_CST);
  int n = readMessages(r.uffd.get(), msgs, max);
  // Only batches with a zap are counted, so a holder never waits on faults.
  *zapBatch = hasZaps(msgs, n) ? __atomic_add_fetch(r.stat(layout::kZapBatchesRead), 1, __ATOMIC_SEQ_CST) : 0;
  __atomic_store_n(r.stat(layout::kZapReading), 0, __ATOMIC_SEQ_CST);
  // Test only (RegionState::testHoldBatches): one relaxed load here, the call only when armed.
  if (n > 0 && r.testHoldBatches.load(std::memory_order_relaxed) > 0) testHoldPoint(r, r.stopServicer);
  return n;
}

Served serveAt(RegionState& r, int handle, const PendingFault& f, AskSink* sink) {
  int64_t page = r.pageOf(f.address);
  if (page < 0) return r.expectingRemap.load(std::memory_order_acquire) ? Served::Deferred : Served::Failed;
  Carried entry;
  entry.offset = static_cast<uint32_t>(f.address & (r.pageSize - 1));
  Served rc = serveFault(r, static_cast<uint32_t>(page), f.flags, f.tid, f.t0Ns, sink ? &entry : nullptr);
  if (rc == Served::Ask && !sink->ask(handle, static_cast<uint32_t>(page), f.flags, f.tid, f.t0Ns, entry)) {
    // No room to ask now: the page the engine left locked for the asker goes back as it was.
    entry.verdict = layout::kVerdictNone;
    return serveFault(r, static_cast<uint32_t>(page), f.flags, f.tid, f.t0Ns, &entry, true);
  }
  return rc;
}

// Serves f, queues it if it must wait, wakes its thread if it cannot be served.
static void serveOrQueue(RegionState& r, int handle, const PendingFault& f, FaultQueue& deferred, AskSink* sink) {
  Served rc = serveAt(r, handle, f, sink);
  if (rc == Served::Deferred && !deferred.full()) deferred.push(f);
  else if (rc == Served::Failed || rc == Served::Deferred) wake(r.uffd.get(), f.address & ~uint64_t(r.pageSize - 1), r.pageSize);
}

void dispatchBatch(RegionState& r, int handle, const struct uffd_msg* msgs, int n, int32_t zapBatch, FaultQueue& deferred,
                   AskSink* sink) {
  for (int i = 0; i < n; i++) {
    const struct uffd_msg& m = msgs[i];
    if (m.event == UFFD_EVENT_REMAP) r.applyRemap(m.arg.remap.from);
    else if (m.event == UFFD_EVENT_FORK) onForkEvent(r, static_cast<int>(m.arg.fork.ufd));
    else if (m.event == UFFD_EVENT_REMOVE || m.event == UFFD_EVENT_UNMAP)
      zapRange(r, m.arg.remove.start, m.arg.remove.end, m.event == UFFD_EVENT_UNMAP);
  }
  if (zapBatch != 0) __atomic_store_n(r.stat(layout::kZapBatchesDone), zapBatch, __ATOMIC_SEQ_CST);
  const uint64_t readNs = r.trace ? monoNs() : 0;
  for (int i = 0; i < n; i++) {
    if (msgs[i].event != UFFD_EVENT_PAGEFAULT) continue;
    const auto& pf = msgs[i].arg.pagefault;
    uint32_t flags = static_cast<uint32_t>(pf.flags);
    if (r.classifyFaults && faultInSyscall(pf.feat.ptid)) flags |= layout::kFaultKernel;
    serveOrQueue(r, handle, {handle, pf.address, flags, pf.feat.ptid, readNs}, deferred, sink);
  }
}

void retryDeferred(FaultQueue& deferred, RegionState* only, AskSink* sink) {
  if (deferred.size() == 0) return;  // the usual case: called once a batch, nothing waits
  deferred.retry([&](const PendingFault& f) {
    std::shared_ptr<RegionState> held = only ? nullptr : regions().get(f.handle);
    RegionState* r = only ? only : held.get();
    if (!r || r->closed.load(std::memory_order_acquire)) return false;  // closing woke its threads
    Served rc = serveAt(*r, f.handle, f, sink);
    if (rc == Served::Failed) wake(r->uffd.get(), f.address & ~uint64_t(r->pageSize - 1), r->pageSize);
    return rc == Served::Deferred;
  });
}

}  // namespace uffdhmm
