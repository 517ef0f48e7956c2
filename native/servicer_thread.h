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

// Whether a batch of messages holds a REMOVE or UNMAP: only those batches are counted for
// Region#settleZaps (layout::kZapBatchesRead), so a main-thread holder never waits on faults.
inline bool hasZaps(const struct uffd_msg* msgs, int n) {
  for (int i = 0; i < n; i++)
    if (msgs[i].event == UFFD_EVENT_REMOVE || msgs[i].event == UFFD_EVENT_UNMAP) return true;
  return false;
}

}  // namespace uffdhmm
