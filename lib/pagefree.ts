// free_devpage: a device page lost its last reference, and the driver's pageFree hook must have
// run (on the thread that created the Device) before the page is handed out again, as the kernel
// calls it inside put_page. So such a page stays off the free stack until its hook ran: those
// freed here, and those native code freed and logged for us (DEV_LOG_FREES, native/device.cc).
import { UffdHmmError, driverLoadFailed, pageFreeHookThrew } from './errors.js';
import { DEV_LOG_FREES } from './layout.js';
import { drainFreedLog, pushFreeDevicePage } from './devicepages.js';
import type { Driver, PageFreeContext } from './driver.js';

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
  }

  /**
   * Starts importing the module on this thread (once). The first migration to the device calls
   * it: pages freed before the module has loaded wait for it (a full device stays full that long),
   * so it must be loading before any page can be freed.
   */
  load(): void {
    if (this.#loading) return;
    const owner = this.#owner;
    const url = this.#url;
    this.#loading = true;
    (import(url) as Promise<Driver>).then(
      (d) => {
        this.#module = d;
        // No hook to run: native code frees straight onto the free stack again.
        if (typeof d.pageFree !== 'function') Atomics.store(owner.shared, DEV_LOG_FREES, 0);
        this.run();
      },
      (e: unknown) => {
        this.#module = null;
        Atomics.store(owner.shared, DEV_LOG_FREES, 0);
        owner.reportError(new UffdHmmError('ERR_DRIVER_LOAD', driverLoadFailed(url, owner.name, e, 'its pageFree hook does not run'), { cause: e }));
        this.run();
      },
    );
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
    const owner = this.#owner;
    const logged = drainFreedLog(owner.shared, owner.capacity);
    if (logged) for (const pfn of logged) this.#waiting.push(pfn);
    if (this.#waiting.length === 0 && this.#late.length === 0) return;
    if (this.#module === undefined) return this.load(); // they run once it has loaded
    const driver = this.#module;
    const late = this.#late.splice(0);
    for (const pfn of [...late, ...this.#waiting.splice(0)]) {
      if (typeof driver?.pageFree === 'function') {
        const ctx: PageFreeContext = { deviceName: owner.name, pfn };
        try {
          driver.pageFree(ctx);
        } catch (e) {
          // Reported once this thread holds nothing: a listener may do anything.
          queueMicrotask(() => owner.reportError(new UffdHmmError('ERR_DRIVER_HOOK', pageFreeHookThrew(owner.name, e), { cause: e })));
        }
      }
      if (!owner.closed && !late.includes(pfn)) pushFreeDevicePage(owner.shared, owner.capacity, pfn);
    }
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
