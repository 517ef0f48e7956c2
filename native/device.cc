// Device store allocation and the device's own reads and writes of its memory.
#include "device.h"

#include <napi.h>
#include <sys/mman.h>
#include <unistd.h>

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

bool DeviceStore::putPage(uint32_t pfn, bool logFree) {
  if (pfn >= capacity) return false;
  int32_t old = __atomic_fetch_sub(&refcount()[pfn], 1, __ATOMIC_ACQ_REL);
  if (old != 1) return false;
  int32_t* hdr = shared;
  spinLock(&hdr[layout::kDevLock]);
  int32_t top = hdr[layout::kDevFreeTop];
  freeStack()[top] = static_cast<int32_t>(pfn);
  hdr[layout::kDevFreeTop] = top + 1;
  // Pages are allocated only by the main thread, which drains the log first: between two drains a
  // pfn is freed at most once, so the log (capacity entries) cannot overflow.
  const int32_t logged = hdr[layout::kDevFreedLogged];
  if (logFree && __atomic_load_n(&hdr[layout::kDevLogFrees], __ATOMIC_RELAXED) && logged < static_cast<int32_t>(capacity)) {
    freedLog()[logged] = static_cast<int32_t>(pfn);
    __atomic_store_n(&hdr[layout::kDevFreedLogged], logged + 1, __ATOMIC_RELEASE);
  }
  __atomic_fetch_sub(&hdr[layout::kDevUsed], 1, __ATOMIC_RELAXED);
  spinUnlock(&hdr[layout::kDevLock]);
  __atomic_fetch_add(&hdr[layout::kDevFreed], 1, __ATOMIC_RELAXED);
  return true;
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
  exports.Set("deviceRead", Napi::Function::New(env, DeviceRead));
  exports.Set("deviceWrite", Napi::Function::New(env, DeviceWrite));
  exports.Set("deviceZero", Napi::Function::New(env, DeviceZero));
  exports.Set("deviceCopyPage", Napi::Function::New(env, DeviceCopyPage));
  exports.Set("deviceChecksum", Napi::Function::New(env, DeviceChecksum));
}

}  // namespace uffdhmm
