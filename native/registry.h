// Handles for native objects. Addon globals are shared by every worker_thread that loads the
// addon, so objects are named by integer handles that any thread may pass back in.
#pragma once

#include <atomic>
#include <memory>
#include <mutex>
#include <unordered_map>
#include <utility>
#include <vector>

namespace uffdhmm {

// Appends x to v under mu, allocating only while mu is free: a thread blocked in malloc (whose locks
// a fork() in progress holds until that fork's FORK event is read) must never hold a lock that the
// reader of that event takes. The old storage is freed after mu is released, too.
template <class T>
void appendOutsideLock(std::mutex& mu, std::vector<T>& v, T x) {
  for (;;) {
    size_t cap;
    {
      std::lock_guard<std::mutex> lock(mu);
      if (v.size() < v.capacity()) {
        v.push_back(std::move(x));
        return;
      }
      cap = v.capacity();
    }
    std::vector<T> bigger;
    bigger.reserve(cap < 8 ? 16 : 2 * cap);
    std::lock_guard<std::mutex> lock(mu);
    if (v.capacity() < bigger.capacity()) {
      for (auto& e : v) bigger.push_back(std::move(e));  // reserved: no allocation
      v.swap(bigger);
    }
  }
}

// Handles that are never reused: a stale handle from a closed object finds nothing. Every lookup
// (the fault path's, the watchdog's) takes the lock, so nothing allocates or frees under it: nodes
// are made and destroyed outside it, and the buckets are reserved once.
template <class T>
class Registry {
 public:
  Registry() { map_.reserve(4096); }
  int add(std::shared_ptr<T> obj) {
    Map one;
    auto node = one.extract(one.emplace(0, std::move(obj)).first);
    std::lock_guard<std::mutex> lock(mu_);
    int h = next_++;
    node.key() = h;
    map_.insert(std::move(node));
    return h;
  }
  std::shared_ptr<T> get(int h) {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = map_.find(h);
    return it == map_.end() ? nullptr : it->second;
  }
  // Calls f(shared_ptr) for each object under the lock; f must not call back into the registry.
  template <class F>
  void forEach(F f) {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& [h, obj] : map_) f(obj);
  }
  std::shared_ptr<T> remove(int h) {
    typename Map::node_type node;  // destroyed after the lock is released
    std::lock_guard<std::mutex> lock(mu_);
    auto it = map_.find(h);
    if (it == map_.end()) return nullptr;
    node = map_.extract(it);
    return std::move(node.mapped());
  }

 private:
  using Map = std::unordered_map<int, std::shared_ptr<T>>;
  std::mutex mu_;
  Map map_;
  int next_ = 1;
};

// Small handles that are reused after removal, for ids that must fit in a page-state word.
template <class T>
class SlotRegistry {
 public:
  explicit SlotRegistry(int maxSlot) : maxSlot_(maxSlot), raw_(new std::atomic<T*>[size_t(maxSlot) + 1]()) { slots_.reserve(256); }
  // The object in slot h without a lock or a reference count, for the fault engine's hot path (a
  // mutex and a shared_ptr copy cost it more than the rest of its bookkeeping for a fault). Valid
  // only while the caller holds a page lock whose entry names h: an object is removed only after
  // every entry naming it was taken back under that page's lock (a device is evicted before
  // deviceDestroy), so no removal completes while such a lock is held.
  T* borrow(int h) const { return h <= 0 || h > maxSlot_ ? nullptr : raw_[h].load(std::memory_order_acquire); }
  int add(std::shared_ptr<T> obj) {
    std::lock_guard<std::mutex> lock(mu_);
    for (size_t i = 1; i < slots_.size(); i++) {
      if (!slots_[i]) {
        raw_[i].store(obj.get(), std::memory_order_release);
        slots_[i] = std::move(obj);
        return static_cast<int>(i);
      }
    }
    if (slots_.empty()) slots_.emplace_back();  // slot 0 stays empty: 0 means "no device"
    if (static_cast<int>(slots_.size()) > maxSlot_) return -1;
    raw_[slots_.size()].store(obj.get(), std::memory_order_release);
    slots_.push_back(std::move(obj));
    return static_cast<int>(slots_.size() - 1);
  }
  std::shared_ptr<T> get(int h) {
    std::lock_guard<std::mutex> lock(mu_);
    if (h <= 0 || static_cast<size_t>(h) >= slots_.size()) return nullptr;
    return slots_[h];
  }
  std::shared_ptr<T> remove(int h) {
    std::lock_guard<std::mutex> lock(mu_);
    if (h <= 0 || static_cast<size_t>(h) >= slots_.size()) return nullptr;
    raw_[h].store(nullptr, std::memory_order_release);
    return std::exchange(slots_[h], nullptr);
  }

 private:
  std::mutex mu_;
  std::vector<std::shared_ptr<T>> slots_;
  int maxSlot_;
  std::unique_ptr<std::atomic<T*>[]> raw_;  // slots_' objects, for borrow()
};

}  // namespace uffdhmm
