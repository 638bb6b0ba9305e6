// The netfilter plane's decided-but-unanswered handshakes (pending) without
// root: a SYN flood fills the map only up to its bound (the rest counts when
// conntrack reports it), and a daemon taken out releases its handshakes with
// one batch of conntrack deletes. The accounting itself is replayed event by
// event in flow-accounting.test.ts; this file checks the plane's wiring.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { REJECT_ID } from '../../../src/dataplane/netfilter/marks.js';
import { NetfilterPlane } from '../../../src/dataplane/netfilter/netfilter-plane.js';
import { Balancer } from '../../../src/dispatch/balancer.js';
import { buildTcp } from '../../support/packet-builder.js';

const MARK_BASE = 0x686c0000;

function setUp(maxPending?: number): { plane: NetfilterPlane; balancer: Balancer } {
  const balancer = new Balancer();
  balancer.configure({ clusters: [{ address: '198.18.100.1', ports: [{ port: 80, scheduler: 'rr', daemons: [{ address: '198.18.2.1:8080' }, { address: '198.18.2.2:8080' }] }] }] });
  const plane = new NetfilterPlane(balancer, { queue: 0, markBase: MARK_BASE, table: 'hostlb_test', clock: () => 1_000, ...(maxPending === undefined ? {} : { maxPending }) });
  return { plane, balancer };
}

/** The plane's decision (a daemon id) for the first packet of a connection from client port `port`. */
function decide(plane: NetfilterPlane, port: number): number {
  const syn = buildTcp({ src: '198.18.0.1', dst: '198.18.100.1', srcPort: port, dstPort: 80, flags: 'S', seq: 1 });
  return plane['decision'].decide(syn, 0, syn.length);
}

describe('netfilter plane: pending handshakes', () => {
  it('a SYN flood tracks at most maxPending handshakes; the rest are still sent to daemons and counted as overflow', () => {
    const { plane, balancer } = setUp(4);
    const ids = Array.from({ length: 10 }, (_, i) => decide(plane, 40000 + i));
    const daemons = balancer.tree.daemonsById.map((d) => d.id);
    assert.ok(ids.every((id) => daemons.includes(id) && id !== REJECT_ID), `every SYN sent to a daemon: ${ids.join(',')}`);
    assert.equal(plane.accounting.pendingCount, 4);
    assert.equal(plane.accounting.pendingOverflows, 6);
    assert.deepEqual(daemons.map((id) => balancer.activeFlows(id)), [2, 2], 'only the tracked ones count as active (the others count when conntrack reports them)');
  });

  it('a daemon taken out releases its pending handshakes in one batch of conntrack deletes', () => {
    const { plane, balancer } = setUp();
    for (let i = 0; i < 40; i++) decide(plane, 41000 + i);
    const [d1, d2] = balancer.tree.daemonsById;
    const calls: number[] = [];
    plane['controlSocket'] = {
      requestAll: (_w: unknown, seqs: readonly number[], _what: string, _options: unknown) => {
        calls.push(seqs.length);
        return null;
      },
    } as never;
    // Down: health sets its weight to 0, so it takes no new flows.
    balancer.setWeights(d1.clusterPort, new Map([[d1.id, 0]]));
    plane['releaseHandshakes']();
    assert.deepEqual(calls, [20], 'one request with the 20 handshakes rr sent to the daemon taken out');
    assert.equal(balancer.activeFlows(d1.id), 0, 'they no longer count');
    assert.equal(balancer.activeFlows(d2.id), 20, 'the other daemon\'s still count');
    assert.equal(plane.accounting.pendingCount, 20, 'the other daemon\'s stay pending');
    plane['releaseHandshakes']();
    assert.deepEqual(calls, [20], 'released once: nothing left to delete, no request');
  });
});
