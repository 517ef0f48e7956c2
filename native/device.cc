// Device store allocation and the device's own reads and writes of its memory.
#include "device.h"

#include <napi.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
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

bool DeviceStore::putPage(uint32_t pfn) {
  if (pfn >= capacity) return false;
  int32_t old = __atomic_fetch_sub(&refcount()[pfn], 1, __ATOMIC_ACQ_REL);
  if (old != 1) return false;
  int32_t* hdr = shared;
  spinLock(&hdr[layout::kDevLock]);
  int32_t top = hdr[layout::kDevFreeTop];
  freeStack()[top] = static_cast<int32_t>(pfn);
  hdr[layout::kDevFreeTop] = top + 1;
  __atomic_fetch_sub(&hdr[layout::kDevUsed], 1, __ATOMIC_RELAXED);
  const bool full = wantsRelease(top + 1);
  spinUnlock(&hdr[layout::kDevLock]);
  __atomic_fetch_add(&hdr[layout::kDevFreed], 1, __ATOMIC_RELAXED);
  if (full) release();
  return true;
}

void DeviceStore::release() {
  constexpr int32_t kMax = 1024;  // pages per call: the list lives on this thread's stack
  uint32_t pfns[kMax];
  int32_t* hdr = shared;
  spinLock(&hdr[layout::kDevLock]);
  const int32_t top = hdr[layout::kDevFreeTop];
  const int32_t lo = hdr[layout::kDevReleased];
  if (hdr[layout::kDevReleasing] != 0 || !wantsRelease(top)) {
    spinUnlock(&hdr[layout::kDevLock]);
    return;
  }
  // Entries [lo, hi) go back; the kReleaseWarm above them stay. Until this is done no thread may
  // pop an entry below hi (it would write a page that madvise is about to drop): allocations that
  // get that far, and huge allocations, wait on kDevReleasing (lib/devicepages.ts). Pushes land
  // above hi and are not affected.
  const int32_t hi = std::min(top - kReleaseWarm, lo + kMax);
  const int32_t n = hi - lo;
  for (int32_t i = 0; i < n; i++) pfns[i] = static_cast<uint32_t>(freeStack()[lo + i]);
  __atomic_store_n(&hdr[layout::kDevReleasing], hi, __ATOMIC_RELEASE);
  spinUnlock(&hdr[layout::kDevLock]);
  // One madvise per run of consecutive pfns: pages freed in the order they were migrated coalesce.
  std::sort(pfns, pfns + n);
  for (int32_t i = 0; i < n;) {
    int32_t j = i + 1;
    while (j < n && pfns[j] == pfns[j - 1] + 1) j++;
    ::madvise(page(pfns[i]), size_t(j - i) * pageSize, MADV_DONTNEED);
    i = j;
  }
  spinLock(&hdr[layout::kDevLock]);
  hdr[layout::kDevReleased] = hi;
  __atomic_store_n(&hdr[layout::kDevReleasing], 0, __ATOMIC_RELEASE);
  spinUnlock(&hdr[layout::kDevLock]);
}

// deviceCreate(capacity, sharedBuffer) -> slot
static Napi::Value DeviceCreate(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  uint32_t capacity = argU32(info, 0, "capacity");
  auto [shared, words] = argSharedInt32(info, 1, "shared");
  if (capacity == 0 || words < layout::kDeviceHeader + 2 * static_cast<size_t>(capacity))
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

// deviceRelease(slot): DeviceStore::release, for pages the TypeScript side freed (lib/device.ts putPage).
static Napi::Value DeviceRelease(const Napi::CallbackInfo& info) {
  argDevice(info, 0)->release();
  return info.Env().Undefined();
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
