// mremap of a region (the twin of mm/mremap.c): the move itself, and the switch to the new base
// and table, which whoever reads the EVENT_REMAP makes so that no fault is translated half-way.
#include <napi.h>
#include <sys/mman.h>

#include <chrono>
#include <string>
#include <thread>

#include "napi_util.h"
#include "region.h"
#include "span.h"

namespace uffdhmm {

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
    // EFAULT: the range spans more than one vma. lib/mm/mremap.ts refuses the splits it knows of
    // with these words (SPLIT_HINT); this is one made behind the library's back.
    throw systemError(env, err, "mremap", "moving a region of " + pagesText(r->pages) + " to " + pagesText(pages),
                      err == EFAULT ? "the region is no longer one mapping (mprotect gave part of it another protection, or part of it "
                                      "was unmapped), and mremap moves one mapping at a time; give the pages it keeps one protection "
                                      "first (region.mprotect), or shrink it to the part before the first change"
                                    : nullptr);
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

void initMremap(Napi::Env env, Napi::Object exports) {
  exports.Set("regionRemap", Napi::Function::New(env, RegionRemap));
}

}  // namespace uffdhmm
