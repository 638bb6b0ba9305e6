// Table checkpoints (checkpoint.ts): records survive a snapshot and a restore
// into a new dispatcher, keep their daemon (matched by address, not by id),
// state, counters and active counts; expired records and records of removed
// daemons are left out; garbage or one out-of-range field restores nothing.
// The incremental writer (SnapshotCursor, writeCheckpointFile) makes the same
// bytes as the one-shot one and stays sane while records change between slices.

import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CHECKPOINT_HEADER_BYTES, restoreTable, snapshotTable, SnapshotCursor } from '../../src/dispatch/checkpoint.js';
import { R_DAEMON_ADDR, R_DAEMON_ID, R_META, RemoveReason, R_PORTS, R_STATE, REC_WORDS, RF_BYTES_IN, RF_EXPIRES, RF_LAST_SEEN } from '../../src/dispatch/conn-table.js';
import { writeCheckpointFile } from '../../src/dataplane/tun/checkpoint-file.js';
import { Dispatcher } from '../../src/dispatch/dispatcher.js';
import { VERDICT_FORWARD } from '../../src/dispatch/verdict.js';
import { buildTcp, buildUdp, describe as describePacket } from '../support/packet-builder.js';

const CLUSTER = '198.18.100.1';
const DAEMONS = ['198.18.2.1:8080', '198.18.2.2:8080', '198.18.2.3:8080'];

function make(daemons: string[]): Dispatcher {
  const d = new Dispatcher({ capacity: 256 });
  d.configure({ clusters: [{ address: CLUSTER, ports: [{ port: 80, protocol: 'any', scheduler: 'rr', daemons: daemons.map((address) => ({ address })) }] }] });
  return d;
}

function send(d: Dispatcher, p: Uint8Array, now: number): { verdict: number; dst: string } {
  const verdict = d.processPacket(p, 0, p.length, 0, now);
  return { verdict, dst: describePacket(p.slice(0, d.ipLen)).dst };
}

