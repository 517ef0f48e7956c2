#!/bin/sh
# AddressSanitizer run of the teardown paths (process exit, region and device close, guard
# take-over, fork children) and of the fault engine's recovery paths (scripts/engine-edges.mjs): builds the addon with -fsanitize=address into a copy of the package
# under build/asan/ (the normal build/Release stays as it is), then runs the exit stress, the
# teardown tests' scenarios and the fork scenarios against it with libasan preloaded into node.
#
# Usage: sh scripts/asan.sh [runs per servicer, default 40]
# Needs g++ with libasan (gcc 12: /usr/lib/gcc/x86_64-linux-gnu/12/libasan.so) and a built dist/
# (npm run build). Exits 1 if any child failed or ASan reported anything; reports land in
# build/asan/reports/asan.<pid> (empty directory: nothing found).
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
out="$root/build/asan"
pkg="$out/pkg"
runs=${1:-40}

rm -rf "$pkg" "$out/reports"
mkdir -p "$pkg" "$out/reports"
cp -r "$root/package.json" "$root/binding.gyp" "$root/native" "$root/dist" "$root/scripts" "$pkg/"
mkdir -p "$pkg/test"
cp -r "$root/test/fixtures" "$pkg/test/"
ln -s "$root/node_modules" "$pkg/node_modules"

# node-gyp's make build appends CXXFLAGS and LDFLAGS from the environment to the target's own.
# The headers come from where npm's own build found them (npm config nodedir), if it set one.
nodedir=$(cd "$root" && npm config get nodedir 2>/dev/null || true)
case "$nodedir" in ""|undefined|null) nodedir_arg="" ;; *) nodedir_arg="--nodedir=$nodedir" ;; esac
(cd "$pkg" && CXXFLAGS="-fsanitize=address -fno-omit-frame-pointer -g -O1" LDFLAGS="-fsanitize=address" \
  "$root/node_modules/.bin/node-gyp" rebuild $nodedir_arg >"$out/build.log" 2>&1) || { tail -30 "$out/build.log"; exit 1; }
nm -D "$pkg/build/Release/uffd_hmm.node" | grep -q __asan_init || { echo "asan.sh: the addon was built without ASan"; exit 1; }

# node itself is not instrumented: libasan must come first, and must leave SIGSEGV/SIGBUS to the
# addon (the inline servicer's SIGBUS handler, tests that expect a fatal signal). Leaks are not
# the question here (node keeps much until exit on purpose).
LD_PRELOAD=$(g++ -print-file-name=libasan.so)
ASAN_OPTIONS="detect_leaks=0:handle_segv=0:handle_sigbus=0:allow_user_segv_handler=1:abort_on_error=1:log_path=$out/reports/asan"
export LD_PRELOAD ASAN_OPTIONS

status=0
node "$pkg/scripts/exit-stress.mjs" --runs "$runs" || status=1
node "$pkg/scripts/teardown-scenarios.mjs" || status=1
node "$pkg/scripts/engine-edges.mjs" || status=1
unset LD_PRELOAD

if ls "$out/reports"/asan.* >/dev/null 2>&1; then
  echo "asan.sh: AddressSanitizer reports:"
  for f in "$out/reports"/asan.*; do echo "== $f"; grep -E '^(==|    #[0-9]+ )' "$f" | head -40; done
  status=1
else
  echo "asan.sh: no AddressSanitizer report"
fi
exit $status
