// A driver with a prefetch policy: when the CPU streams through its pages, the device sends the
// next ones back to RAM before the CPU asks, so they need no fault. Between batches of CPU
// touches the benchmark calls deviceTurn (on the main thread); fault and pageFree run in the
// servicer as for any driver.
//
//   npm run bench -- --driver examples/bench-prefetch/driver.mjs --pattern sequential --quick
//
// Configuration travels in the URL: driver.mjs?ahead=512 prefetches 512 pages (default 256).
const ahead = Number(new URL(import.meta.url).searchParams.get('ahead') ?? 256);

/** Every CPU fault migrates back (the default, written out so the benchmark times the hook). */
export function fault(ctx) {
  return 'migrate';
}

/**
 * The device's turn. `ctx.touched` holds the pages the CPU touched in the batch just run; when
 * nine steps in ten went to the next page, the CPU is streaming: send the next `ahead` pages
 * still on the device back to RAM. Anything else (random access) is left alone, so a
 * prediction that would be wrong costs nothing.
 */
export function deviceTurn(ctx) {
  const t = ctx.touched;
  if (t.length < 2) return undefined;
  let forward = 0;
  for (let i = 1; i < t.length; i++) if (t[i] === t[i - 1] + 1) forward++;
  if (forward < 0.9 * (t.length - 1)) return undefined;
  const toRam = [];
  const last = t[t.length - 1];
  for (let p = last + 1; p <= last + ahead && p < ctx.pages; p++) if (ctx.onDevice(p)) toRam.push(p);
  return { toRam };
}
