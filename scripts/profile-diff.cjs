// profile-engine.sh's arithmetic: per function, what the servicer thread of the 2N-fault run did
// beyond the N-fault run's, ÷ N, from callgrind_annotate's inclusive and self listings.
const { readFileSync } = require('node:fs');

const [out, s, n] = [process.argv[2], process.argv[3], Number(process.argv[4])];

function parse(file) {
  const m = new Map();
  for (const line of readFileSync(file, 'utf8').split('\n')) {
    const x = /^\s*([\d,]+) \([^)]*\)\s+(.*?)(?: \[[^\]]*\])?$/.exec(line);
    if (!x) continue;
    // Per function, whichever source line table or object callgrind listed it under.
    const fn = x[2] === 'PROGRAM TOTALS' ? x[2] : x[2].replace(/^[^:]*:/, '');
    m.set(fn, (m.get(fn) ?? 0) + Number(x[1].replace(/,/g, '')));
  }
  return m;
}

for (const kind of ['inclusive', 'self']) {
  const a = parse(`${out}/${kind}.${s}-${n}.txt`);
  const b = parse(`${out}/${kind}.${s}-${2 * n}.txt`);
  const total = ((b.get('PROGRAM TOTALS') ?? 0) - (a.get('PROGRAM TOTALS') ?? 0)) / n;
  if (kind === 'inclusive') console.log(`== ${s}: ${total.toFixed(0)} instructions per served fault in the servicer's thread`);
  const rows = [...b]
    .filter(([fn]) => fn !== 'PROGRAM TOTALS')
    .map(([fn, c]) => [fn, (c - (a.get(fn) ?? 0)) / n])
    .filter(([, d]) => d >= 1.5)
    .sort((x, y) => y[1] - x[1]);
  console.log(`-- ${kind}, per fault:`);
  for (const [fn, d] of rows.slice(0, 30)) console.log(`${d.toFixed(1).padStart(8)}  ${fn.slice(0, 150)}`);
}