describe('table checkpoints', () => {
  it('restores established flows to the same daemons in a new dispatcher, with state and counters', () => {
    const a = make(DAEMONS);
    const placed = new Map<number, string>();
    for (let port = 41000; port < 41012; port++) {
      const syn = send(a, buildTcp({ src: '198.18.0.1', dst: CLUSTER, srcPort: port, dstPort: 80, flags: 'S', seq: 1 }), 1000);
      placed.set(port, syn.dst);
      send(a, buildTcp({ src: syn.dst, dst: '198.18.0.1', srcPort: 8080, dstPort: port, flags: 'SA', seq: 5, ack: 2 }), 1001);
      send(a, buildTcp({ src: '198.18.0.1', dst: CLUSTER, srcPort: port, dstPort: 80, flags: 'A', seq: 2, ack: 6 }), 1002);
    }
    send(a, buildUdp({ src: '198.18.0.9', dst: CLUSTER, srcPort: 5000, dstPort: 80, payload: 'x' }), 1003);
    const bytes = snapshotTable(a);

    // The new run lists the daemons in another order: ids differ, addresses don't.
    const b = make([...DAEMONS].reverse());
    const { restored, skipped } = restoreTable(b, bytes, 2000);
    assert.deepEqual({ restored, skipped }, { restored: 13, skipped: 0 });
    assert.equal(b.table.size, 13);
    const active = b.tree.daemonsById.reduce((n, x) => n + b.balancer.activeFlows(x.id), 0);
    assert.equal(active, 13, 'active flows counted again');
    for (const [port, daemon] of placed) {
      // A data packet (no SYN) finds its record and goes to the same daemon.
      const r = send(b, buildTcp({ src: '198.18.0.1', dst: CLUSTER, srcPort: port, dstPort: 80, flags: 'PA', seq: 2, ack: 6, payload: 'GET /' }), 2001);
      assert.equal(r.verdict, VERDICT_FORWARD);
      assert.equal(r.dst, daemon, `flow ${port} stays on ${daemon}`);
    }
  });

  it('leaves out expired records and those of daemons no longer configured', () => {
    const a = make(DAEMONS);
    for (let port = 42000; port < 42006; port++) send(a, buildTcp({ src: '198.18.0.1', dst: CLUSTER, srcPort: port, dstPort: 80, flags: 'S', seq: 1 }), 1000);
    const bytes = snapshotTable(a);
    const b = make(DAEMONS.slice(0, 2));
    const r = restoreTable(b, bytes, 1001);
    assert.equal(r.restored + r.skipped, 6);
    assert.equal(r.skipped, 2, 'the two flows of the removed daemon');
    const c = make(DAEMONS);
    assert.deepEqual(restoreTable(c, bytes, 1000 + 61_000), { restored: 0, skipped: 6 }, 'SYN_RECV timed out (60 s)');
  });

  it('restores nothing from bytes of another format: CHECKPOINT_INVALID saying why', () => {
    const b = make(DAEMONS);
    assert.throws(() => restoreTable(b, new Uint8Array(0), 0), { code: 'CHECKPOINT_INVALID', message: /0 bytes/ });
    assert.throws(() => restoreTable(b, new Uint8Array(100).fill(7), 0), { code: 'CHECKPOINT_INVALID', message: /wrong magic number/ });
    assert.equal(b.table.size, 0);
  });

  // One field of one record out of range makes the whole file corrupt: nothing is restored.
  const CORRUPTIONS: Array<[string, (w: Uint32Array, f: Float64Array, b: number) => void, RegExp]> = [
    ['a family other than 4 and 6', (w, _f, b) => { w[b + R_META] = (w[b + R_META] & ~0xff) | 5; }, /record 1 has family 5/],
    ['protocol 1', (w, _f, b) => { w[b + R_META] = (w[b + R_META] & ~0xff00) | (1 << 8); }, /record 1 has protocol 1/],
    ['a state past the last', (w, _f, b) => { w[b + R_STATE] = (w[b + R_STATE] & ~0xff) | 42; }, /record 1 has state 42/],
    ['an unknown flag', (w, _f, b) => { w[b + R_STATE] |= 1 << 20; }, /record 1 has flags/],
    ['a daemon id far out of range', (w, _f, b) => { w[b + R_DAEMON_ID] = 0xffffffff; }, /record 1 has daemon id 4294967295/],
    ['expires NaN', (_w, f, b) => { f[b / 2 + RF_EXPIRES] = NaN; }, /record 1 has timestamp NaN/],
    ['a timestamp years ahead', (_w, f, b) => { f[b / 2 + RF_LAST_SEEN] = 1e15; }, /record 1 has timestamp 1000000000000000/],
    ['a negative counter', (_w, f, b) => { f[b / 2 + RF_BYTES_IN] = -1; }, /record 1 has counter -1/],
    ['IPv6 words in an IPv4 address', (w, _f, b) => { w[b + R_DAEMON_ADDR + 2] = 1; }, /record 1 has an IPv4 address with IPv6 words/],
    ['a header counting more records than follow', (w) => { w[3] += 1; }, /the header counts 4 records but 3 follow/],
  ];
  for (const [what, corrupt, message] of CORRUPTIONS) {
    it(`range-checks every record before restoring any: ${what}`, () => {
      const a = make(DAEMONS);
      for (let port = 45000; port < 45003; port++) send(a, buildTcp({ src: '198.18.0.1', dst: CLUSTER, srcPort: port, dstPort: 80, flags: 'S', seq: 1 }), 1000);
      const bytes = snapshotTable(a).slice();
      const words = new Uint32Array(bytes.buffer);
      corrupt(words, new Float64Array(bytes.buffer), 4 + REC_WORDS);
      const b = make(DAEMONS);
      assert.throws(() => restoreTable(b, bytes, 2000), { code: 'CHECKPOINT_INVALID', message });
      assert.equal(b.table.size, 0, 'not even the good records before it');
      assert.equal(restoreTable(b, snapshotTable(a), 2000).restored, 3, 'the uncorrupted snapshot restores');
    });
  }
});

