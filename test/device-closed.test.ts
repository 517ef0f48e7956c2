// A closed Device never stands for the device that took its slot. Device slots (the device id in
// page-state words) are reused, lowest first; every call handed a Device refuses a closed one with
// ERR_DEVICE_CLOSED, as device.read/write do, so it can never be mistaken for its successor.
import { expect, it } from 'vitest';
import {
  Device,
  HMM_DMIRROR_FLAG_FAIL_ALLOC,
  HMM_DMIRROR_PROT_DEV_PRIVATE_LOCAL,
  HMM_DMIRROR_PROT_DEV_PRIVATE_REMOTE,
  HMM_DMIRROR_PROT_WRITE,
  Region,
  mirrorCheckExclusive,
  mirrorExclusive,
  mirrorFlags,
  mirrorMigrate,
  mirrorMigrateToSys,
  mirrorRead,
  mirrorSnapshot,
  mirrorWrite,
} from 'uffd-hmm';
import { SERVICERS, closeAfterEach, describeUffd } from './helpers.js';

const CLOSED = expect.objectContaining({ code: 'ERR_DEVICE_CLOSED', message: expect.stringMatching(/^device gone is closed/) });
const slotOf = (d: Device): number => (d as unknown as { slot: number }).slot;

describeUffd.each(SERVICERS)('%s: a closed Device', (servicer) => {
  const track = closeAfterEach();

  /** Closes `gone`, then opens devices until one takes its slot (the lowest free slot is reused). */
  async function successorOf(gone: Device): Promise<Device> {
    await gone.close();
    for (let i = 0; i < 64; i++) {
      const d = track(new Device({ capacity: 4, name: `successor${i}` }));
      if (slotOf(d) === slotOf(gone)) return d;
    }
    throw new Error('no device took the closed one\'s slot');
  }

  it('does not stand for the device that took its slot: snapshot with it throws, never LOCAL', async () => {
    // The case: close d0 and d1, open d2, migrate a page to d2.
    const d0 = new Device({ capacity: 4, name: 'gone' });
    const d1 = new Device({ capacity: 4, name: 'd1' });
    const r = track(Region.map({ pages: 2, servicer }));
    r.bytes.fill(5);
    await d1.close();
    const d2 = await successorOf(d0);
    expect(r.migrate(0, 1, d2)).toBe(1);
    expect(() => r.snapshot(0, 1, d0)).toThrow(CLOSED);
    expect(() => r.snapshot(0, 2, d0)).toThrow(CLOSED);
    // The open devices still see it as they should.
    expect([...r.snapshot(0, 1, d2)]).toEqual([HMM_DMIRROR_PROT_DEV_PRIVATE_LOCAL | HMM_DMIRROR_PROT_WRITE]);
    const other = track(new Device({ capacity: 1 }));
    expect([...r.snapshot(0, 1, other)]).toEqual([HMM_DMIRROR_PROT_DEV_PRIVATE_REMOTE | HMM_DMIRROR_PROT_WRITE]);
    expect(r.entry(0)).toMatchObject({ kind: 'device', device: d2 });
    expect(r.bytes[0]).toBe(5);
  });

  it("is not named in its trace records by the device that took its slot", async () => {
    const gone = new Device({ capacity: 4, name: 'gone' });
    const r = track(Region.map({ pages: 1, servicer }));
    const trace = r.trace();
    r.bytes[0] = 1;
    r.migrate(0, 1, gone);
    expect(r.bytes[0]).toBe(1); // a fault served from `gone`
    expect(trace.records().filter((x) => x.outcome === 'migrated').map((x) => x.device)).toEqual([gone]);
    const successor = await successorOf(gone);
    // A closed device's records name no device (as before its slot was taken), never its successor.
    expect(trace.records().filter((x) => x.outcome === 'migrated').map((x) => x.device?.name ?? null)).toEqual([null]);
    r.migrate(0, 1, successor);
    expect(r.bytes[0]).toBe(1); // and a fault served from the successor names it
    expect(trace.records().filter((x) => x.outcome === 'migrated').map((x) => x.device?.name ?? null)).toEqual([null, successor.name]);
  });

  it('is refused by every call that takes a Device, whatever its arguments', async () => {
    const gone = new Device({ capacity: 4, name: 'gone' });
    const r = track(Region.map({ pages: 2, servicer }));
    r.bytes.fill(3);
    const successor = await successorOf(gone);
    expect(r.migrate(0, 1, successor)).toBe(1);
    const calls: [string, () => unknown][] = [
      ['migrate', () => r.migrate(0, 1, gone)],
      ['migrate (empty range)', () => r.migrate(0, 0, gone)],
      ['snapshot', () => r.snapshot(0, 1, gone)],
      ['snapshot (empty range)', () => r.snapshot(0, 0, gone)],
      ['mirrorRead', () => mirrorRead(r, 0, 1, gone)],
      ['mirrorWrite', () => mirrorWrite(r, 0, 1, gone, new Uint8Array(r.pageSize))],
      ['mirrorSnapshot', () => mirrorSnapshot(r, 0, 1, gone)],
      ['mirrorMigrate', () => mirrorMigrate(r, 0, 1, gone)],
      ['mirrorMigrateToSys', () => mirrorMigrateToSys(r, 0, 1, gone)],
      ['mirrorExclusive', () => mirrorExclusive(r, 0, 1, gone)],
      ['mirrorCheckExclusive', () => mirrorCheckExclusive(r, 0, 1, gone)],
      ['mirrorFlags 0', () => mirrorFlags(gone, 0)],
      ['mirrorFlags FAIL_ALLOC', () => mirrorFlags(gone, HMM_DMIRROR_FLAG_FAIL_ALLOC)],
      ['failNextHugeAllocation', () => gone.failNextHugeAllocation()],
      ['read', () => gone.read(0)],
      ['write', () => gone.write(0, new Uint8Array(1))],
    ];
    const got = calls.map(([name, call]) => {
      try {
        call();
        return [name, 'returned'];
      } catch (e) {
        return [name, (e as { code?: string }).code];
      }
    });
    expect(got).toEqual(calls.map(([name]) => [name, 'ERR_DEVICE_CLOSED']));
    for (const [, call] of calls) expect(call).toThrow(CLOSED);
    // Nothing moved: the page is still on the successor, with its data.
    expect(r.entry(0)).toMatchObject({ kind: 'device', device: successor });
    expect(successor.used).toBe(1);
    expect(r.bytes[0]).toBe(3);
  });
});
