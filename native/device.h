// The emulated device's own memory (its "VRAM"): a private mapping of `capacity` pages that only
// the device and the migration paths read or write, plus the shared page bookkeeping.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>

#include "layout.h"
#include "registry.h"

namespace uffdhmm {

struct DeviceStore {
  DeviceStore(uint8_t* s, size_t cap, size_t ps, int32_t* sh) : store(s), capacity(cap), pageSize(ps), shared(sh) {}
  ~DeviceStore();
  DeviceStore(const DeviceStore&) = delete;
  DeviceStore& operator=(const DeviceStore&) = delete;

  uint8_t* page(uint32_t pfn) const { return store + static_cast<size_t>(pfn) * pageSize; }
  int32_t* refcount() const { return shared + layout::kDeviceHeader; }
  int32_t* freeStack() const { return shared + layout::kDeviceHeader + capacity; }
  int32_t* freedLog() const { return shared + layout::kDeviceHeader + 2 * capacity; }

  // Drops one reference to `pfn`; on the last one the page goes back on the free stack or, when
  // the main thread runs the driver's pageFree (kDevLogFrees), into the freed log for it, and on
  // the free stack once the hook ran. Returns true when the page was freed. Safe from any thread and from a signal handler: atomics and the
  // free-stack spinlock that the TypeScript side takes the same way.
  bool putPage(uint32_t pfn);

  // putPage in two halves, for a fault engine that does its books before the fill that wakes the
  // faulting thread (fault.cc): dropRef takes the reference and, on the last, counts the page
  // freed (kDevUsed, kDevFreed) while it stays off the free stack, so nobody can take it while it
  // is still being copied from; returns true on the last. Then either freeDropped (the page goes
  // on the free stack, or into the freed log for pageFree) or, if the fill failed, undoDrop.
  bool dropRef(uint32_t pfn);
  void freeDropped(uint32_t pfn);
  void undoDrop(uint32_t pfn, bool wasLast);

  // Gives free pages back to the kernel (MADV_DONTNEED) once kReleaseWarm + kReleaseBatch of them
  // hold memory, keeping the kReleaseWarm most recently freed, which the free stack hands out
  // first, and only free-stack entries below idleTop: those nobody took during the caller's last
  // interval. One system call per 64 pages at most (one madvise per run where process_madvise is
  // missing); up to 1024 pages a call. Returns how many went back (0 while another call releases).
  // Never called on a free: a page freed and taken again soon (a migration round trip) must not
  // pay a first touch in between.
  int32_t release(int32_t idleTop);
  static constexpr int32_t kReleaseWarm = layout::kReleaseWarm;
  static constexpr int32_t kReleaseBatch = layout::kReleaseBatch;
  // Whether the free stack, its top at `top`, holds enough resident pages for release().
  bool wantsRelease(int32_t top) const {
    return top - __atomic_load_n(&shared[layout::kDevReleased], __ATOMIC_RELAXED) >= kReleaseWarm + kReleaseBatch;
  }

  // The free-stack push (or, with kDevLogFrees, the freed-log entry) of a page whose last
  // reference went (count: also kDevUsed and kDevFreed).
  void pushFree(uint32_t pfn, bool count);

  uint8_t* store;
  size_t capacity;
  size_t pageSize;
  int32_t* shared;  // backing store of a SharedArrayBuffer kept alive by the addon
};

SlotRegistry<DeviceStore>& devices();

}  // namespace uffdhmm
