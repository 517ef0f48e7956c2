// Native servicer thread: poll, read a batch, serve each fault; faults on locked pages wait in a
// small retry list rather than blocking the loop, so a migration in progress never stalls others.
#include "servicer_thread.h"

#include <poll.h>
#include <sys/syscall.h>
#include <time.h>

#include <cerrno>
#include <cstdint>

#include "dispatch.h"

namespace uffdhmm {

namespace {

void serviceLoop(std::shared_ptr<RegionState> r) {
  constexpr int kBatch = 64;
  struct uffd_msg msgs[kBatch];
  // On this thread's stack, never in thread_local storage: the first touch of a dlopen()ed
  // library's TLS allocates, and a fork() in progress holds malloc's locks until this thread has
  // read its FORK message (see poller.cc).
  FaultQueue deferred;
  struct pollfd fds[2] = {{r->uffd.get(), POLLIN, 0}, {r->wakeFd.get(), POLLIN, 0}};
  while (!r->stopServicer.load(std::memory_order_acquire)) {
    retryDeferred(deferred, r.get(), nullptr);
    if (deferred.size() > 0) {
      // A migration holds the page for microseconds: back off briefly, then look again.
      struct timespec ts = {0, 20 * 1000};
      ::nanosleep(&ts, nullptr);
    }
    // A guard started without its wake-up eventfd (guard takeOver) sees its stop flag only here.
    int timeout = deferred.size() > 0 ? 0 : r->wakeFd.valid() ? 1000 : 10;
    // The system call itself, not libc's cancellation point (see readMessages).
    int rc = static_cast<int>(::syscall(SYS_poll, fds, 2, timeout));
    if (rc < 0) {
      if (errno == EINTR) continue;
      break;
    }
    if (fds[1].revents & POLLIN) {
      uint64_t v;
      (void)!::read(r->wakeFd.get(), &v, sizeof v);
    }
    if (!(fds[0].revents & POLLIN) || deferred.full()) continue;
    int32_t zapBatch = 0;
    int n = readBatch(*r, msgs, kBatch, &zapBatch);
    if (n > 0) dispatchBatch(*r, 0, msgs, n, zapBatch, deferred, nullptr);
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
