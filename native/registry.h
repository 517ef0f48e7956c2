// Handles for native objects. Addon globals are shared by every worker_thread that loads the
// addon, so objects are named by integer handles that any thread may pass back in.
#pragma once

#include <memory>
#include <mutex>
#include <unordered_map>
#include <utility>
#include <vector>

namespace uffdhmm {

// Handles that are never reused: a stale handle from a closed object finds nothing.
template <class T>
class Registry {
 public:
  int add(std::shared_ptr<T> obj) {
    std::lock_guard<std::mutex> lock(mu_);
    int h = next_++;
    map_.emplace(h, std::move(obj));
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
    std::lock_guard<std::mutex> lock(mu_);
    auto it = map_.find(h);
    if (it == map_.end()) return nullptr;
    auto obj = std::move(it->second);
    map_.erase(it);
    return obj;
  }

 private:
  std::mutex mu_;
  std::unordered_map<int, std::shared_ptr<T>> map_;
  int next_ = 1;
};

// Small handles that are reused after removal, for ids that must fit in a page-state word.
template <class T>
class SlotRegistry {
 public:
  explicit SlotRegistry(int maxSlot) : maxSlot_(maxSlot) {}
  int add(std::shared_ptr<T> obj) {
    std::lock_guard<std::mutex> lock(mu_);
    for (size_t i = 1; i < slots_.size(); i++) {
      if (!slots_[i]) {
        slots_[i] = std::move(obj);
        return static_cast<int>(i);
      }
    }
    if (slots_.empty()) slots_.emplace_back();  // slot 0 stays empty: 0 means "no device"
    if (static_cast<int>(slots_.size()) > maxSlot_) return -1;
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
    return std::exchange(slots_[h], nullptr);
  }

 private:
  std::mutex mu_;
  std::vector<std::shared_ptr<T>> slots_;
  int maxSlot_;
};

}  // namespace uffdhmm
