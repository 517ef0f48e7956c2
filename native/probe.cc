// What this kernel's userfaultfd grants this process, probed once, and the names JS needs to
// report it (how it was opened, what an errno is called).
#include <napi.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <cstring>

#include "napi_util.h"
#include "region.h"

namespace uffdhmm {

const KernelFeatures& kernelFeatures() {
  static const KernelFeatures probed = [] {
    KernelFeatures k;
    OpenResult o = openUffd(true);
    k.devErr = o.devErr;
    k.syscallErr = o.syscallErr;
    k.err = o.err;
    if (!o.fd.valid()) return k;
    uint64_t features = 0;
    if (apiHandshake(o.fd.get(), 0, &features, nullptr) != 0) {
      k.err = errno;
      return k;
    }
    // UFFDIO_API lists EVENT_FORK to everyone but grants it only with CAP_SYS_PTRACE: ask for it
    // on a second throwaway fd, so probe() reports what this process can use and regions do not
    // ask for what they would be refused.
    if (features & UFFD_FEATURE_EVENT_FORK) {
      OpenResult again = openUffd(true);
      if (!again.fd.valid() || apiHandshake(again.fd.get(), UFFD_FEATURE_EVENT_FORK, nullptr, nullptr) != 0)
        features &= ~uint64_t(UFFD_FEATURE_EVENT_FORK);
    }
    k.available = true;
    k.via = o.via;
    k.userModeOnly = o.userModeOnly;
    k.features = features;
    return k;
  }();
  return probed;
}

const char* viaName(OpenVia via) {
  switch (via) {
    case OpenVia::DevUserfaultfd: return "dev-userfaultfd";
    case OpenVia::Syscall: return "syscall";
    default: return nullptr;
  }
}

// probe() -> { available, via, userModeOnly, features (as a number), devErrno, syscallErrno, kernel }
static Napi::Value Probe(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const KernelFeatures& k = kernelFeatures();
  Napi::Object o = Napi::Object::New(env);
  o.Set("available", k.available);
  const char* via = viaName(k.via);
  o.Set("via", via ? Napi::Value(Napi::String::New(env, via)) : env.Null());
  o.Set("userModeOnly", k.userModeOnly);
  o.Set("features", Napi::Number::New(env, static_cast<double>(k.features)));
  o.Set("devErrno", k.devErr);
  o.Set("syscallErrno", k.syscallErr);
  o.Set("errno", k.err);
  struct utsname u;
  o.Set("kernel", ::uname(&u) == 0 ? u.release : "unknown");
  o.Set("pageSize", Napi::Number::New(env, static_cast<double>(::sysconf(_SC_PAGESIZE))));
  return o;
}

// errnoName(n) -> 'EEXIST' etc., for turning -errno results into SystemErrors in TypeScript.
static Napi::Value ErrnoName(const Napi::CallbackInfo& info) {
  int err = static_cast<int>(argU32(info, 0, "errno"));
  const char* name = ::strerrorname_np(err);
  return Napi::String::New(info.Env(), name ? name : "EUNKNOWN");
}

void initProbe(Napi::Env env, Napi::Object exports) {
  exports.Set("probe", Napi::Function::New(env, Probe));
  exports.Set("errnoName", Napi::Function::New(env, ErrnoName));
}

}  // namespace uffdhmm
