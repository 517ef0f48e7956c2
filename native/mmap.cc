// mmap and munmap of a region (the twins of mm/mmap.c for our emulated vma): regionCreate maps the
// memory, registers it with a userfaultfd of its own and publishes it; regionUnmap drops part of it.
#include <napi.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include <cmath>
#include <string>

#include "inline_servicer.h"
#include "napi_util.h"
#include "region.h"
#include "servicer_thread.h"
#include "span.h"

namespace uffdhmm {

// regionCreate's options, each field checked as the public options are (lib/errors.ts words):
// TypeError ERR_INVALID_ARG_TYPE for a wrong type, ERR_INVALID_ARG_VALUE for an unknown string,
// RangeError ERR_OUT_OF_RANGE for a number out of range. An absent field takes its default.
struct RegionOptions {
  uint32_t pages = 0;
  int32_t* shared = nullptr;
  size_t sharedWords = 0;
  Napi::Value sharedValue;  // kept alive as long as the region
  std::string servicer;
  bool allowUserModeOnly = false;
  bool classifyFaults = false;
  uint32_t faultAround = 1;
  bool mapShared = false;
  int fd = -1;  // -1: anonymous
  uint64_t offset = 0;
  bool hugetlb = false;
  bool thp = false;
};

class OptionReader {
 public:
  OptionReader(Napi::Env env, Napi::Object o) : env_(env), o_(o) {}

  Napi::Value get(const char* name) const { return o_.Get(name); }

  // A field that may be absent (fallback) or must be given (required).
  double number(const char* name, double fallback, double lo, double hi, const char* accepted, bool required = false) const {
    Napi::Value v = get(name);
    if (v.IsUndefined() && !required) return fallback;
    if (!v.IsNumber()) throw typeError(env_, message(name, "a number", v).c_str());
    const double d = v.As<Napi::Number>().DoubleValue();
    if (!(d >= lo && d <= hi) || d != std::trunc(d)) throw rangeError(env_, message(name, accepted, v).c_str());
    return d;
  }

  bool flag(const char* name, bool fallback) const {
    Napi::Value v = get(name);
    if (v.IsUndefined()) return fallback;
    if (!v.IsBoolean()) throw typeError(env_, message(name, "a boolean", v).c_str());
    return v.As<Napi::Boolean>().Value();
  }

  std::string oneOf(const char* name, const char* const* values, const char* accepted) const {
    Napi::Value v = get(name);
    if (!v.IsString()) throw typeError(env_, message(name, "a string", v).c_str());
    std::string s = v.As<Napi::String>().Utf8Value();
    for (const char* const* p = values; *p; p++)
      if (s == *p) return s;
    Napi::Error e = Napi::TypeError::New(env_, message(name, accepted, v));
    e.Set("code", Napi::String::New(env_, "ERR_INVALID_ARG_VALUE"));
    throw e;
  }

  std::pair<int32_t*, size_t> int32Array(const char* name) const {
    Napi::Value v = get(name);
    if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_int32_array)
      throw typeError(env_, message(name, "an Int32Array over a SharedArrayBuffer", v).c_str());
    auto arr = v.As<Napi::Int32Array>();
    return {arr.Data(), arr.ElementLength()};
  }

 private:
  std::string message(const char* name, const char* accepted, Napi::Value got) const {
    std::string what;
    if (got.IsNumber()) {
      what = got.ToString().Utf8Value();
    } else if (got.IsString()) {
      what = "'" + got.As<Napi::String>().Utf8Value() + "'";
    } else {
      napi_valuetype t;
      napi_typeof(env_, got, &t);
      static const char* const kTypes[] = {"undefined", "null", "a boolean", "a number", "a string",
                                           "a symbol",  "an object", "a function", "an external", "a bigint"};
      what = static_cast<size_t>(t) < sizeof kTypes / sizeof *kTypes ? kTypes[t] : "a value";
    }
    return std::string("options.") + name + " must be " + accepted + ", got " + what;
  }

  Napi::Env env_;
  Napi::Object o_;
};

