// A driver for a device whose memory is smaller than the working set. The CPU and the device take
// turns on shared data: after each batch of CPU touches the device wants every page the CPU just
// touched (it computes on them next). When its memory is full the policy decides:
//
//   driver.mjs?policy=lru     evict the pages the device used least recently (migrate them
//                             back to RAM) to make room: the device gets every page it wants
//   driver.mjs?policy=refuse  a full device takes nothing more: the page stays in RAM (the
//                             device would read it over the bus), nothing is evicted
//
//   npm run bench -- --driver examples/bench-lru/driver.mjs --pattern hot:10 --device-capacity 1000 --quick
//
// deviceTurn runs on the main thread between batches; fault and pageFree run in the servicer.
const policy = new URL(import.meta.url).searchParams.get('policy') ?? 'lru';
if (policy !== 'lru' && policy !== 'refuse') throw new Error(`policy must be lru or refuse, not ${policy}`);

/** Every CPU fault migrates back: the device never refuses the CPU its data. */
export function fault(ctx) {
  return 'migrate';
}

// Pages on the device, least recently used first (a Map iterates in insertion order; deleting
// and re-inserting a key moves it to the end). Kept on the main thread, where deviceTurn runs.
const recency = new Map();

export function deviceTurn(ctx) {
  if (ctx.turn === 0) {
    recency.clear();
    for (let p = 0; p < ctx.pages; p++) if (ctx.onDevice(p)) recency.set(p, true);
    return undefined;
  }
  // What the device wants: each page the CPU touched, most recent last, that is not on it now.
  const want = [];
  const seen = new Set();
  for (let i = ctx.touched.length - 1; i >= 0; i--) {
    const p = ctx.touched[i];
    if (seen.has(p)) continue;
    seen.add(p);
    if (ctx.onDevice(p)) recency.delete(p);
    else want.push(p);
    recency.set(p, true);
  }
  want.reverse();
  if (policy === 'refuse') return { toDevice: want };
  // Make room: evict least recently used pages still on the device (a CPU fault may have taken
  // some back already: those need no eviction).
  const toRam = [];
  let free = ctx.capacity - ctx.used;
  for (const p of recency.keys()) {
    if (free >= want.length) break;
    if (seen.has(p)) continue;
    recency.delete(p);
    if (ctx.onDevice(p)) {
      toRam.push(p);
      free++;
    }
  }
  return { toRam, toDevice: want.slice(Math.max(0, want.length - ctx.capacity)) };
}
