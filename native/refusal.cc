// A driver's refusal (dev_pagemap's migrate_to_ram returning VM_FAULT_SIGBUS): that access fails,
// nothing else changes. From user mode the kernel's fault handler sends the thread SIGBUS with
// BUS_ADRERR at the faulting address (force_sig_fault); from inside a system call the uaccess
// fixup makes the call fail with EFAULT. This file delivers both to a thread that is blocked on a
// userfaultfd fault, with one real-time signal whose handler runs in that thread. See refusal.h.
#include "refusal.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>

namespace uffdhmm {

namespace {

// si_code values of the refusal signal (negative: the kernel lets a process queue those to any of
// its threads; a non-negative si_code it accepts only from a thread to itself).
constexpr int kRefuseUser = -60;
constexpr int kRefuseKernel = -61;

size_t gPageSize = 4096;  // set once the handler is installed; regions with device entries use base pages

long sendTo(uint32_t tid, int sig, siginfo_t* si) { return ::syscall(SYS_rt_tgsigqueueinfo, ::getpid(), static_cast<pid_t>(tid), sig, si); }

// Async-signal-safe: system calls only.
void onRefusal(int, siginfo_t* si, void*) {
  if (si->si_code == kRefuseUser) {
    siginfo_t bus;
    std::memset(&bus, 0, sizeof bus);
    bus.si_signo = SIGBUS;
    bus.si_code = BUS_ADRERR;
    bus.si_addr = si->si_value.sival_ptr;
    // To itself, so with the kernel's si_code; delivered as this handler returns, at the access.
    sendTo(static_cast<uint32_t>(::syscall(SYS_gettid)), SIGBUS, &bus);
  } else if (si->si_code == kRefuseKernel) {
    const int saved = errno;  // the interrupted system call's EFAULT must reach its caller
    ::madvise(si->si_value.sival_ptr, gPageSize, MADV_DONTNEED);
    errno = saved;
  }
}

}  // namespace

int refusalSignal() { return SIGRTMAX - 4; }

void installRefusalHandler() {
  static std::once_flag once;
  std::call_once(once, [] {
    gPageSize = static_cast<size_t>(::sysconf(_SC_PAGESIZE));
    struct sigaction sa;
    std::memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = onRefusal;
    sa.sa_flags = SA_SIGINFO | SA_RESTART;
    sigemptyset(&sa.sa_mask);
    ::sigaction(refusalSignal(), &sa, nullptr);
  });
}

bool threadBlocks(uint32_t tid, int sig) {
  char path[64];
  snprintf(path, sizeof path, "/proc/self/task/%u/status", tid);
  int fd = ::open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  char buf[4096];
  ssize_t n = ::read(fd, buf, sizeof buf - 1);
  ::close(fd);
  if (n <= 0) return false;
  buf[n] = 0;
  const char* at = std::strstr(buf, "SigBlk:");
  if (!at) return false;
  unsigned long long mask = std::strtoull(at + 7, nullptr, 16);
  return (mask >> (sig - 1)) & 1;
}

// SIGBUS itself, not through the handler, whose si_code can only be a queued one here. A standard
// signal is delivered even when the queue is full (RLIMIT_SIGPENDING), only without its siginfo.
static bool sendBus(uint32_t tid, uint64_t addr) {
  siginfo_t si;
  std::memset(&si, 0, sizeof si);
  si.si_signo = SIGBUS;
  si.si_code = SI_QUEUE;
  si.si_addr = reinterpret_cast<void*>(addr);
  return sendTo(tid, SIGBUS, &si) == 0;
}

bool refuseUserAccess(uint32_t tid, uint64_t addr) {
  if (threadBlocks(tid, refusalSignal())) return sendBus(tid, addr);
  siginfo_t si;
  std::memset(&si, 0, sizeof si);
  si.si_signo = refusalSignal();
  si.si_code = kRefuseUser;
  si.si_value.sival_ptr = reinterpret_cast<void*>(addr);
  if (sendTo(tid, refusalSignal(), &si) == 0) return true;
  // A real-time signal the kernel would not queue (EAGAIN: the user's queued signals reached
  // RLIMIT_SIGPENDING). The thread must still get its SIGBUS, or it would fault, be woken and ask
  // the driver again, for ever: the kernel's force_sig_fault never fails.
  return errno == EAGAIN && sendBus(tid, addr);
}

bool refuseKernelAccess(uint32_t tid, uint64_t pageAddr) {
  siginfo_t si;
  std::memset(&si, 0, sizeof si);
  si.si_signo = refusalSignal();
  si.si_code = kRefuseKernel;
  si.si_value.sival_ptr = reinterpret_cast<void*>(pageAddr);
  return sendTo(tid, refusalSignal(), &si) == 0;
}

}  // namespace uffdhmm
