// profile-engine.sh's arithmetic: per function, what the servicer thread of the 2N-fault run did
// beyond the N-fault run's, ÷ N, from callgrind_annotate's inclusive and self listings.
const { readFileSync } = require('node:fs');

const [out, s, n] = [process.argv[2], process.argv[3], Number(process.argv[4])];

function parse(file) {
  const m = new Map();
  for (const line of readFileSync(file, 'utf8').split('\n')) {
    const x = /^\s*([\d,]+) \([^)]*\)\s+(.*?)(?: \[[^\]]*\])?$/.exec(line);
    // Skip call-site lines ("… (4,000x)") and annotation noise: functions only, once each.
    if (!x || /\(\d[\d,]*x\)$/.test(x[2]) || x[2] === 'events annotated' || !/[A-Za-z_]/.test(x[2])) continue;
    // Per function: callgrind_annotate lists one once per source file its code came from (inlined
    // lines, the object's own entry); the largest is the function itself.
    const fn = x[2] === 'PROGRAM TOTALS' ? x[2] : x[2].replace(/^[^:]*:/, '');
    m.set(fn, Math.max(m.get(fn) ?? 0, Number(x[1].replace(/,/g, ''))));
  }
  return m;
}

for (const kind of ['inclusive', 'self']) {
  const a = parse(`${out}/${kind}.${s}-${n}.txt`);
  const b = parse(`${out}/${kind}.${s}-${2 * n}.txt`);
  const total = ((b.get('PROGRAM TOTALS') ?? 0) - (a.get('PROGRAM TOTALS') ?? 0)) / n;
  if (kind === 'inclusive') {
    // The servicer's loop (the native thread's, or the worker's pollerWait, which serves every fault
    // needing no hook natively): its inclusive cost. The whole thread's also counts the worker's JS,
    // which start-up and JIT compiles make noisy between the two runs.
    const loop = [...b.keys()].find((fn) => /serviceLoop\(|PollerWait\(/.test(fn));
    const inLoop = loop === undefined ? NaN : (b.get(loop) - (a.get(loop) ?? 0)) / n;
    console.log(`== ${s}: ${inLoop.toFixed(0)} instructions per served fault in its servicer loop; ${total.toFixed(0)} in the whole thread`);
  }
  const rows = [...b]
    .filter(([fn]) => fn !== 'PROGRAM TOTALS')
    .map(([fn, c]) => [fn, (c - (a.get(fn) ?? 0)) / n])
    .filter(([, d]) => d >= 1.5)
    .sort((x, y) => y[1] - x[1]);
  console.log(`-- ${kind}, per fault:`);
  for (const [fn, d] of rows.slice(0, 30)) console.log(`${d.toFixed(1).padStart(8)}  ${fn.slice(0, 150)}`);
}
