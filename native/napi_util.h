// Argument checks and error construction shared by every binding, so that each error reaching JS
// has the shape the package documents (docs/ERRORS.md): TypeError/RangeError with a code, or Node's SystemError fields.
#pragma once

#include <napi.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>

namespace uffdhmm {

Napi::Error typeError(Napi::Env env, const char* msg);
Napi::Error rangeError(Napi::Env env, const char* msg);
Napi::Error codedError(Napi::Env env, const char* code, const char* msg);
// ERR_REGION_CLOSED / ERR_DEVICE_CLOSED as lib/errors.ts words them (lib/ checks first; these are the backstop).
constexpr const char* kRegionClosed = "the region is closed (region.close() was called); map a new one with Region.map()";
constexpr const char* kDeviceClosed = "the device is closed (device.close() was called); create a new Device to use device memory again";
// Handles only lib/ passes: not finding one is a bug here, never a user's mistake.
constexpr const char* kInternal = " (an internal error in uffd-hmm; please report it with the output of `npx uffd-hmm info --json`)";
// An Error with code (e.g. 'EEXIST'), errno (negative, as Node reports it) and syscall. Its message
// says what was being done (`context`) and what to do about it (`hint`, by default by errno), worded
// as lib/errors.ts words the SystemErrors it raises itself.
Napi::Error systemError(Napi::Env env, int err, const char* syscall, const std::string& context = {}, const char* hint = nullptr);
// "1 page", "16 pages": for those contexts.
inline std::string pagesText(size_t n) { return std::to_string(n) + (n == 1 ? " page" : " pages"); }

uint32_t argU32(const Napi::CallbackInfo& info, size_t i, const char* name);
bool argBool(const Napi::CallbackInfo& info, size_t i, const char* name);
std::pair<int32_t*, size_t> argSharedInt32(const Napi::CallbackInfo& info, size_t i, const char* name);
std::pair<uint8_t*, size_t> argBytes(const Napi::CallbackInfo& info, size_t i, const char* name);
std::pair<int32_t*, size_t> argInt32Array(const Napi::CallbackInfo& info, size_t i, const char* name);
std::pair<double*, size_t> argFloat64Array(const Napi::CallbackInfo& info, size_t i, const char* name);

// Native objects point into SharedArrayBuffers owned by JS; this keeps each buffer alive until
// its object is destroyed, even if the JS wrapper is collected without close().
enum class KeepKind { Device, Region, Fork, Trace };
void keepAlive(Napi::Env env, KeepKind kind, int handle, Napi::Value value);
void dropKeepAlive(Napi::Env env, KeepKind kind, int handle);
void initKeepAlive(Napi::Env env);

uint32_t crc32(uint32_t crc, const uint8_t* data, size_t len);

}  // namespace uffdhmm
