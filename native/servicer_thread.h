// The native servicer: one thread per region that reads its userfaultfd and serves every fault
// with the default policy, without JS. Its poll() always has a way out: the region's eventfd.
#pragma once

#include <memory>

#include "region.h"

namespace uffdhmm {

void startNativeServicer(std::shared_ptr<RegionState> r);
void stopNativeServicer(RegionState& r);

}  // namespace uffdhmm
