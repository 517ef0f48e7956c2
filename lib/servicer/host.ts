// The main thread's side of the worker servicer: starts one worker for the process on first use,
// tells it about regions and devices, and turns its reports into 'error' events.
import { MessageChannel, Worker, receiveMessageOnPort, type TransferListItem } from 'node:worker_threads';

import { native } from '../native.js';
import { UffdHmmError, warnNow } from '../errors.js';
import { integer, optionsObject } from '../validate.js';
import type { Device } from '../device.js';
import { CTRL_RUNNING, CTRL_STOP, CTRL_MAIL_SEQ, CTRL_WORDS, type FromWorker, type ToWorker } from './protocol.js';

export interface ServicedRegion {
  readonly handle: number;
  readonly shared: Int32Array;
  readonly address: bigint;
  readonly pageSize: number;
  reportError(err: Error): void;
  /** A native guard serves the region now. */
  servicerTakenOver(): void;
}

let stallDeadlineMs = 5000;
let exitHookInstalled = false;

const NOT_STARTED =
  '; native guards serve its regions with the default policy now (no driver hooks), and the next Region.map starts a new ' +
  'worker; a worker fails to start when the process is out of file descriptors (EMFILE, ERR_WORKER_INIT_FAILED): close ' +
  'regions and devices it no longer uses, or raise the limit (ulimit -n)';

const TAKEN_OVER =
  '; native guards serve its regions with the default policy now (no driver hooks), and the next Region.map starts a new ' +
  'worker; fix the driver module (its top-level code or a hook)';

/**
 * How long the worker servicer may stay away from reading faults while some wait, before native
 * guards take its regions over (a driver hook that hangs, a worker stuck in a loop). Applies to
 * worker servicers started afterwards. Default 5000 ms.
 *
 * The process has one worker servicer, started by the first `'worker'` {@link Region.map}: call
 * this before that (or after the worker failed, for its successor). When the deadline passes, each
 * region it served emits `'error'` with code `ERR_SERVICER_STALLED` and is served by a native
 * guard with the default policy from then on ({@link Region#guarded}). `'native'` and `'inline'`
 * regions have no such deadline: they run no hooks.
 *
 * @param options - `stallDeadlineMs`: 10 to 3600000 ms.
 * @throws `TypeError` (`ERR_INVALID_ARG_TYPE`) / `RangeError` (`ERR_OUT_OF_RANGE`) for a bad value.
 * @example
 * ```ts
 * // A test of a driver whose hook may hang: fail over after 200 ms, not 5 s.
 * configureServicers({ stallDeadlineMs: 200 });
 * const region = Region.map({ pages: 4 });
 * region.on('error', (e) => console.warn(e.code)); // 'ERR_SERVICER_STALLED' if a hook hangs
 * ```
 */
export function configureServicers(options: { stallDeadlineMs?: number }): void {
  const opts = optionsObject('options', options);
  if (opts.stallDeadlineMs !== undefined) stallDeadlineMs = integer('options.stallDeadlineMs', opts.stallDeadlineMs, 10, 3_600_000);
}

/**
 * Starts the servicer worker under whatever flags this process was given. The worker inherits
 * them the way Node lets a worker inherit (no execArgv: V8 and process-wide flags such as
 * --expose-gc, --max-old-space-size or --title are the process's already, and a worker given them
 * explicitly refuses to start). The entry is a one-line eval that imports worker.js: a module
 * file as the entry of a worker that inherits --input-type (node --input-type=module -e …) is
 * refused with ERR_INPUT_TYPE_NOT_ALLOWED, an import from an eval is not.
 */
function startWorker(workerData: unknown, transferList: TransferListItem[]): Worker {
  const entry = JSON.stringify(new URL('./worker.js', import.meta.url).href);
  // A failed import (EMFILE, a broken install) is thrown as an uncaught exception, so the worker
  // dies with it and 'error' reports it, whatever --unhandled-rejections says.
  const code = `import(${entry}).catch((e) => process.nextTick(() => { throw e; }));`;
  return new Worker(code, { eval: true, workerData, transferList });
}

export class WorkerServicer {
  static #instance: WorkerServicer | undefined;

  /** The process's worker servicer, started on first use. */
  static get(): WorkerServicer {
    WorkerServicer.#instance ??= new WorkerServicer();
    return WorkerServicer.#instance;
  }

