// Region handles and page ranges from JS, checked before anything touches the mapping.
#include "span.h"

#include <string>

#include "napi_util.h"

namespace uffdhmm {

std::shared_ptr<RegionState> argRegion(const Napi::CallbackInfo& info, size_t i) {
  auto r = regions().get(static_cast<int>(argU32(info, i, "region")));
  if (!r || r->closed.load(std::memory_order_acquire))
    throw codedError(info.Env(), "ERR_REGION_CLOSED", kRegionClosed);
  return r;
}

void checkRange(const Napi::CallbackInfo& info, const RegionState& r, uint32_t first, uint32_t count) {
  if (r.contains(first, count)) return;
  // Worded as lib/errors.ts words ERR_OUT_OF_RANGE: what is accepted, then what came.
  const std::string msg =
      first > r.pages
          ? "first must be an integer from 0 to " + std::to_string(r.pages) + " (the region's pages), got " + std::to_string(first)
          : "count must be an integer from 0 to " + std::to_string(r.pages - first) + " (the pages from first to the region's end), got " +
                std::to_string(count);
  throw rangeError(info.Env(), msg.c_str());
}

PageSpan argPages(const Napi::CallbackInfo& info, size_t regionIdx, size_t firstIdx, size_t countIdx) {
  auto r = argRegion(info, regionIdx);
  const uint32_t first = argU32(info, firstIdx, "first");
  const uint32_t count = argU32(info, countIdx, "count");
  checkRange(info, *r, first, count);
  uint8_t* start = r->base + size_t(first) * r->pageSize;
  const size_t length = size_t(count) * r->pageSize;
  return {std::move(r), first, count, start, length};
}

}  // namespace uffdhmm
