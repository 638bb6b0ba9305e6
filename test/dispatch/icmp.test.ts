// ICMP through the dispatcher (icmp-translate.ts): echo answered from the
// cluster; errors quoting a dispatched flow translated both ways with every
// checksum right (compared with packets built from scratch); anything else dropped.

import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Dispatcher } from '../../src/dispatch/dispatcher.js';
import { DROP_REASON_NAMES } from '../../src/dispatch/drop-reason.js';
import { createBatch, createSiblingBatch } from '../../src/link/link.js';
import { buildIcmpEcho, buildIcmpError, buildTcp, buildUdp, checksumsValid, describe as describePacket } from '../support/packet-builder.js';

interface Family { cluster: string; daemonAddr: string; daemon: string; client: string; router: string }
const FAMILIES: Record<4 | 6, Family> = {
  4: { cluster: '198.18.100.1', daemonAddr: '198.18.2.1', daemon: '198.18.2.1:8080', client: '198.18.0.1', router: '198.18.50.1' },
  6: { cluster: '2001:db8:100::1', daemonAddr: '2001:db8:2::1', daemon: '[2001:db8:2::1]:8080', client: '2001:db8::1', router: '2001:db8:50::1' },
};

function setUp(f: Family): Dispatcher {
  const d = new Dispatcher({ capacity: 64 });
  d.configure({ clusters: [{ address: f.cluster, ports: [{ port: 80, protocol: 'any', daemons: [{ address: f.daemon }] }] }] });
  return d;
}

/** Runs one packet through process() (the batch path) in a roomy slot; returns verdict and output bytes. */
function run(d: Dispatcher, packet: Uint8Array): { forwarded: boolean; out: Uint8Array } {
  const input = createBatch(1, 2048);
  const output = createSiblingBatch(input);
  input.buffer.set(packet, 0);
  input.lengths[0] = packet.length;
  input.count = 1;
  d.process(input, output, 1);
  return { forwarded: output.count === 1, out: input.buffer.slice(0, output.count ? output.lengths[0] : 0) };
}

function drops(d: Dispatcher, name: string): number {
  return d.balancer.stats.drops[DROP_REASON_NAMES.indexOf(name)];
}

for (const family of [4, 6] as const) {
  const f = FAMILIES[family];
  describe(`ICMP (IPv${family})`, () => {
    it('answers an echo request to the cluster address from it', () => {
      const d = setUp(f);
      const r = run(d, buildIcmpEcho({ src: f.client, dst: f.cluster, ident: 7, seq: 3, payload: 'ping-data' }));
      assert.ok(r.forwarded);
      assert.ok(checksumsValid(r.out));
      assert.deepEqual(r.out, buildIcmpEcho({ src: f.cluster, dst: f.client, ident: 7, seq: 3, payload: 'ping-data', type: 'reply' }));
    });

    it('drops an echo request to an address that is no cluster', () => {
      const d = setUp(f);
      const r = run(d, buildIcmpEcho({ src: f.client, dst: f.router, ident: 1, seq: 1 }));
      assert.equal(r.forwarded, false);
      assert.equal(drops(d, 'icmp'), 1);
    });

    it('sends an error about a flow to its daemon: "packet too big" from a router on the client\'s path', () => {
      const d = setUp(f);
      assert.ok(run(d, buildTcp({ src: f.client, dst: f.cluster, srcPort: 40000, dstPort: 80, flags: 'S', seq: 1 })).forwarded);
      // What the router saw: a big segment from the cluster (as translated) to the client.
      const big = buildTcp({ src: f.cluster, dst: f.client, srcPort: 80, dstPort: 40000, flags: 'A', seq: 100, ack: 2, payload: 'x'.repeat(1400), dontFrag: family === 4 ? true : undefined });
      const error = buildIcmpError({ src: f.router, dst: f.cluster, kind: 'too-big', mtu: 1280, quote: big.slice(0, family === 4 ? 576 - 28 : 1280 - 48) });
      const r = run(d, error);
      assert.ok(r.forwarded, 'translated');
      // Expected: the same error as if the daemon itself had sent the big segment.
      const asFromDaemon = buildTcp({ src: f.daemonAddr, dst: f.client, srcPort: 8080, dstPort: 40000, flags: 'A', seq: 100, ack: 2, payload: 'x'.repeat(1400), dontFrag: family === 4 ? true : undefined });
      const expected = buildIcmpError({ src: f.router, dst: f.daemonAddr, kind: 'too-big', mtu: 1280, quote: asFromDaemon.slice(0, family === 4 ? 576 - 28 : 1280 - 48) });
      assert.deepEqual(r.out, expected);
      assert.ok(checksumsValid(r.out));
    });

    it('sends an error from the daemon\'s side to the client from the cluster: port unreachable for a UDP flow', () => {
      const d = setUp(f);
      assert.ok(run(d, buildUdp({ src: f.client, dst: f.cluster, srcPort: 5000, dstPort: 80, payload: 'q' })).forwarded);
      const sent = buildUdp({ src: f.client, dst: f.daemonAddr, srcPort: 5000, dstPort: 8080, payload: 'q' });
      const r = run(d, buildIcmpError({ src: f.daemonAddr, dst: f.client, quote: sent }));
      assert.ok(r.forwarded);
      const asSent = buildUdp({ src: f.client, dst: f.cluster, srcPort: 5000, dstPort: 80, payload: 'q' });
      assert.deepEqual(r.out, buildIcmpError({ src: f.cluster, dst: f.client, quote: asSent }));
      const p = describePacket(r.out);
      assert.equal(p.src, f.cluster);
    });

    it('keeps a short quote (IP header and 8 bytes) right too', () => {
      const d = setUp(f);
      run(d, buildTcp({ src: f.client, dst: f.cluster, srcPort: 40001, dstPort: 80, flags: 'S', seq: 1 }));
      const seg = buildTcp({ src: f.cluster, dst: f.client, srcPort: 80, dstPort: 40001, flags: 'SA', seq: 9, ack: 2 });
      const cut = family === 4 ? 28 : 48;
      const r = run(d, buildIcmpError({ src: f.router, dst: f.cluster, kind: 'time-exceeded', quote: seg.slice(0, cut) }));
      assert.ok(r.forwarded);
      const want = buildTcp({ src: f.daemonAddr, dst: f.client, srcPort: 8080, dstPort: 40001, flags: 'SA', seq: 9, ack: 2 });
      // The quoted TCP checksum is beyond 8 bytes: only addresses, ports and the IP header checksum change.
      assert.deepEqual(r.out, buildIcmpError({ src: f.router, dst: f.daemonAddr, kind: 'time-exceeded', quote: want.slice(0, cut) }));
    });

    it('drops an error quoting no known flow, and a truncated one', () => {
      const d = setUp(f);
      const seg = buildTcp({ src: f.cluster, dst: f.client, srcPort: 80, dstPort: 49999, flags: 'A', seq: 1 });
      assert.equal(run(d, buildIcmpError({ src: f.router, dst: f.cluster, quote: seg })).forwarded, false);
      assert.equal(run(d, buildIcmpError({ src: f.router, dst: f.cluster, quote: seg.slice(0, 10) })).forwarded, false);
      assert.equal(drops(d, 'icmp'), 2);
    });
  });
}
