// Region bindings: map + register, the per-page userfaultfd operations the servicers use,
// copies out to the device store, and teardown that never leaves a dangling view or fd.
#include "region.h"

#include <fcntl.h>
#include <napi.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <sys/utsname.h>

#include <chrono>
#include <cstring>
#include <system_error>

#include "device.h"
#include "napi_util.h"
#include "fault.h"
#include "inline_servicer.h"
#include "servicer_thread.h"
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

bool faultInSyscall(uint32_t tid) {
  char path[64];
  snprintf(path, sizeof path, "/proc/self/task/%u/syscall", tid);
  int fd = ::open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  char buf[32];
  ssize_t n = ::read(fd, buf, sizeof buf - 1);
  ::close(fd);
  if (n <= 0) return false;
  buf[n] = 0;
  // "-1 sp pc" when blocked outside any system call (a user-mode fault); "running" never here.
  return buf[0] >= '0' && buf[0] <= '9';
}

bool RegionState::applyRemap(uint64_t from) {
  if (!expectingRemap.load(std::memory_order_acquire) || from != reinterpret_cast<uint64_t>(base)) return false;
  // Written by the servicer thread while the owner waits in mremap(); aligned word stores.
  __atomic_store_n(&shared, pendingShared, __ATOMIC_RELEASE);
  __atomic_store_n(&pages, pendingPages, __ATOMIC_RELEASE);
  __atomic_store_n(&length, pendingLength, __ATOMIC_RELEASE);
  __atomic_store_n(&base, pendingBase, __ATOMIC_RELEASE);
  expectingRemap.store(false, std::memory_order_release);
  return true;
}

void onForkEvent(RegionState& r, int ufd) {
  if (r.expectingFork.exchange(false)) {
    r.forkFd.store(ufd, std::memory_order_release);
  } else {
    ::close(ufd);
  }
}

const KernelFeatures& kernelFeatures() {
  static const KernelFeatures probed = [] {
    KernelFeatures k;
    OpenResult o = openUffd(true);
    k.devErr = o.devErr;
    k.syscallErr = o.syscallErr;
    k.err = o.err;
    if (!o.fd.valid()) return k;
    uint64_t features = 0;
    if (apiHandshake(o.fd.get(), 0, &features, nullptr) != 0) {
      k.err = errno;
      return k;
    }
    // UFFDIO_API lists EVENT_FORK to everyone but grants it only with CAP_SYS_PTRACE: ask for it
    // on a second throwaway fd, so probe() reports what this process can use and regions do not
    // ask for what they would be refused.
    if (features & UFFD_FEATURE_EVENT_FORK) {
      OpenResult again = openUffd(true);
      if (!again.fd.valid() || apiHandshake(again.fd.get(), UFFD_FEATURE_EVENT_FORK, nullptr, nullptr) != 0)
        features &= ~uint64_t(UFFD_FEATURE_EVENT_FORK);
    }
    k.available = true;
    k.via = o.via;
    k.userModeOnly = o.userModeOnly;
    k.features = features;
    return k;
  }();
  return probed;
}

static const char* viaName(OpenVia via) {
  switch (via) {
    case OpenVia::DevUserfaultfd: return "dev-userfaultfd";
    case OpenVia::Syscall: return "syscall";
    default: return nullptr;
  }
}

// probe() -> { available, via, userModeOnly, features (as a number), devErrno, syscallErrno, kernel }
static Napi::Value Probe(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const KernelFeatures& k = kernelFeatures();
  Napi::Object o = Napi::Object::New(env);
  o.Set("available", k.available);
  const char* via = viaName(k.via);
  o.Set("via", via ? Napi::Value(Napi::String::New(env, via)) : env.Null());
  o.Set("userModeOnly", k.userModeOnly);
  o.Set("features", Napi::Number::New(env, static_cast<double>(k.features)));
  o.Set("devErrno", k.devErr);
  o.Set("syscallErrno", k.syscallErr);
  o.Set("errno", k.err);
  struct utsname u;
  o.Set("kernel", ::uname(&u) == 0 ? u.release : "unknown");
  o.Set("pageSize", Napi::Number::New(env, static_cast<double>(::sysconf(_SC_PAGESIZE))));
  return o;
}

static std::shared_ptr<RegionState> argRegion(const Napi::CallbackInfo& info, size_t i) {
  auto r = regions().get(static_cast<int>(argU32(info, i, "region")));
  if (!r || r->closed.load(std::memory_order_acquire))
    throw codedError(info.Env(), "ERR_REGION_CLOSED", kRegionClosed);
  return r;
}

static void checkRange(const Napi::CallbackInfo& info, const RegionState& r, uint32_t first, uint32_t count) {
  if (!r.contains(first, count)) throw rangeError(info.Env(), "page range is outside the region");
}

