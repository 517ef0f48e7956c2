// What a device driver module may export: the dev_pagemap callbacks of the seed patch.

/** Passed to a driver's `fault` hook (dev_pagemap.fault / migrate_to_ram). Valid only during the call. */
export interface FaultContext {
  readonly deviceName: string;
  /** The device page the entry names. */
  readonly pfn: number;
  /** Page index in the region that faulted. */
  readonly page: number;
  /** Virtual address of the faulting page. */
  readonly address: bigint;
  /** The access was a write. */
  readonly write: boolean;
  /**
   * The access came from inside a system call (write(2) from the page, read(2) into it). userfaultfd
   * does not say so: it is told only for regions mapped with countKernelFaults, false otherwise.
   */
  readonly kernelMode: boolean;
}

/** Passed to a driver's `pageFree` hook (free_devpage / page_free) when a device page's last reference goes. */
export interface PageFreeContext {
  readonly deviceName: string;
  readonly pfn: number;
}

/** The decision of a `fault` hook: migrate the page back (the default) or refuse with SIGBUS. */
export type FaultDecision = 'migrate' | 'sigbus';

/** A driver module: an ES module exporting any of these. */
export interface Driver {
  fault?(ctx: FaultContext): FaultDecision | void;
  pageFree?(ctx: PageFreeContext): void;
}
