// Module entry: every binding file registers its own functions here.
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
}  // namespace uffdhmm

static Napi::Object Init(Napi::Env env, Napi::Object exports) {
  uffdhmm::initKeepAlive(env);
  uffdhmm::initDevice(env, exports);
  uffdhmm::initRegion(env, exports);
  uffdhmm::initPoller(env, exports);
  uffdhmm::initBench(env, exports);
  uffdhmm::initToucher(env, exports);
  uffdhmm::initFork(env, exports);
  uffdhmm::initProtocol(env, exports);
  return exports;
}

NODE_API_MODULE(uffd_hmm, Init)
