// A region's mapping coming and going (mm/mmap.c: mmap_region, do_munmap): the core every concern
// of lib/mm/ works on, what attaches to it (its servicer, its fault trace), and the unmap.
import { native, PAGE_SIZE, type NativeRegion } from '../native.js';
import { integer, optionsObject } from '../validate.js';
import { FaultTrace } from '../trace.js';
import { REGION_HEADER } from '../layout.js';
import { WorkerServicer, type ServicedRegion } from '../servicer/host.js';
import type { DeviceHolder } from '../device.js';
import { createError, type MapRequest } from './backing.js';
import { zapAll } from './zap.js';
import type { RegionCore } from './vma.js';

/** The core of a region not mapped yet: its page table, for the addon to map it with. */
export function newCore(owner: ServicedRegion & DeviceHolder, req: MapRequest): RegionCore {
  return {
    handle: -1,
    shared: new Int32Array(new SharedArrayBuffer((REGION_HEADER + 2 * req.pages) * 4)),
    pages: req.pages,
    address: 0n,
    buffer: new ArrayBuffer(0),
    bytes: new Uint8Array(0),
    pageSize: PAGE_SIZE,
    servicer: req.servicer,
    faultAround: req.faultAround,
    mapping: req.backing.mapping,
    thp: req.backing.thp,
    zapEvents: req.zapEvents,
    prot: undefined,
    servicerHost: undefined,
    devices: new Set(),
    trace: undefined,
    owner,
  };
}

/** Maps the region's memory and registers it with userfaultfd, as `req` asks. */
export function mapMemory(core: RegionCore, req: MapRequest): NativeRegion {
  const { pages, servicer, faultAround, countKernelFaults, backing } = req;
  try {
    return native.regionCreate({
      pages,
      shared: core.shared,
      servicer,
      allowUserModeOnly: true,
      classifyFaults: countKernelFaults,
      faultAround,
      mapShared: backing.shared,
      fd: backing.fd,
      offset: backing.offset,
      hugetlb: backing.hugetlb,
      thp: backing.thp,
    });
  } catch (e) {
    throw createError(e);
  }
}

/** Takes the mapping the addon made, and hands a 'worker' region to the worker servicer. */
export function attach(core: RegionCore, nat: NativeRegion): void {
  core.handle = nat.handle;
  core.address = nat.address;
  core.buffer = nat.bytes;
  try {
    core.bytes = new Uint8Array(nat.bytes);
    if (core.servicer === 'worker') {
      core.servicerHost = WorkerServicer.get();
      core.servicerHost.addRegion(core.owner);
    }
  } catch (e) {
    // Never leave a registered region that nobody serves: its next fork event would hang fork().
    core.servicerHost?.removeRegion(core.handle);
    native.detachArrayBuffer(nat.bytes);
    native.regionClose(core.handle);
    throw e;
  }
}

/**
 * munmap's first half: every entry is zapped (device pages lose this mapping's reference,
 * free_swap_and_cache), then the servicer lets go, devices forget the region and its trace stops.
 * The mapping stays. Zapping comes first and takes every page or none: when a page stays locked
 * past the deadline (a slow driver hook) this throws with the region as it was, still served,
 * and a later call can finish the job.
 */
export function zapMapping(core: RegionCore): void {
  zapAll(core);
  core.servicerHost?.removeRegion(core.handle);
  core.servicerHost = undefined;
  for (const d of core.devices) d.removeHolder(core.owner);
  core.devices.clear();
  core.trace?.stop();
}

/** munmap's second half, after {@link zapMapping}: `bytes` is detached and the mapping goes. */
export function munmap(core: RegionCore): void {
  core.bytes = new Uint8Array(0);
  native.detachArrayBuffer(core.buffer);
  native.regionClose(core.handle);
}

/** Starts the region's fault trace (Region#trace), stopping the one before: one trace a region. */
export function startTrace(core: RegionCore, options: { capacity?: number } | undefined): FaultTrace {
  const opts = optionsObject('options', options);
  const capacity = opts.capacity === undefined ? 65536 : integer('options.capacity', opts.capacity, 1, 1 << 24);
  core.trace?.stop();
  core.trace = new FaultTrace(core.handle, capacity, core);
  return core.trace;
}
