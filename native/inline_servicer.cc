// SIGBUS handler for inline regions. Only async-signal-safe work: atomics on the shared table,
// userfaultfd ioctls, the device free-stack spinlock (never held by a thread across a memory access
// of a region, so never held by the interrupted thread itself). No allocation, no JS.
#include "inline_servicer.h"

#include <signal.h>
#include <sched.h>
#include <ucontext.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <mutex>

#include "device.h"
#include "fault.h"
#include "trace.h"

namespace uffdhmm {

namespace {

constexpr int kMaxInline = 64;
std::atomic<RegionState*> gSlots[kMaxInline];
// Keeps each served region alive; touched under gMu only. Never destroyed: a thread may still
// take a fault during exit().
auto* gOwners = new std::shared_ptr<RegionState>[kMaxInline];
std::atomic<int> gInFlight{0};                      // handlers currently using a slot's region
std::mutex gMu;
struct sigaction gPrevious;

// Ranges of inline regions closed lately. A SIGBUS raised just before a region was unregistered can
// reach the handler after its slot is gone: the access must then simply be retried (it is an
// ordinary fault now, or a SIGSEGV once unmapped), not treated as foreign and fatal. Each range
// absorbs a bounded number of such signals, so a genuine SIGBUS on a later mapping that reuses the
// addresses still ends up at the default action.
struct ClosedRange {
  std::atomic<uint64_t> base{0};
  std::atomic<uint64_t> length{0};
  std::atomic<int> budget{0};
};
constexpr int kMaxClosed = 64;
ClosedRange gClosed[kMaxClosed];
std::atomic<unsigned> gClosedNext{0};

bool recentlyClosed(uint64_t addr) {
  for (int i = 0; i < kMaxClosed; i++) {
    const uint64_t b = gClosed[i].base.load(std::memory_order_acquire);
    if (addr >= b && addr < b + gClosed[i].length.load(std::memory_order_acquire) &&
        gClosed[i].budget.fetch_sub(1, std::memory_order_acq_rel) > 0)
      return true;
  }
  return false;
}
bool gInstalled = false;

// x86-64 page-fault error code bit 1: the access was a write.
bool faultWasWrite(void* uctx) {
#if defined(__x86_64__)
  auto* uc = static_cast<ucontext_t*>(uctx);
  return (uc->uc_mcontext.gregs[REG_ERR] & 2) != 0;
#else
  (void)uctx;
  return false;
#endif
}

// x86-64 page-fault error code bit 0: 1 when the page was present (a protection fault: with
// userfaultfd, a write to a write-protected page), 0 when there was no page (a missing fault);
// -1 where the architecture does not say.
int faultOnPresentPage(void* uctx) {
#if defined(__x86_64__)
  auto* uc = static_cast<ucontext_t*>(uctx);
  return (uc->uc_mcontext.gregs[REG_ERR] & 1) != 0 ? 1 : 0;
#else
  (void)uctx;
  return -1;
#endif
}

void chain(int sig, siginfo_t* info, void* uctx) {
  // Not ours: behave as if we were never installed, so the crash (or the previous handler) happens.
  if (gPrevious.sa_flags & SA_SIGINFO) {
    if (gPrevious.sa_sigaction) {
      gPrevious.sa_sigaction(sig, info, uctx);
      return;
    }
  } else if (gPrevious.sa_handler != SIG_DFL && gPrevious.sa_handler != SIG_IGN) {
    gPrevious.sa_handler(sig);
    return;
  }
  // Default action: restore it and return; the faulting access repeats and the kernel delivers
  // SIGBUS again, this time fatally, with the original fault's address and code.
  struct sigaction dfl;
  std::memset(&dfl, 0, sizeof dfl);
  dfl.sa_handler = SIG_DFL;
  sigemptyset(&dfl.sa_mask);
  sigaction(SIGBUS, &dfl, nullptr);
  if (info->si_code <= 0) raise(SIGBUS);  // sent by kill(): re-send it
}

void onSigbus(int sig, siginfo_t* info, void* uctx) {
  const int savedErrno = errno;
  // The fault's time and thread id only feed the trace; untraced, the handler makes no system call
  // but its fill and its return (clock_gettime is one on hosts without a vDSO clock source).
  const uint64_t addr = reinterpret_cast<uint64_t>(info->si_addr);
  bool served = false;
  if (info->si_code == BUS_ADRERR) {
    gInFlight.fetch_add(1, std::memory_order_acq_rel);
    for (int i = 0; i < kMaxInline; i++) {
      RegionState* r = gSlots[i].load(std::memory_order_acquire);
      if (!r) continue;
      const uint64_t base = reinterpret_cast<uint64_t>(r->base);
      if (addr < base || addr >= base + r->length) continue;
      const uint32_t page = static_cast<uint32_t>((addr - base) / r->pageSize);
      // Under UFFD_FEATURE_SIGBUS missing and write-protect faults both arrive here; the CPU's
      // error code tells them apart. The table cannot: it says 'present' as soon as another
      // thread's fault on the same page is served (taken for a WP fault, a concurrent read used to
      // un-protect a page that came back from a read entry), and for a page zapped behind our back
      // (a missing fault "un-protected" forever: that thread faulted again and again, a hang).
      const int present = faultOnPresentPage(uctx);
      int32_t s = __atomic_load_n(r->state(page), __ATOMIC_ACQUIRE);
      const bool traced = __atomic_load_n(&r->trace, __ATOMIC_RELAXED) != nullptr;
      const uint64_t t0Ns = traced ? monoNs() : 0;
      const uint32_t tid = traced ? static_cast<uint32_t>(gettid()) : 0;
      uint32_t flags = faultWasWrite(uctx) ? UFFD_PAGEFAULT_FLAG_WRITE : 0;
      if (present > 0 || (present < 0 && (s & layout::kKindMask) == layout::kKindPresent)) flags |= UFFD_PAGEFAULT_FLAG_WP;
      for (int spins = 0;; spins++) {
        Served rc = serveFault(*r, page, flags, tid, t0Ns, nullptr);
        if (rc == Served::Done) {
          served = true;
          break;
        }
        if (rc == Served::Failed) {
          // Closing: the range was unregistered after this SIGBUS was raised; retrying the access
          // is now an ordinary fault.
          served = r->closed.load(std::memory_order_acquire);
          break;
        }
        // Locked by a migration in progress on another thread, or the mm is changing: wait it out.
        if (spins > 64) sched_yield();
        if (present >= 0) continue;
        s = __atomic_load_n(r->state(page), __ATOMIC_ACQUIRE);
        flags &= ~UFFD_PAGEFAULT_FLAG_WP;
        if ((s & layout::kKindMask) == layout::kKindPresent) flags |= UFFD_PAGEFAULT_FLAG_WP;
      }
      break;
    }
    gInFlight.fetch_sub(1, std::memory_order_acq_rel);
    if (!served && recentlyClosed(addr)) served = true;
  }
  if (!served) chain(sig, info, uctx);
  errno = savedErrno;
}

}  // namespace

bool inlineAdd(const std::shared_ptr<RegionState>& r) {
  std::lock_guard<std::mutex> lock(gMu);
  if (!gInstalled) {
    struct sigaction sa;
    std::memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = onSigbus;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_RESTART;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGBUS, &sa, &gPrevious) != 0) return false;
    gInstalled = true;
  }
  for (int i = 0; i < kMaxInline; i++) {
    if (gSlots[i].load() == nullptr) {
      gOwners[i] = r;
      gSlots[i].store(r.get(), std::memory_order_release);
      return true;
    }
  }
  return false;
}

void inlineRemove(RegionState* r) {
  std::shared_ptr<RegionState> owner;
  {
    std::lock_guard<std::mutex> lock(gMu);
    for (int i = 0; i < kMaxInline; i++) {
      if (gSlots[i].load() == r) {
        ClosedRange& c = gClosed[gClosedNext.fetch_add(1) % kMaxClosed];
        c.budget.store(0, std::memory_order_release);
        c.base.store(reinterpret_cast<uint64_t>(r->base), std::memory_order_release);
        c.length.store(r->length, std::memory_order_release);
        c.budget.store(1000, std::memory_order_release);
        gSlots[i].store(nullptr, std::memory_order_release);
        owner = std::move(gOwners[i]);
      }
    }
  }
  // A handler may have picked the region up just before the slot was cleared: let it finish.
  while (gInFlight.load(std::memory_order_acquire) != 0) sched_yield();
}

}  // namespace uffdhmm
