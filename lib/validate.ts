// Argument checks at the public boundary: wrong types are TypeErrors, wrong values RangeErrors,
// each with the code docs/ERRORS.md names. Internals trust what passed through here.
import { invalidType, outOfRange } from './errors.js';

export function integer(name: string, value: unknown, min: number, max: number): number {
  if (typeof value !== 'number') throw invalidType(name, 'a number', value);
  if (!Number.isInteger(value) || value < min || value > max) {
    throw outOfRange(name, `an integer from ${min} to ${max}`, value);
  }
  return value;
}

/** A page range [first, first+count) inside a region of `pages` pages. */
export function pageRange(first: unknown, count: unknown, pages: number): [number, number] {
  const f = integer('first', first, 0, Math.max(0, pages - 1));
  const c = integer('count', count, 0, pages - f);
  return [f, c];
}

export function optionsObject(name: string, value: unknown): Record<string, unknown> {
  if (value === undefined) return {};
  if (value === null || typeof value !== 'object') throw invalidType(name, 'an object', value);
  return value as Record<string, unknown>;
}

export function optionalBoolean(name: string, value: unknown): boolean | undefined {
  if (value === undefined) return undefined;
  if (typeof value !== 'boolean') throw invalidType(name, 'a boolean', value);
  return value;
}
