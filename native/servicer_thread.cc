// Native servicer thread: poll, read a batch, serve each fault; faults on locked pages wait in a
// small retry list rather than blocking the loop, so a migration in progress never stalls others.
#include "servicer_thread.h"

#include <poll.h>
#include <time.h>

#include <cerrno>
#include <cstdint>

#include "policy.h"
#include "trace.h"

namespace uffdhmm {

int readMessages(int fd, struct uffd_msg* msgs, int max) {
  for (;;) {
    ssize_t n = ::read(fd, msgs, sizeof(struct uffd_msg) * size_t(max));
    if (n >= 0) return static_cast<int>(n / ssize_t(sizeof(struct uffd_msg)));
    if (errno == EINTR) continue;
    if (errno == EAGAIN) return 0;
    return -errno;
  }
}

namespace {

struct Pending {
  uint64_t address;  // translated when served: a remap may move the region meanwhile
  uint32_t flags;
  uint32_t tid;
  uint64_t t0Ns;  // when the fault was read, for the trace
};

// Deferred when the page is locked, or when the address is not (yet) ours: a fault at a remap's
// new address can be queued before the EVENT_REMAP that moves our base there.
Served serveAt(RegionState& r, uint64_t address, uint32_t flags, uint32_t tid, uint64_t t0Ns) {
  int64_t page = r.pageOf(address);
  if (page < 0) return r.expectingRemap.load(std::memory_order_acquire) ? Served::Deferred : Served::Failed;
  return serveFaultDefault(r, static_cast<uint32_t>(page), flags, tid, t0Ns);
}

void serviceLoop(std::shared_ptr<RegionState> r) {
  constexpr int kBatch = 64;
  constexpr int kMaxPending = 4096;
  struct uffd_msg msgs[kBatch];
  static thread_local Pending pending[kMaxPending];
  int npending = 0;
  struct pollfd fds[2] = {{r->uffd.get(), POLLIN, 0}, {r->wakeFd.get(), POLLIN, 0}};
  while (!r->stopServicer.load(std::memory_order_acquire)) {
    // Retry faults on pages that were locked; keep the ones still locked.
    int kept = 0;
    for (int i = 0; i < npending; i++) {
      if (serveAt(*r, pending[i].address, pending[i].flags, pending[i].tid, pending[i].t0Ns) == Served::Deferred)
        pending[kept++] = pending[i];
    }
    npending = kept;
    if (npending > 0) {
      // A migration holds the page for microseconds: back off briefly, then look again.
      struct timespec ts = {0, 20 * 1000};
      ::nanosleep(&ts, nullptr);
    }
    // A guard started without its wake-up eventfd (region.cc takeOver) sees its stop flag only here.
    int timeout = npending > 0 ? 0 : r->wakeFd.valid() ? 1000 : 10;
    int rc = ::poll(fds, 2, timeout);
    if (rc < 0) {
      if (errno == EINTR) continue;
      break;
    }
    if (fds[1].revents & POLLIN) {
      uint64_t v;
      (void)!::read(r->wakeFd.get(), &v, sizeof v);
    }
    if (!(fds[0].revents & POLLIN) || npending >= kMaxPending) continue;
    // Holders of page locks on the main thread wait for every batch read before their fill to be
    // applied (Region#settleZaps): flag the read, count it, count it applied below.
    __atomic_store_n(r->stat(layout::kZapReading), 1, __ATOMIC_SEQ_CST);
    int n = readMessages(r->uffd.get(), msgs, kBatch);
    const int32_t batch = hasZaps(msgs, n) ? __atomic_add_fetch(r->stat(layout::kZapBatchesRead), 1, __ATOMIC_SEQ_CST) : 0;
    __atomic_store_n(r->stat(layout::kZapReading), 0, __ATOMIC_SEQ_CST);
    if (n > 0) testHoldPoint(*r, r->stopServicer);  // test only: see RegionState::testHoldBatches
    const uint64_t readNs = r->trace ? monoNs() : 0;
    // Events first, then faults. read() hands out every pending fault before any event
    // (userfaultfd_ctx_read), so a batch can hold a fault together with the REMOVE or UNMAP that
    // explains it, the fault first. Served in that order, the fault would migrate back device data
    // the zap has dropped, possibly after the kernel's zap is done: stale bytes where the page must
    // read zero. Applied first, the zap leaves a hole, and the fault gets zeroes.
    for (int i = 0; i < n; i++) {
      if (msgs[i].event == UFFD_EVENT_REMAP) {
        r->applyRemap(msgs[i].arg.remap.from);
      } else if (msgs[i].event == UFFD_EVENT_FORK) {
        onForkEvent(*r, static_cast<int>(msgs[i].arg.fork.ufd));
      } else if (msgs[i].event == UFFD_EVENT_REMOVE || msgs[i].event == UFFD_EVENT_UNMAP) {
        zapRange(*r, msgs[i].arg.remove.start, msgs[i].arg.remove.end, msgs[i].event == UFFD_EVENT_UNMAP);
      }
    }
    if (batch != 0) __atomic_store_n(r->stat(layout::kZapBatchesDone), batch, __ATOMIC_SEQ_CST);
    for (int i = 0; i < n; i++) {
      if (msgs[i].event != UFFD_EVENT_PAGEFAULT) continue;
      uint64_t addr = msgs[i].arg.pagefault.address;
      uint32_t flags = static_cast<uint32_t>(msgs[i].arg.pagefault.flags);
      if (r->classifyFaults && faultInSyscall(msgs[i].arg.pagefault.feat.ptid)) flags |= layout::kFaultKernel;
      const uint32_t tid = msgs[i].arg.pagefault.feat.ptid;
      Served rc = serveAt(*r, addr, flags, tid, readNs);
      if (rc == Served::Deferred && npending < kMaxPending) pending[npending++] = {addr, flags, tid, readNs};
      // Never leave a thread blocked on a fault we could not serve: it retries and faults afresh.
      if (rc == Served::Failed) wake(r->uffd.get(), addr & ~uint64_t(r->pageSize - 1), r->pageSize);
    }
  }
}

}  // namespace

void startNativeServicer(std::shared_ptr<RegionState> r) {
  RegionState* raw = r.get();
  std::lock_guard<std::mutex> lock(raw->servicerMu);
  // Retired meanwhile (closed, or its environment torn down): a thread started now would write
  // a table that may already be freed.
  if (raw->closed.load(std::memory_order_acquire) || raw->servicer.joinable()) return;
  raw->servicer = std::thread(serviceLoop, std::move(r));
}

void stopNativeServicer(RegionState& r) {
  std::lock_guard<std::mutex> lock(r.servicerMu);
  if (!r.servicer.joinable()) return;
  r.stopServicer.store(true, std::memory_order_release);
  uint64_t one = 1;
  (void)!::write(r.wakeFd.get(), &one, sizeof one);
  r.servicer.join();
}

}  // namespace uffdhmm
