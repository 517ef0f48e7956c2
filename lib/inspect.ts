// What `console.log` and `util.inspect` show for the library's objects: a one-line summary of
// what a user reasons about (a name, sizes, counters), never the shared tables and private state
// behind it.
/// <reference types="node" preserve="true" />
import { inspect, type InspectOptionsStylized } from 'node:util';

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
