// Migration throughput: a whole region to the device and back with region.migrate and
// region.migrateToRam, against the simplest C that moves the same bytes (memcpy + madvise), and
// to the device also against C that first stops writers, as a migration that loses no write must.
import { Device } from '../device.js';
import { benchCheckFailed } from '../errors.js';
import { native, PAGE_SIZE } from '../native.js';
import { Region } from '../region.js';
import type { MigrationResult } from './types.js';

const GiB = 1024 ** 3;

function seconds(t0: bigint): number {
  return Number(process.hrtime.bigint() - t0) / 1e9;
}

/** Measures `bytes` (a multiple of the page size) moving each way; `step` reports progress 0..1. */
export async function measureMigration(bytes: number, step: (fraction: number) => void): Promise<MigrationResult> {
  const pages = Math.floor(bytes / PAGE_SIZE);
  const region = Region.map({ pages, servicer: 'native' });
  const device = new Device({ name: 'bench-migration', capacity: pages });
  let toDevice: number;
  let toRam: number;
  try {
    // An untimed round first: holes go out as zeroed device pages and come back as real CPU pages,
    // so the timed round moves populated memory, into device memory that already exists. Then the
    // program writes its memory, as the baseline's is written: a page the kernel filled and user
    // space has not touched since would make the timed round pay for that first touch.
    if (region.migrate(0, pages, device) !== pages) throw benchCheckFailed('the migration region did not fit on its device');
    region.migrateToRam(0, pages);
    region.bytes.fill(0x5a);
    step(0.3);
    let t0 = process.hrtime.bigint();
    region.migrate(0, pages, device);
    toDevice = seconds(t0);
    step(0.5);
    t0 = process.hrtime.bigint();
    region.migrateToRam(0, pages);
    toRam = seconds(t0);
    step(0.7);
  } finally {
    await region.close();
    await device.close();
  }
  const c = new Float64Array(3);
  native.benchMigrateBaseline(pages, c);
  step(1);
  const size = pages * PAGE_SIZE;
  const rate = (s: number): number => size / GiB / s;
  const result = {
    bytes: size,
    to_device_gib_s: rate(toDevice),
    to_ram_gib_s: rate(toRam),
    c_to_device_gib_s: rate(c[0] / 1e9),
    c_to_ram_gib_s: rate(c[1] / 1e9),
    c_stop_writers_to_device_gib_s: rate(c[2] / 1e9),
  };
  return {
    ...result,
    to_device_ratio: result.to_device_gib_s / result.c_to_device_gib_s,
    to_ram_ratio: result.to_ram_gib_s / result.c_to_ram_gib_s,
    to_device_stop_writers_ratio: result.to_device_gib_s / result.c_stop_writers_to_device_gib_s,
  };
}
