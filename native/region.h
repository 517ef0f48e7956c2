// A Region: one anonymous mapping registered with its own userfaultfd (the emulated vma).
// Everything that touches the mapping checks page indices against it first.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "layout.h"
#include "registry.h"
#include "uffd.h"

namespace uffdhmm {

struct RegionState {
  RegionState() = default;
  ~RegionState();
  RegionState(const RegionState&) = delete;
  RegionState& operator=(const RegionState&) = delete;

  uint64_t addr(uint32_t page) const { return reinterpret_cast<uint64_t>(base) + uint64_t(page) * pageSize; }
  // Page index of a fault address, or -1 when it lies outside the mapping as the servicer knows it
  // (a fault at the new address of a remap whose EVENT_REMAP is not processed yet).
  int64_t pageOf(uint64_t address) const {
    const uint64_t b = reinterpret_cast<uint64_t>(base);
    return address >= b && address < b + length ? int64_t((address - b) / pageSize) : -1;
  }
  int32_t* state(uint32_t page) const { return shared + layout::kRegionHeader + 2 * size_t(page); }
  int32_t* stat(int index) const { return shared + index; }
  bool contains(uint64_t first, uint64_t count) const { return first <= pages && count <= pages - first; }

  uint8_t* base = nullptr;
  size_t length = 0;
  size_t pages = 0;
  size_t pageSize = 0;
  UniqueFd uffd;  // closed only when the last user drops its reference, so the fd never gets reused under a caller
  OpenVia via = OpenVia::None;
  bool userModeOnly = false;
  bool inlineMode = false;      // served by the SIGBUS handler: no messages are read, no thread sleeps
  bool classifyFaults = false;  // look up whether each fault came from inside a system call
  uint32_t faultAround = 1;     // pages migrated back per device fault, at most
  std::atomic<bool> guarded{false};  // a native guard took over from a dead worker servicer
  // The worker's faultServe calls in progress on this region: a takeover waits for them (they are
  // short and never block) before it releases the servicer's locks, and every later call sees
  // `guarded` and refuses, so no page is served by a servicer that no longer holds it.
  std::atomic<int> faultServes{0};
  // Who serves a worker region once its worker is gone or stuck (guard.cc): kGuardNone (its worker,
  // or none yet), kGuardDetached (taken out of its poller), kGuardTaking (a guard is putting its
  // locked pages right), kGuardWatchdog (its poller's watchdog thread serves it, through the
  // poller's epoll set, until it closes), kGuardThread (a native guard thread of its own). One
  // compare-and-swap decides each move, so two readers never share the userfaultfd.
  std::atomic<int> guardMode{0};
  // The watchdog's passes over this region in progress: retireRegion waits for them once `closed`
  // is set (every later pass sees it), so nothing writes the table after its owner freed it.
  std::atomic<int> borrowers{0};
  // The epoll set of the worker poller this region is in (-1: none): retireRegion takes it out.
  std::atomic<int> pollerEpoll{-1};
  bool forkEvents = false;           // EVENT_FORK granted (it needs CAP_SYS_PTRACE): region.fork works
  // Native toucher sets running on this region: they compute addresses from base and pages, so
  // the region must not move (remap) under them.
  std::atomic<int> activeTouchers{0};
  int32_t* shared = nullptr;  // region header + page table, in a SharedArrayBuffer
  // The Node environment whose JS owns `shared` (and the devices' buffers): when it is torn down,
  // V8 frees them, so every thread that writes them must have stopped by then (retireRegionsOf).
  const void* ownerEnv = nullptr;
  int32_t* trace = nullptr;   // the fault trace ring, when one is attached (native/trace.h)
  std::atomic<bool> closed{false};

  // The native servicer, when this region uses one. servicerMu orders its start (at map time, or by
  // a guard taking over) against its stop: once `closed` is set, none starts again.
  std::mutex servicerMu;
  std::thread servicer;
  UniqueFd wakeFd;  // an eventfd: the servicer's way out of poll()
  std::atomic<bool> stopServicer{false};

