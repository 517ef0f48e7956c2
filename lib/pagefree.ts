// free_devpage: a device page lost its last reference, and the driver's pageFree hook must have
// run (on the thread that created the Device) before the page is handed out again, as the kernel
// calls it inside put_page. So such a page stays off the free stack until its hook ran: those
// freed here, and those native code freed and logged for us (DEV_LOG_FREES, native/device.cc).
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

import { UffdHmmError, driverLoadFailed, pageFreeHookThrew } from './errors.js';
import { DEV_FREEING, DEV_LOG_FREES, DEV_USED } from './layout.js';
import { drainFreedLog, pushFreeDevicePage } from './devicepages.js';
import { DRIVER_LOAD_CONSEQUENCE, type Driver, type PageFreeContext } from './driver.js';

/** How long the exit hook waits for a free a servicer is finishing (microseconds, unless descheduled). */
const EXIT_FREEING_WAIT_MS = 100;
/** How long a closing device waits for the frees of faults served on other threads (as long). */
const CLOSE_FREEING_WAIT_MS = EXIT_FREEING_WAIT_MS;

/** Nothing ever notifies it: Atomics.wait on it is a short sleep. */
const napWord = new Int32Array(new SharedArrayBuffer(4));

/** Every PageFrees with work that may still be due: its device is open, or freed pages wait for their hook. */
const live = new Set<PageFrees>();
let exitHookInstalled = false;

/**
 * As the process exits there is no later tick: pageFree runs now for every page freed so far, those
 * native code logged since the last drain (a fault served just before a short script ended) and
 * those whose hook waited for the driver's import. Their errors are reported at once.
 */
function flushAtExit(): void {
  for (const frees of [...live]) frees.flushAtExit();
}

/**
 * The driver module, loaded now rather than in a later tick, for the exit hook. An ES module that
 * has no top-level await loads this way (require of an ES module).
 */
function loadDriverNow(url: string): Driver {
  if (!url.startsWith('file:')) throw new Error(`only a file: driver can be loaded synchronously as the process exits, not ${url}`);
  return createRequire(import.meta.url)(fileURLToPath(url)) as Driver;
}

/** What the hook runner needs of its Device (device.ts imports this file). */
export interface PageFreeOwner {
  readonly name: string;
  readonly shared: Int32Array;
  readonly capacity: number;
  readonly closed: boolean;
  reportError(err: unknown): void;
}

/** The pageFree hooks of one Device with a driver, and the freed pages waiting for them. */
export class PageFrees {
  readonly #owner: PageFreeOwner;
  readonly #url: string;
  #loading = false;
  /** The module once imported on this thread; null when it would not load. */
  #module: Driver | null | undefined;
  readonly #waiting: number[] = [];
  /** Pages handed out before the module had loaded (takeEarly): their hook is still to run. */
  readonly #late: number[] = [];
  #queued = false;

  constructor(owner: PageFreeOwner, url: string) {
    this.#owner = owner;
    this.#url = url;
    live.add(this);
    if (!exitHookInstalled) {
      exitHookInstalled = true;
      process.on('exit', flushAtExit);
    }
  }

