// The worker servicer's event source: one epoll set over the userfaultfds of every region it
// serves, plus an eventfd so the owner can wake it. Events land in a caller-owned Float64Array,
// already translated from addresses to (region, page), so the JS hot path allocates nothing.
#include <napi.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>

#include <algorithm>
#include <cerrno>
#include <utility>
#include <vector>

#include "napi_util.h"
#include "region.h"
#include "registry.h"
#include "servicer_thread.h"

namespace uffdhmm {

namespace {

struct Poller {
  UniqueFd epoll;
  UniqueFd wakeFd;
  // Faults at addresses a region does not cover yet (a remap's new address, queued before its
  // EVENT_REMAP): kept here and reported once the region has moved. Only the waiting thread uses it.
  std::vector<std::pair<int, struct uffd_msg>> parked;
};

Registry<Poller>& pollers() {
  static auto* registry = new Registry<Poller>;  // never destroyed: threads may still use it during exit()
  return *registry;
}

constexpr uint64_t kWakeTag = 0;  // epoll data of the eventfd; regions are tagged by handle (>= 1)

// Record layout of one event in the output array; lib/servicer/events.ts mirrors it.
constexpr int kStride = 5;
constexpr double kEventPagefault = 1;
constexpr double kEventRemove = 2;
constexpr double kEventUnmap = 3;

std::shared_ptr<Poller> argPoller(const Napi::CallbackInfo& info, size_t i) {
  auto p = pollers().get(static_cast<int>(argU32(info, i, "poller")));
  if (!p) throw codedError(info.Env(), "ERR_POLLER_CLOSED", "the servicer poller is closed");
  return p;
}

Napi::Value PollerCreate(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto p = std::make_shared<Poller>();
  int ep = ::epoll_create1(EPOLL_CLOEXEC);
  if (ep < 0) throw systemError(env, errno, "epoll_create1");
  p->epoll = UniqueFd(ep);
  int efd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (efd < 0) throw systemError(env, errno, "eventfd");
  p->wakeFd = UniqueFd(efd);
  struct epoll_event ev = {};
  ev.events = EPOLLIN;
  ev.data.u64 = kWakeTag;
  if (::epoll_ctl(ep, EPOLL_CTL_ADD, efd, &ev) != 0) throw systemError(env, errno, "epoll_ctl");
  return Napi::Number::New(env, pollers().add(p));
}

Napi::Value PollerDestroy(const Napi::CallbackInfo& info) {
  pollers().remove(static_cast<int>(argU32(info, 0, "poller")));
  return info.Env().Undefined();
}

// pollerAdd(poller, region): the region's faults are now read by this poller.
Napi::Value PollerAdd(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto p = argPoller(info, 0);
  int h = static_cast<int>(argU32(info, 1, "region"));
  auto r = regions().get(h);
  if (!r) throw codedError(env, "ERR_REGION_CLOSED", "the region is closed");
  struct epoll_event ev = {};
  ev.events = EPOLLIN;
  ev.data.u64 = static_cast<uint64_t>(h);
  if (::epoll_ctl(p->epoll.get(), EPOLL_CTL_ADD, r->uffd.get(), &ev) != 0) throw systemError(env, errno, "epoll_ctl");
  return env.Undefined();
}

// pollerRemove(poller, region): called before the region closes, so no fd number is reused in the set.
Napi::Value PollerRemove(const Napi::CallbackInfo& info) {
  auto p = argPoller(info, 0);
  int h = static_cast<int>(argU32(info, 1, "region"));
  auto r = regions().get(h);
  if (r) ::epoll_ctl(p->epoll.get(), EPOLL_CTL_DEL, r->uffd.get(), nullptr);
  return info.Env().Undefined();
}

// pollerKick(poller): wakes a pollerWait in progress (new messages, or stop).
Napi::Value PollerKick(const Napi::CallbackInfo& info) {
  auto p = argPoller(info, 0);
  uint64_t one = 1;
  (void)!::write(p->wakeFd.get(), &one, sizeof one);
  return info.Env().Undefined();
}

// pollerWait(poller, out: Float64Array, timeoutMs) -> number of events written (may be 0), or
// -1 when woken by pollerKick with no event. Records: [region, type, flags, page, tid] for faults,
// [region, type, 0, first page, page count] for zaps (REMOVE, UNMAP).
Napi::Value PollerWait(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto p = argPoller(info, 0);
  auto [out, len] = argFloat64Array(info, 1, "out");
  uint32_t timeout = argU32(info, 2, "timeoutMs");
  if (timeout > 60000) throw rangeError(env, "timeoutMs must be at most 60000");
  const int capacity = static_cast<int>(len / kStride);
  if (capacity < 1) throw rangeError(env, "out must hold at least one event");

  int written = 0;
  // Parked faults first, for the regions that have since moved over their address.
  for (size_t i = 0; i < p->parked.size() && written < capacity;) {
    auto r = regions().get(p->parked[i].first);
    const struct uffd_msg& m = p->parked[i].second;
    int64_t page = r ? r->pageOf(m.arg.pagefault.address) : -1;
    if (r && page < 0 && r->expectingRemap.load()) {
      i++;
      continue;
    }
    if (r && page >= 0) {
      double* rec = out + size_t(written) * kStride;
      rec[0] = p->parked[i].first;
      rec[1] = kEventPagefault;
      rec[2] = static_cast<double>(m.arg.pagefault.flags);
      rec[3] = static_cast<double>(page);
      rec[4] = static_cast<double>(m.arg.pagefault.feat.ptid);
      written++;
    }
    p->parked.erase(p->parked.begin() + long(i));
  }

  constexpr int kMaxReady = 16;
  struct epoll_event ready[kMaxReady];
  int nready;
  const int wait = p->parked.empty() && written == 0 ? static_cast<int>(timeout) : 0;
  do {
    nready = ::epoll_wait(p->epoll.get(), ready, kMaxReady, wait);
  } while (nready < 0 && errno == EINTR);
  if (nready < 0) throw systemError(env, errno, "epoll_wait");

  bool kicked = false;
  constexpr int kBatch = 64;
  struct uffd_msg msgs[kBatch];
  for (int i = 0; i < nready && written < capacity; i++) {
    if (ready[i].data.u64 == kWakeTag) {
      uint64_t v;
      (void)!::read(p->wakeFd.get(), &v, sizeof v);
      kicked = true;
      continue;
    }
    int h = static_cast<int>(ready[i].data.u64);
    auto r = regions().get(h);
    if (!r) continue;
    int room = std::min(kBatch, capacity - written);
    int n = readMessages(r->uffd.get(), msgs, room);
    for (int k = 0; k < n; k++) {
      double* rec = out + size_t(written) * kStride;
      if (msgs[k].event == UFFD_EVENT_REMAP) {
        r->applyRemap(msgs[k].arg.remap.from);
        continue;
      }
      if (msgs[k].event == UFFD_EVENT_FORK) {
        onForkEvent(*r, static_cast<int>(msgs[k].arg.fork.ufd));
        continue;
      }
      if (msgs[k].event == UFFD_EVENT_REMOVE || msgs[k].event == UFFD_EVENT_UNMAP) {
        // As page numbers clamped to the region: [first, first + count).
        const uint64_t base = reinterpret_cast<uint64_t>(r->base);
        uint64_t lo = std::max<uint64_t>(msgs[k].arg.remove.start, base);
        uint64_t hi = std::min<uint64_t>(msgs[k].arg.remove.end, base + r->length);
        if (hi <= lo) continue;
        rec[0] = h;
        rec[1] = msgs[k].event == UFFD_EVENT_REMOVE ? kEventRemove : kEventUnmap;
        rec[2] = 0;
        rec[3] = static_cast<double>((lo - base) / r->pageSize);
        rec[4] = static_cast<double>((hi - lo + r->pageSize - 1) / r->pageSize);
        written++;
        continue;
      }
      if (msgs[k].event != UFFD_EVENT_PAGEFAULT) continue;
      int64_t page = r->pageOf(msgs[k].arg.pagefault.address);
      if (page < 0) {
        p->parked.emplace_back(h, msgs[k]);
        continue;
      }
      rec[0] = h;
      rec[1] = kEventPagefault;
      uint32_t flags = static_cast<uint32_t>(msgs[k].arg.pagefault.flags);
      if (r->classifyFaults && faultInSyscall(msgs[k].arg.pagefault.feat.ptid)) flags |= layout::kFaultKernel;
      rec[2] = static_cast<double>(flags);
      rec[3] = static_cast<double>(page);
      rec[4] = static_cast<double>(msgs[k].arg.pagefault.feat.ptid);
      written++;
    }
  }
  return Napi::Number::New(env, written == 0 && kicked ? -1 : written);
}

}  // namespace

void initPoller(Napi::Env env, Napi::Object exports) {
  exports.Set("pollerCreate", Napi::Function::New(env, PollerCreate));
  exports.Set("pollerDestroy", Napi::Function::New(env, PollerDestroy));
  exports.Set("pollerAdd", Napi::Function::New(env, PollerAdd));
  exports.Set("pollerRemove", Napi::Function::New(env, PollerRemove));
  exports.Set("pollerKick", Napi::Function::New(env, PollerKick));
  exports.Set("pollerWait", Napi::Function::New(env, PollerWait));
}

}  // namespace uffdhmm
