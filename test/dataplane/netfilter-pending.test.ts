// The netfilter plane's decided-but-unanswered handshakes (pending) without
// root: a SYN flood fills the map only up to its bound (the rest counts when
// conntrack reports it), and a daemon taken out releases its handshakes with
// one batch of conntrack deletes.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { NetfilterPlane } from '../../src/dataplane/netfilter-plane.js';
import { Dispatcher } from '../../src/dispatch/dispatcher.js';
import { buildTcp } from '../support/packet-builder.js';

const MARK_BASE = 0x686c0000;

function setUp(maxPending?: number): { plane: NetfilterPlane; dispatcher: Dispatcher } {
  const dispatcher = new Dispatcher({ capacity: 1 });
  dispatcher.configure({ clusters: [{ address: '198.18.100.1', ports: [{ port: 80, scheduler: 'rr', daemons: [{ address: '198.18.2.1:8080' }, { address: '198.18.2.2:8080' }] }] }] });
  const plane = new NetfilterPlane(dispatcher.balancer, { queue: 0, markBase: MARK_BASE, table: 'hostlb_test', clock: () => 1_000, ...(maxPending === undefined ? {} : { maxPending }) });
  return { plane, dispatcher };
}

/** The mark the plane gives the first packet of a connection from client port `port`. */
function decide(plane: NetfilterPlane, port: number): number | null {
  const syn = buildTcp({ src: '198.18.0.1', dst: '198.18.100.1', srcPort: port, dstPort: 80, flags: 'S', seq: 1 });
  return plane['decide'](syn, 0, syn.length);
}

describe('netfilter plane: pending handshakes', () => {
  it('a SYN flood tracks at most maxPending handshakes; the rest are still sent to daemons and counted as overflow', () => {
    const { plane, dispatcher } = setUp(4);
    const marks = Array.from({ length: 10 }, (_, i) => decide(plane, 40000 + i));
    assert.ok(marks.every((m) => m !== null && ((m >>> 16) << 16) >>> 0 === MARK_BASE), `every SYN marked for a daemon: ${marks.join(',')}`);
    assert.equal(plane['pending'].size, 4);
    assert.equal(plane.pendingOverflows, 6);
    const active = dispatcher.balancer.activeFlows(0) + dispatcher.balancer.activeFlows(1);
    assert.equal(active, 4, 'only the tracked ones count as active (the others count when conntrack reports them)');
  });

  it('a daemon taken out releases its pending handshakes in one batch of conntrack deletes', () => {
    const { plane, dispatcher } = setUp();
    for (let i = 0; i < 40; i++) decide(plane, 41000 + i);
    const d1 = dispatcher.tree.daemonsById[0];
    const calls: number[] = [];
    plane['controlSocket'] = { requestAll: (_w: unknown, seqs: readonly number[]) => { calls.push(seqs.length); return null; } } as never;
    // Down: health sets its weight to 0, so it takes no new flows.
    dispatcher.balancer.setWeights(d1.clusterPort, new Map([[d1.id, 0]]));
    plane['releaseHandshakes']();
    assert.deepEqual(calls, [20], 'one request with the 20 handshakes rr sent to the daemon taken out');
    assert.equal(dispatcher.balancer.activeFlows(d1.id), 0, 'they no longer count');
    assert.equal(plane['pending'].size, 20, 'the other daemon\'s stay');
  });
});