static RegionOptions argRegionOptions(const Napi::CallbackInfo& info, size_t pageSize) {
  Napi::Env env = info.Env();
  if (!info[0].IsObject() || info[0].IsArray() || info[0].IsFunction())
    throw typeError(env, "options must be an object of named fields (pages, shared, servicer, ...)");
  OptionReader in(env, info[0].As<Napi::Object>());
  RegionOptions o;
  o.pages = static_cast<uint32_t>(in.number("pages", 0, 1, 4294967295.0, "an integer from 1 to 2^32-1", true));
  auto [shared, words] = in.int32Array("shared");
  if (words < layout::kRegionHeader + 2 * size_t(o.pages))
    throw rangeError(env, ("options.shared must hold at least " + std::to_string(layout::kRegionHeader + 2 * size_t(o.pages)) +
                           " words for a region of " + pagesText(o.pages) + ", got " + std::to_string(words))
                              .c_str());
  o.shared = shared;
  o.sharedWords = words;
  o.sharedValue = in.get("shared");
  static const char* const kServicers[] = {"worker", "native", "inline", nullptr};
  o.servicer = in.oneOf("servicer", kServicers, "'worker', 'native' or 'inline'");
  o.allowUserModeOnly = in.flag("allowUserModeOnly", false);
  o.classifyFaults = in.flag("classifyFaults", false);
  o.faultAround = static_cast<uint32_t>(in.number("faultAround", 1, 1, 512, "an integer from 1 to 512"));
  o.mapShared = in.flag("mapShared", false);
  o.fd = static_cast<int>(in.number("fd", -1, -1, 2147483647.0, "-1 (anonymous) or a file descriptor"));
  const double offset = in.number("offset", 0, 0, 9007199254740991.0, "a non-negative multiple of the page size");
  if (static_cast<uint64_t>(offset) % pageSize != 0)
    throw rangeError(env, ("options.offset must be a non-negative multiple of the page size (" + std::to_string(pageSize) +
                           "), got " + std::to_string(static_cast<uint64_t>(offset)))
                              .c_str());
  o.offset = static_cast<uint64_t>(offset);
  o.hugetlb = in.flag("hugetlb", false);
  o.thp = in.flag("thp", false);
  return o;
}

