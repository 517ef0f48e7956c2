// One function per userfaultfd operation: each returns 0 or -errno and never throws, so the
// servicers can call them on their hot path and decide themselves what an errno means.
#include "uffd.h"

#include <fcntl.h>
#include <sys/syscall.h>

namespace uffdhmm {

OpenResult openUffd(bool allowUserModeOnly) {
  OpenResult r;
  const int flags = O_CLOEXEC | O_NONBLOCK;
  int dev = ::open("/dev/userfaultfd", O_RDWR | O_CLOEXEC);
  if (dev >= 0) {
    UniqueFd devFd(dev);
    int fd = ::ioctl(dev, USERFAULTFD_IOC_NEW, flags);
    if (fd >= 0) {
      r.fd = UniqueFd(fd);
      r.via = OpenVia::DevUserfaultfd;
      return r;
    }
    r.devErr = errno;
  } else {
    r.devErr = errno;
  }
  int fd = static_cast<int>(::syscall(SYS_userfaultfd, flags));
  if (fd >= 0) {
    r.fd = UniqueFd(fd);
    r.via = OpenVia::Syscall;
    return r;
  }
  r.syscallErr = errno;
  r.err = errno;
  if (!allowUserModeOnly) return r;
  fd = static_cast<int>(::syscall(SYS_userfaultfd, flags | UFFD_USER_MODE_ONLY));
  if (fd >= 0) {
    r.fd = UniqueFd(fd);
    r.via = OpenVia::Syscall;
    r.userModeOnly = true;
    r.err = 0;
    return r;
  }
  r.err = errno;
  return r;
}

int apiHandshake(int fd, uint64_t features, uint64_t* supported, uint64_t* ioctls) {
  struct uffdio_api api = {};
  api.api = UFFD_API;
  api.features = features;
  if (::ioctl(fd, UFFDIO_API, &api) != 0) return -errno;
  if (supported) *supported = api.features;
  if (ioctls) *ioctls = api.ioctls;
  return 0;
}

int registerRange(int fd, uint64_t start, uint64_t len, uint64_t mode, uint64_t* ioctls) {
  struct uffdio_register reg = {};
  reg.range.start = start;
  reg.range.len = len;
  reg.mode = mode;
  if (::ioctl(fd, UFFDIO_REGISTER, &reg) != 0) return -errno;
  if (ioctls) *ioctls = reg.ioctls;
  return 0;
}

int unregisterRange(int fd, uint64_t start, uint64_t len) {
  struct uffdio_range range = {start, len};
  return ::ioctl(fd, UFFDIO_UNREGISTER, &range) == 0 ? 0 : -errno;
}

int copy(int fd, uint64_t dst, uint64_t src, uint64_t len, uint64_t mode, int64_t* done) {
  struct uffdio_copy c = {};
  c.dst = dst;
  c.src = src;
  c.len = len;
  c.mode = mode;
  int rc = ::ioctl(fd, UFFDIO_COPY, &c) == 0 ? 0 : -errno;
  // The kernel writes the bytes it filled, or -errno when it filled none: a failed call may still
  // have filled (and, without DONTWAKE, woken) a prefix of the range (mfill_atomic's partial copy).
  if (done) *done = rc == 0 ? int64_t(len) : c.copy > 0 ? c.copy : 0;
  return rc;
}

int zeropage(int fd, uint64_t dst, uint64_t len, uint64_t mode, int64_t* done) {
  struct uffdio_zeropage z = {};
  z.range.start = dst;
  z.range.len = len;
  z.mode = mode;
  int rc = ::ioctl(fd, UFFDIO_ZEROPAGE, &z) == 0 ? 0 : -errno;
  if (done) *done = z.zeropage;
  return rc;
}

int wake(int fd, uint64_t start, uint64_t len) {
  struct uffdio_range range = {start, len};
  return ::ioctl(fd, UFFDIO_WAKE, &range) == 0 ? 0 : -errno;
}

int writeProtect(int fd, uint64_t start, uint64_t len, bool protect, bool wakeup) {
  struct uffdio_writeprotect wp = {};
  wp.range.start = start;
  wp.range.len = len;
  // The kernel rejects WP together with DONTWAKE (protecting never wakes anyone anyway).
  wp.mode = protect ? UFFDIO_WRITEPROTECT_MODE_WP : (wakeup ? 0 : UFFDIO_WRITEPROTECT_MODE_DONTWAKE);
  return ::ioctl(fd, UFFDIO_WRITEPROTECT, &wp) == 0 ? 0 : -errno;
}

int poison(int fd, uint64_t start, uint64_t len, uint64_t mode, int64_t* done) {
  UffdioPoison p = {};
  p.range.start = start;
  p.range.len = len;
  p.mode = mode;
  int rc = ::ioctl(fd, kUffdioPoison, &p) == 0 ? 0 : -errno;
  if (done) *done = p.updated;
  return rc;
}

int continueRange(int fd, uint64_t start, uint64_t len, uint64_t mode) {
  struct uffdio_continue c = {};
  c.range.start = start;
  c.range.len = len;
  c.mode = mode;
  return ::ioctl(fd, UFFDIO_CONTINUE, &c) == 0 ? 0 : -errno;
}

}  // namespace uffdhmm
