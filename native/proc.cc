// /proc access (the twin of fs/proc/task_mmu.c's readers): the pagemap fd kept open, the pagemap
// words of a page range, and whether a faulting thread sits inside a system call.
#include "proc.h"

#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>

#include "napi_util.h"
#include "span.h"

namespace uffdhmm {

bool faultInSyscall(uint32_t tid) {
  char path[64];
  snprintf(path, sizeof path, "/proc/self/task/%u/syscall", tid);
  int fd = ::open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  char buf[32];
  ssize_t n = ::read(fd, buf, sizeof buf - 1);
  ::close(fd);
  if (n <= 0) return false;
  buf[n] = 0;
  // "-1 sp pc" when blocked outside any system call (a user-mode fault); "running" never here.
  return buf[0] >= '0' && buf[0] <= '9';
}

// A file of this process under /proc, opened on first use and kept open. A failed open (EMFILE, at
// the descriptor limit) is not kept: the next call tries again, instead of failing with a stale
// errno for good.
static int keptOpen(std::atomic<int>& cached, const char* path) {
  int fd = cached.load(std::memory_order_acquire);
  if (fd >= 0) return fd;
  fd = ::open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  int expected = -1;
  if (!cached.compare_exchange_strong(expected, fd)) {
    ::close(fd);
    return expected;
  }
  return fd;
}

static int pagemapFd() {
  static std::atomic<int> fd{-1};
  return keptOpen(fd, "/proc/self/pagemap");
}

static int memFd() {
  static std::atomic<int> fd{-1};
  return keptOpen(fd, "/proc/self/mem");
}

void openPagemapOrThrow(Napi::Env env) {
  if (pagemapFd() < 0) throw systemError(env, errno, "open(/proc/self/pagemap)", "opening the kernel's view of the region's page table");
}

int readPagemap(const RegionState& r, uint32_t first, uint32_t count, uint64_t* out) {
  int fd = pagemapFd();
  if (fd < 0) return -errno;
  off_t off = static_cast<off_t>((reinterpret_cast<uint64_t>(r.base) / r.pageSize + first) * 8);
  size_t want = size_t(count) * 8;
  size_t got = 0;
  while (got < want) {
    ssize_t n = ::pread(fd, reinterpret_cast<uint8_t*>(out) + got, want - got, off + static_cast<off_t>(got));
    if (n < 0) {
      if (errno == EINTR) continue;
      return -errno;
    }
    if (n == 0) return -EIO;
    got += static_cast<size_t>(n);
  }
  return 0;
}

void openMemOrThrow(Napi::Env env) {
  if (memFd() < 0) throw systemError(env, errno, "open(/proc/self/mem)", "opening this process's memory to copy pages out of it");
}

ssize_t readOwnMemory(const uint8_t* addr, uint8_t* dst, size_t len) {
  int fd = memFd();
  if (fd < 0) return -errno;
  for (;;) {
    // The kernel reads through get_user_pages without FOLL_UNLOCKABLE (access_remote_vm), so a
    // page that is not there is never faulted in through userfaultfd: handle_userfault answers
    // VM_FAULT_SIGBUS to such a fault, and the read stops short (EIO when nothing was read).
    ssize_t n = ::pread(fd, dst, len, static_cast<off_t>(reinterpret_cast<uintptr_t>(addr)));
    if (n >= 0) return n;
    if (errno == EINTR) continue;
    return errno == EIO || errno == EFAULT ? 0 : -errno;
  }
}

// regionPagemap(region, first, count, out: BigUint64Array): the kernel's own pagemap words.
static Napi::Value RegionPagemap(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const PageSpan s = argPages(info, 0, 1, 2);
  Napi::Value v = info[3];
  if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_biguint64_array)
    throw typeError(env, "out must be a BigUint64Array");
  auto arr = v.As<Napi::TypedArrayOf<uint64_t>>();
  if (arr.ElementLength() < s.count) throw rangeError(env, "out is shorter than count");
  openPagemapOrThrow(env);
  int rc = readPagemap(*s.r, s.first, s.count, arr.Data());
  if (rc != 0) throw systemError(env, -rc, "pread(/proc/self/pagemap)", "reading the region's page table entries");
  return env.Undefined();
}

void initProc(Napi::Env env, Napi::Object exports) {
  exports.Set("regionPagemap", Napi::Function::New(env, RegionPagemap));
}

}  // namespace uffdhmm