// An anonymous private mapping of `length` bytes starting on a PMD boundary, so THPs can back it.
static void* mmapPmdAligned(size_t length) {
  const size_t pmd = layout::kPmdSize;
  void* raw = ::mmap(nullptr, length + pmd, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (raw == MAP_FAILED) return raw;
  const uintptr_t start = (reinterpret_cast<uintptr_t>(raw) + pmd - 1) & ~(pmd - 1);
  const size_t head = start - reinterpret_cast<uintptr_t>(raw);
  if (head) ::munmap(raw, head);
  if (pmd - head) ::munmap(reinterpret_cast<void*>(start + length), pmd - head);
  return reinterpret_cast<void*>(start);
}

// regionCreate({ pages, shared: Int32Array, servicer: 'worker'|'native'|'inline', allowUserModeOnly?,
//                classifyFaults?, faultAround?, mapShared?, fd? (-1: anonymous), offset? (bytes), hugetlb?, thp? })
//   -> { handle, bytes, address, pageSize, via, userModeOnly, forkEvents }
static Napi::Value RegionCreate(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const size_t pageSize = static_cast<size_t>(::sysconf(_SC_PAGESIZE));
  const RegionOptions opts = argRegionOptions(info, pageSize);
  const uint32_t pages = opts.pages;
  int32_t* const shared = opts.shared;
  const std::string& servicer = opts.servicer;
  const bool allowUserModeOnly = opts.allowUserModeOnly;
  const bool classifyFaults = opts.classifyFaults;
  const uint32_t faultAround = opts.faultAround;
  const bool mapShared = opts.mapShared;
  const int fileFd = opts.fd;
  const uint64_t offsetArg = opts.offset;
  const bool hugetlb = opts.hugetlb;
  const bool thp = opts.thp;
  if (thp && (hugetlb || fileFd >= 0 || mapShared))
    throw codedError(env, "ERR_BACKING_UNSUPPORTED", "thp applies to private anonymous regions only");
  if (hugetlb && fileFd >= 0) throw codedError(env, "ERR_BACKING_UNSUPPORTED", "a hugetlb region is anonymous: give hugetlb or file, not both");
  if (fileFd >= 0) {
    // The mapping must lie inside the file: a touch past its end is a SIGBUS, in our code too.
    struct stat st;
    if (::fstat(fileFd, &st) != 0) throw systemError(env, errno, "fstat");
    if (!S_ISREG(st.st_mode)) throw codedError(env, "ERR_BACKING_UNSUPPORTED", "the file to map is not a regular file");
    if (offsetArg + uint64_t(pages) * pageSize > static_cast<uint64_t>(st.st_size))
      throw rangeError(env, "the file is shorter than offset + pages * pageSize");
    struct statfs fs;
    if (::fstatfs(fileFd, &fs) == 0 && static_cast<unsigned long>(fs.f_type) == 0x958458f6UL)  // HUGETLBFS_MAGIC
      throw codedError(env, "ERR_BACKING_UNSUPPORTED", "a hugetlbfs file cannot back a region; map one with hugetlb: true instead");
  }

  auto r = std::make_shared<RegionState>();
  r->pageSize = pageSize;
  r->pages = pages;
  r->length = size_t(pages) * r->pageSize;
  r->shared = shared;
  const bool anonPrivate = !mapShared && fileFd < 0 && !hugetlb;
  // A private file mapping is registered for minor faults too: a page whose private copy was
  // zapped (migrated, or discarded) is still in the page cache, and without MINOR its touch would
  // silently map the file's bytes instead of coming to us.
  const bool minorFaults = !mapShared && fileFd >= 0;

  OpenResult o = openUffd(allowUserModeOnly);
  if (!o.fd.valid()) throw systemError(env, o.err, "userfaultfd", "opening a userfaultfd for a new region");
  r->uffd = std::move(o.fd);
  r->via = o.via;
  r->userModeOnly = o.userModeOnly;
  const bool inlineMode = servicer == "inline";
  r->inlineMode = inlineMode;
  r->classifyFaults = classifyFaults && !inlineMode;
  r->faultAround = faultAround;
  // shmem (a shared mapping, or any file mapping: userfaultfd serves only shmem files) needs its own
  // feature bits for missing faults, write protection (migration entries) and minor faults.
  const uint64_t shmemNeeded =
      anonPrivate || hugetlb ? 0
                  : UFFD_FEATURE_MISSING_SHMEM | UFFD_FEATURE_WP_HUGETLBFS_SHMEM | (minorFaults ? UFFD_FEATURE_MINOR_SHMEM : 0);
  if (inlineMode && !anonPrivate)
    throw codedError(env, "ERR_SERVICER_UNSUPPORTED", "the inline servicer serves private anonymous regions only");
  if ((kernelFeatures().features & shmemNeeded) != shmemNeeded)
    throw codedError(env, "ERR_UFFD_FEATURE_MISSING",
                     "this kernel's userfaultfd lacks the shmem features a shared or file-backed region needs "
                     "(MISSING_SHMEM, WP_HUGETLBFS_SHMEM, MINOR_SHMEM: Linux 5.19+); map a private anonymous region instead");
  // Zaps by anyone (madvise, munmap) must drop device references as zap_pte_range does. An inline
  // region has no thread reading messages, so it asks for none: its faults arrive as SIGBUS.
  const uint64_t wanted =
      inlineMode ? UFFD_FEATURE_SIGBUS
                 : (kernelFeatures().features & (UFFD_FEATURE_THREAD_ID | UFFD_FEATURE_EXACT_ADDRESS | UFFD_FEATURE_EVENT_REMOVE |
                                                 UFFD_FEATURE_EVENT_UNMAP | UFFD_FEATURE_EVENT_FORK |
                                                 UFFD_FEATURE_EVENT_REMAP)) |
                       shmemNeeded;
  if (inlineMode && !(kernelFeatures().features & UFFD_FEATURE_SIGBUS))
    throw codedError(env, "ERR_UFFD_FEATURE_MISSING",
                     "this kernel lacks UFFD_FEATURE_SIGBUS (Linux 4.14+), which the inline servicer needs; map the region with "
                     "servicer 'worker' or 'native', or upgrade the kernel");
  int rc = apiHandshake(r->uffd.get(), wanted, nullptr, nullptr);
  if (rc == -EPERM && (wanted & UFFD_FEATURE_EVENT_FORK)) {
    // EVENT_FORK needs CAP_SYS_PTRACE. Without it the region still works; region.fork does not,
    // and a fork leaves the child with plain memory (its copy is unregistered), as the kernel does.
    OpenResult again = openUffd(allowUserModeOnly);
    if (!again.fd.valid()) throw systemError(env, again.err, "userfaultfd", "opening a userfaultfd for a new region");
    r->uffd = std::move(again.fd);
    rc = apiHandshake(r->uffd.get(), wanted & ~uint64_t(UFFD_FEATURE_EVENT_FORK), nullptr, nullptr);
  } else {
    r->forkEvents = (wanted & UFFD_FEATURE_EVENT_FORK) != 0 && !hugetlb;
  }
  if (rc != 0) throw systemError(env, -rc, "ioctl(UFFDIO_API)", "the handshake of a new region's userfaultfd");

  const int mapFlags = (mapShared ? MAP_SHARED : MAP_PRIVATE) | (fileFd >= 0 ? 0 : MAP_ANONYMOUS) |
                       (hugetlb ? MAP_HUGETLB : MAP_NORESERVE);
  void* mem = thp ? mmapPmdAligned(r->length)
                  : ::mmap(nullptr, r->length, PROT_READ | PROT_WRITE, mapFlags, fileFd, fileFd >= 0 ? static_cast<off_t>(offsetArg) : 0);
  if (mem == MAP_FAILED && hugetlb && errno == ENOMEM)
    throw codedError(env, "ERR_NO_HUGE_PAGES",
                     "mmap(MAP_HUGETLB) found too few free huge pages; reserve some first, e.g. as root: "
                     "sysctl vm.nr_hugepages=<count> (see /proc/meminfo HugePages_Free)");
  if (mem == MAP_FAILED && fileFd >= 0 && errno == EACCES)
    throw systemError(env, errno, "mmap", "mapping the file for a region of " + pagesText(pages),
                      mapShared ? "a shared, writable mapping needs the file opened read-write ('r+' or 'w+')"
                                : "the file must be opened for reading");
  if (mem == MAP_FAILED)
    throw systemError(env, errno, "mmap", std::to_string(r->length) + " bytes for a region of " + pagesText(pages));
  r->base = static_cast<uint8_t*>(mem);
  uint64_t ioctls = 0;
  // hugetlb: migrate_vma_setup refuses hugetlb vmas, so no device entry can ever exist there and
  // no fault needs us. The range stays unregistered: every fault in it is the kernel's own.
  if (!hugetlb) {
    // Without thp, no THP ever backs the range (khugepaged included): pages are 4 KiB, as our
    // fills are. With it, a fully populated PMD may become a THP (region.collapse, khugepaged),
    // which migrate then moves whole into a huge device page.
    ::madvise(mem, r->length, thp ? MADV_HUGEPAGE : MADV_NOHUGEPAGE);
    rc = registerRange(r->uffd.get(), reinterpret_cast<uint64_t>(mem), r->length,
                       UFFDIO_REGISTER_MODE_MISSING | UFFDIO_REGISTER_MODE_WP | (minorFaults ? UFFDIO_REGISTER_MODE_MINOR : 0),
                       &ioctls);
    if (rc == -EINVAL && fileFd >= 0)
      throw codedError(env, "ERR_BACKING_UNSUPPORTED",
                       "userfaultfd cannot register a mapping of this file: it serves shmem files only; "
                       "put the file on tmpfs (e.g. /dev/shm) or use an anonymous region");
    if (rc != 0)
      throw systemError(env, -rc, "ioctl(UFFDIO_REGISTER)", "registering " + pagesText(pages) + " for missing and write-protect faults",
                        rc == -EINVAL ? "this kernel cannot write-protect anonymous memory through userfaultfd; uffd-hmm needs Linux 5.7 or newer" : nullptr);
  }

  if (servicer == "native") {
    int efd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (efd < 0) throw systemError(env, errno, "eventfd", "the wake-up eventfd of a native servicer");
    r->wakeFd = UniqueFd(efd);
  }
  // Everything that can still fail comes before the region is published: a region left registered
  // with nobody reading its messages would hold up the next fork() of the process forever.
  Napi::Object out = Napi::Object::New(env);
  out.Set("bytes", Napi::ArrayBuffer::New(env, r->base, r->length));
  if (inlineMode && !inlineAdd(r))
    throw codedError(env, "ERR_TOO_MANY_INLINE_REGIONS",
                     "at most 64 inline regions may be open at once; close one, or map this one with servicer 'native'");
  r->ownerEnv = env;
  int handle = regions().add(r);
  keepAlive(env, KeepKind::Region, handle, opts.sharedValue);
  if (servicer == "native") startNativeServicer(r);
  out.Set("handle", handle);
  out.Set("address", Napi::BigInt::New(env, static_cast<uint64_t>(reinterpret_cast<uintptr_t>(r->base))));
  out.Set("pageSize", Napi::Number::New(env, static_cast<double>(r->pageSize)));
  out.Set("via", viaName(r->via));
  out.Set("userModeOnly", r->userModeOnly);
  out.Set("forkEvents", r->forkEvents);
  return out;
}

// regionUnmap(region, first, count) -> 0 | -errno: munmap of part of the region. The rest of the
// mapping stays; the whole range is unmapped again (harmlessly) when the region is destroyed.
static Napi::Value RegionUnmap(const Napi::CallbackInfo& info) {
  const PageSpan s = argPages(info, 0, 1, 2);
  return Napi::Number::New(info.Env(), ::munmap(s.start, s.length) == 0 ? 0 : -errno);
}

void initMmap(Napi::Env env, Napi::Object exports) {
  exports.Set("regionCreate", Napi::Function::New(env, RegionCreate));
  exports.Set("regionUnmap", Napi::Function::New(env, RegionUnmap));
}

}  // namespace uffdhmm
