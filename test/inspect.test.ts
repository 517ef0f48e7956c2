// console.log of the library's objects: one-line summaries of what a user reasons about, never the
// shared tables behind them (a Device once printed ~30 lines, Int32Array(2056) included).
import { inspect } from 'node:util';
import { expect, it } from 'vitest';
import { Device, Region } from 'uffd-hmm';
import { closeAfterEach, describeUffd } from './helpers.js';

const plain = (x: unknown): string => inspect(x, { colors: false });

describeUffd('util.inspect', () => {
  const track = closeAfterEach();

  it('shows the README example entry on one line, naming its device', () => {
    const gpu = track(new Device({ name: 'gpu0', capacity: 1024 }));
    const region = track(Region.map({ pages: 16 }));
    region.bytes.fill(7);
    region.migrate(0, 16, gpu);
    expect(plain(region.entry(3))).toBe("{ kind: 'device', write: true, device: [Device: gpu0], pfn: 3 }");
    expect(plain(gpu)).toBe("Device { name: 'gpu0', capacity: 1024, used: 16 }");
    expect(plain([gpu])).toBe('[ [Device: gpu0] ]');
  });

  it('shows a Region by address, size, servicer and mapping, and says when it is closed', async () => {
    const region = Region.map({ pages: 4, servicer: 'native', faultAround: 4 });
    const address = `0x${region.address.toString(16)}`;
    const fields = `address: '${address}', pages: 4, servicer: 'native', mapping: 'private-anonymous', faultAround: 4`;
    expect(plain(region).replace(/\s+/g, ' ')).toBe(`Region { ${fields} }`);
    expect(plain({ region })).toBe(`{ region: [Region: ${address}] }`);
    await region.close();
    expect(plain(region).replace(/\s+/g, ' ')).toBe(`Region { ${fields}, closed: true }`);
  });

  it('shows a FaultTrace by its counters, and a closed Device as closed', async () => {
    const gpu = new Device({ name: 'gpu1', capacity: 8 });
    const region = track(Region.map({ pages: 2 }));
    region.bytes[0] = 1;
    region.migrate(0, 1, gpu);
    const trace = region.trace({ capacity: 16 });
    void region.bytes[0];
    expect(plain(trace)).toBe('FaultTrace { recorded: 1, capacity: 16, overflow: 0, stopped: false }');
    expect(plain(trace.records()[0])).toContain('device: [Device: gpu1]');
    trace.stop();
    expect(plain(trace)).toContain('stopped: true');
    await gpu.close();
    expect(plain(gpu)).toBe("Device { name: 'gpu1', capacity: 8, used: 0, closed: true }");
  });
});
