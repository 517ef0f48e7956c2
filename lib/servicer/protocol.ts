// Messages between the main thread and the worker servicer, and the control words they share.
// The worker's loop is synchronous and never sees postMessage events, so every message is
// paired with a bump of MAIL_SEQ and a poller kick; the worker then drains its port.

export const CTRL_WORDS = 4;
/** Bumped after each message posted to the worker. */
export const CTRL_MAIL_SEQ = 0;
/** Set to 1 to make the worker leave its loop. */
export const CTRL_STOP = 1;
/** Set by the worker when its loop is running. */
export const CTRL_RUNNING = 2;
/** A word nobody writes: the worker sleeps on it between retries of deferred faults. */
export const CTRL_NAP = 3;

export interface RegionMessage {
  type: 'region';
  handle: number;
  shared: Int32Array;
  address: bigint;
  pageSize: number;
}
export interface DropRegionMessage {
  type: 'drop-region';
  handle: number;
}
export interface DeviceMessage {
  type: 'device';
  slot: number;
  id: number;
  name: string;
  capacity: number;
  shared: Int32Array;
  driverUrl: string | undefined;
}
export interface DropDeviceMessage {
  type: 'drop-device';
  slot: number;
  id: number;
}
/** Asks the worker for its isolate's heap (the servicer's hot path must not allocate). */
export interface HeapRequestMessage {
  type: 'heap-request';
  id: number;
}
export type ToWorker = RegionMessage | DropRegionMessage | DeviceMessage | DropDeviceMessage | HeapRequestMessage;

export interface WorkerErrorMessage {
  type: 'error';
  region?: number;
  deviceSlot?: number;
  deviceId?: number;
  code: string;
  message: string;
  cause: unknown;
}
export interface HeapMessage {
  type: 'heap';
  id: number;
  /** v8.getHeapStatistics().used_heap_size in the worker's isolate. */
  used: number;
}
export type FromWorker = WorkerErrorMessage | HeapMessage;
