// Device entries as include/linux/swapops.h encodes them on x86-64 with the seed patch applied:
// swp_entry(type, offset) = type << SWP_TYPE_SHIFT | offset, with the device pfn as offset.
import { invalidType, outOfRange } from './errors.js';

/** Bits of a swap type (MAX_SWAPFILES_SHIFT). */
export const MAX_SWAPFILES_SHIFT = 5;
/** 64 − MAX_SWAPFILES_SHIFT − 2: where the type sits in a swp_entry_t of the seed's kernel. */
export const SWP_TYPE_SHIFT = 57;
/** Two device types, two migration types and one hwpoison type are carved from the top. */
export const MAX_SWAPFILES = (1 << MAX_SWAPFILES_SHIFT) - 2 - 2 - 1;
/**
 * The hwpoison swap type (27): {@link Region#pagemap} shows a page a driver refused (`'sigbus'`)
 * with it, as the kernel shows `make_hwpoison_entry`.
 */
export const SWP_HWPOISON = MAX_SWAPFILES;
/** The read migration-entry type (28), carved out like the device types; uffd-hmm shows none (its migration entries are locked table slots). */
export const SWP_MIGRATION_READ = MAX_SWAPFILES + 1;
/** The write migration-entry type (29); as {@link SWP_MIGRATION_READ}, for decoding only. */
export const SWP_MIGRATION_WRITE = MAX_SWAPFILES + 2;
/**
 * The swap type (30) of a write device entry: the page may be written once it is back in system
 * memory. A page that was writable when it migrated leaves one.
 */
export const SWP_DEVICE_WRITE = MAX_SWAPFILES + 3;
/**
 * The swap type (31) of a read device entry: the page comes back write-protected and its first
 * write takes a write-protect fault. Left by read-only pages, `migrate(…, { write: false })`,
 * fork and mprotect.
 */
export const SWP_DEVICE = MAX_SWAPFILES + 4;

const OFFSET_MASK = (1n << BigInt(SWP_TYPE_SHIFT)) - 1n;
const U64 = (1n << 64n) - 1n;

function entryArg(e: unknown): bigint {
  if (typeof e !== 'bigint') throw invalidType('entry', 'a bigint', e);
  if (e < 0n || e > U64) throw outOfRange('entry', 'a 64-bit unsigned value', e);
  return e;
}

/**
 * swp_entry(type, offset): builds a 64-bit swap entry, `type << SWP_TYPE_SHIFT | offset`.
 *
 * @param type - swap type, 0 to 31.
 * @param offset - swap offset (for device entries, the device pfn), a non-negative safe integer.
 * @throws `TypeError` (`ERR_INVALID_ARG_TYPE`) for a non-number, `RangeError` (`ERR_OUT_OF_RANGE`) for a value out of range.
 */
export function swpEntry(type: number, offset: number): bigint {
  if (typeof type !== 'number') throw invalidType('type', 'a number', type);
  if (!Number.isInteger(type) || type < 0 || type >= 1 << MAX_SWAPFILES_SHIFT) throw outOfRange('type', 'an integer from 0 to 31', type);
  if (typeof offset !== 'number') throw invalidType('offset', 'a number', offset);
  if (!Number.isSafeInteger(offset) || offset < 0) throw outOfRange('offset', 'a non-negative safe integer', offset);
  return (BigInt(type) << BigInt(SWP_TYPE_SHIFT)) | BigInt(offset);
}

/**
 * swp_type(entry): the swap type in the entry's top bits.
 *
 * @throws `TypeError` (`ERR_INVALID_ARG_TYPE`) unless `e` is a bigint, `RangeError` (`ERR_OUT_OF_RANGE`) unless it fits in 64 unsigned bits.
 */
export function swpType(e: bigint): number {
  return Number(entryArg(e) >> BigInt(SWP_TYPE_SHIFT));
}

/**
 * swp_offset(entry): the entry's offset bits (for a device entry, the device pfn).
 *
 * @throws as {@link swpType}.
 */
export function swpOffset(e: bigint): number {
  return Number(entryArg(e) & OFFSET_MASK);
}

/**
 * make_device_entry(page, write): the entry a page leaves in the CPU page table when it migrates
 * to a device, a swap entry of type {@link SWP_DEVICE_WRITE} or {@link SWP_DEVICE} whose offset
 * is the device pfn. {@link Region#pagemap} reports device entries in this encoding.
 *
 * @param pfn - the device page, as {@link Region#entry} reports it.
 * @param write - a write entry (true) or a read entry (false).
 * @throws `TypeError` (`ERR_INVALID_ARG_TYPE`) for a non-boolean `write`; as {@link swpEntry} for `pfn`.
 * @example
 * ```ts
 * const e = makeDeviceEntry(3, true);
 * isWriteDeviceEntry(e);                      // true
 * deviceEntryToPfn(makeDeviceEntryRead(e));   // 3, now a read entry
 * ```
 */
export function makeDeviceEntry(pfn: number, write: boolean): bigint {
  if (typeof write !== 'boolean') throw invalidType('write', 'a boolean', write);
  return swpEntry(write ? SWP_DEVICE_WRITE : SWP_DEVICE, pfn);
}

/**
 * is_device_entry(entry): the entry is a device entry, read or write.
 *
 * @throws as {@link swpType}.
 */
export function isDeviceEntry(e: bigint): boolean {
  const type = swpType(e);
  return type === SWP_DEVICE || type === SWP_DEVICE_WRITE;
}

/**
 * is_write_device_entry(entry): the entry is a write device entry.
 *
 * @throws as {@link swpType}.
 */
export function isWriteDeviceEntry(e: bigint): boolean {
  return swpType(e) === SWP_DEVICE_WRITE;
}

/**
 * make_device_entry_read(&entry): the same device page behind a read entry, as fork
 * (copy_one_pte) and mprotect (change_pte_range) downgrade write entries. Returns the new entry
 * (bigints are immutable).
 *
 * @throws as {@link swpType}.
 */
export function makeDeviceEntryRead(e: bigint): bigint {
  return swpEntry(SWP_DEVICE, swpOffset(e));
}

/**
 * device_entry_to_pfn(entry): the device page the entry names.
 *
 * @throws `RangeError` (`ERR_OUT_OF_RANGE`) when `e` is not a device entry; as {@link swpType} otherwise.
 */
export function deviceEntryToPfn(e: bigint): number {
  if (!isDeviceEntry(e)) throw outOfRange('entry', 'a device entry', e);
  return swpOffset(e);
}