  readonly poller: number;
  readonly #ctrl = new Int32Array(new SharedArrayBuffer(CTRL_WORDS * 4));
  readonly #worker: Worker;
  readonly #port;
  readonly #regions = new Map<number, ServicedRegion>();
  readonly #devices = new Map<number, number>(); // slot -> device id the worker knows
  readonly #deviceObjects = new Map<number, Device>(); // device id -> device
  #failed = false;
  #exited = false;
  #watch: NodeJS.Timeout | undefined;
  #nextRequest = 1;
  readonly #heapRequests = new Map<number, (used: number) => void>();

  private constructor() {
    this.poller = native.pollerCreate();
    const { port1, port2 } = new MessageChannel();
    this.#port = port1;
    try {
      this.#worker = startWorker({ poller: this.poller, ctrl: this.#ctrl, port: port2 }, [port2]);
    } catch (e) {
      port1.close();
      native.pollerDestroy(this.poller); // its epoll fd and eventfd: a failed map leaks nothing
      throw e;
    }
    // A servicer must not keep the process alive: exit stays prompt with regions still open.
    this.#worker.unref();
    this.#port.on('message', (msg: FromWorker) => this.#onMessage(msg));
    this.#port.unref(); // after on('message'), which refs the port again
    // Unref'd, the port would let a short script exit with a driver's error report still queued
    // (posted before the faulting thread was woken): take what is left as the process exits.
    if (!exitHookInstalled) {
      exitHookInstalled = true;
      process.on('exit', () => {
        const live = WorkerServicer.#instance;
        if (live !== undefined) live.#drainReports();
      });
    }
    this.#worker.on('error', (err) =>
      this.#fail(
        Atomics.load(this.#ctrl, CTRL_RUNNING) === 0
          ? new UffdHmmError('ERR_SERVICER_FAILED', `the worker servicer could not start (the error is err.cause)${NOT_STARTED}`, { cause: err })
          : new UffdHmmError('ERR_SERVICER_FAILED', `the worker servicer crashed (the error is err.cause)${TAKEN_OVER}`, { cause: err }),
      ),
    );
    this.#worker.on('exit', (code) => {
      this.#exited = true;
      this.#fail(
        new UffdHmmError('ERR_SERVICER_FAILED', `the worker servicer exited with code ${code} (a driver hook called process.exit()?)${TAKEN_OVER}`),
      );
    });
    // The watchdog is native (it must act while this thread is blocked in a fault or a fork); this
    // timer only reports what it did, and stops the stuck worker.
    native.pollerWatch(this.poller, stallDeadlineMs);
    const deadline = stallDeadlineMs;
    this.#watch = setInterval(() => {
      // A worker that went away (terminated, crashed, or whose thread ended before it started: the
      // watchdog hands its regions over at once) is reported by its own 'exit' or 'error' event.
      if (this.#exited || native.pollerDead(this.poller) !== 1) return;
      this.#fail(
        Atomics.load(this.#ctrl, CTRL_RUNNING) === 0
          ? new UffdHmmError(
              'ERR_SERVICER_FAILED',
              `the worker servicer had not started after ${Math.max(deadline, 10_000)} ms with faults waiting for it${NOT_STARTED}`,
            )
          : new UffdHmmError(
              'ERR_SERVICER_STALLED',
              `the worker servicer stayed away from reading faults for over ${deadline} ms (a driver hook that does not return?); ` +
                'native guards serve its regions with the default policy now (no driver hooks); fix the hook, or raise ' +
                'configureServicers({ stallDeadlineMs }) if it is only slow',
            ),
      );
      void this.#terminate();
    }, Math.min(250, deadline));
    this.#watch.unref();
  }

  /**
   * The worker is gone: a native servicer takes over each of its regions with the default policy,
   * so no fault is left unserved, and each region reports why. The next region gets a new worker.
   */
  #fail(err: Error): void {
    if (this.#failed) return;
    this.#drainReports(); // what the worker said before it went: reported first, to whom it concerns
    this.#failed = true;
    clearInterval(this.#watch);
    if (WorkerServicer.#instance === this) WorkerServicer.#instance = undefined;
    for (const [handle, region] of this.#regions) {
      native.pollerRemove(this.poller, handle);
      try {
        native.regionTakeOver(handle); // usually already done natively as the worker went away
        region.servicerTakenOver();
      } catch (e) {
        if ((e as { code?: string }).code === 'ERR_REGION_CLOSED') continue;
        // No guard thread (pthread_create: EAGAIN): say plainly that this region is not served.
        region.reportError(
          new UffdHmmError(
            'ERR_SERVICER_FAILED',
            `${err.message.split(';')[0]}, and no native guard could start to serve this region (the error is err.cause): ` +
              'its device-resident pages cannot be touched; end threads this process no longer needs, then migrate them back ' +
              'with region.migrateToRam()',
            { cause: e },
          ),
        );
        continue;
      }
      region.reportError(err);
    }
    this.#regions.clear();
    // A worker that threw can still be looping in pollerWait (seen: a crash inside a driver module's
    // import left it polling an empty set until process.exit() waited for it forever). Tell it to
    // stop, then make sure: it has nothing left to serve.
    Atomics.store(this.#ctrl, CTRL_STOP, 1);
    native.pollerKick(this.poller);
    if (!this.#exited) void this.#terminate();
  }

  /**
   * Ends the worker. Termination lands when its thread next runs JS, and its pollerWait serves
   * faults natively until a kick or the end of its time slice: the kick brings it back to JS now.
   */
  #terminate(): Promise<number> {
    const done = this.#worker.terminate();
    native.pollerKick(this.poller);
    return done;
  }

  addRegion(region: ServicedRegion): void {
    this.#regions.set(region.handle, region);
    this.#post({
      type: 'region',
      handle: region.handle,
      shared: region.shared,
      address: region.address,
      pageSize: region.pageSize,
    });
    native.pollerAdd(this.poller, region.handle);
  }

  /** The region's table moved to a new buffer (remap): the worker switches before the move. */
  replaceTable(region: ServicedRegion, shared: Int32Array): void {
    if (!this.#regions.has(region.handle)) return;
    this.#post({ type: 'region', handle: region.handle, shared, address: region.address, pageSize: region.pageSize });
  }

  removeRegion(handle: number): void {
    if (!this.#regions.delete(handle) || this.#failed) return;
    native.pollerRemove(this.poller, handle);
    this.#post({ type: 'drop-region', handle });
  }

  /** Tells the worker about `device` before any entry of a serviced region names it. */
  ensureDevice(device: Device): void {
    if (this.#devices.get(device.slot) === device.id) return;
    this.#devices.set(device.slot, device.id);
    this.#deviceObjects.set(device.id, device);
    this.#post({
      type: 'device',
      slot: device.slot,
      id: device.id,
      name: device.name,
      capacity: device.capacity,
      shared: device.shared,
      driverUrl: device.driverUrl,
    });
    device.once('close', () => {
      if (this.#devices.get(device.slot) === device.id) this.#devices.delete(device.slot);
      this.#deviceObjects.delete(device.id);
      this.#post({ type: 'drop-device', slot: device.slot, id: device.id });
    });
  }

  #post(msg: ToWorker): void {
    this.#port.postMessage(msg);
    Atomics.add(this.#ctrl, CTRL_MAIL_SEQ, 1);
    native.pollerKick(this.poller);
  }

  /** The worker servicer's own JS heap in use (its isolate), e.g. to check that serving allocates nothing. */
  heapUsed(timeoutMs = 5000): Promise<number> {
    const id = this.#nextRequest++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#heapRequests.delete(id);
        reject(new UffdHmmError('ERR_SERVICER_STALLED', `the worker servicer did not answer within ${timeoutMs} ms; it is stuck or busy, retry later`));
      }, timeoutMs);
      this.#heapRequests.set(id, (used) => {
        clearTimeout(timer);
        resolve(used);
      });
      this.#post({ type: 'heap-request', id });
    });
  }

  #drainReports(): void {
    for (let m = receiveMessageOnPort(this.#port); m !== undefined; m = receiveMessageOnPort(this.#port)) this.#onMessage(m.message as FromWorker);
  }

  #onMessage(msg: FromWorker): void {
    if (msg.type === 'heap') {
      this.#heapRequests.get(msg.id)?.(msg.used);
      this.#heapRequests.delete(msg.id);
      return;
    }
    if (msg.type !== 'error') return;
    const err = new UffdHmmError(msg.code, msg.message, { cause: msg.cause });
    const device = msg.deviceId === undefined ? undefined : this.#deviceObjects.get(msg.deviceId);
    if (device) device.reportError(err);
    else if (msg.region !== undefined) this.#regions.get(msg.region)?.reportError(err);
    else this.#broadcast(err);
  }

  #broadcast(err: Error): void {
    if (this.#regions.size === 0) warnNow(err);
    for (const r of this.#regions.values()) r.reportError(err);
  }

  /** @internal For tests of the guard: stops the worker as a crash would. */
  async terminateForTest(): Promise<void> {
    await this.#terminate();
  }
}
