// The userfaultfd system-call surface: constants newer than the build machine's headers, an
// owning fd, and one function per ioctl. No policy lives here; callers decide what a fault means.
#pragma once

#include <linux/userfaultfd.h>
#include <sys/ioctl.h>
#include <unistd.h>
#include <cerrno>
#include <cstdint>
#include <utility>

// The build headers may be older than the running kernel (Debian 12 ships 6.1): define what we
// use from newer kernels ourselves and probe for it at run time with UFFDIO_API.
#ifndef UFFD_FEATURE_WP_UNPOPULATED
#define UFFD_FEATURE_WP_UNPOPULATED (1 << 13)
#endif
#ifndef UFFD_FEATURE_POISON
#define UFFD_FEATURE_POISON (1 << 14)
#endif
#ifndef UFFD_FEATURE_WP_ASYNC
#define UFFD_FEATURE_WP_ASYNC (1 << 15)
#endif
#ifndef UFFD_FEATURE_MOVE
#define UFFD_FEATURE_MOVE (1 << 16)
#endif
#ifndef _UFFDIO_MOVE
#define _UFFDIO_MOVE (0x05)
#endif
#ifndef _UFFDIO_POISON
#define _UFFDIO_POISON (0x08)
#endif
#ifndef UFFD_FEATURE_MISSING_SHMEM
#define UFFD_FEATURE_MISSING_SHMEM (1 << 5)
#endif
#ifndef UFFD_FEATURE_MINOR_SHMEM
#define UFFD_FEATURE_MINOR_SHMEM (1 << 10)
#endif
#ifndef UFFD_FEATURE_WP_HUGETLBFS_SHMEM
#define UFFD_FEATURE_WP_HUGETLBFS_SHMEM (1 << 12)
#endif
#ifndef UFFDIO_REGISTER_MODE_MINOR
#define UFFDIO_REGISTER_MODE_MINOR ((__u64)1 << 2)
#endif
#ifndef UFFD_PAGEFAULT_FLAG_MINOR
#define UFFD_PAGEFAULT_FLAG_MINOR (1 << 2)
#endif
#ifndef USERFAULTFD_IOC_NEW
#define USERFAULTFD_IOC_NEW _IO(0xAA, 0x00)
#endif
#ifndef UFFD_USER_MODE_ONLY
#define UFFD_USER_MODE_ONLY 1
#endif

namespace uffdhmm {

// Layout of struct uffdio_poison (Linux 6.6); named apart so it never clashes with newer headers.
struct UffdioPoison {
  struct uffdio_range range;
  uint64_t mode;
  int64_t updated;
};
constexpr unsigned long kUffdioPoison = _IOWR(UFFDIO, _UFFDIO_POISON, UffdioPoison);
constexpr uint64_t kPoisonModeDontwake = 1;

// An fd that closes itself; moving transfers ownership.
class UniqueFd {
 public:
  UniqueFd() = default;
  explicit UniqueFd(int fd) : fd_(fd) {}
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;
  UniqueFd(UniqueFd&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
  UniqueFd& operator=(UniqueFd&& o) noexcept {
    if (this != &o) {
      reset();
      fd_ = std::exchange(o.fd_, -1);
    }
    return *this;
  }
  ~UniqueFd() { reset(); }
  int get() const { return fd_; }
  bool valid() const { return fd_ >= 0; }
  void reset() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

 private:
  int fd_ = -1;
};

enum class OpenVia { None, DevUserfaultfd, Syscall };

struct OpenResult {
  UniqueFd fd;
  OpenVia via = OpenVia::None;
  bool userModeOnly = false;
  int err = 0;            // errno of the last attempt when fd is invalid
  int devErr = 0;         // errno from /dev/userfaultfd (0 when it worked or was not tried)
  int syscallErr = 0;     // errno from userfaultfd(2) without UFFD_USER_MODE_ONLY
};

// Opens a userfaultfd the way userfaultfd-rs does, but always close-on-exec and non-blocking:
// /dev/userfaultfd, else the system call, else the system call in user-mode-only mode.
// `allowUserModeOnly` false makes the last step fail instead.
OpenResult openUffd(bool allowUserModeOnly);

// UFFDIO_API handshake asking for `features`; on success *supported holds what the kernel offers.
int apiHandshake(int fd, uint64_t features, uint64_t* supported, uint64_t* ioctls);

int registerRange(int fd, uint64_t start, uint64_t len, uint64_t mode, uint64_t* ioctls);
int unregisterRange(int fd, uint64_t start, uint64_t len);
// Each returns 0 or -errno. Copy/zeropage/poison report partial progress through *done (bytes): a
// multi-page COPY that stops partway answers EAGAIN with *done the bytes it filled.
int copy(int fd, uint64_t dst, uint64_t src, uint64_t len, uint64_t mode, int64_t* done);
int zeropage(int fd, uint64_t dst, uint64_t len, uint64_t mode, int64_t* done);
int wake(int fd, uint64_t start, uint64_t len);
int writeProtect(int fd, uint64_t start, uint64_t len, bool protect, bool wakeup);
int poison(int fd, uint64_t start, uint64_t len, uint64_t mode, int64_t* done);
// UFFDIO_CONTINUE: maps the page cache's own page at a minor fault (shmem-backed ranges only).
int continueRange(int fd, uint64_t start, uint64_t len, uint64_t mode);

}  // namespace uffdhmm
