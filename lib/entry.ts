// Device entries as include/linux/swapops.h encodes them on x86-64 with the seed patch applied:
// swp_entry(type, offset) = type << SWP_TYPE_SHIFT | offset, with the device pfn as offset.
import { invalidType, outOfRange } from './errors.js';

/** Bits of a swap type (MAX_SWAPFILES_SHIFT). */
export const MAX_SWAPFILES_SHIFT = 5;
/** 64 − MAX_SWAPFILES_SHIFT − 2: where the type sits in a swp_entry_t of the seed's kernel. */
export const SWP_TYPE_SHIFT = 57;
/** Two device types, two migration types and one hwpoison type are carved from the top. */
export const MAX_SWAPFILES = (1 << MAX_SWAPFILES_SHIFT) - 2 - 2 - 1;
export const SWP_HWPOISON = MAX_SWAPFILES;
export const SWP_MIGRATION_READ = MAX_SWAPFILES + 1;
export const SWP_MIGRATION_WRITE = MAX_SWAPFILES + 2;
/** A device entry that may be written once the page is back in system memory. */
export const SWP_DEVICE_WRITE = MAX_SWAPFILES + 3;
/** A read-only device entry: the page comes back write-protected. */
export const SWP_DEVICE = MAX_SWAPFILES + 4;

const OFFSET_MASK = (1n << BigInt(SWP_TYPE_SHIFT)) - 1n;
const U64 = (1n << 64n) - 1n;

function entryArg(e: unknown): bigint {
  if (typeof e !== 'bigint') throw invalidType('entry', 'a bigint', e);
  if (e < 0n || e > U64) throw outOfRange('entry', 'a 64-bit unsigned value', e);
  return e;
}

/** swp_entry(type, offset). */
export function swpEntry(type: number, offset: number): bigint {
  if (typeof type !== 'number') throw invalidType('type', 'a number', type);
  if (!Number.isInteger(type) || type < 0 || type >= 1 << MAX_SWAPFILES_SHIFT) throw outOfRange('type', 'an integer from 0 to 31', type);
  if (typeof offset !== 'number') throw invalidType('offset', 'a number', offset);
  if (!Number.isSafeInteger(offset) || offset < 0) throw outOfRange('offset', 'a non-negative safe integer', offset);
  return (BigInt(type) << BigInt(SWP_TYPE_SHIFT)) | BigInt(offset);
}

/** swp_type(entry). */
export function swpType(e: bigint): number {
  return Number(entryArg(e) >> BigInt(SWP_TYPE_SHIFT));
}

/** swp_offset(entry). */
export function swpOffset(e: bigint): number {
  return Number(entryArg(e) & OFFSET_MASK);
}

/** make_device_entry(page, write): the entry a page leaves behind when it migrates to a device. */
export function makeDeviceEntry(pfn: number, write: boolean): bigint {
  if (typeof write !== 'boolean') throw invalidType('write', 'a boolean', write);
  return swpEntry(write ? SWP_DEVICE_WRITE : SWP_DEVICE, pfn);
}

/** is_device_entry(entry). */
export function isDeviceEntry(e: bigint): boolean {
  const type = swpType(e);
  return type === SWP_DEVICE || type === SWP_DEVICE_WRITE;
}

/** is_write_device_entry(entry). */
export function isWriteDeviceEntry(e: bigint): boolean {
  return swpType(e) === SWP_DEVICE_WRITE;
}

/** make_device_entry_read(&entry), returning the downgraded entry (bigints are immutable). */
export function makeDeviceEntryRead(e: bigint): bigint {
  return swpEntry(SWP_DEVICE, swpOffset(e));
}

/** device_entry_to_pfn(entry): the device page the entry names. */
export function deviceEntryToPfn(e: bigint): number {
  if (!isDeviceEntry(e)) throw outOfRange('entry', 'a device entry', e);
  return swpOffset(e);
}
