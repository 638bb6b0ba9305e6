// Resetting a removed daemon's flows on purpose (dispatch/reset.ts): after
// resetDaemonFlows, the next packet from either end is answered with a RST
// whose sequence number that end accepts, and nothing reaches the other side.

import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Dispatcher } from '../../src/dispatch/dispatcher.js';
import { VERDICT_FORWARD } from '../../src/dispatch/verdict.js';
import { buildTcp, buildUdp, checksumsValid, describe as describePacket } from '../support/packet-builder.js';

const TCP_RST = 0x04;
const TCP_ACK = 0x10;

function setUp(cluster: string, daemon: string): Dispatcher {
  const d = new Dispatcher({ capacity: 64 });
  d.configure({ clusters: [{ address: cluster, ports: [{ port: 80, scheduler: 'rr', daemons: [{ address: daemon }] }] }] });
  return d;
}

function send(d: Dispatcher, packet: Uint8Array, now = 1): { verdict: number; out: Uint8Array } {
  const verdict = d.processPacket(packet, 0, packet.length, 0, now);
  return { verdict, out: packet.slice(0, d.ipLen) };
}

for (const family of [4, 6] as const) {
  const cluster = family === 4 ? '198.18.100.1' : '2001:db8:100::1';
  const daemonAddr = family === 4 ? '198.18.2.1' : '2001:db8:2::1';
  const daemon = family === 4 ? `${daemonAddr}:8080` : `[${daemonAddr}]:8080`;
  const client = family === 4 ? '198.18.0.1' : '2001:db8::1';

  describe(`reset of a removed daemon's flows (IPv${family})`, () => {
    it('answers each end with an acceptable RST on its next packet, and forwards nothing', () => {
      const d = setUp(cluster, daemon);
      assert.equal(send(d, buildTcp({ src: client, dst: cluster, srcPort: 40000, dstPort: 80, flags: 'S', seq: 1000 })).verdict, VERDICT_FORWARD);
      assert.equal(send(d, buildTcp({ src: daemonAddr, dst: client, srcPort: 8080, dstPort: 40000, flags: 'SA', seq: 5000, ack: 1001 })).verdict, VERDICT_FORWARD);
      assert.equal(send(d, buildTcp({ src: client, dst: cluster, srcPort: 40000, dstPort: 80, flags: 'A', seq: 1001, ack: 5001 })).verdict, VERDICT_FORWARD);
      const id = d.tree.daemonsById[0].id;
      assert.equal(d.balancer.activeFlows(id), 1);

      assert.equal(d.resetDaemonFlows(id, 2), 1);
      assert.equal(d.balancer.activeFlows(id), 0, 'a reset flow no longer counts as active');

      // The client speaks: it gets a RST from the cluster with seq = its ack.
      const fromClient = send(d, buildTcp({ src: client, dst: cluster, srcPort: 40000, dstPort: 80, flags: 'PA', seq: 1001, ack: 5001, payload: 'GET / HTTP/1.1\r\n\r\n' }), 3);
      assert.equal(fromClient.verdict, VERDICT_FORWARD);
      assert.ok(checksumsValid(fromClient.out));
      const rst = describePacket(fromClient.out);
      assert.deepEqual([rst.src, rst.dst, rst.srcPort, rst.dstPort], [cluster, client, 80, 40000]);
      assert.equal(rst.flags, TCP_RST);
      assert.equal(rst.seq, 5001);
      assert.equal(rst.payload.length, 0);

      // The daemon speaks: it gets a RST from the client's address with seq = its ack.
      const fromDaemon = send(d, buildTcp({ src: daemonAddr, dst: client, srcPort: 8080, dstPort: 40000, flags: 'PA', seq: 5001, ack: 1001, payload: 'late' }), 4);
      assert.equal(fromDaemon.verdict, VERDICT_FORWARD);
      assert.ok(checksumsValid(fromDaemon.out));
      const back = describePacket(fromDaemon.out);
      assert.deepEqual([back.src, back.dst, back.srcPort, back.dstPort], [client, daemonAddr, 40000, 8080]);
      assert.equal(back.flags, TCP_RST);
      assert.equal(back.seq, 1001);

      // A RST is never answered with a RST: one of the flow's own ends it on the other side too, translated.
      const rst2 = send(d, buildTcp({ src: client, dst: cluster, srcPort: 40000, dstPort: 80, flags: 'R', seq: 1001 }), 5);
      assert.equal(rst2.verdict, VERDICT_FORWARD);
      assert.equal(describePacket(rst2.out).dst, daemonAddr);
      assert.equal(d.balancer.stats.resetsSent, 2);
    });

    it('answers a segment without ACK with RST+ACK acknowledging it', () => {
      const d = setUp(cluster, daemon);
      send(d, buildTcp({ src: client, dst: cluster, srcPort: 40001, dstPort: 80, flags: 'S', seq: 7 }));
      d.resetDaemonFlows(d.tree.daemonsById[0].id, 2);
      const r = send(d, buildTcp({ src: client, dst: cluster, srcPort: 40001, dstPort: 80, flags: 'F', seq: 8, payload: 'xy' }), 3);
      const rst = describePacket(r.out);
      assert.equal(rst.flags, TCP_RST | TCP_ACK);
      assert.equal(rst.ack, 8 + 2 + 1);
      assert.ok(checksumsValid(r.out));
    });

    it('lets a new SYN from the same client port start a fresh flow', () => {
      const d = setUp(cluster, daemon);
      send(d, buildTcp({ src: client, dst: cluster, srcPort: 40002, dstPort: 80, flags: 'S', seq: 1 }));
      d.resetDaemonFlows(d.tree.daemonsById[0].id, 2);
      const again = send(d, buildTcp({ src: client, dst: cluster, srcPort: 40002, dstPort: 80, flags: 'S', seq: 99 }), 3);
      assert.equal(again.verdict, VERDICT_FORWARD);
      assert.equal(describePacket(again.out).dst, daemonAddr);
    });
  });
}

