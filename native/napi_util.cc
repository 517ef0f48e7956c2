// Error shapes, argument checks and buffer keep-alive for the bindings.
#include "napi_util.h"

#include <cerrno>
#include <cstring>
#include <map>

namespace uffdhmm {

static Napi::Error withCode(Napi::Error err, const char* code) {
  err.Set("code", Napi::String::New(err.Env(), code));
  return err;
}

Napi::Error typeError(Napi::Env env, const char* msg) {
  return withCode(Napi::TypeError::New(env, msg), "ERR_INVALID_ARG_TYPE");
}

Napi::Error rangeError(Napi::Env env, const char* msg) {
  return withCode(Napi::RangeError::New(env, msg), "ERR_OUT_OF_RANGE");
}

Napi::Error codedError(Napi::Env env, const char* code, const char* msg) {
  return withCode(Napi::Error::New(env, msg), code);
}

// The same words as NEXT_STEP in lib/errors.ts.
static const char* nextStepFor(int err) {
  switch (err) {
    case ENOMEM:
      return "the kernel refused the memory; map fewer or smaller regions and devices, or raise the limit that was hit "
             "(ulimit -v, ulimit -d, vm.max_map_count)";
    case EMFILE:
      return "this process has too many open files; close regions and devices it no longer uses, or raise the limit (ulimit -n)";
    case ENFILE:
      return "the system has too many open files; close some, or raise fs.file-max";
    case EAGAIN:
      return "a process or thread limit was reached; end processes this user no longer needs, or raise the limit (ulimit -u)";
    default:
      return "unexpected here; please report it with this message and the output of `npx uffd-hmm info --json`";
  }
}

Napi::Error systemError(Napi::Env env, int err, const char* syscall, const std::string& context, const char* hint) {
  const char* name = ::strerrorname_np(err);
  std::string msg = std::string(syscall) + " failed: " + (name ? name : "EUNKNOWN");
  if (!context.empty()) msg += " (" + context + ")";
  msg += std::string(": ") + (hint ? hint : nextStepFor(err));
  Napi::Error e = withCode(Napi::Error::New(env, msg), name ? name : "EUNKNOWN");
  e.Set("errno", Napi::Number::New(env, -err));
  e.Set("syscall", Napi::String::New(env, syscall));
  return e;
}

uint32_t argU32(const Napi::CallbackInfo& info, size_t i, const char* name) {
  Napi::Value v = info[i];
  if (!v.IsNumber()) throw typeError(info.Env(), (std::string(name) + " must be a number").c_str());
  double d = v.As<Napi::Number>().DoubleValue();
  if (!(d >= 0 && d <= 4294967295.0) || d != static_cast<double>(static_cast<uint32_t>(d)))
    throw rangeError(info.Env(), (std::string(name) + " must be an integer from 0 to 2^32-1").c_str());
  return static_cast<uint32_t>(d);
}

bool argBool(const Napi::CallbackInfo& info, size_t i, const char* name) {
  Napi::Value v = info[i];
  if (!v.IsBoolean()) throw typeError(info.Env(), (std::string(name) + " must be a boolean").c_str());
  return v.As<Napi::Boolean>().Value();
}

std::pair<int32_t*, size_t> argSharedInt32(const Napi::CallbackInfo& info, size_t i, const char* name) {
  // N-API cannot tell a SharedArrayBuffer from an ArrayBuffer on Node 20; lib/ only ever passes
  // views over SharedArrayBuffers, whose memory never moves.
  return argInt32Array(info, i, name);
}

std::pair<uint8_t*, size_t> argBytes(const Napi::CallbackInfo& info, size_t i, const char* name) {
  Napi::Value v = info[i];
  if (v.IsTypedArray()) {
    auto ta = v.As<Napi::TypedArray>();
    auto buf = ta.ArrayBuffer();
    return {static_cast<uint8_t*>(buf.Data()) + ta.ByteOffset(), ta.ByteLength()};
  }
  if (v.IsDataView()) {
    auto dv = v.As<Napi::DataView>();
    return {static_cast<uint8_t*>(dv.ArrayBuffer().Data()) + dv.ByteOffset(), dv.ByteLength()};
  }
  throw typeError(info.Env(), (std::string(name) + " must be an ArrayBufferView").c_str());
}

std::pair<int32_t*, size_t> argInt32Array(const Napi::CallbackInfo& info, size_t i, const char* name) {
  Napi::Value v = info[i];
  if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_int32_array)
    throw typeError(info.Env(), (std::string(name) + " must be an Int32Array").c_str());
  auto arr = v.As<Napi::Int32Array>();
  return {arr.Data(), arr.ElementLength()};
}

std::pair<double*, size_t> argFloat64Array(const Napi::CallbackInfo& info, size_t i, const char* name) {
  Napi::Value v = info[i];
  if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_float64_array)
    throw typeError(info.Env(), (std::string(name) + " must be a Float64Array").c_str());
  auto arr = v.As<Napi::Float64Array>();
  return {arr.Data(), arr.ElementLength()};
}

// Raw napi_refs, deleted explicitly on the env's own thread; at env teardown Node frees them.
struct KeepAliveMap {
  std::map<std::pair<int, int>, napi_ref> refs;
};

void initKeepAlive(Napi::Env env) {
  env.SetInstanceData<KeepAliveMap>(new KeepAliveMap());
}

void keepAlive(Napi::Env env, KeepKind kind, int handle, Napi::Value value) {
  auto* m = env.GetInstanceData<KeepAliveMap>();
  napi_ref ref;
  if (napi_create_reference(env, value, 1, &ref) != napi_ok) throw Napi::Error::New(env, "napi_create_reference failed");
  m->refs[{static_cast<int>(kind), handle}] = ref;
}

void dropKeepAlive(Napi::Env env, KeepKind kind, int handle) {
  auto* m = env.GetInstanceData<KeepAliveMap>();
  auto it = m->refs.find({static_cast<int>(kind), handle});
  if (it == m->refs.end()) return;
  napi_delete_reference(env, it->second);
  m->refs.erase(it);
}

uint32_t crc32(uint32_t crc, const uint8_t* data, size_t len) {
  static uint32_t table[256];
  static bool ready = [] {
    for (uint32_t i = 0; i < 256; i++) {
      uint32_t c = i;
      for (int k = 0; k < 8; k++) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
      table[i] = c;
    }
    return true;
  }();
  (void)ready;
  crc = ~crc;
  for (size_t i = 0; i < len; i++) crc = table[(crc ^ data[i]) & 0xff] ^ (crc >> 8);
  return ~crc;
}

}  // namespace uffdhmm