/** A table of `n` SYN_RECV flows from 198.18.0.1, client ports 30000 + i. */
function filled(n: number, capacity = 256): Dispatcher {
  const d = new Dispatcher({ capacity });
  d.configure({ clusters: [{ address: CLUSTER, ports: [{ port: 80, protocol: 'any', scheduler: 'rr', daemons: DAEMONS.map((address) => ({ address })) }] }] });
  for (let i = 0; i < n; i++) send(d, buildTcp({ src: '198.18.0.1', dst: CLUSTER, srcPort: 30000 + i, dstPort: 80, flags: 'S', seq: 1 }), 1000);
  return d;
}

/** Header then every slice, as a file would hold them. */
function drain(cursor: SnapshotCursor, between: (slice: number) => void = () => {}): Uint8Array {
  const slices: Uint8Array[] = [];
  for (let slice = cursor.next(), i = 0; slice !== null; slice = cursor.next(), i++) {
    slices.push(slice);
    between(i);
  }
  const out = new Uint8Array(slices.reduce((n, s) => n + s.byteLength, CHECKPOINT_HEADER_BYTES));
  out.set(cursor.header(), 0);
  let at = CHECKPOINT_HEADER_BYTES;
  for (const s of slices) {
    out.set(s, at);
    at += s.byteLength;
  }
  return out;
}

/** Client ports of the records in a snapshot, in file order. */
function clientPorts(bytes: Uint8Array): number[] {
  const words = new Uint32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4);
  const out: number[] = [];
  for (let r = 0; r < words[3]; r++) out.push(words[4 + r * REC_WORDS + R_PORTS] >>> 16);
  return out;
}

describe('incremental checkpoints (SnapshotCursor)', () => {
  it('the slices make exactly the bytes of the one-shot snapshot, whatever the slice size', () => {
    const d = filled(100);
    // Holes: records given back in the middle of the id range.
    for (let id = 10; id < 40; id += 3) d.table.remove(id, RemoveReason.Expired);
    const whole = snapshotTable(d);
    for (const ids of [1, 7, 64, 255, 256, 10_000]) {
      assert.deepEqual(drain(new SnapshotCursor(d, ids)), whole, `${ids} ids per slice`);
    }
    for (const records of [1, 3, 89, 90, 91]) {
      assert.deepEqual(drain(new SnapshotCursor(d, 10_000, records)), whole, `${records} records per slice`);
    }
    assert.deepEqual(drain(new SnapshotCursor(filled(0))), snapshotTable(filled(0)), 'an empty table');
  });

  it('records that change between slices: those behind the cursor stay as copied, those ahead as they are when reached; the file restores', () => {
    const d = filled(64, 64);
    const before = clientPorts(snapshotTable(d));
    assert.equal(before.length, 64);
    const cursor = new SnapshotCursor(d, 16);
    const bytes = drain(cursor, (slice) => {
      if (slice !== 0) return;
      // After ids 0..15: one behind the cursor and one ahead of it leave, and a new flow arrives in the freed id.
      d.table.remove(5, RemoveReason.Expired);
      d.table.remove(40, RemoveReason.Expired);
      send(d, buildTcp({ src: '198.18.0.1', dst: CLUSTER, srcPort: 31000, dstPort: 80, flags: 'S', seq: 1 }), 1500);
    });
    const ports = clientPorts(bytes);
    assert.equal(new Uint32Array(bytes.buffer)[3], cursor.count, 'the header counts what was written');
    assert.equal(bytes.byteLength, CHECKPOINT_HEADER_BYTES + cursor.count * REC_WORDS * 4);
    assert.ok(ports.includes(before[5]), 'copied before it left');
    assert.ok(!ports.includes(before[40]), 'gone before the cursor reached it');
    assert.equal(new Set(ports).size, ports.length, 'no record twice');
    for (const [i, port] of before.entries()) if (i !== 40) assert.ok(ports.includes(port), `flow ${port} kept`);
    const b = make(DAEMONS);
    const r = restoreTable(b, bytes, 2000);
    assert.equal(r.restored + r.skipped, cursor.count);
    assert.equal(r.restored, cursor.count);
  });

  it('writeCheckpointFile writes the one-shot bytes to the file, fsynced and renamed; abandoned, it leaves the old file and no temp file', async (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'hlbt-ckpt-'));
    t.after(() => rmSync(dir, { recursive: true, force: true }));
    const path = join(dir, 'hlb0.table');
    const d = filled(200, 512);
    assert.equal(await writeCheckpointFile(path, d, { idsPerSlice: 50 }), 200);
    assert.deepEqual(new Uint8Array(readFileSync(path)), snapshotTable(d));
    assert.equal(await writeCheckpointFile(path, d), 200, 'one slice');
    assert.deepEqual(new Uint8Array(readFileSync(path)), snapshotTable(d));
    assert.equal(statSync(path).mode & 0o777, 0o600);
    let calls = 0;
    assert.equal(await writeCheckpointFile(path, filled(3, 512), { idsPerSlice: 50, proceed: () => ++calls < 4 }), null);
    assert.deepEqual(new Uint8Array(readFileSync(path)), snapshotTable(d), 'the earlier checkpoint stays');
    assert.deepEqual(readdirSync(dir), ['hlb0.table']);
  });
});

