// The inline servicer: with UFFD_FEATURE_SIGBUS the kernel raises SIGBUS in the faulting thread
// instead of queueing a message, and our handler serves the fault right there and returns, so the
// access is retried without any context switch to a servicer thread.
#pragma once

#include <memory>

#include "region.h"

namespace uffdhmm {

// Installs the process-wide SIGBUS handler (once) and makes `r`'s faults served by it.
// Returns false when all inline slots are taken.
bool inlineAdd(const std::shared_ptr<RegionState>& r);
// Stops serving `r` inline and waits until no handler is still using it.
void inlineRemove(RegionState* r);

}  // namespace uffdhmm