describe('a port with no daemon to take a new flow, rejectWhenEmpty', () => {
  for (const family of [4, 6] as const) {
    const cluster = family === 4 ? '198.18.100.1' : '2001:db8:100::1';
    const daemon = family === 4 ? '198.18.2.1:8080' : '[2001:db8:2::1]:8080';
    const client = family === 4 ? '198.18.0.1' : '2001:db8::1';
    const setUpEmpty = (): Dispatcher => {
      const d = new Dispatcher({ capacity: 16 });
      d.configure({ clusters: [{ address: cluster, ports: [{ port: 80, protocol: 'any', rejectWhenEmpty: true, daemons: [{ address: daemon, weight: 0 }] }] }] });
      return d;
    };

    it(`answers a SYN with RST+ACK from the cluster (IPv${family})`, () => {
      const d = setUpEmpty();
      const r = send(d, buildTcp({ src: client, dst: cluster, srcPort: 40000, dstPort: 80, flags: 'S', seq: 41 }));
      assert.equal(r.verdict, VERDICT_FORWARD);
      const p = describePacket(r.out);
      assert.deepEqual([p.src, p.dst, p.srcPort, p.dstPort, p.flags, p.ack], [cluster, client, 80, 40000, TCP_RST | TCP_ACK, 42]);
      assert.ok(checksumsValid(r.out));
      assert.equal(d.table.size, 0);
    });

    it(`answers a UDP datagram with ICMP port unreachable quoting it (IPv${family})`, () => {
      const d = setUpEmpty();
      const datagram = buildUdp({ src: client, dst: cluster, srcPort: 5000, dstPort: 80, payload: 'hello?' });
      const buf = new Uint8Array(2048);
      buf.set(datagram);
      const verdict = d.processPacket(buf, 0, datagram.length, 0, 1);
      assert.equal(verdict, VERDICT_FORWARD);
      const out = buf.slice(0, d.ipLen);
      assert.ok(checksumsValid(out));
      const p = describePacket(out);
      assert.deepEqual([p.src, p.dst], [cluster, client]);
      assert.equal(p.icmp?.type, family === 4 ? 3 : 1);
      assert.equal(p.icmp?.code, family === 4 ? 3 : 4);
      const quoteAt = (family === 4 ? 20 : 40) + 8;
      assert.deepEqual(out.slice(quoteAt, quoteAt + datagram.length), datagram, 'the datagram is quoted whole');
      assert.equal(d.balancer.stats.unreachableSent, 1);
    });
  }
});

describe('passive signals counted per daemon', () => {
  it('counts SYNs, answered SYNs with their time, and refused SYNs', async () => {
    const { D_SYNS, D_SYN_ANSWERED, D_SYN_TIME_MS, D_SYN_REFUSED, DAEMON_COLUMNS } = await import('../../src/dispatch/stats.js');
    const d = setUp('198.18.100.1', '198.18.2.1:8080');
    const s = d.balancer.stats.daemon;
    send(d, buildTcp({ src: '198.18.0.1', dst: '198.18.100.1', srcPort: 1, dstPort: 80, flags: 'S', seq: 1 }), 100);
    send(d, buildTcp({ src: '198.18.2.1', dst: '198.18.0.1', srcPort: 8080, dstPort: 1, flags: 'SA', seq: 9, ack: 2 }), 107);
    send(d, buildTcp({ src: '198.18.0.1', dst: '198.18.100.1', srcPort: 2, dstPort: 80, flags: 'S', seq: 1 }), 200);
    send(d, buildTcp({ src: '198.18.2.1', dst: '198.18.0.1', srcPort: 8080, dstPort: 2, flags: 'RA', seq: 0, ack: 2 }), 201);
    assert.equal(s[0 * DAEMON_COLUMNS + D_SYNS], 2);
    assert.equal(s[D_SYN_ANSWERED], 1);
    assert.equal(s[D_SYN_TIME_MS], 7);
    assert.equal(s[D_SYN_REFUSED], 1);
  });
});

