// Table checkpoints (checkpoint.ts): records survive a snapshot and a restore
// into a new dispatcher, keep their daemon (matched by address, not by id),
// state, counters and active counts; expired records and records of removed
// daemons are left out; garbage restores nothing.

import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { restoreTable, snapshotTable } from '../../src/dispatch/checkpoint.js';
import { Dispatcher, VERDICT_FORWARD } from '../../src/dispatch/dispatcher.js';
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

  it('restores nothing from bytes of another format', () => {
    const b = make(DAEMONS);
    assert.deepEqual(restoreTable(b, new Uint8Array(0), 0), { restored: 0, skipped: 0 });
    assert.deepEqual(restoreTable(b, new Uint8Array(100).fill(7), 0), { restored: 0, skipped: 0 });
    assert.equal(b.table.size, 0);
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