  /**
   * Loads the module on this thread (once). The first migration to the device calls it: pages freed
   * before the module has loaded wait for it (a full device stays full that long), so it must be
   * loading before any page can be freed. A `file:` module without top-level await, named without
   * a query or fragment, loads at once (require of an ES module): its pageFree is there before any
   * page is freed, and as the process exits. Any other is imported (a turn of the event loop).
   */
  load(): void {
    if (this.#loading) return;
    const owner = this.#owner;
    const url = this.#url;
    this.#loading = true;
    // With a query or fragment the module may read its own URL (import.meta.url), which require drops.
    if (url.startsWith('file:') && !/[?#]/.test(url)) {
      try {
        this.#loaded(loadDriverNow(url));
        return;
      } catch {
        // Top-level await, or an error: the import below says which, and reports it.
      }
    }
    (import(url) as Promise<Driver>).then(
      (d) => this.#loaded(d),
      (e: unknown) => {
        // The exit hook may have loaded it meanwhile, or found it would not load.
        if (this.#module !== undefined) return;
        this.#module = null;
        Atomics.store(owner.shared, DEV_LOG_FREES, 0);
        owner.reportError(new UffdHmmError('ERR_DRIVER_LOAD', driverLoadFailed(url, owner.name, e, DRIVER_LOAD_CONSEQUENCE), { cause: e }));
        this.run();
      },
    );
  }

  #loaded(d: Driver): void {
    if (this.#module !== undefined) return;
    this.#module = d;
    // No hook to run: native code frees straight onto the free stack again.
    if (typeof d.pageFree !== 'function') Atomics.store(this.#owner.shared, DEV_LOG_FREES, 0);
    this.run();
  }

  /**
   * A page this thread freed (its references gone, counted freed, off the free stack): its hook
   * runs as soon as this thread holds nothing (a microtask: the caller may hold region pages
   * locked), or at the next allocation, whichever comes first.
   */
  freed(pfn: number): void {
    this.#waiting.push(pfn);
    if (this.#queued) return;
    this.#queued = true;
    queueMicrotask(() => {
      this.#queued = false;
      this.run();
    });
  }

  /**
   * Runs pageFree for every freed page whose hook has not run (with those native code logged),
   * each then going on the free stack; before the module has loaded, they wait for it.
   */
  run(): void {
    this.#run(false);
  }

  /** run(), reporting hook errors at once when `now` (as the process exits: no microtask follows). */
  #run(now: boolean): void {
    const owner = this.#owner;
    const logged = drainFreedLog(owner.shared, owner.capacity);
    if (logged) for (const pfn of logged) this.#waiting.push(pfn);
    if (this.#waiting.length === 0 && this.#late.length === 0) {
      if (owner.closed) live.delete(this);
      return;
    }
    if (this.#module === undefined) return this.load(); // they run once it has loaded
    const driver = this.#module;
    const hook = (pfn: number): void => {
      if (typeof driver?.pageFree !== 'function') return;
      const ctx: PageFreeContext = { deviceName: owner.name, pfn };
      try {
        driver.pageFree(ctx);
      } catch (e) {
        const report = (): void => owner.reportError(new UffdHmmError('ERR_DRIVER_HOOK', pageFreeHookThrew(owner.name, e), { cause: e }));
        // Reported once this thread holds nothing (a listener may do anything), or at once at exit.
        if (now) report();
        else queueMicrotask(report);
      }
    };
    // Pages handed out early are in use again: their hook runs, they stay off the free stack. A pfn
    // can be in both lists (handed out early, then freed again): the waiting one goes back.
    for (const pfn of this.#late.splice(0)) hook(pfn);
    for (const pfn of this.#waiting.splice(0)) {
      hook(pfn);
      if (!owner.closed) pushFreeDevicePage(owner.shared, owner.capacity, pfn);
    }
    if (owner.closed) live.delete(this);
  }

  /**
   * The device is closing, every entry naming its pages gone: the last {@link run}. A fault served
   * on another thread unlocks its page (so the eviction moves on) a moment before it frees the
   * device page and logs it for us; that free would come after this drain, and its pageFree never
   * run. So first wait, briefly, until no page is used or being freed any more. DEV_USED is read
   * first: the engine counts a page freeing before it stops counting it used, and logs it before it
   * stops counting it freeing.
   */
  close(): void {
    const shared = this.#owner.shared;
    const deadline = Date.now() + CLOSE_FREEING_WAIT_MS;
    while ((Atomics.load(shared, DEV_USED) !== 0 || Atomics.load(shared, DEV_FREEING) !== 0) && Date.now() < deadline) {
      Atomics.wait(napWord, 0, 0, 0.05);
    }
    this.run();
  }

  /**
   * As the process exits: pageFree for the pages native code freed since the last drain (waiting
   * briefly for a free a servicer is finishing: the fill that woke the faulting thread comes just
   * before it) and for those still waiting for the driver's import, which is loaded now.
   */
  flushAtExit(): void {
    const owner = this.#owner;
    if (!owner.closed) {
      const deadline = Date.now() + EXIT_FREEING_WAIT_MS;
      while (Atomics.load(owner.shared, DEV_FREEING) > 0 && Date.now() < deadline);
    }
    const logged = drainFreedLog(owner.shared, owner.capacity);
    if (logged) for (const pfn of logged) this.#waiting.push(pfn);
    if (this.#waiting.length === 0 && this.#late.length === 0) return;
    if (this.#module === undefined) {
      try {
        this.#module = loadDriverNow(this.#url);
      } catch (e) {
        this.#module = null;
        owner.reportError(new UffdHmmError('ERR_DRIVER_LOAD', driverLoadFailed(this.#url, owner.name, e, 'its pageFree hook did not run'), { cause: e }));
        return;
      }
    }
    this.#run(true);
  }

  /**
   * While the module is still loading (an import takes a turn of the event loop, which a program
   * that never awaits does not give it) and the device has no other free page: a freed page whose
   * hook is still to come, for the allocator to hand out, rather than a device that looks full
   * to every migration, with or without a pageFree hook. Its hook runs once the module has loaded.
   * -1 once the module has loaded, or when no freed page waits.
   */
  takeEarly(): number {
    if (this.#module !== undefined || this.#waiting.length === 0) return -1;
    const pfn = this.#waiting.pop()!;
    this.#late.push(pfn);
    return pfn;
  }
}
