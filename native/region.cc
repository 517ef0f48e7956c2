// Region bindings: the registry, the per-page userfaultfd operations the servicers use, copies
// out to the device store, madvise and mprotect, and teardown that never leaves a dangling view or
// fd. Mapping (mmap.cc), moving (mremap.cc), /proc (proc.cc), the probe (probe.cc), the guard
// (guard.cc) and the test hooks (test_hooks.cc) live in files of their own.
#include "region.h"

#include <napi.h>
#include <sched.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "device.h"
#include "napi_util.h"
#include "fault.h"
#include "inline_servicer.h"
#include "proc.h"
#include "servicer_thread.h"
#include "span.h"
#include "trace.h"

namespace uffdhmm {

#ifdef MADV_COLLAPSE
constexpr int kMadvCollapse = MADV_COLLAPSE;
#else
constexpr int kMadvCollapse = 25;  // Linux 6.1; older libc headers lack it
#endif

Registry<RegionState>& regions() {
  static auto* registry = new Registry<RegionState>;  // never destroyed: threads may still use it during exit()
  return *registry;
}

RegionState::~RegionState() {
  // Close the userfaultfd first: that unregisters the range, so the munmap below can never wait for
  // an EVENT_UNMAP that no servicer is left to read.
  uffd.reset();
  if (base && ownsMapping) ::munmap(base, length);
}

void onForkEvent(RegionState& r, int ufd) {
  if (r.expectingFork.exchange(false)) {
    r.forkFd.store(ufd, std::memory_order_release);
  } else {
    ::close(ufd);
  }
}

// regionClose(handle): stops servicing, unregisters (waking any thread blocked on a fault, which
// then sees plain memory), and leaves the munmap and fd close to the last user of the state.
static Napi::Value RegionClose(const Napi::CallbackInfo& info) {
  int h = static_cast<int>(argU32(info, 0, "region"));
  auto r = regions().remove(h);
  if (!r) return info.Env().Undefined();
  retireRegion(*r);
  dropKeepAlive(info.Env(), KeepKind::Region, h);
  dropKeepAlive(info.Env(), KeepKind::Trace, h);
  return info.Env().Undefined();
}

void retireRegion(RegionState& r) {
  {
    // Under servicerMu: a guard taking over right now either has started its thread (joined below)
    // or finds the region closed and starts none.
    std::lock_guard<std::mutex> lock(r.servicerMu);
    if (r.closed.exchange(true, std::memory_order_acq_rel)) return;
  }
  // Unregister first: from then on a touch is a plain fault. An inline region that stopped being
  // served while still registered would turn a touch into a fatal SIGBUS.
  for (int tries = 0; tries < 1000 && unregisterRange(r.uffd.get(), reinterpret_cast<uint64_t>(r.base), r.length) == -EAGAIN; tries++) {
  }
  // UNREGISTER wakes the threads already waiting on the range, but a thread that was entering
  // handle_userfault under its per-VMA lock can queue itself just after that wake (seen under
  // load: a toucher asleep on an unregistered range for good). Unregister has waited for that
  // lock, so such a thread is queued by now: wake the whole range once more.
  wake(r.uffd.get(), reinterpret_cast<uint64_t>(r.base), r.length);
  inlineRemove(&r);
  stopNativeServicer(r);
  // Out of a worker poller's epoll set, and, if that poller's watchdog serves it, done with: its
  // passes check `closed` after announcing themselves, so none starts after this wait.
  int ep = r.pollerEpoll.exchange(-1);
  if (ep >= 0) ::epoll_ctl(ep, EPOLL_CTL_DEL, r.uffd.get(), nullptr);
  while (r.borrowers.load() != 0) sched_yield();
}

void retireRegionsOf(const void* env) {
  // Retired, not removed: native toucher threads may still run on the mapping, which must stay.
  std::vector<std::shared_ptr<RegionState>> owned;
  regions().forEach([&](const std::shared_ptr<RegionState>& r) {
    if (r->ownerEnv == env) owned.push_back(r);
  });
  for (auto& r : owned) retireRegion(*r);
}

// Fill operations never wake the faulting thread: the caller first publishes the page's new state
// (table, stats, device refcount) and then calls regionWake, so a thread that resumes after its
// fault always sees the table the kernel would show it. (The kernel updates the pte before the
// fault returns; waking first would let the thread run ahead of our table.)

// regionTraceSet(region, buffer: Int32Array | null): attaches a trace ring (lib/trace.ts), or detaches.
static Napi::Value RegionTraceSet(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto r = argRegion(info, 0);
  int h = static_cast<int>(argU32(info, 0, "region"));
  if (info[1].IsNull() || info[1].IsUndefined()) {
    // Writers load the pointer once per record and the buffer stays alive (kept below) until the
    // next attach replaces it, so a record in flight never writes freed memory.
    __atomic_store_n(&r->trace, static_cast<int32_t*>(nullptr), __ATOMIC_RELEASE);
    return env.Undefined();
  }
  auto [buf, words] = argSharedInt32(info, 1, "buffer");
  if (words < size_t(layout::kTraceHeader) || buf[layout::kTraceCapacity] <= 0 ||
      words < layout::kTraceHeader + size_t(buf[layout::kTraceCapacity]) * layout::kTraceStride * 2)
    throw rangeError(env, "trace buffer too small for its capacity");
  dropKeepAlive(env, KeepKind::Trace, h);
  keepAlive(env, KeepKind::Trace, h, info[1]);
  __atomic_store_n(&r->trace, buf, __ATOMIC_RELEASE);
  return env.Undefined();
}

// regionWake(region, first, count) -> 0 | -errno
static Napi::Value RegionWake(const Napi::CallbackInfo& info) {
  const PageSpan s = argPages(info, 0, 1, 2);
  return Napi::Number::New(info.Env(), wake(s.r->uffd.get(), reinterpret_cast<uint64_t>(s.start), s.length));
}

// regionWriteProtect(region, first, count, protect, wake) -> 0 | -errno
static Napi::Value RegionWriteProtect(const Napi::CallbackInfo& info) {
  const PageSpan s = argPages(info, 0, 1, 2);
  bool protect = argBool(info, 3, "protect");
  bool wakeup = argBool(info, 4, "wake");
  return Napi::Number::New(info.Env(), writeProtect(s.r->uffd.get(), reinterpret_cast<uint64_t>(s.start), s.length, protect, wakeup));
}

// regionCopyOut(region, first, count, device, pfns: Int32Array) -> pages that held data.
// Copies page first+i into device page pfns[i] (skipped when pfns[i] < 0). The caller holds these
// pages locked, so nothing here may touch them through memory: a page someone else zapped a moment
// ago would fault, and its servicer defers faults on locked pages, so this thread would wait on its
// own lock for good (and an inline region's SIGBUS handler would spin on it). Pages pagemap shows
// with data are read through /proc/self/mem, which stops at a page that is gone instead; a page
// with nothing behind it, then or now, zeroes its device page, as migrate_vma does for a hole.
static Napi::Value RegionCopyOut(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const PageSpan s = argPages(info, 0, 1, 2);
  RegionState* r = s.r.get();
  const uint32_t first = s.first;
  const uint32_t count = s.count;
  auto dev = devices().get(static_cast<int>(argU32(info, 3, "device")));
  if (!dev) throw codedError(env, "ERR_DEVICE_CLOSED", kDeviceClosed);
  auto [pfns, n] = argInt32Array(info, 4, "pfns");
  if (n < count) throw rangeError(env, "pfns is shorter than count");
  for (uint32_t i = 0; i < count; i++)
    if (pfns[i] >= 0 && static_cast<size_t>(pfns[i]) >= dev->capacity) throw rangeError(env, "pfn is outside the device's memory");
  openPagemapOrThrow(env);
  openMemOrThrow(env);
  const size_t ps = r->pageSize;
  constexpr uint32_t kChunk = 512;
  uint64_t pm[kChunk];
  uint32_t withData = 0;
  for (uint32_t done = 0; done < count; done += kChunk) {
    uint32_t k = std::min(kChunk, count - done);
    int rc = readPagemap(*r, first + done, k, pm);
    if (rc != 0) throw systemError(env, -rc, "pread(/proc/self/pagemap)", "reading the region's page table entries");
    for (uint32_t i = 0; i < k;) {
      const int32_t pfn = pfns[done + i];
      if (pfn < 0) {
        i++;
        continue;
      }
      if (!(pm[i] & (kPmPresent | kPmSwap))) {
        std::memset(dev->page(static_cast<uint32_t>(pfn)), 0, ps);
        i++;
        continue;
      }
      // A run of pages with data going to consecutive device pages: one read.
      uint32_t run = 1;
      while (i + run < k && (pm[i + run] & (kPmPresent | kPmSwap)) && pfns[done + i + run] == pfn + int32_t(run)) run++;
      const uint8_t* from = r->base + size_t(first + done + i) * ps;
      ssize_t got = readOwnMemory(from, dev->page(static_cast<uint32_t>(pfn)), size_t(run) * ps);
      if (got < 0) throw systemError(env, static_cast<int>(-got), "pread(/proc/self/mem)", "copying the region's pages to the device");
      const uint32_t whole = static_cast<uint32_t>(size_t(got) / ps);
      withData += whole;
      if (whole == run) {
        i += run;
        continue;
      }
      // Page i + whole went away after pagemap was read: it is a hole now. Go on after it.
      std::memset(dev->page(static_cast<uint32_t>(pfn) + whole), 0, ps);
      i += whole + 1;
    }
  }
  return Napi::Number::New(env, withData);
}

// regionDiscard(region, first, count, free?) -> 0 | -errno: MADV_DONTNEED, the CPU pages are freed;
// with free, MADV_FREE: they are freed only if reclaim needs them before they are written again.
static Napi::Value RegionDiscard(const Napi::CallbackInfo& info) {
  const PageSpan s = argPages(info, 0, 1, 2);
  const int advice = info.Length() > 3 && argBool(info, 3, "free") ? MADV_FREE : MADV_DONTNEED;
  if (const int injected = testMadviseFault(*s.r)) return Napi::Number::New(info.Env(), -injected);  // test only
  return Napi::Number::New(info.Env(), ::madvise(s.start, s.length, advice) == 0 ? 0 : -errno);
}

// MADV_COLLAPSE answers EAGAIN when a page of a PMD was locked, off the LRU or held by another
// reference just then (khugepaged scanning the same PMD, a fill's LRU batch): the kernel's own
// "trying again might succeed". PMDs already collapsed are skipped on the next try, so each one
// redoes only what failed. 1 + 2 + ... + 128 ms bounds the wait at a quarter second.
constexpr int kCollapseRetries = 8;

// regionCollapse(region, first, count) -> 0 | -errno: MADV_COLLAPSE, a THP made of each fully
// populated PMD of the range (thp regions; the kernel refuses write-protected or missing pages).
static Napi::Value RegionCollapse(const Napi::CallbackInfo& info) {
  const PageSpan s = argPages(info, 0, 1, 2);
  int rc = 0;
  for (int retry = 0;; ++retry) {
    if (::madvise(s.start, s.length, kMadvCollapse) == 0) { rc = 0; break; }
    rc = -errno;
    if (rc != -EAGAIN || retry == kCollapseRetries) break;
    struct timespec pause = {0, (1L << retry) * 1000000L};
    ::nanosleep(&pause, nullptr);
  }
  return Napi::Number::New(info.Env(), rc);
}

// regionMprotect(region, first, count, prot: 0 none | 1 read | 3 readwrite) -> 0 | -errno
static Napi::Value RegionMprotect(const Napi::CallbackInfo& info) {
  const PageSpan s = argPages(info, 0, 1, 2);
  uint32_t prot = argU32(info, 3, "prot");
  if (prot != PROT_NONE && prot != PROT_READ && prot != (PROT_READ | PROT_WRITE))
    throw rangeError(info.Env(), "prot must be none, read or readwrite");
  int rc = ::mprotect(s.start, s.length, static_cast<int>(prot)) == 0 ? 0 : -errno;
  return Napi::Number::New(info.Env(), rc);
}

// detachArrayBuffer(ab): a closed region's bytes view becomes length 0 instead of dangling.
static Napi::Value DetachArrayBuffer(const Napi::CallbackInfo& info) {
  Napi::Value v = info[0];
  if (!v.IsArrayBuffer()) throw typeError(info.Env(), "expected an ArrayBuffer");
  auto ab = v.As<Napi::ArrayBuffer>();
  if (!ab.IsDetached()) ab.Detach();
  return info.Env().Undefined();
}

void initProbe(Napi::Env env, Napi::Object exports);
void initMmap(Napi::Env env, Napi::Object exports);
void initMremap(Napi::Env env, Napi::Object exports);
void initProc(Napi::Env env, Napi::Object exports);
void initGuard(Napi::Env env, Napi::Object exports);
void initTestHooks(Napi::Env env, Napi::Object exports);

void initRegion(Napi::Env env, Napi::Object exports) {
  initProbe(env, exports);
  initMmap(env, exports);
  initMremap(env, exports);
  initProc(env, exports);
  initGuard(env, exports);
  initTestHooks(env, exports);
  exports.Set("regionClose", Napi::Function::New(env, RegionClose));
  exports.Set("regionTraceSet", Napi::Function::New(env, RegionTraceSet));
  exports.Set("regionWake", Napi::Function::New(env, RegionWake));
  exports.Set("regionWriteProtect", Napi::Function::New(env, RegionWriteProtect));
  exports.Set("regionCopyOut", Napi::Function::New(env, RegionCopyOut));
  exports.Set("regionDiscard", Napi::Function::New(env, RegionDiscard));
  exports.Set("regionMprotect", Napi::Function::New(env, RegionMprotect));
  exports.Set("regionCollapse", Napi::Function::New(env, RegionCollapse));
  exports.Set("detachArrayBuffer", Napi::Function::New(env, DetachArrayBuffer));
}

}  // namespace uffdhmm
