// The native servicer: one thread per region that reads its userfaultfd and serves every fault
// with the default policy, without JS. Its poll() always has a way out: the region's eventfd.
#pragma once

#include <memory>

#include "region.h"

namespace uffdhmm {

void startNativeServicer(std::shared_ptr<RegionState> r);
void stopNativeServicer(RegionState& r);

// Reads up to `max` pending messages from a non-blocking userfaultfd; returns the count, 0 when
// none are pending, or -errno.
int readMessages(int fd, struct uffd_msg* msgs, int max);

}  // namespace uffdhmm
