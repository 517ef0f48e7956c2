#!/bin/sh
# Instructions per served fault in each servicer's own thread, counted by valgrind's callgrind:
# the user-space work the engine does for a fault, the same on every host (a count, not a time).
# A host with cheap system calls shows this work in the latency ratios; a host charging ~1 µs a
# system call hides it, so this is how to see it there too.
#
# Usage: sh scripts/profile-engine.sh [faults, default 4000] [servicers, default "native worker"]
# Needs valgrind (Debian's package) and a built dist/. Builds the addon with -g into build/profile/
# (the normal build/Release stays as it is) so that callgrind_annotate can show fault.cc by line.
#
# Valgrind runs one thread at a time and holds its lock while a thread touches memory, so a CPU
# touch of a device page would block the only running thread in the kernel with the servicer
# never scheduled. The faults are raised from inside write(2) instead (the kernel reads each
# device-resident page: write(2) to a file), during which valgrind lets the servicer thread run: the servicer's work
# for a fault is the same either way.
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
out="$root/build/profile"
pkg="$out/pkg"
faults=${1:-4000}
servicers=${2:-native worker}

command -v valgrind >/dev/null || { echo "profile-engine.sh: needs valgrind (apt-get install valgrind)"; exit 1; }
rm -rf "$pkg"
mkdir -p "$pkg"
cp -r "$root/package.json" "$root/binding.gyp" "$root/native" "$root/dist" "$pkg/"
ln -s "$root/node_modules" "$pkg/node_modules"
nodedir=$(cd "$root" && npm config get nodedir 2>/dev/null || true)
case "$nodedir" in ""|undefined|null) nodedir_arg="" ;; *) nodedir_arg="--nodedir=$nodedir" ;; esac
(cd "$pkg" && CXXFLAGS="-g" "$root/node_modules/.bin/node-gyp" rebuild $nodedir_arg >"$out/build.log" 2>&1) || { tail -30 "$out/build.log"; exit 1; }

cat >"$pkg/profile-faults.mjs" <<'EOF'
// Maps a region with the given servicer, migrates every page to a device, then makes the kernel
// read each page once (a write(2) of one byte to a file; /dev/null would not read it): one served fault per page. Prints the faults the
// servicer counted, so the per-fault division is checked, not assumed.
import { openSync, unlinkSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { Device, Region } from './dist/index.js';
const [servicer, n] = [process.argv[2], Number(process.argv[3])];
const dev = new Device({ capacity: n });
const region = Region.map({ pages: n, servicer });
// Never touched from JS (a CPU touch would block the only thread valgrind runs): the pages
// migrate as zeroed device pages, which a fault copies back as it copies any device page.
region.migrate(0, n, dev);
const file = `${tmpdir()}/uffd-hmm-profile-${process.pid}`;
const fd = openSync(file, 'w');
unlinkSync(file);
const ps = region.pageSize;
const before = region.stats().faults;
for (let p = 0; p < n; p++) writeSync(fd, region.bytes.subarray(p * ps, p * ps + 1), 0, 1, 0);
console.log(`faults ${region.stats().faults - before}`);
await region.close();
await dev.close();
EOF

# The servicer's thread in one run's per-thread profiles: the one that ran the engine's serveFault.
servicer_thread() {
  for f in "$out"/callgrind.$1-*; do
    if callgrind_annotate --inclusive=yes --threshold=100 "$f" 2>/dev/null | grep -q 'uffdhmm::serveFault'; then echo "$f"; return; fi
  done
}

# Each servicer runs twice, with N and 2N faults: what the second run's servicer thread did beyond
# the first's is N faults' work, start-up (the worker's module loading, JIT) cancelled out.
for s in $servicers; do
  for n in "$faults" "$((faults * 2))"; do
    rm -f "$out"/callgrind.$s-$n*
    (cd "$pkg" && valgrind --tool=callgrind --separate-threads=yes --smc-check=all-non-file \
      --callgrind-out-file="$out/callgrind.$s-$n" node profile-faults.mjs "$s" "$n" 2>"$out/valgrind.$s-$n.log") >"$out/run.$s-$n.log"
    served=$(sed -n 's/^faults //p' "$out/run.$s-$n.log")
    [ "$served" = "$n" ] || { echo "$s: the servicer counted $served faults for $n pages (see $out/run.$s-$n.log)"; exit 1; }
    file=$(servicer_thread "$s-$n")
    [ -n "$file" ] || { echo "$s: no thread ran serveFault (see $out/valgrind.$s-$n.log)"; exit 1; }
    callgrind_annotate --inclusive=yes --threshold=100 "$file" 2>/dev/null >"$out/inclusive.$s-$n.txt"
    callgrind_annotate --threshold=100 "$file" 2>/dev/null >"$out/self.$s-$n.txt"
  done
  # Per function, (2N run − N run) ÷ N: inclusive (the step and what it calls) and self.
  node "$root/scripts/profile-diff.cjs" "$out" "$s" "$faults"
done
echo "profiles: $out/callgrind.* (callgrind_annotate --auto=yes FILE native/fault.cc for line costs)"
