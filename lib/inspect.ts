// What `console.log` and `util.inspect` show for the library's objects: a one-line summary of
// what a user reasons about (a name, sizes, counters), never the shared tables and private state
// behind it.
/// <reference types="node" preserve="true" />
import { inspect } from 'node:util';

/**
 * What `util.inspect` passes a `[util.inspect.custom](depth, options)` method: the options of the
 * call, with `stylize`. Declared here rather than taken from `@types/node`, whose name for it
 * (`InspectOptionsStylized`) is not in every release, so the types compile with `@types/node` 20
 * through 26.
 */
export interface InspectOptionsStylized {
  /** How many levels of nesting `util.inspect` was asked to show (`null`: all). */
  depth?: number | null;
  /** Colors `text` as Node colors values of `styleType` (`'special'`, `'number'`, …) when colors are on. */
  stylize(text: string, styleType: string): string;
}

/**
 * `Name { a: 1, b: 'x' }` with Node's own formatting (colors, quoting). Nested inside another
 * value (an entry's `device`, a trace record's `device`) it is `[Name: brief]`, so such a value
 * still fits on one line, as Node itself writes a nested function `[Function: name]`.
 */
export function summary(
  name: string,
  depth: number,
  options: InspectOptionsStylized,
  brief: string,
  fields: () => Record<string, unknown>,
): string {
  if (typeof options.depth === 'number' && depth < options.depth) return options.stylize(`[${name}: ${brief}]`, 'special');
  return `${name} ${inspect(fields(), { ...options, depth: 1 })}`;
}
