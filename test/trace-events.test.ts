// The fault trace as the Chrome Trace Event Format (trace.toTraceEvents(), bench --trace): a track
// per faulting thread and for the servicer, one complete event per fault with what the fault did,
// the migrations and the bench's device turns; and a real consumer of the format (DevTools' trace
// engine, the one behind Chrome's performance panel) reads such a file.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, expect, it } from 'vitest';
import { Device, NativeToucher, Region, SERVICER_TRACK, type TraceEvent } from 'uffd-hmm';
import { SERVICERS, describeUffd, fillPages } from './helpers.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const tmp = mkdtempSync(path.join(os.tmpdir(), 'uffd-hmm-trace-events-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

const complete = (events: TraceEvent[], name: string): TraceEvent[] => events.filter((e) => e.ph === 'X' && e.name === name);
const trackNames = (events: TraceEvent[]): Map<number, string> =>
  new Map(events.filter((e) => e.ph === 'M' && e.name === 'thread_name').map((e) => [e.tid, String(e.args.name)]));

describeUffd.each(SERVICERS)('trace.toTraceEvents() with the %s servicer', (servicer) => {
  it('has one complete fault event per record, on its thread\'s named track, with what the fault did', async () => {
    const gpu = new Device({ name: 'gpu-te', capacity: 16 });
    const r = Region.map({ pages: 8, servicer });
    try {
      fillPages(r, 0, 8);
      const trace = r.trace();
      expect(r.migrate(0, 8, gpu)).toBe(8);
      for (let p = 0; p < 4; p++) r.bytes[p * r.pageSize] = 9; // 4 write faults from the main thread
      expect(r.migrateToRam(4, 2)).toBe(2);
      const records = trace.records();
      expect(records.length).toBe(4);
      const out = trace.toTraceEvents();
      const json = JSON.parse(JSON.stringify(out)) as typeof out; // what a file holds
      const faults = complete(json.traceEvents, 'fault');
      expect(faults.length).toBe(4);
      const names = trackNames(json.traceEvents);
      expect(names.get(SERVICER_TRACK)).toBe(`servicer (${servicer})`);
      expect(names.get(process.pid)).toBe(`main thread (${process.pid})`);
      for (const [i, e] of faults.entries()) {
        const rec = records[i];
        expect(e).toMatchObject({ cat: 'fault', ph: 'X', pid: process.pid, tid: process.pid, ts: rec.time, dur: rec.serviceUs });
        expect(e.dur).toBeGreaterThan(0);
        expect(e.args).toEqual({
          page: i,
          address: `0x${(r.address + BigInt(i * r.pageSize)).toString(16)}`,
          kind: 'missing',
          write: true,
          outcome: 'migrated',
          device: 'gpu-te',
          pfn: i,
          hookUs: 0,
          kernel: false,
          seq: rec.seq,
        });
      }
      // The servicer's track has the same spans; migrations are on the main thread's.
      expect(complete(json.traceEvents, 'serve').map((e) => [e.tid, e.ts, e.dur])).toEqual(faults.map((e) => [SERVICER_TRACK, e.ts, e.dur]));
      const [to] = complete(json.traceEvents, 'migrate');
      expect(to).toMatchObject({ cat: 'migration', tid: process.pid, args: { first: 0, count: 8, moved: 8, device: 'gpu-te' } });
      const [back] = complete(json.traceEvents, 'migrateToRam');
      expect(back).toMatchObject({ cat: 'migration', tid: process.pid, args: { first: 4, count: 2, back: 2 } });
      expect(to.ts + (to.dur ?? 0)).toBeLessThanOrEqual(faults[0].ts);
      expect(back.ts).toBeGreaterThanOrEqual(faults[3].ts);
      // Ordered by time after the metadata.
      const ts = json.traceEvents.filter((e) => e.ph === 'X').map((e) => e.ts);
      expect(ts).toEqual([...ts].sort((a, b) => a - b));
      expect(json.metadata).toEqual({ source: 'uffd-hmm', clock: 'CLOCK_MONOTONIC', overwrittenFaults: 0, droppedSpans: 0 });
    } finally {
      await r.close();
      await gpu.close();
    }
  });

  it('gives each native faulting thread its own track', async () => {
    const gpu = new Device({ name: 'gpu-te2', capacity: 64 });
    const r = Region.map({ pages: 64, servicer });
    try {
      r.bytes.fill(1);
      const trace = r.trace();
      r.migrate(0, 64, gpu);
      const t = new NativeToucher(r, { threads: 2, iterations: 64, mode: 'read', seed: 3 });
      await t.finished(20_000);
      const events = trace.toTraceEvents().traceEvents;
      const tids = new Set(complete(events, 'fault').map((e) => e.tid));
      const recordTids = new Set(trace.records().map((x) => x.tid));
      expect(tids).toEqual(recordTids);
      expect(tids.size).toBeGreaterThanOrEqual(1);
      const names = trackNames(events);
      for (const tid of tids) expect(names.get(tid)).toBe(`thread ${tid}`);
      expect(complete(events, 'fault').length).toBe(trace.records().length);
    } finally {
      await r.close();
      await gpu.close();
    }
  });
});

