// Module entry: every binding file registers its own functions here.
#include <dlfcn.h>
#include <napi.h>

#include "napi_util.h"

namespace uffdhmm {
void initDevice(Napi::Env env, Napi::Object exports);
void initRegion(Napi::Env env, Napi::Object exports);
void initPoller(Napi::Env env, Napi::Object exports);
void initBench(Napi::Env env, Napi::Object exports);
void initToucher(Napi::Env env, Napi::Object exports);
void initFork(Napi::Env env, Napi::Object exports);
void initProtocol(Napi::Env env, Napi::Object exports);
void initFault(Napi::Env env, Napi::Object exports);
void retireForkJobsOf(const void* env);
void retireRegionsOf(const void* env);
}  // namespace uffdhmm

// Runs while the environment is torn down (process exit, a worker thread's end), before V8 frees
// its ArrayBuffers: the tables of its regions and devices live in them, and native threads
// (servicers, guards, fork children's servicers) write them until stopped here. Fork children go
// first: their servicers migrate pages back into the parents' tables too.
static void retireEnv(void* env) {
  uffdhmm::retireForkJobsOf(env);
  uffdhmm::retireRegionsOf(env);
}

// Node unloads an addon when the last environment that loaded it ends (a worker thread that was
// its only user). Native threads outlive environments (touchers on plain memory, a guard, fork
// waiters) and run this library's code: it must stay mapped until the process ends.
static void pinLibrary() {
  Dl_info self;
  if (::dladdr(reinterpret_cast<void*>(&pinLibrary), &self) != 0 && self.dli_fname != nullptr)
    ::dlopen(self.dli_fname, RTLD_NOW | RTLD_NOLOAD | RTLD_NODELETE);
}

static Napi::Object Init(Napi::Env env, Napi::Object exports) {
  pinLibrary();
  napi_add_env_cleanup_hook(env, retireEnv, static_cast<napi_env>(env));
  uffdhmm::initKeepAlive(env);
  uffdhmm::initDevice(env, exports);
  uffdhmm::initRegion(env, exports);
  uffdhmm::initPoller(env, exports);
  uffdhmm::initBench(env, exports);
  uffdhmm::initToucher(env, exports);
  uffdhmm::initFork(env, exports);
  uffdhmm::initProtocol(env, exports);
  uffdhmm::initFault(env, exports);
  return exports;
}

NODE_API_MODULE(uffd_hmm, Init)