// The pages [first, first + count) named by a call's (region, first, count) arguments, checked
// against the region; the reference keeps the mapping alive while the call uses it.
struct PageSpan {
  std::shared_ptr<RegionState> r;
  uint8_t* start;
  size_t length;
};
static PageSpan argSpan(const Napi::CallbackInfo& info) {
  auto r = argRegion(info, 0);
  uint32_t first = argU32(info, 1, "first");
  uint32_t count = argU32(info, 2, "count");
  checkRange(info, *r, first, count);
  uint8_t* start = r->base + size_t(first) * r->pageSize;
  const size_t length = size_t(count) * r->pageSize;
  return {std::move(r), start, length};
}

// An anonymous private mapping of `length` bytes starting on a PMD boundary, so THPs can back it.
static void* mmapPmdAligned(size_t length) {
  const size_t pmd = layout::kPmdSize;
  void* raw = ::mmap(nullptr, length + pmd, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (raw == MAP_FAILED) return raw;
  const uintptr_t start = (reinterpret_cast<uintptr_t>(raw) + pmd - 1) & ~(pmd - 1);
  const size_t head = start - reinterpret_cast<uintptr_t>(raw);
  if (head) ::munmap(raw, head);
  if (pmd - head) ::munmap(reinterpret_cast<void*>(start + length), pmd - head);
  return reinterpret_cast<void*>(start);
}

// regionCreate(pages, shared: Int32Array, servicer: 'worker'|'native', allowUserModeOnly,
//              classifyFaults, faultAround, mapShared, fd (-1: anonymous), offset (bytes), hugetlb, thp)
static Napi::Value RegionCreate(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  uint32_t pages = argU32(info, 0, "pages");
  auto [shared, words] = argSharedInt32(info, 1, "shared");
  std::string servicer = info[2].As<Napi::String>().Utf8Value();
  bool allowUserModeOnly = argBool(info, 3, "allowUserModeOnly");
  bool classifyFaults = info.Length() > 4 && argBool(info, 4, "classifyFaults");
  uint32_t faultAround = info.Length() > 5 ? argU32(info, 5, "faultAround") : 1;
  if (faultAround < 1 || faultAround > 512) throw rangeError(env, "faultAround must be 1..512");
  if (pages == 0) throw rangeError(env, "pages must be at least 1");
  if (words < layout::kRegionHeader + 2 * size_t(pages)) throw rangeError(env, "shared buffer too small for the region");
  const bool mapShared = info.Length() > 6 && argBool(info, 6, "mapShared");
  const int fileFd = info.Length() > 7 ? info[7].As<Napi::Number>().Int32Value() : -1;
  const double offsetArg = info.Length() > 8 ? info[8].As<Napi::Number>().DoubleValue() : 0;
  const bool hugetlb = info.Length() > 9 && argBool(info, 9, "hugetlb");
  const bool thp = info.Length() > 10 && argBool(info, 10, "thp");
  if (thp && (hugetlb || fileFd >= 0 || mapShared))
    throw codedError(env, "ERR_BACKING_UNSUPPORTED", "thp applies to private anonymous regions only");
  const size_t pageSize = static_cast<size_t>(::sysconf(_SC_PAGESIZE));
  if (hugetlb && fileFd >= 0) throw codedError(env, "ERR_BACKING_UNSUPPORTED", "a hugetlb region is anonymous: give hugetlb or file, not both");
  if (fileFd >= 0) {
    // The mapping must lie inside the file: a touch past its end is a SIGBUS, in our code too.
    struct stat st;
    if (::fstat(fileFd, &st) != 0) throw systemError(env, errno, "fstat");
    if (!S_ISREG(st.st_mode)) throw codedError(env, "ERR_BACKING_UNSUPPORTED", "the file to map is not a regular file");
    if (!(offsetArg >= 0) || offsetArg > 9007199254740991.0 || static_cast<uint64_t>(offsetArg) % pageSize != 0)
      throw rangeError(env, "offset must be a non-negative multiple of the page size");
    if (static_cast<uint64_t>(offsetArg) + uint64_t(pages) * pageSize > static_cast<uint64_t>(st.st_size))
      throw rangeError(env, "the file is shorter than offset + pages * pageSize");
    struct statfs fs;
    if (::fstatfs(fileFd, &fs) == 0 && static_cast<unsigned long>(fs.f_type) == 0x958458f6UL)  // HUGETLBFS_MAGIC
      throw codedError(env, "ERR_BACKING_UNSUPPORTED", "a hugetlbfs file cannot back a region; map one with hugetlb: true instead");
  }

  auto r = std::make_shared<RegionState>();
  r->pageSize = pageSize;
  r->pages = pages;
  r->length = size_t(pages) * r->pageSize;
  r->shared = shared;
  const bool anonPrivate = !mapShared && fileFd < 0 && !hugetlb;
  // A private file mapping is registered for minor faults too: a page whose private copy was
  // zapped (migrated, or discarded) is still in the page cache, and without MINOR its touch would
  // silently map the file's bytes instead of coming to us.
  const bool minorFaults = !mapShared && fileFd >= 0;

  OpenResult o = openUffd(allowUserModeOnly);
  if (!o.fd.valid()) throw systemError(env, o.err, "userfaultfd", "opening a userfaultfd for a new region");
  r->uffd = std::move(o.fd);
  r->via = o.via;
  r->userModeOnly = o.userModeOnly;
  const bool inlineMode = servicer == "inline";
  r->inlineMode = inlineMode;
  r->classifyFaults = classifyFaults && !inlineMode;
  r->faultAround = faultAround;
  // shmem (a shared mapping, or any file mapping: userfaultfd serves only shmem files) needs its own
  // feature bits for missing faults, write protection (migration entries) and minor faults.
  const uint64_t shmemNeeded =
      anonPrivate || hugetlb ? 0
                  : UFFD_FEATURE_MISSING_SHMEM | UFFD_FEATURE_WP_HUGETLBFS_SHMEM | (minorFaults ? UFFD_FEATURE_MINOR_SHMEM : 0);
  if (inlineMode && !anonPrivate)
    throw codedError(env, "ERR_SERVICER_UNSUPPORTED", "the inline servicer serves private anonymous regions only");
  if ((kernelFeatures().features & shmemNeeded) != shmemNeeded)
    throw codedError(env, "ERR_UFFD_FEATURE_MISSING",
                     "this kernel's userfaultfd lacks the shmem features a shared or file-backed region needs "
                     "(MISSING_SHMEM, WP_HUGETLBFS_SHMEM, MINOR_SHMEM: Linux 5.19+); map a private anonymous region instead");
  // Zaps by anyone (madvise, munmap) must drop device references as zap_pte_range does. An inline
  // region has no thread reading messages, so it asks for none: its faults arrive as SIGBUS.
  const uint64_t wanted =
      inlineMode ? UFFD_FEATURE_SIGBUS
                 : (kernelFeatures().features & (UFFD_FEATURE_THREAD_ID | UFFD_FEATURE_EVENT_REMOVE |
                                                 UFFD_FEATURE_EVENT_UNMAP | UFFD_FEATURE_EVENT_FORK |
                                                 UFFD_FEATURE_EVENT_REMAP)) |
                       shmemNeeded;
  if (inlineMode && !(kernelFeatures().features & UFFD_FEATURE_SIGBUS))
    throw codedError(env, "ERR_UFFD_FEATURE_MISSING",
                     "this kernel lacks UFFD_FEATURE_SIGBUS (Linux 4.14+), which the inline servicer needs; map the region with "
                     "servicer 'worker' or 'native', or upgrade the kernel");
  int rc = apiHandshake(r->uffd.get(), wanted, nullptr, nullptr);
  if (rc == -EPERM && (wanted & UFFD_FEATURE_EVENT_FORK)) {
    // EVENT_FORK needs CAP_SYS_PTRACE. Without it the region still works; region.fork does not,
    // and a fork leaves the child with plain memory (its copy is unregistered), as the kernel does.
    OpenResult again = openUffd(allowUserModeOnly);
    if (!again.fd.valid()) throw systemError(env, again.err, "userfaultfd", "opening a userfaultfd for a new region");
    r->uffd = std::move(again.fd);
    rc = apiHandshake(r->uffd.get(), wanted & ~uint64_t(UFFD_FEATURE_EVENT_FORK), nullptr, nullptr);
  } else {
    r->forkEvents = (wanted & UFFD_FEATURE_EVENT_FORK) != 0 && !hugetlb;
  }
  if (rc != 0) throw systemError(env, -rc, "ioctl(UFFDIO_API)", "the handshake of a new region's userfaultfd");

  const int mapFlags = (mapShared ? MAP_SHARED : MAP_PRIVATE) | (fileFd >= 0 ? 0 : MAP_ANONYMOUS) |
                       (hugetlb ? MAP_HUGETLB : MAP_NORESERVE);
  void* mem = thp ? mmapPmdAligned(r->length)
                  : ::mmap(nullptr, r->length, PROT_READ | PROT_WRITE, mapFlags, fileFd, fileFd >= 0 ? static_cast<off_t>(offsetArg) : 0);
  if (mem == MAP_FAILED && hugetlb && errno == ENOMEM)
    throw codedError(env, "ERR_NO_HUGE_PAGES",
                     "mmap(MAP_HUGETLB) found too few free huge pages; reserve some first, e.g. as root: "
                     "sysctl vm.nr_hugepages=<count> (see /proc/meminfo HugePages_Free)");
  if (mem == MAP_FAILED && fileFd >= 0 && errno == EACCES)
    throw systemError(env, errno, "mmap", "mapping the file for a region of " + pagesText(pages),
                      mapShared ? "a shared, writable mapping needs the file opened read-write ('r+' or 'w+')"
                                : "the file must be opened for reading");
  if (mem == MAP_FAILED)
    throw systemError(env, errno, "mmap", std::to_string(r->length) + " bytes for a region of " + pagesText(pages));
  r->base = static_cast<uint8_t*>(mem);
  uint64_t ioctls = 0;
  // hugetlb: migrate_vma_setup refuses hugetlb vmas, so no device entry can ever exist there and
  // no fault needs us. The range stays unregistered: every fault in it is the kernel's own.
  if (!hugetlb) {
    // Without thp, no THP ever backs the range (khugepaged included): pages are 4 KiB, as our
    // fills are. With it, a fully populated PMD may become a THP (region.collapse, khugepaged),
    // which migrate then moves whole into a huge device page.
    ::madvise(mem, r->length, thp ? MADV_HUGEPAGE : MADV_NOHUGEPAGE);
    rc = registerRange(r->uffd.get(), reinterpret_cast<uint64_t>(mem), r->length,
                       UFFDIO_REGISTER_MODE_MISSING | UFFDIO_REGISTER_MODE_WP | (minorFaults ? UFFDIO_REGISTER_MODE_MINOR : 0),
                       &ioctls);
    if (rc == -EINVAL && fileFd >= 0)
      throw codedError(env, "ERR_BACKING_UNSUPPORTED",
                       "userfaultfd cannot register a mapping of this file: it serves shmem files only; "
                       "put the file on tmpfs (e.g. /dev/shm) or use an anonymous region");
    if (rc != 0)
      throw systemError(env, -rc, "ioctl(UFFDIO_REGISTER)", "registering " + pagesText(pages) + " for missing and write-protect faults",
                        rc == -EINVAL ? "this kernel cannot write-protect anonymous memory through userfaultfd; uffd-hmm needs Linux 5.7 or newer" : nullptr);
  }

  if (servicer == "native") {
    int efd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (efd < 0) throw systemError(env, errno, "eventfd", "the wake-up eventfd of a native servicer");
    r->wakeFd = UniqueFd(efd);
  }
  // Everything that can still fail comes before the region is published: a region left registered
  // with nobody reading its messages would hold up the next fork() of the process forever.
  Napi::Object out = Napi::Object::New(env);
  out.Set("bytes", Napi::ArrayBuffer::New(env, r->base, r->length));
  if (inlineMode && !inlineAdd(r))
    throw codedError(env, "ERR_TOO_MANY_INLINE_REGIONS",
                     "at most 64 inline regions may be open at once; close one, or map this one with servicer 'native'");
  r->ownerEnv = env;
  int handle = regions().add(r);
  keepAlive(env, KeepKind::Region, handle, info[1]);
  if (servicer == "native") startNativeServicer(r);
  out.Set("handle", handle);
  out.Set("address", Napi::BigInt::New(env, static_cast<uint64_t>(reinterpret_cast<uintptr_t>(r->base))));
  out.Set("pageSize", Napi::Number::New(env, static_cast<double>(r->pageSize)));
  out.Set("via", viaName(r->via));
  out.Set("userModeOnly", r->userModeOnly);
  out.Set("forkEvents", r->forkEvents);
  return out;
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

// regionTakeOver(region) -> true if this call took over (false: already guarded or closed); throws
// a SystemError (pthread_create) when no guard thread could be started.
static Napi::Value RegionTakeOver(const Napi::CallbackInfo& info) {
  auto r = argRegion(info, 0);
  int err = 0;
  TakeOver done = takeOver(r, &err);
  if (done == TakeOver::NoThread)
    throw systemError(info.Env(), err, "pthread_create", "starting a native guard to serve the region's faults");
  return Napi::Boolean::New(info.Env(), done == TakeOver::Done);
}

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

// regionGuarded(region) -> whether a native guard took over (it can happen while JS is blocked).
static Napi::Value RegionGuarded(const Napi::CallbackInfo& info) {
  auto r = regions().get(static_cast<int>(argU32(info, 0, "region")));
  return Napi::Boolean::New(info.Env(), r && r->guarded.load());
}

// regionWake(region, first, count) -> 0 | -errno
static Napi::Value RegionWake(const Napi::CallbackInfo& info) {
  auto r = argRegion(info, 0);
  uint32_t first = argU32(info, 1, "first");
  uint32_t count = argU32(info, 2, "count");
  checkRange(info, *r, first, count);
  return Napi::Number::New(info.Env(), wake(r->uffd.get(), r->addr(first), uint64_t(count) * r->pageSize));
}

// regionWriteProtect(region, first, count, protect, wake) -> 0 | -errno
static Napi::Value RegionWriteProtect(const Napi::CallbackInfo& info) {
  auto r = argRegion(info, 0);
  uint32_t first = argU32(info, 1, "first");
  uint32_t count = argU32(info, 2, "count");
  checkRange(info, *r, first, count);
  bool protect = argBool(info, 3, "protect");
  bool wakeup = argBool(info, 4, "wake");
  return Napi::Number::New(info.Env(), writeProtect(r->uffd.get(), r->addr(first), uint64_t(count) * r->pageSize, protect, wakeup));
}

// /proc/self/pagemap, opened on first use and kept open. A failed open (EMFILE, at the descriptor
// limit) is not kept: the next call tries again, instead of failing with a stale errno for good.
static int pagemapFd() {
  static std::atomic<int> cached{-1};
  int fd = cached.load(std::memory_order_acquire);
  if (fd >= 0) return fd;
  fd = ::open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  int expected = -1;
  if (!cached.compare_exchange_strong(expected, fd)) {
    ::close(fd);
    return expected;
  }
  return fd;
}

// For the bindings that read pagemap: a failed open is named as such.
static void openPagemapOrThrow(Napi::Env env) {
  if (pagemapFd() < 0) throw systemError(env, errno, "open(/proc/self/pagemap)", "opening the kernel's view of the region's page table");
}

static constexpr uint64_t kPmPresent = 1ull << 63;
static constexpr uint64_t kPmSwap = 1ull << 62;

// Reads the kernel's pagemap words for pages [first, first+count) into out; -errno on failure.
static int readPagemap(const RegionState& r, uint32_t first, uint32_t count, uint64_t* out) {
  int fd = pagemapFd();
  if (fd < 0) return -errno;
  off_t off = static_cast<off_t>((reinterpret_cast<uint64_t>(r.base) / r.pageSize + first) * 8);
  size_t want = size_t(count) * 8;
  size_t got = 0;
  while (got < want) {
    ssize_t n = ::pread(fd, reinterpret_cast<uint8_t*>(out) + got, want - got, off + static_cast<off_t>(got));
    if (n < 0) {
      if (errno == EINTR) continue;
      return -errno;
    }
    if (n == 0) return -EIO;
    got += static_cast<size_t>(n);
  }
  return 0;
}

TakeOver takeOver(const std::shared_ptr<RegionState>& r, int* err) {
  if (r->closed.load(std::memory_order_acquire) || r->guarded.exchange(true)) return TakeOver::Already;
  // Pages the dead servicer held locked stay locked forever unless released here. Whether its fill
  // happened is read from the kernel's pagemap, so the table ends up as the kernel sees the page.
  for (uint32_t page = 0; page < r->pages; page++) {
    int32_t* st = r->state(page);
    int32_t s = __atomic_load_n(st, __ATOMIC_ACQUIRE);
    if (!(s & layout::kLocked)) continue;
    uint64_t pm = 0;
    bool filled = readPagemap(*r, page, 1, &pm) == 0 && (pm & kPmPresent);
    int32_t kind = s & layout::kKindMask;
    if (kind == layout::kKindDevice && filled) {
      auto dev = devices().get((s >> layout::kDeviceShift) & layout::kMaxDeviceSlot);
      uint32_t pfn = static_cast<uint32_t>(st[1]);
      st[1] = 0;
      __atomic_store_n(st, layout::kKindPresent | (s & layout::kWrite), __ATOMIC_RELEASE);
      if (dev) {
        dev->putPage(pfn);
        __atomic_fetch_add(&dev->shared[layout::kDevMigratedToRam], 1, __ATOMIC_RELAXED);
      }
      __atomic_fetch_add(r->stat(layout::kStatMigratedBack), 1, __ATOMIC_RELAXED);
    } else if (kind == layout::kKindNone && filled) {
      __atomic_store_n(st, layout::kKindPresent | layout::kWrite, __ATOMIC_RELEASE);
    } else {
      __atomic_store_n(st, s & ~(layout::kLocked | layout::kZapping), __ATOMIC_RELEASE);
    }
    noteUnlock(*r);
  }
  // Zap events the dead servicer read but never applied are lost with it: holders must not wait
  // for them (Region#settleZaps).
  __atomic_store_n(r->stat(layout::kZapBatchesDone), __atomic_load_n(r->stat(layout::kZapBatchesRead), __ATOMIC_SEQ_CST),
                   __ATOMIC_SEQ_CST);
  if (!r->servicer.joinable()) {
    // The worker may have died of the very shortage that fails this eventfd (EMFILE at start-up).
    // The guard serves without it: the eventfd only makes its stop prompt, and a guard without one
    // looks at its stop flag every few milliseconds instead (servicer_thread.cc).
    int efd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (efd >= 0) r->wakeFd = UniqueFd(efd);
    try {
      startNativeServicer(r);
    } catch (const std::system_error& e) {
      // No thread (EAGAIN): nobody serves r. Say so rather than look guarded, and let a later try run.
      if (err) *err = e.code().value();
      r->guarded.store(false);
      return TakeOver::NoThread;
    }
  }
  // Faults the dead servicer read but never served: wake their threads so they fault afresh.
  wake(r->uffd.get(), reinterpret_cast<uint64_t>(r->base), r->length);
  return TakeOver::Done;
}

// regionCopyOut(region, first, count, device, pfns: Int32Array) -> pages that held data.
// Copies page first+i into device page pfns[i] (skipped when pfns[i] < 0). A page with no CPU page
// behind it is never read through memory (that would fault on the migrating thread, which holds
// the page locked): its device page is zeroed instead, as migrate_vma does for a hole.
static Napi::Value RegionCopyOut(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto r = argRegion(info, 0);
  uint32_t first = argU32(info, 1, "first");
  uint32_t count = argU32(info, 2, "count");
  checkRange(info, *r, first, count);
  auto dev = devices().get(static_cast<int>(argU32(info, 3, "device")));
  if (!dev) throw codedError(env, "ERR_DEVICE_CLOSED", kDeviceClosed);
  auto [pfns, n] = argInt32Array(info, 4, "pfns");
  if (n < count) throw rangeError(env, "pfns is shorter than count");
  for (uint32_t i = 0; i < count; i++)
    if (pfns[i] >= 0 && static_cast<size_t>(pfns[i]) >= dev->capacity) throw rangeError(env, "pfn is outside the device's memory");
  openPagemapOrThrow(env);
  constexpr uint32_t kChunk = 512;
  uint64_t pm[kChunk];
  uint32_t withData = 0;
  for (uint32_t done = 0; done < count; done += kChunk) {
    uint32_t k = std::min(kChunk, count - done);
    int rc = readPagemap(*r, first + done, k, pm);
    if (rc != 0) throw systemError(env, -rc, "pread(/proc/self/pagemap)", "reading the region's page table entries");
    for (uint32_t i = 0; i < k; i++) {
      int32_t pfn = pfns[done + i];
      if (pfn < 0) continue;
      uint8_t* dst = dev->page(static_cast<uint32_t>(pfn));
      if (pm[i] & (kPmPresent | kPmSwap)) {
        std::memcpy(dst, r->base + size_t(first + done + i) * r->pageSize, r->pageSize);
        withData++;
      } else {
        std::memset(dst, 0, r->pageSize);
      }
    }
  }
  return Napi::Number::New(env, withData);
}

// regionPagemap(region, first, count, out: BigUint64Array): the kernel's own pagemap words.
static Napi::Value RegionPagemap(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto r = argRegion(info, 0);
  uint32_t first = argU32(info, 1, "first");
  uint32_t count = argU32(info, 2, "count");
  checkRange(info, *r, first, count);
  Napi::Value v = info[3];
  if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_biguint64_array)
    throw typeError(env, "out must be a BigUint64Array");
  auto arr = v.As<Napi::TypedArrayOf<uint64_t>>();
  if (arr.ElementLength() < count) throw rangeError(env, "out is shorter than count");
  openPagemapOrThrow(env);
  int rc = readPagemap(*r, first, count, arr.Data());
  if (rc != 0) throw systemError(env, -rc, "pread(/proc/self/pagemap)", "reading the region's page table entries");
  return env.Undefined();
}

// regionDiscard(region, first, count, free?) -> 0 | -errno: MADV_DONTNEED, the CPU pages are freed;
// with free, MADV_FREE: they are freed only if reclaim needs them before they are written again.
static Napi::Value RegionDiscard(const Napi::CallbackInfo& info) {
  const PageSpan s = argSpan(info);
  const int advice = info.Length() > 3 && argBool(info, 3, "free") ? MADV_FREE : MADV_DONTNEED;
  return Napi::Number::New(info.Env(), ::madvise(s.start, s.length, advice) == 0 ? 0 : -errno);
}

// regionCollapse(region, first, count) -> 0 | -errno: MADV_COLLAPSE, a THP made of each fully
// populated PMD of the range (thp regions; the kernel refuses write-protected or missing pages).
static Napi::Value RegionCollapse(const Napi::CallbackInfo& info) {
  const PageSpan s = argSpan(info);
  return Napi::Number::New(info.Env(), ::madvise(s.start, s.length, kMadvCollapse) == 0 ? 0 : -errno);
}

// regionUnmap(region, first, count) -> 0 | -errno: munmap of part of the region. The rest of the
// mapping stays; the whole range is unmapped again (harmlessly) when the region is destroyed.
static Napi::Value RegionUnmap(const Napi::CallbackInfo& info) {
  const PageSpan s = argSpan(info);
  return Napi::Number::New(info.Env(), ::munmap(s.start, s.length) == 0 ? 0 : -errno);
}

// regionRemap(region, pages, shared: Int32Array) -> { address, bytes }: mremap(MREMAP_MAYMOVE) to a
// new size. The move is forced (onto a fresh reservation) so that the kernel always sends
// EVENT_REMAP, on which the servicer switches to the new base and table atomically with respect to
// the faults it serves; this call returns once it has. The caller holds every page locked.
static Napi::Value RegionRemap(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto r = argRegion(info, 0);
  uint32_t pages = argU32(info, 1, "pages");
  auto [shared, words] = argSharedInt32(info, 2, "shared");
  if (pages == 0) throw rangeError(env, "pages must be at least 1");
  if (words < layout::kRegionHeader + 2 * size_t(pages)) throw rangeError(env, "shared buffer too small for the region");
  if (r->inlineMode)
    throw codedError(env, "ERR_SERVICER_UNSUPPORTED",
                     "an 'inline' region reads no EVENT_REMAP, so it cannot be remapped; map the region with servicer 'worker' or 'native' to remap it");
  if (r->activeTouchers.load() > 0)
    throw codedError(env, "ERR_REGION_BUSY", "native touchers are running on this region: stop them (and wait) before remapping it");
  if (!(kernelFeatures().features & UFFD_FEATURE_EVENT_REMAP))
    throw codedError(env, "ERR_UFFD_FEATURE_MISSING",
                     "this kernel lacks UFFD_FEATURE_EVENT_REMAP (Linux 4.11+), which region.remap needs; map a new region of the "
                     "size you need instead, or upgrade the kernel");
  const size_t newLength = size_t(pages) * r->pageSize;
  void* reserve = ::mmap(nullptr, newLength, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (reserve == MAP_FAILED)
    throw systemError(env, errno, "mmap", "reserving " + std::to_string(newLength) + " bytes to remap a region to " + pagesText(pages));
  r->pendingBase = static_cast<uint8_t*>(reserve);
  r->pendingLength = newLength;
  r->pendingPages = pages;
  r->pendingShared = shared;
  r->expectingRemap.store(true, std::memory_order_release);
  void* moved = ::mremap(r->base, r->length, newLength, MREMAP_MAYMOVE | MREMAP_FIXED, reserve);
  if (moved == MAP_FAILED) {
    int err = errno;
    r->expectingRemap.store(false);
    ::munmap(reserve, newLength);
    throw systemError(env, err, "mremap", "moving a region of " + pagesText(r->pages) + " to " + pagesText(pages));
  }
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (__atomic_load_n(&r->base, __ATOMIC_ACQUIRE) != moved) {
    if (std::chrono::steady_clock::now() > deadline) {
      // No servicer saw the event (it died): switch ourselves, nothing else is reading.
      r->applyRemap(reinterpret_cast<uint64_t>(r->base));
      break;
    }
    std::this_thread::yield();
  }
  int h = static_cast<int>(argU32(info, 0, "region"));
  dropKeepAlive(env, KeepKind::Region, h);
  keepAlive(env, KeepKind::Region, h, info[2]);
  Napi::Object out = Napi::Object::New(env);
  out.Set("bytes", Napi::ArrayBuffer::New(env, r->base, r->length));
  out.Set("address", Napi::BigInt::New(env, static_cast<uint64_t>(reinterpret_cast<uintptr_t>(r->base))));
  return out;
}

// regionMprotect(region, first, count, prot: 0 none | 1 read | 3 readwrite) -> 0 | -errno
static Napi::Value RegionMprotect(const Napi::CallbackInfo& info) {
  auto r = argRegion(info, 0);
  uint32_t first = argU32(info, 1, "first");
  uint32_t count = argU32(info, 2, "count");
  checkRange(info, *r, first, count);
  uint32_t prot = argU32(info, 3, "prot");
  if (prot != PROT_NONE && prot != PROT_READ && prot != (PROT_READ | PROT_WRITE))
    throw rangeError(info.Env(), "prot must be none, read or readwrite");
  int rc = ::mprotect(r->base + size_t(first) * r->pageSize, size_t(count) * r->pageSize, static_cast<int>(prot)) == 0 ? 0 : -errno;
  return Napi::Number::New(info.Env(), rc);
}

void testHoldPoint(RegionState& r, const std::atomic<bool>& stop) {
  if (r.testHoldBatches.load(std::memory_order_relaxed) <= 0) return;
  if (r.testHoldBatches.fetch_sub(1) <= 0) {
    r.testHoldBatches.fetch_add(1);  // released meanwhile
    return;
  }
  const int me = r.testHeld.fetch_add(1) + 1;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(r.testHoldMs.load());
  while (r.testReleased.load() < me && std::chrono::steady_clock::now() < deadline &&
         !r.closed.load(std::memory_order_acquire) && !stop.load(std::memory_order_acquire)) {
    struct timespec ts = {0, 100 * 1000};
    nanosleep(&ts, nullptr);
  }
}

// TEST ONLY. testHoldServicer(region, batches, ms) -> batches held so far: the servicer holds each of
// the next `batches` batches it reads between reading and serving them, for at most `ms` each
// (at most 10 s), or until testReleaseServicer. batches 0 only asks the count. See RegionState.
static Napi::Value TestHoldServicer(const Napi::CallbackInfo& info) {
  auto r = argRegion(info, 0);
  uint32_t batches = argU32(info, 1, "batches");
  uint32_t ms = argU32(info, 2, "ms");
  if (batches > 64 || ms > 10000) throw rangeError(info.Env(), "batches must be at most 64 and ms at most 10000");
  if (batches > 0) {
    r->testHoldMs.store(static_cast<int>(ms));
    r->testReleased.store(r->testHeld.load());  // batches held from now on wait for a new release
    r->testHoldBatches.store(static_cast<int>(batches));
  }
  return Napi::Number::New(info.Env(), r->testHeld.load());
}

// TEST ONLY. testReleaseServicer(region, upTo) -> batches held so far: lets held batches number
// 1..upTo go (numbered as testHoldServicer counts them); upTo 0 lets every batch go and cancels the
// holds not taken yet.
static Napi::Value TestReleaseServicer(const Napi::CallbackInfo& info) {
  auto r = argRegion(info, 0);
  int upTo = static_cast<int>(std::min<uint32_t>(argU32(info, 1, "upTo"), INT32_MAX));
  if (upTo == 0) {
    r->testHoldBatches.store(0);
    upTo = INT32_MAX;  // every batch, even one being held just now
  }
  int seen = r->testReleased.load();
  while (seen < upTo && !r->testReleased.compare_exchange_weak(seen, upTo)) {
  }
  return Napi::Number::New(info.Env(), r->testHeld.load());
}

// detachArrayBuffer(ab): a closed region's bytes view becomes length 0 instead of dangling.
static Napi::Value DetachArrayBuffer(const Napi::CallbackInfo& info) {
  Napi::Value v = info[0];
  if (!v.IsArrayBuffer()) throw typeError(info.Env(), "expected an ArrayBuffer");
  auto ab = v.As<Napi::ArrayBuffer>();
  if (!ab.IsDetached()) ab.Detach();
  return info.Env().Undefined();
}

// errnoName(n) -> 'EEXIST' etc., for turning -errno results into SystemErrors in TypeScript.
static Napi::Value ErrnoName(const Napi::CallbackInfo& info) {
  int err = static_cast<int>(argU32(info, 0, "errno"));
  const char* name = ::strerrorname_np(err);
  return Napi::String::New(info.Env(), name ? name : "EUNKNOWN");
}

void initRegion(Napi::Env env, Napi::Object exports) {
  exports.Set("probe", Napi::Function::New(env, Probe));
  exports.Set("regionCreate", Napi::Function::New(env, RegionCreate));
  exports.Set("regionClose", Napi::Function::New(env, RegionClose));
  exports.Set("regionTakeOver", Napi::Function::New(env, RegionTakeOver));
  exports.Set("regionGuarded", Napi::Function::New(env, RegionGuarded));
  exports.Set("regionTraceSet", Napi::Function::New(env, RegionTraceSet));
  exports.Set("regionWake", Napi::Function::New(env, RegionWake));
  exports.Set("regionWriteProtect", Napi::Function::New(env, RegionWriteProtect));
  exports.Set("regionCopyOut", Napi::Function::New(env, RegionCopyOut));
  exports.Set("regionPagemap", Napi::Function::New(env, RegionPagemap));
  exports.Set("regionDiscard", Napi::Function::New(env, RegionDiscard));
  exports.Set("regionMprotect", Napi::Function::New(env, RegionMprotect));
  exports.Set("regionUnmap", Napi::Function::New(env, RegionUnmap));
  exports.Set("regionCollapse", Napi::Function::New(env, RegionCollapse));
  exports.Set("regionRemap", Napi::Function::New(env, RegionRemap));
  exports.Set("detachArrayBuffer", Napi::Function::New(env, DetachArrayBuffer));
  exports.Set("errnoName", Napi::Function::New(env, ErrnoName));
  exports.Set("testHoldServicer", Napi::Function::New(env, TestHoldServicer));
  exports.Set("testReleaseServicer", Napi::Function::New(env, TestReleaseServicer));
}

}  // namespace uffdhmm