  // mremap. region.remap() parks the new geometry here, then mremap()s; whoever reads the
  // EVENT_REMAP (the servicer thread) switches to it, so translation never mixes old and new.
  std::atomic<bool> expectingRemap{false};
  uint8_t* pendingBase = nullptr;
  size_t pendingLength = 0;
  size_t pendingPages = 0;
  int32_t* pendingShared = nullptr;
  // Applies the parked geometry if `from` is our current base; true when it did.
  bool applyRemap(uint64_t from);

  // fork (S3). A child's view of a parent's region is a RegionState too: same addresses, the
  // child's userfaultfd, its own table, and no ownership of the mapping (it is the child's).
  bool ownsMapping = true;
  std::atomic<bool> expectingFork{false};  // the next EVENT_FORK is region.fork's own child
  std::atomic<int> forkFd{-1};             // that child's userfaultfd, handed over by the servicer
  std::mutex familyMu;                     // guards children / parent
  std::vector<std::shared_ptr<RegionState>> children;
  std::weak_ptr<RegionState> parent;

  // TEST ONLY (test/ordering.test.ts, through the addon's testHoldServicer/testReleaseServicer;
  // nothing in lib/ calls them). The servicer holds each of the next `testHoldBatches` batches of
  // messages it reads from this userfaultfd between reading and serving them, until the test
  // releases it or testHoldMs pass. That window is where the kernel's ordering cases live (an
  // event queued behind a fault already read; a fault read with the REMOVE that explains it; a
  // page filled by another path before a fault read earlier is served), and no real mechanism can
  // widen it on demand. Costs the servicer one relaxed load per batch while unused.
  std::atomic<int> testHoldBatches{0};
  std::atomic<int> testHoldMs{0};
  std::atomic<int> testHeld{0};      // batches held so far
  std::atomic<int> testReleased{0};  // held batch number n waits while testReleased < n
  // TEST ONLY (testFailMadvise): the library's own madvise calls on this region (regionDiscard)
  // succeed testMadviseSkip more times, then one fails with testMadviseErrno, zapping nothing: the
  // recovery paths of a refused zap (lib/mm/migrate.ts, lib/mm/zap.ts), which the kernel never
  // takes on a mapped, registered range of ours. 0: disarmed. One relaxed load per madvise.
  std::atomic<int> testMadviseErrno{0};
  std::atomic<int> testMadviseSkip{0};
  // TEST ONLY (testCutCopy, native/test_hooks.cc): the next UFFDIO_COPY of more pages than this, by
  // any path of the engine, fills only this many and answers EAGAIN, as the kernel may (its copy
  // count says how far it got). 0: off. Costs each multi-page fill one relaxed load.
  std::atomic<uint32_t> testCutCopyPages{0};
  std::atomic<bool> testCutCopyUncounted{false};  // and say it filled nothing (a count lost)
  // TEST ONLY (testPauseAt, native/test_hooks.cc): the next thread of the engine that reaches the
  // point named here on this region waits there (testHoldMs at most, or until testReleaseServicer),
  // counted in testHeld. The windows between reading a word and locking it, or between locking a
  // page and publishing it, where a racing thread changes what the engine saw. 0: off.
  std::atomic<int> testPausePoint{0};
};

// The points testPausePoint names.
constexpr int kTestPointNeighbourLock = 1;  // lockNeighbours: a neighbour's word read, not locked yet
constexpr int kTestPointSharerLocked = 2;   // migrateSharers: a sharer's page locked, nothing copied yet

// Ends every service of r (idempotent): marks it closed, unregisters the range (threads blocked on
// a fault see plain memory), and stops and joins its servicer thread. The mapping stays.
void retireRegion(RegionState& r);

// At the teardown of Node environment `env`: retires every region it owns, so that no native thread
// writes their tables after V8 has freed them (process exit with faults in flight).
void retireRegionsOf(const void* env);

// The servicer's side of the test hold above (native/test_hooks.cc): called after each read that
// returned messages.
void testHoldPoint(RegionState& r, const std::atomic<bool>& stop);

// TEST ONLY (native/test_hooks.cc testDelayWorkerAttach): the next worker servicer to attach to its
// poller waits this long first, as a worker slow to start would.
extern std::atomic<uint32_t> gTestAttachDelayMs;
// The test hook's side of regionDiscard (native/test_hooks.cc): the errno the next madvise on r is
// to fail with, or 0 (almost always: one relaxed load).
int testMadviseFault(RegionState& r);
// The engine's side of testCutCopy (native/test_hooks.cc): how many pages the UFFDIO_COPY of
// `pages` pages about to be made on r should fill before it stops with EAGAIN; 0 (almost always):
// all of them, the kernel decides (also when the range crosses a vma boundary, which the kernel
// refuses before filling anything). *counted false: report none of them filled.
uint32_t testCutCopy(RegionState& r, uint32_t page, uint32_t pages, bool* counted);

// The engine's side of testPauseAt: waits here if a test armed `point` on r (one relaxed load if not).
void testPause(RegionState& r, int point);

// RegionState::guardMode's values.
constexpr int kGuardNone = 0;
constexpr int kGuardTaking = 1;
constexpr int kGuardWatchdog = 2;
constexpr int kGuardThread = 3;
constexpr int kGuardDetached = 4;

// The guard (native/guard.cc): a native servicer thread takes over r's faults with the default policy because its
// worker servicer died. Releases pages the dead servicer held locked, then wakes every thread blocked
// in the range so faults it had read are raised again. Done if this call did it (once per region);
// Already if a guard serves r (a thread, or its poller's watchdog) or r is closed; NoThread (errno in
// *err) if no thread could be started: r is left unguarded, for a later try. Called from JS.
enum class TakeOver { Done, Already, NoThread };
TakeOver takeOver(const std::shared_ptr<RegionState>& r, int* err = nullptr);

// The same, by the watchdog of r's worker poller (native/poller.cc), which then serves r itself
// through the poller's epoll set: allocates nothing and takes no lock a forking thread may hold, so
// it works while a fork() that waits for r's FORK event holds malloc's locks. True if it took r.
bool guardByWatchdog(RegionState& r);

// The watchdog's hold on r while it reads or serves it; ok is false once r is no longer its own.
struct WatchdogPass {
  RegionState& r;
  bool ok;
  explicit WatchdogPass(RegionState& region) : r(region) {
    r.borrowers.fetch_add(1);
    ok = r.guardMode.load() == kGuardWatchdog && !r.closed.load();
  }
  ~WatchdogPass() { r.borrowers.fetch_sub(1); }
  WatchdogPass(const WatchdogPass&) = delete;
  WatchdogPass& operator=(const WatchdogPass&) = delete;
};

// True when thread `tid` (of this process) is blocked inside a system call, i.e. its page fault
// was taken in kernel mode (copy_to_user and friends): /proc/self/task/<tid>/syscall says which.
bool faultInSyscall(uint32_t tid);

// Calls f(RegionState&) for every other mapping of the same device pages as r (its parent, its
// siblings, its children), under the family lock. Allocates nothing: it runs on servicer threads,
// which must never wait for malloc's locks (a fork() in progress holds them; see poller.cc).
template <class F>
void forEachSharer(RegionState& r, F f) {
  std::shared_ptr<RegionState> top = r.parent.lock();
  RegionState* root = top ? top.get() : &r;
  if (top) f(*top);
  std::lock_guard<std::mutex> lock(root->familyMu);
  for (auto& c : root->children)
    if (c.get() != &r) f(*c);
}

// A FORK event's new userfaultfd: region.fork's own child keeps it, any other fork (child_process,
// exec) gets it closed, which unregisters the child's copy of the range.
void onForkEvent(RegionState& r, int ufd);

Registry<RegionState>& regions();

// Feature bits the running kernel grants this process, probed once with throwaway userfaultfds.
struct KernelFeatures {
  bool available = false;
  OpenVia via = OpenVia::None;
  bool userModeOnly = false;
  uint64_t features = 0;
  int devErr = 0;
  int syscallErr = 0;
  int err = 0;
};
const KernelFeatures& kernelFeatures();
// "dev-userfaultfd" / "syscall": how a userfaultfd was opened, as probe() and regionCreate report it.
const char* viaName(OpenVia via);

}  // namespace uffdhmm
