// A driver's refusal of a fault, delivered as the kernel delivers VM_FAULT_SIGBUS (native/refusal.cc).
#pragma once

#include <cstdint>

namespace uffdhmm {

// The real-time signal that carries a refusal to the faulting thread, whose handler (installed once
// by the addon, SA_RESTART) does the part only that thread can do. Anything else sent with this
// signal is ignored.
int refusalSignal();
void installRefusalHandler();

// Whether thread `tid` of this process blocks signal `sig` (/proc/self/task/<tid>/status SigBlk).
bool threadBlocks(uint32_t tid, int sig);

// A CPU access refused (user mode): thread `tid` gets SIGBUS, si_code BUS_ADRERR, si_addr `addr`,
// as force_sig_fault would give it. Only a thread may send itself a siginfo with a kernel si_code,
// so the refusal signal's handler sends it there. The pte is not touched: the thread leaves its
// fault because a signal is pending (handle_userfault sleeps interruptibly for a user fault). A
// thread that blocks the refusal signal gets the SIGBUS straight away, with si_code SI_QUEUE, and so
// does one whose refusal signal could not be queued (RLIMIT_SIGPENDING reached: then without its
// siginfo, as the kernel delivers a standard signal it cannot queue). False when nothing could be
// sent (the thread is gone).
bool refuseUserAccess(uint32_t tid, uint64_t addr);

// An access from inside a system call refused: the caller has put a poison marker on the page (the
// faulting thread's retry then fails with EFAULT). The refusal signal's handler runs on that
// thread's way back to user space, once its system call has failed, and zaps the page
// (MADV_DONTNEED of the base page at `pageAddr`): the marker goes, and the servicer, reading the
// REMOVE, unlocks the page with its device entry intact. False when nothing could be sent.
bool refuseKernelAccess(uint32_t tid, uint64_t pageAddr);

}  // namespace uffdhmm
