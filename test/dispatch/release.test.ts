// Daemon ids are recycled (Balancer.releaseRetired over Dispatcher.daemonsNamed, Balancer.releaseDaemon):
// a retired daemon gives its id back once it has held nothing — no active
// flow, no record — for the quiet time, so ids (and the netfilter plane's
// 13-bit marks) stay bounded over any number of adds and removes.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Dispatcher } from '../../src/dispatch/dispatcher.js';
import { D_NEW_FLOWS, DAEMON_COLUMNS } from '../../src/dispatch/stats.js';
import { buildTcp } from '../support/packet-builder.js';

const CLUSTER = '198.18.100.1';

function spec(daemons: string[]): Parameters<Dispatcher['configure']>[0] {
  return { clusters: [{ address: CLUSTER, ports: [{ port: 80, scheduler: 'rr', daemons: daemons.map((address) => ({ address })) }] }] };
}

function idOf(d: Dispatcher, name: string): number {
  const daemon = d.tree.daemonsById.find((x) => x !== undefined && x.name === name && !x.retired);
  assert.ok(daemon, `${name} is a live daemon`);
  return daemon.id;
}

function run(d: Dispatcher, p: Uint8Array, now: number): void {
  d.processPacket(p, 0, p.length, 0, now);
}

/** A whole connection from client port `port` to whichever daemon rr picks, closed by the client: its record stays in TIME_WAIT. */
function closedConnection(d: Dispatcher, port: number, daemon: string, t: number): void {
  const [address, daemonPort] = daemon.split(':');
  run(d, buildTcp({ src: '198.18.0.1', dst: CLUSTER, srcPort: port, dstPort: 80, flags: 'S', seq: 1 }), t);
  run(d, buildTcp({ src: address, dst: '198.18.0.1', srcPort: Number(daemonPort), dstPort: port, flags: 'SA', seq: 10, ack: 2 }), t + 1);
  run(d, buildTcp({ src: '198.18.0.1', dst: CLUSTER, srcPort: port, dstPort: 80, flags: 'A', seq: 2, ack: 11 }), t + 2);
  run(d, buildTcp({ src: '198.18.0.1', dst: CLUSTER, srcPort: port, dstPort: 80, flags: 'FA', seq: 2, ack: 11 }), t + 3);
  run(d, buildTcp({ src: address, dst: '198.18.0.1', srcPort: Number(daemonPort), dstPort: port, flags: 'FA', seq: 11, ack: 3 }), t + 4);
  run(d, buildTcp({ src: '198.18.0.1', dst: CLUSTER, srcPort: port, dstPort: 80, flags: 'A', seq: 3, ack: 12 }), t + 5);
}

describe('daemon id recycling', () => {
  it('a retired daemon gives its id back after the quiet time, with its counters zeroed, and a new daemon takes it', () => {
    const d = new Dispatcher({ capacity: 64 });
    d.configure(spec(['198.18.2.1:8080', '198.18.2.2:8080']));
    const b = idOf(d, '198.18.2.2:8080');
    d.balancer.stats.daemon[b * DAEMON_COLUMNS + D_NEW_FLOWS] = 7;
    d.configure(spec(['198.18.2.1:8080']));
    assert.deepEqual(d.balancer.releaseRetired(1_000, 500, () => d.daemonsNamed()), [], 'quiet only from now');
    assert.deepEqual(d.balancer.releaseRetired(1_499, 500, () => d.daemonsNamed()), [], 'not quiet long enough');
    assert.deepEqual(d.balancer.releaseRetired(1_500, 500, () => d.daemonsNamed()), [b]);
    assert.equal(d.tree.daemonsById[b], undefined);
    d.configure(spec(['198.18.2.1:8080', '198.18.2.3:8080']));
    assert.equal(idOf(d, '198.18.2.3:8080'), b, 'the new daemon takes the released id');
    assert.equal(d.balancer.stats.daemon[b * DAEMON_COLUMNS + D_NEW_FLOWS], 0, 'and starts from zero');
  });

  it('a record that still names a retired daemon keeps its id taken, even with no active flow', () => {
    const d = new Dispatcher({ capacity: 64 });
    d.configure(spec(['198.18.2.2:8080']));
    const b = idOf(d, '198.18.2.2:8080');
    closedConnection(d, 40000, '198.18.2.2:8080', 1_000);
    assert.equal(d.balancer.activeFlows(b), 0, 'the connection is no longer active');
    assert.equal(d.table.size, 1, 'its record waits in TIME_WAIT');
    d.configure(spec(['198.18.2.1:8080']));
    assert.deepEqual(d.balancer.releaseRetired(2_000, 100, () => d.daemonsNamed()), []);
    assert.deepEqual(d.balancer.releaseRetired(10_000, 100, () => d.daemonsNamed()), [], 'the record still names it');
    d.collect(1_000 + 5 + 121_000, 100); // past TIME_WAIT
    assert.equal(d.table.size, 0);
    assert.deepEqual(d.balancer.releaseRetired(130_000, 100, () => d.daemonsNamed()), [], 'quiet from the moment nothing names it');
    assert.deepEqual(d.balancer.releaseRetired(130_100, 100, () => d.daemonsNamed()), [b]);
  });

  it('something another plane holds (holds(id)) keeps the id taken', () => {
    const d = new Dispatcher({ capacity: 8 });
    d.configure(spec(['198.18.2.1:8080', '198.18.2.2:8080']));
    const b = idOf(d, '198.18.2.2:8080');
    d.configure(spec(['198.18.2.1:8080']));
    assert.deepEqual(d.balancer.releaseRetired(0, 0, () => new Set([...d.daemonsNamed(), b])), []);
    assert.deepEqual(d.balancer.releaseRetired(1, 0, () => d.daemonsNamed()), [b]);
  });

  it('a thousand adds and removes use no more ids than daemons live at once', () => {
    const d = new Dispatcher({ capacity: 8 });
    let now = 0;
    for (let i = 0; i < 1_000; i++) {
      d.configure(spec(['198.18.2.1:8080', `198.18.3.${(i % 250) + 1}:${8000 + Math.floor(i / 250)}`]));
      now += 1_000;
      d.balancer.releaseRetired(now, 500, () => d.daemonsNamed());
      now += 1_000;
      d.balancer.releaseRetired(now, 500, () => d.daemonsNamed());
    }
    assert.ok(d.tree.daemonsById.length <= 3, `ids used: ${d.tree.daemonsById.length}`);
  });
});