describe('a RST from the client side must fall in the window (a blind spoofed RST cannot cut a connection)', () => {
  for (const family of [4, 6] as const) {
    const cluster = family === 4 ? '198.18.100.1' : '2001:db8:100::1';
    const daemonAddr = family === 4 ? '198.18.2.1' : '2001:db8:2::1';
    const daemon = family === 4 ? `${daemonAddr}:8080` : `[${daemonAddr}]:8080`;
    const client = family === 4 ? '198.18.0.1' : '2001:db8::1';
    it(`IPv${family}: out-of-window RSTs are dropped and counted, the connection carries on; an in-window one ends it`, async () => {
      const { DROP_REASON_NAMES } = await import('../../src/dispatch/drop-reason.js');
      const d = setUp(cluster, daemon);
      send(d, buildTcp({ src: client, dst: cluster, srcPort: 45000, dstPort: 80, flags: 'S', seq: 1000 }), 1);
      send(d, buildTcp({ src: daemonAddr, dst: client, srcPort: 8080, dstPort: 45000, flags: 'SA', seq: 5000, ack: 1001 }), 2);
      send(d, buildTcp({ src: client, dst: cluster, srcPort: 45000, dstPort: 80, flags: 'PA', seq: 1001, ack: 5001, payload: 'abc' }), 3);
      send(d, buildTcp({ src: daemonAddr, dst: client, srcPort: 8080, dstPort: 45000, flags: 'A', seq: 5001, ack: 1004 }), 4);
      // Blind guesses: far from 1004 either way.
      for (const seq of [7, 1003, 1004 + (1 << 20), 0x80000000]) {
        assert.notEqual(send(d, buildTcp({ src: client, dst: cluster, srcPort: 45000, dstPort: 80, flags: 'R', seq }), 5).verdict, VERDICT_FORWARD, `seq ${seq}`);
      }
      assert.equal(d.balancer.stats.drops[DROP_REASON_NAMES.indexOf('rst_out_of_window')], 4);
      assert.equal(d.balancer.activeFlows(d.tree.daemonsById[0].id), 1, 'still an active flow');
      assert.equal(send(d, buildTcp({ src: client, dst: cluster, srcPort: 45000, dstPort: 80, flags: 'PA', seq: 1004, ack: 5001, payload: 'more' }), 6).verdict, VERDICT_FORWARD);
      // The real one (the client's next sequence number, or a little ahead with data in flight) ends it.
      assert.equal(send(d, buildTcp({ src: client, dst: cluster, srcPort: 45000, dstPort: 80, flags: 'R', seq: 1008 }), 7).verdict, VERDICT_FORWARD);
      assert.equal(d.balancer.activeFlows(d.tree.daemonsById[0].id), 0, 'ended');
    });
  }
});

describe('a SYN on a handshake pending at a daemon that no longer takes new flows', () => {
  it('is scheduled anew instead of held on that daemon', () => {
    const d = new Dispatcher({ capacity: 16 });
    const tree = d.configure({ clusters: [{ address: '198.18.100.1', ports: [{ port: 80, scheduler: 'rr', daemons: [{ address: '198.18.2.1:8080' }, { address: '198.18.2.2:8080' }] }] }] });
    const first = send(d, buildTcp({ src: '198.18.0.1', dst: '198.18.100.1', srcPort: 46000, dstPort: 80, flags: 'S', seq: 1 }), 1);
    assert.equal(describePacket(first.out).dst, '198.18.2.1');
    // Its daemon goes down (the health layer gives it weight 0); the client tries again on the same port.
    const port = tree.clusters[0].ports[0];
    d.balancer.setWeights(port, new Map([[port.daemons[0].id, 0], [port.daemons[1].id, 1]]));
    const again = send(d, buildTcp({ src: '198.18.0.1', dst: '198.18.100.1', srcPort: 46000, dstPort: 80, flags: 'S', seq: 777 }), 2);
    assert.equal(again.verdict, VERDICT_FORWARD);
    assert.equal(describePacket(again.out).dst, '198.18.2.2');
    // A SYN retransmitted to a daemon that is still up stays with it.
    const other = send(d, buildTcp({ src: '198.18.0.1', dst: '198.18.100.1', srcPort: 46001, dstPort: 80, flags: 'S', seq: 1 }), 3);
    const retry = send(d, buildTcp({ src: '198.18.0.1', dst: '198.18.100.1', srcPort: 46001, dstPort: 80, flags: 'S', seq: 1 }), 4);
    assert.equal(describePacket(retry.out).dst, describePacket(other.out).dst);
  });
});
