// The checked way in from JS to a region's pages: every binding that takes a (region, first, count)
// range turns it into a PageSpan here, so no address reaches a system call unchecked.
#pragma once

#include <napi.h>

#include <cstddef>
#include <cstdint>
#include <memory>

#include "region.h"

namespace uffdhmm {

// The pages [first, first + count) of r. The reference keeps the mapping alive while the call uses
// it; start/length are its bytes, computed once the range is known to lie inside the region.
struct PageSpan {
  std::shared_ptr<RegionState> r;
  uint32_t first;
  uint32_t count;
  uint8_t* start;
  size_t length;
};

// The open region whose handle is argument i: ERR_REGION_CLOSED when it is closed or unknown.
std::shared_ptr<RegionState> argRegion(const Napi::CallbackInfo& info, size_t i);

// The range named by arguments (regionIdx, firstIdx, countIdx). TypeError when one is not a
// number, RangeError (ERR_OUT_OF_RANGE) when it is not a u32 or the range leaves the region; the
// check is done in 64 bits, so first + count can never wrap around into the mapping.
PageSpan argPages(const Napi::CallbackInfo& info, size_t regionIdx, size_t firstIdx, size_t countIdx);

// The same bound for a range already in hand (first, count).
void checkRange(const Napi::CallbackInfo& info, const RegionState& r, uint32_t first, uint32_t count);

}  // namespace uffdhmm
