// The progress bar on stderr: one line redrawn in place, only on a terminal. The benchmark's
// steps have rough weights (expected seconds), so the bar moves about evenly through the run.

export interface Progress {
  /** Starts a step of the given weight, finishing the previous one. */
  step(label: string, weight: number): void;
  /** Fraction 0..1 of the current step done. */
  update(fraction: number): void;
  /** Clears the line. */
  done(): void;
}

const silent: Progress = { step() {}, update() {}, done() {} };

export function progressBar(stream: NodeJS.WriteStream, enabled: boolean, totalWeight: number): Progress {
  if (!enabled || !stream.isTTY) return silent;
  const start = Date.now();
  let doneWeight = 0;
  let weight = 0;
  let label = '';
  let lastDraw = 0;
  const draw = (fraction: number, force: boolean): void => {
    const now = Date.now();
    // Redrawing costs a write(2) on the faulting thread's CPU: ten times a second is plenty.
    if (!force && now - lastDraw < 100) return;
    lastDraw = now;
    const total = Math.min(1, (doneWeight + weight * fraction) / totalWeight);
    const columns = stream.columns || 80;
    const width = Math.max(10, Math.min(30, columns - 50));
    const filled = Math.round(total * width);
    const secs = ((now - start) / 1000).toFixed(0);
    const text = `[${'#'.repeat(filled)}${'-'.repeat(width - filled)}] ${(total * 100).toFixed(0).padStart(3)}% ${secs}s ${label}`;
    stream.write(`\r${text.slice(0, columns - 1)}\x1b[K`);
  };
  return {
    step(next, w) {
      doneWeight += weight;
      weight = w;
      label = next;
      draw(0, true);
    },
    update(fraction) {
      draw(fraction, false);
    },
    done() {
      stream.write('\r\x1b[K');
    },
  };
}
