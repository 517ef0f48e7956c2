// The kernel's own views of this process under /proc: its page table (pagemap) and what a thread
// is doing (task/<tid>/syscall). The bindings compare our table against them.
#pragma once

#include <napi.h>

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

}  // namespace uffdhmm