describeUffd('trace events with a driver', () => {
  it("carry the time the driver's fault hook took", async () => {
    const gpu = new Device({ name: 'gpu-hook', capacity: 4, driver: new URL('./fixtures/slow-hook-driver.mjs', import.meta.url) });
    const r = Region.map({ pages: 4 });
    try {
      r.bytes.fill(2);
      r.migrate(0, 4, gpu);
      const trace = r.trace();
      for (let p = 0; p < 4; p++) void r.bytes[p * r.pageSize];
      const faults = complete(trace.toTraceEvents().traceEvents, 'fault');
      expect(faults.length).toBe(4);
      for (const e of faults) {
        expect(e.args.hookUs).toBeGreaterThanOrEqual(200);
        expect(e.dur).toBeGreaterThanOrEqual(e.args.hookUs as number);
      }
      expect(trace.records().every((x) => x.hookUs >= 200)).toBe(true);
    } finally {
      await r.close();
      await gpu.close();
    }
  });

  it('a mark is a span on the main thread; none after stop', async () => {
    const r = Region.map({ pages: 1 });
    try {
      const trace = r.trace({ capacity: 2 });
      const { FaultTrace } = await import('uffd-hmm');
      const t0 = FaultTrace.now();
      trace.mark('phase', t0, t0 + 5, { step: 1 });
      trace.mark('phase', t0 + 5, t0 + 7);
      trace.mark('over', t0 + 7, t0 + 8); // beyond capacity: counted, dropped
      trace.stop();
      trace.mark('after', t0 + 9, t0 + 10);
      const out = trace.toTraceEvents();
      expect(complete(out.traceEvents, 'phase').map((e) => [e.ts - t0, e.dur, e.tid, e.cat])).toEqual([
        [0, 5, process.pid, 'mark'],
        [5, 2, process.pid, 'mark'],
      ]);
      expect(complete(out.traceEvents, 'after')).toEqual([]);
      expect(out.metadata.droppedSpans).toBe(1);
    } finally {
      await r.close();
    }
  });
});

describeUffd('bench --trace FILE', () => {
  it('writes a trace that DevTools\' trace engine reads: the main thread, the servicer and every fault', async () => {
    const file = path.join(tmp, 'bench-trace.json');
    const r = spawnSync(
      process.execPath,
      [path.join(root, 'dist', 'cli.js'), 'bench', '--driver', 'examples/bench-lru/driver.mjs', '--pattern', 'hot:10', '--pages', '2000',
        '--device-capacity', '500', '--batch', '200', '--trace', file, '--out', tmp, '--json'],
      { cwd: root, encoding: 'utf8', timeout: 120_000 },
    );
    expect(r.status, r.stderr).toBe(0);
    const results = JSON.parse(r.stdout) as { runs: { faults_served: number }[]; decisions: { to_ram: number; to_device: number } };
    const served = results.runs[0].faults_served;
    expect(served).toBeGreaterThan(0);
    const written = JSON.parse(readFileSync(file, 'utf8')) as { traceEvents: TraceEvent[] };
    const turns = complete(written.traceEvents, 'device turn');
    expect(turns.length).toBeGreaterThan(5);
    expect(turns.reduce((s, e) => s + (e.args.toDevice as number), 0)).toBe(results.decisions.to_device);

    // The consumer: the trace engine of Chrome DevTools' performance panel, as published on npm.
    const { analyzeTrace } = (await import('@paulirish/trace_engine/analyze-trace.mjs' as string)) as {
      analyzeTrace(f: string): Promise<{ parsedTrace: { data: { Renderer: { processes: Map<number, { threads: Map<number, { name?: string; entries: { name: string }[] }> }> } } } }>;
    };
    const { parsedTrace } = await analyzeTrace(file);
    const proc = parsedTrace.data.Renderer.processes.get(written.traceEvents.find((e) => e.ph === 'X')!.pid)!;
    expect(proc).toBeDefined();
    const threads = [...proc.threads.values()];
    const names = threads.map((t) => t.name);
    expect(names).toContain('servicer (worker)');
    expect(names.some((n) => /^thread \d+$/.test(n ?? ''))).toBe(true); // the native toucher
    expect(names.some((n) => /^main thread \(\d+\)$/.test(n ?? ''))).toBe(true); // migrations, device turns
    const faults = threads.flatMap((t) => t.entries.filter((e) => e.name === 'fault'));
    expect(faults.length).toBe(served);
    const serves = threads.flatMap((t) => t.entries.filter((e) => e.name === 'serve'));
    expect(serves.length).toBe(served);
    expect(threads.find((t) => t.name === 'servicer (worker)')!.entries.every((e) => e.name === 'serve')).toBe(true);
  }, 150_000);
});
