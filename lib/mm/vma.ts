// The region's vm_area_struct: the state every mm concern of a Region shares. Region owns one and
// hands it to the free functions of lib/mm/, each named for its kernel twin.
import type { Device, DeviceHolder } from '../device.js';
import type { FaultTrace } from '../trace.js';
import type { ServicedRegion, WorkerServicer } from '../servicer/host.js';
import type { RegionMapping, ServicerKind } from './backing.js';

/** What the concerns of lib/mm/ need of a region; the Region facade keeps the rest. */
export interface RegionCore {
  /** The addon's region handle (set once the mapping exists). */
  handle: number;
  /** Region header and page table, shared with the servicer (replaced by remap). */
  shared: Int32Array;
  /** Size in pages (changes with remap). */
  pages: number;
  /** The mapping's start address (changes with remap). */
  address: bigint;
  /** The mapping's memory as the addon handed it out, and our view of it (both replaced by remap). */
  buffer: ArrayBuffer;
  bytes: Uint8Array;
  readonly pageSize: number;
  readonly servicer: ServicerKind;
  /** Pages a device fault may bring back at once (MapOptions.faultAround). */
  readonly faultAround: number;
  readonly mapping: RegionMapping;
  /** MapOptions.thp: THPs may back the region and migrate whole. */
  readonly thp: boolean;
  /** The kernel reports our own zaps as EVENT_REMOVE (see zapLocked in lib/mm/zap.ts). */
  readonly zapEvents: boolean;
  /**
   * Per-page protection as last set by mprotect (PROT_* bits), allocated on the first mprotect:
   * until then every page is readwrite, and the table costs its 8 bytes per page alone.
   */
  prot: Uint8Array | undefined;
  /** The worker servicer serving this region, until it is closed or a guard took over. */
  servicerHost: WorkerServicer | undefined;
  /** Devices this region has migrated pages to: each is told when the region goes. */
  readonly devices: Set<Device>;
  /** The running fault trace (Region#trace), stopped when the region goes. */
  trace: FaultTrace | undefined;
  /** The Region itself, as devices and the worker servicer know it. */
  readonly owner: ServicedRegion & DeviceHolder;
}

/** "page 3" or "pages 3..9", for error contexts. */
export function pageSpan(first: number, count: number): string {
  return count === 1 ? `page ${first}` : `pages ${first}..${first + count - 1}`;
}
