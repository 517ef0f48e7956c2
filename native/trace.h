// The fault trace: a ring of fixed-size records in a SharedArrayBuffer that any servicer (native
// thread, SIGBUS handler, worker through regionComplete) appends to without locks or allocation.
// A writer reserves a slot with one atomic add; a full ring overwrites its oldest records and
// counts them. lib/trace.ts reads it; the layout is in native/layout.h and lib/layout.ts.
#pragma once

#include <time.h>

#include <cstdint>
#include <cstring>

#include "layout.h"
#include "region.h"

namespace uffdhmm {

inline uint64_t monoNs() {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return uint64_t(ts.tv_sec) * 1000000000ull + uint64_t(ts.tv_nsec);
}

// Appends one record if r has a trace attached. t0Ns is when the fault was read (or raised).
// pfn: the device page a device entry named; hookUs: time in the driver's fault hook (0: none).
inline void traceRecord(RegionState& r, uint32_t page, uint32_t flags, uint32_t tid, int32_t slot, int32_t outcome,
                        uint64_t t0Ns, uint32_t pfn, double hookUs) {
  int32_t* hdr = __atomic_load_n(&r.trace, __ATOMIC_ACQUIRE);
  if (!hdr || __atomic_load_n(&hdr[layout::kTraceEnabled], __ATOMIC_RELAXED) == 0) return;
  const uint32_t capacity = static_cast<uint32_t>(hdr[layout::kTraceCapacity]);
  const uint32_t idx = static_cast<uint32_t>(__atomic_fetch_add(&hdr[layout::kTraceNext], 1, __ATOMIC_ACQ_REL));
  if (idx >= capacity) __atomic_fetch_add(&hdr[layout::kTraceOverwritten], 1, __ATOMIC_RELAXED);
  double* rec = reinterpret_cast<double*>(hdr + layout::kTraceHeader) + size_t(idx % capacity) * layout::kTraceStride;
  // seq first to 0 (being written), the fields, then seq = idx + 1 with release: readers skip torn records.
  uint64_t zero = 0;
  __atomic_store(reinterpret_cast<uint64_t*>(&rec[layout::kTraceSeq]), &zero, __ATOMIC_RELEASE);
  const uint64_t now = monoNs();
  rec[layout::kTraceT0] = double(t0Ns) / 1000.0;
  rec[layout::kTracePage] = page;
  rec[layout::kTraceFlags] = flags;
  rec[layout::kTraceTid] = tid;
  rec[layout::kTraceSlot] = slot;
  rec[layout::kTraceOutcome] = outcome;
  rec[layout::kTraceServiceUs] = double(now - (t0Ns ? t0Ns : now)) / 1000.0;
  rec[layout::kTracePfn] = pfn;
  rec[layout::kTraceHookUs] = hookUs;
  double seq = double(idx) + 1;
  uint64_t bits;
  std::memcpy(&bits, &seq, sizeof bits);
  __atomic_store(reinterpret_cast<uint64_t*>(&rec[layout::kTraceSeq]), &bits, __ATOMIC_RELEASE);
}

}  // namespace uffdhmm