describe('recovery through the consistent hash', () => {
  const spec = (scheduler: 'maglev' | 'sh' | 'rr') => ({
    clusters: [{ address: CLUSTER, ports: [{ port: 80, scheduler, daemons: DAEMONS.map((address) => ({ address })) }] }],
  });
  for (const scheduler of ['maglev', 'sh'] as const) {
    it(`${scheduler}: a segment of a connection the table lost goes to the daemon its flow began on`, () => {
      const a = new Dispatcher({ capacity: 256, hashSeed: 42 });
      a.configure(spec(scheduler));
      const began = new Map<number, string>();
      for (let port = 43000; port < 43040; port++) {
        began.set(port, send(a, buildTcp({ src: `198.18.0.${port % 7 + 1}`, dst: CLUSTER, srcPort: port, dstPort: 80, flags: 'S', seq: 1 }), 1000).dst);
      }
      // A new run without a checkpoint: same seed, same configuration, empty table.
      const b = new Dispatcher({ capacity: 256, hashSeed: 42 });
      b.configure(spec(scheduler));
      for (const [port, daemon] of began) {
        const r = send(b, buildTcp({ src: `198.18.0.${port % 7 + 1}`, dst: CLUSTER, srcPort: port, dstPort: 80, flags: 'PA', seq: 2, ack: 6, payload: 'more' }), 5000);
        assert.equal(r.verdict, VERDICT_FORWARD);
        assert.equal(r.dst, daemon);
      }
      assert.equal(b.balancer.stats.recovered, began.size);
      assert.equal(b.table.size, began.size, 'each recovered flow has its record again');
    });
  }

  it('rr cannot recover: the segment is dropped as no_record, and a RST is never recovered', () => {
    const b = new Dispatcher({ capacity: 16 });
    b.configure(spec('rr'));
    assert.notEqual(send(b, buildTcp({ src: '198.18.0.1', dst: CLUSTER, srcPort: 44000, dstPort: 80, flags: 'A', seq: 2, ack: 6 }), 1).verdict, VERDICT_FORWARD);
    const m = new Dispatcher({ capacity: 16 });
    m.configure(spec('maglev'));
    assert.notEqual(send(m, buildTcp({ src: '198.18.0.1', dst: CLUSTER, srcPort: 44001, dstPort: 80, flags: 'R', seq: 2 }), 1).verdict, VERDICT_FORWARD);
    assert.equal(m.table.size, 0);
  });
});
