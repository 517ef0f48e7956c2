// The kernel's own views of this process under /proc: its page table (pagemap) and what a thread
// is doing (task/<tid>/syscall). The bindings compare our table against them.
#pragma once

#include <napi.h>

#include <sys/types.h>

#include <cstdint>

#include "region.h"

namespace uffdhmm {

// pagemap entry bits (Documentation/admin-guide/mm/pagemap.rst).
constexpr uint64_t kPmPresent = 1ull << 63;
constexpr uint64_t kPmSwap = 1ull << 62;
constexpr uint64_t kPmUffdWp = 1ull << 57;  // the pte is userfaultfd write-protected

// Reads the kernel's pagemap words for pages [first, first+count) of r into out; -errno on failure.
// The caller has checked the range against r.
int readPagemap(const RegionState& r, uint32_t first, uint32_t count, uint64_t* out);

// For the bindings that read pagemap: a failed open is named as such (a SystemError).
void openPagemapOrThrow(Napi::Env env);

// Copies up to len bytes of this process's memory at addr into dst through /proc/self/mem, which
// never faults: a missing page (never touched, or zapped meanwhile) is not faulted in through
// userfaultfd, where a thread holding that page's lock would wait on itself for good; the copy
// stops before it. Returns the bytes copied (whole pages from a page-aligned addr; 0 when the first
// page is missing) or -errno. openMemOrThrow first names a failed open.
ssize_t readOwnMemory(const uint8_t* addr, uint8_t* dst, size_t len);
void openMemOrThrow(Napi::Env env);

}  // namespace uffdhmm
