// Probe: what a host charges for copying into device pages the kernel has read.
//
// The migration benchmark compares region.migrate with a C memcpy + MADV_DONTNEED. Between two
// timed migrations to the device, a region's pages come back through the kernel (UFFDIO_COPY from
// the device page, as every userfaultfd servicer must fill a page), while the memcpy baseline copies
// them back in user space. This program makes the same round trips both ways, with nothing of
// uffd-hmm in it, and times the user-space memcpy into the device pages on each round:
//
//   gcc -O2 -o /tmp/device-rewrite scripts/probes/device-rewrite.c
//   taskset -c 1 /tmp/device-rewrite kernel   # back with UFFDIO_COPY, as a region's pages come back
//   taskset -c 1 /tmp/device-rewrite user     # back with memcpy, as the C baseline's come back
//
// On a host that shadows the guest's page tables the first kind costs several µs a page on the
// rounds after the first, the second a fraction of one; elsewhere the two are alike.
#define _GNU_SOURCE
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static double nowUs(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec * 1e6 + t.tv_nsec / 1e3;
}

static char* mapPages(size_t len) {
  char* p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (p == MAP_FAILED) { perror("mmap"); exit(1); }
  madvise(p, len, MADV_NOHUGEPAGE);  // device pages are base pages
  return p;
}

static void reg(int uffd, char* ram, size_t len, int on) {
  struct uffdio_register r = {.range = {(unsigned long)ram, len}, .mode = UFFDIO_REGISTER_MODE_MISSING};
  struct uffdio_range u = {(unsigned long)ram, len};
  if (on ? ioctl(uffd, UFFDIO_REGISTER, &r) : ioctl(uffd, UFFDIO_UNREGISTER, &u)) { perror("UFFDIO_(UN)REGISTER"); exit(1); }
}

int main(int argc, char** argv) {
  const int kernelBack = argc < 2 || strcmp(argv[1], "user") != 0;
  const size_t ps = (size_t)sysconf(_SC_PAGESIZE), n = 65536, len = n * ps;
  int uffd = (int)syscall(SYS_userfaultfd, O_CLOEXEC);
  struct uffdio_api api = {.api = UFFD_API};
  if (uffd < 0 || ioctl(uffd, UFFDIO_API, &api)) { perror("userfaultfd"); return 1; }
  char* ram = mapPages(len);
  char* dev = mapPages(len);
  memset(ram, 0x5a, len);
  memset(dev, 0, len);
  for (int round = 0; round < 6; round++) {
    double t = nowUs();
    memcpy(dev, ram, len);  // to the device: the copy timed here
    const double toDevice = (nowUs() - t) / n;
    madvise(ram, len, MADV_DONTNEED);
    if (kernelBack) {
      reg(uffd, ram, len, 1);
      for (size_t off = 0; off < len; off += ps) {
        struct uffdio_copy c = {.dst = (unsigned long)ram + off, .src = (unsigned long)dev + off, .len = ps};
        if (ioctl(uffd, UFFDIO_COPY, &c)) { perror("UFFDIO_COPY"); return 1; }
      }
      reg(uffd, ram, len, 0);
    } else {
      memcpy(ram, dev, len);
    }
    memset(ram, 0x5a, len);  // the program writes its memory again
    printf("round %d, back by %s: memcpy to the device %.2f us/page\n", round, kernelBack ? "UFFDIO_COPY" : "memcpy", toDevice);
  }
  return 0;
}
