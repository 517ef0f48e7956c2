// Device store allocation and the device's own reads and writes of its memory.
#include "device.h"

#include <napi.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>

#include "napi_util.h"

namespace uffdhmm {

SlotRegistry<DeviceStore>& devices() {
  static auto* registry = new SlotRegistry<DeviceStore>(layout::kMaxDeviceSlot);  // never destroyed: threads may still use it during exit()
  return *registry;
}

DeviceStore::~DeviceStore() {
  if (store) ::munmap(store, capacity * pageSize);
}

static void spinLock(int32_t* lock) {
  int32_t expected = 0;
  while (!__atomic_compare_exchange_n(lock, &expected, 1, false, __ATOMIC_ACQUIRE, __ATOMIC_RELAXED)) {
    expected = 0;
    __builtin_ia32_pause();
  }
}

static void spinUnlock(int32_t* lock) { __atomic_store_n(lock, 0, __ATOMIC_RELEASE); }

#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif
#ifndef SYS_process_madvise
#define SYS_process_madvise 440
#endif

// A pidfd of this process, for process_madvise; -1 when there is none (EMFILE: the caller
// madvises run by run) or when this is a forked child, which inherited its parent's.
static int ownPidfd() {
  static std::atomic<int> fd{-1};
  static std::atomic<pid_t> owner{0};
  const pid_t me = ::getpid();
  int f = fd.load(std::memory_order_acquire);
  if (f >= 0) return owner.load(std::memory_order_acquire) == me ? f : -1;
  f = static_cast<int>(::syscall(SYS_pidfd_open, me, 0));
  if (f < 0) return -1;
  owner.store(me, std::memory_order_release);
  int expected = -1;
  if (!fd.compare_exchange_strong(expected, f)) {
    ::close(f);
    return expected;
  }
  return f;
}

// MADV_DONTNEED over every run in one system call: process_madvise on this process, which Linux
// 6.13+ accepts for any advice. False when it could not (an older kernel, no pidfd).
static bool dropRuns(struct iovec* runs, int nruns, size_t bytes) {
  static std::atomic<bool> unsupported{false};
  if (nruns <= 1 || unsupported.load(std::memory_order_relaxed)) return false;
  const int pidfd = ownPidfd();
  if (pidfd < 0) return false;
  const long rc = ::syscall(SYS_process_madvise, pidfd, runs, static_cast<size_t>(nruns), MADV_DONTNEED, 0u);
  if (rc < 0 && (errno == EINVAL || errno == ENOSYS || errno == EPERM)) unsupported.store(true, std::memory_order_relaxed);
  return rc == static_cast<long>(bytes);
}

bool DeviceStore::putPage(uint32_t pfn) {
  if (pfn >= capacity) return false;
  int32_t old = __atomic_fetch_sub(&refcount()[pfn], 1, __ATOMIC_ACQ_REL);
  if (old != 1) return false;
  pushFree(pfn, true);
  return true;
}

bool DeviceStore::dropRef(uint32_t pfn) {
  if (pfn >= capacity) return false;
  if (__atomic_fetch_sub(&refcount()[pfn], 1, __ATOMIC_ACQ_REL) != 1) return false;
  // Counted as freeing before it stops counting as used: an allocator never sees it as neither.
  __atomic_fetch_add(&shared[layout::kDevFreeing], 1, __ATOMIC_ACQ_REL);
  __atomic_fetch_sub(&shared[layout::kDevUsed], 1, __ATOMIC_RELAXED);
  __atomic_fetch_add(&shared[layout::kDevFreed], 1, __ATOMIC_RELAXED);
  return true;
}

void DeviceStore::freeDropped(uint32_t pfn) {
  pushFree(pfn, false);
  __atomic_fetch_sub(&shared[layout::kDevFreeing], 1, __ATOMIC_ACQ_REL);
}

void DeviceStore::undoDrop(uint32_t pfn, bool wasLast) {
  if (pfn >= capacity) return;
  __atomic_fetch_add(&refcount()[pfn], 1, __ATOMIC_ACQ_REL);
  if (wasLast) {
    __atomic_fetch_add(&shared[layout::kDevUsed], 1, __ATOMIC_RELAXED);
    __atomic_fetch_sub(&shared[layout::kDevFreed], 1, __ATOMIC_RELAXED);
    __atomic_fetch_sub(&shared[layout::kDevFreeing], 1, __ATOMIC_ACQ_REL);
  }
}

void DeviceStore::pushFree(uint32_t pfn, bool count) {
  int32_t* hdr = shared;
  spinLock(&hdr[layout::kDevLock]);
  // With a pageFree hook the page goes into the freed log instead of on the free stack: the main
  // thread runs the hook, then puts it there (lib/device.ts), so it is never handed out again
  // before its pageFree ran. A logged pfn cannot be freed again before it is drained, so the log
  // (capacity entries) cannot overflow; if it ever did, the page would still be free.
  const int32_t logged = hdr[layout::kDevFreedLogged];
  if (__atomic_load_n(&hdr[layout::kDevLogFrees], __ATOMIC_RELAXED) && logged < static_cast<int32_t>(capacity)) {
    freedLog()[logged] = static_cast<int32_t>(pfn);
    __atomic_store_n(&hdr[layout::kDevFreedLogged], logged + 1, __ATOMIC_RELEASE);
  } else {
    int32_t top = hdr[layout::kDevFreeTop];
    freeStack()[top] = static_cast<int32_t>(pfn);
    hdr[layout::kDevFreeTop] = top + 1;
  }
  if (count) __atomic_fetch_sub(&hdr[layout::kDevUsed], 1, __ATOMIC_RELAXED);
  spinUnlock(&hdr[layout::kDevLock]);
  if (count) __atomic_fetch_add(&hdr[layout::kDevFreed], 1, __ATOMIC_RELAXED);
}

int32_t DeviceStore::release(int32_t idleTop) {
  constexpr int32_t kMax = 1024;  // entries given back per call
  // Sorted and given back together. Small: this may run on a signal stack (the inline servicer
  // frees pages in its SIGBUS handler), so about 1 KiB of it.
  constexpr int32_t kChunk = 64;
  int32_t* hdr = shared;
  spinLock(&hdr[layout::kDevLock]);
  const int32_t top = hdr[layout::kDevFreeTop];
  const int32_t lo = hdr[layout::kDevReleased];
  if (hdr[layout::kDevReleasing] != 0 || !wantsRelease(top) || std::min(top - kReleaseWarm, idleTop) <= lo) {
    spinUnlock(&hdr[layout::kDevLock]);
    return 0;
  }
  // Entries [lo, hi) go back; the kReleaseWarm above them stay. Until this is done no thread may
  // pop an entry below hi (it would write a page that madvise is about to drop): allocations that
  // get that far, and huge allocations, wait on kDevReleasing (lib/devicepages.ts). Pushes land
  // at or above hi, so the entries read below without the lock stay as they are.
  const int32_t hi = std::min({top - kReleaseWarm, lo + kMax, idleTop});
  __atomic_store_n(&hdr[layout::kDevReleasing], hi, __ATOMIC_RELEASE);
  spinUnlock(&hdr[layout::kDevLock]);
  for (int32_t at = lo; at < hi; at += kChunk) {
    const int32_t n = std::min(kChunk, hi - at);
    uint32_t pfns[kChunk];
    for (int32_t i = 0; i < n; i++) pfns[i] = static_cast<uint32_t>(freeStack()[at + i]);
    // Runs of consecutive pfns coalesce (pages freed in the order they were migrated make one);
    // pages freed in random order make many, given back in one process_madvise where it can.
    std::sort(pfns, pfns + n);
    struct iovec runs[kChunk];
    int nruns = 0;
    size_t bytes = 0;
    for (int32_t i = 0; i < n;) {
      int32_t j = i + 1;
      while (j < n && pfns[j] == pfns[j - 1] + 1) j++;
      runs[nruns++] = {page(pfns[i]), size_t(j - i) * pageSize};
      bytes += size_t(j - i) * pageSize;
      i = j;
    }
    if (!dropRuns(runs, nruns, bytes))
      for (int i = 0; i < nruns; i++) ::madvise(runs[i].iov_base, runs[i].iov_len, MADV_DONTNEED);
  }
  spinLock(&hdr[layout::kDevLock]);
  hdr[layout::kDevReleased] = hi;
  __atomic_store_n(&hdr[layout::kDevReleasing], 0, __ATOMIC_RELEASE);
  spinUnlock(&hdr[layout::kDevLock]);
  return hi - lo;
}

// deviceCreate(capacity, sharedBuffer) -> slot
static Napi::Value DeviceCreate(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  uint32_t capacity = argU32(info, 0, "capacity");
  auto [shared, words] = argSharedInt32(info, 1, "shared");
  if (capacity == 0 || words < layout::kDeviceHeader + 3 * static_cast<size_t>(capacity))
    throw rangeError(env, "shared buffer too small for the device capacity");
  size_t ps = static_cast<size_t>(::sysconf(_SC_PAGESIZE));
  void* mem = ::mmap(nullptr, capacity * ps, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (mem == MAP_FAILED)
    throw systemError(env, errno, "mmap", std::to_string(capacity * ps) + " bytes of device memory for capacity " + std::to_string(capacity));
  auto dev = std::make_shared<DeviceStore>(static_cast<uint8_t*>(mem), capacity, ps, shared);
  int slot = devices().add(dev);
  if (slot < 0) throw codedError(env, "ERR_TOO_MANY_DEVICES", "too many open devices (at most 32767); close devices you no longer use (device.close())");
  keepAlive(env, KeepKind::Device, slot, info[1]);
  return Napi::Number::New(env, slot);
}

static std::shared_ptr<DeviceStore> argDevice(const Napi::CallbackInfo& info, size_t i) {
  auto dev = devices().get(static_cast<int>(argU32(info, i, "device")));
  if (!dev) throw codedError(info.Env(), "ERR_DEVICE_CLOSED", kDeviceClosed);
  return dev;
}

static uint32_t argPfn(const Napi::CallbackInfo& info, size_t i, const DeviceStore& dev) {
  uint32_t pfn = argU32(info, i, "pfn");
  if (pfn >= dev.capacity) throw rangeError(info.Env(), "pfn is outside the device's memory");
  return pfn;
}

// deviceRelease(slot, idleTop) -> pages given back: DeviceStore::release, from the main thread's
// release tick (lib/device.ts).
static Napi::Value DeviceRelease(const Napi::CallbackInfo& info) {
  auto dev = argDevice(info, 0);
  const int32_t idleTop = static_cast<int32_t>(std::min<uint32_t>(argU32(info, 1, "idleTop"), static_cast<uint32_t>(dev->capacity)));
  return Napi::Number::New(info.Env(), dev->release(idleTop));
}

// deviceDestroy(slot): the TypeScript side has already evicted every page.
static Napi::Value DeviceDestroy(const Napi::CallbackInfo& info) {
  int slot = static_cast<int>(argU32(info, 0, "device"));
  devices().remove(slot);
  dropKeepAlive(info.Env(), KeepKind::Device, slot);
  return info.Env().Undefined();
}

// deviceRead(slot, pfn, out: Uint8Array) copies one device page out.
static Napi::Value DeviceRead(const Napi::CallbackInfo& info) {
  auto dev = argDevice(info, 0);
  uint32_t pfn = argPfn(info, 1, *dev);
  auto [data, len] = argBytes(info, 2, "out");
  if (len < dev->pageSize) throw rangeError(info.Env(), "out is smaller than a page");
  std::memcpy(data, dev->page(pfn), dev->pageSize);
  return info.Env().Undefined();
}

// deviceWrite(slot, pfn, data: ArrayBufferView, offset) writes into one device page.
static Napi::Value DeviceWrite(const Napi::CallbackInfo& info) {
  auto dev = argDevice(info, 0);
  uint32_t pfn = argPfn(info, 1, *dev);
  auto [data, len] = argBytes(info, 2, "data");
  uint32_t offset = argU32(info, 3, "offset");
  if (offset > dev->pageSize || len > dev->pageSize - offset)
    throw rangeError(info.Env(), "data does not fit in the page at that offset");
  std::memcpy(dev->page(pfn) + offset, data, len);
  return info.Env().Undefined();
}

// deviceZero(slot, pfn): a freshly allocated device page starts zeroed, like a migrated hole.
static Napi::Value DeviceZero(const Napi::CallbackInfo& info) {
  auto dev = argDevice(info, 0);
  uint32_t pfn = argPfn(info, 1, *dev);
  std::memset(dev->page(pfn), 0, dev->pageSize);
  return info.Env().Undefined();
}

// deviceCopyPage(srcSlot, srcPfn, dstSlot, dstPfn): device-to-device migration.
static Napi::Value DeviceCopyPage(const Napi::CallbackInfo& info) {
  auto src = argDevice(info, 0);
  uint32_t srcPfn = argPfn(info, 1, *src);
  auto dst = argDevice(info, 2);
  uint32_t dstPfn = argPfn(info, 3, *dst);
  std::memcpy(dst->page(dstPfn), src->page(srcPfn), dst->pageSize);
  return info.Env().Undefined();
}

// deviceChecksum(slot, pfn) -> CRC32 of one device page, so tests compare without copying.
static Napi::Value DeviceChecksum(const Napi::CallbackInfo& info) {
  auto dev = argDevice(info, 0);
  uint32_t pfn = argPfn(info, 1, *dev);
  return Napi::Number::New(info.Env(), crc32(0, dev->page(pfn), dev->pageSize));
}

void initDevice(Napi::Env env, Napi::Object exports) {
  exports.Set("deviceCreate", Napi::Function::New(env, DeviceCreate));
  exports.Set("deviceDestroy", Napi::Function::New(env, DeviceDestroy));
  exports.Set("deviceRelease", Napi::Function::New(env, DeviceRelease));
  exports.Set("deviceRead", Napi::Function::New(env, DeviceRead));
  exports.Set("deviceWrite", Napi::Function::New(env, DeviceWrite));
  exports.Set("deviceZero", Napi::Function::New(env, DeviceZero));
  exports.Set("deviceCopyPage", Napi::Function::New(env, DeviceCopyPage));
  exports.Set("deviceChecksum", Napi::Function::New(env, DeviceChecksum));
}

}  // namespace uffdhmm
