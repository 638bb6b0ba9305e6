// Super-packets and partial checksums as a TUN device with offloads on hands
// them over (virtio-net header decoded into PACKET_FLAG_*, gsoSizes, csumAt):
// translated as one packet, counted as their segments, checked against their
// headers, and never sent on with a header that no longer describes them.

import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { Dispatcher } from '../../src/dispatch/dispatcher.js';
import { DROP_REASON_NAMES } from '../../src/dispatch/drop-reason.js';
import { offloadFits, segmentCount } from '../../src/dispatch/offload.js';
import {
  createBatch, createSiblingBatch, PACKET_FLAG_BAD_VNET, PACKET_FLAG_GSO_TCPV4, PACKET_FLAG_GSO_TCPV6, PACKET_FLAG_GSO_UDP,
  PACKET_FLAG_PARTIAL_CSUM,
} from '../../src/link/link.js';
import { IP_PROTO_TCP, IP_PROTO_UDP } from '../../src/wire/ipv4.js';
import { buildIcmpEcho, buildTcp, buildUdp, describe as describePacket, toHex, toPartialChecksum } from '../support/packet-builder.js';

const V4 = '198.18.100.1';
const V6 = '2001:db8::100';
const C4 = '198.18.0.10';
const C6 = '2001:db8:1::10';
const D4 = '198.18.2.1';
const D6 = '2001:db8:2::1';
const MSS = 1448;

function newDispatcher(): Dispatcher {
  const d = new Dispatcher({ capacity: 64, seed: 5 });
  d.configure({
    clusters: [
      { address: V4, ports: [{ port: 80, protocol: 'tcp', daemons: [{ address: `${D4}:8080` }] }, { port: 53, protocol: 'udp', daemons: [{ address: `${D4}:5353` }] }] },
      { address: V6, ports: [{ port: 443, protocol: 'tcp', daemons: [{ address: `[${D6}]:8443` }] }] },
    ],
  });
  return d;
}

interface Ends { src: string; dst: string; srcPort: number; dstPort: number }
const IN4: Ends = { src: C4, dst: V4, srcPort: 40001, dstPort: 80 };
const FWD4: Ends = { src: C4, dst: D4, srcPort: 40001, dstPort: 8080 };
const REPLY4: Ends = { src: D4, dst: C4, srcPort: 8080, dstPort: 40001 };
const OUT4: Ends = { src: V4, dst: C4, srcPort: 80, dstPort: 40001 };
const IN6: Ends = { src: C6, dst: V6, srcPort: 50001, dstPort: 443 };
const FWD6: Ends = { src: C6, dst: D6, srcPort: 50001, dstPort: 8443 };

const partial = toPartialChecksum;

const payload = (n: number): Uint8Array => Uint8Array.from({ length: n }, (_, i) => (i * 7) & 0xff);

const batch = createBatch(4, 65536);
const out = createSiblingBatch(batch);

/** One packet through process() with the given offload metadata; the output (or null when dropped) and its link flags. */
function send(d: Dispatcher, packet: Uint8Array, flags = 0, gsoSize = 0, csumAt = 0, now = 1000): { bytes: Uint8Array; flags: number } | null {
  batch.buffer.set(packet, 0);
  batch.offsets[0] = 0;
  batch.lengths[0] = packet.length;
  batch.flags[0] = flags;
  batch.gsoSizes[0] = gsoSize;
  batch.csumAt[0] = csumAt;
  batch.count = 1;
  if (d.process(batch, out, now) === 0) return null;
  return { bytes: batch.buffer.slice(out.offsets[0], out.offsets[0] + out.lengths[0]), flags: out.flags[0] };
}

function handshake(d: Dispatcher, inbound: Ends, reply: Ends): void {
  assert.ok(send(d, buildTcp({ ...inbound, flags: 'S', seq: 1000 })), 'SYN forwarded');
  assert.ok(send(d, buildTcp({ ...reply, flags: 'SA', seq: 5000, ack: 1001 })), 'SYN-ACK forwarded');
  assert.ok(send(d, buildTcp({ ...inbound, flags: 'A', seq: 1001, ack: 5001 })), 'ACK forwarded');
}

function drops(d: Dispatcher): Record<string, number> {
  const counts: Record<string, number> = {};
  d.balancer.stats.drops.forEach((n, i) => { if (n !== 0) counts[DROP_REASON_NAMES[i]] = n; });
  return counts;
}

const daemonId = (d: Dispatcher, name: string): number => d.tree.daemonsById.find((x) => x?.name === name)!.id;

describe('offloads: what a virtio-net header says', () => {
  it('offloadFits: a super-packet of its own protocol and family, a partial checksum at the transport checksum', () => {
    assert.ok(offloadFits(PACKET_FLAG_GSO_TCPV4 | PACKET_FLAG_PARTIAL_CSUM, 4, IP_PROTO_TCP, 20, 36));
    assert.ok(offloadFits(PACKET_FLAG_GSO_TCPV6 | PACKET_FLAG_PARTIAL_CSUM, 6, IP_PROTO_TCP, 48, 64), 'IPv6 with an extension header');
    assert.ok(offloadFits(PACKET_FLAG_GSO_UDP | PACKET_FLAG_PARTIAL_CSUM, 6, IP_PROTO_UDP, 40, 46));
    assert.ok(offloadFits(0, 4, 1, 20, 0), 'no offload: anything');
    assert.equal(offloadFits(PACKET_FLAG_GSO_TCPV6, 4, IP_PROTO_TCP, 20, 0), false, 'TCPv6 type on IPv4');
    assert.equal(offloadFits(PACKET_FLAG_GSO_TCPV4, 4, IP_PROTO_UDP, 20, 0), false, 'TCP type on UDP');
    assert.equal(offloadFits(PACKET_FLAG_GSO_UDP, 4, IP_PROTO_TCP, 20, 0), false, 'UDP type on TCP');
    assert.equal(offloadFits(PACKET_FLAG_PARTIAL_CSUM, 4, IP_PROTO_TCP, 20, 26), false, 'partial at UDP\'s place in TCP');
    assert.equal(offloadFits(PACKET_FLAG_PARTIAL_CSUM, 4, 1, 20, 22), false, 'partial ICMP');
    assert.equal(offloadFits(PACKET_FLAG_BAD_VNET, 4, IP_PROTO_TCP, 20, 0), false);
  });

  it('segmentCount: the payload cut at the segment size, at least one', () => {
    assert.equal(segmentCount(40 + 10 * MSS, 40, MSS), 10);
    assert.equal(segmentCount(40 + 10 * MSS + 1, 40, MSS), 11);
    assert.equal(segmentCount(40 + 100, 40, MSS), 1);
    assert.equal(segmentCount(40, 40, MSS), 1);
    assert.equal(segmentCount(1500, 40, 0), 1, 'no segment size: one packet');
  });
});

describe('offloads through the dispatcher', () => {
  it('an IPv4 TCP super-packet each way is translated as one packet and counted as its segments', () => {
    const d = newDispatcher();
    handshake(d, IN4, REPLY4);
    const id = daemonId(d, `${D4}:8080`);
    const before = d.balancer.stats.daemonCounters(id);

    const data = payload(10 * MSS);
    const sent = partial(buildTcp({ ...IN4, flags: 'A', seq: 1001, ack: 5001, payload: data }));
    const flags = PACKET_FLAG_GSO_TCPV4 | PACKET_FLAG_PARTIAL_CSUM;
    const got = send(d, sent.bytes, flags, MSS, sent.csumAt);
    assert.ok(got, `forwarded; drops ${JSON.stringify(drops(d))}`);
    assert.equal(toHex(got.bytes), toHex(partial(buildTcp({ ...FWD4, flags: 'A', seq: 1001, ack: 5001, payload: data })).bytes),
      'to the daemon, the partial checksum now the new pseudo-header sum');
    assert.equal(got.flags, flags, 'its header goes back with it');

    const answer = payload(2 * MSS + 1);
    const reply = partial(buildTcp({ ...REPLY4, flags: 'A', seq: 5001, ack: 1001 + data.length, payload: answer }));
    const back = send(d, reply.bytes, flags, MSS, reply.csumAt);
    assert.ok(back);
    assert.equal(toHex(back.bytes), toHex(partial(buildTcp({ ...OUT4, flags: 'A', seq: 5001, ack: 1001 + data.length, payload: answer })).bytes));

    const after = d.balancer.stats.daemonCounters(id);
    assert.equal(after.packetsIn - before.packetsIn, 10, 'ten segments in');
    assert.equal(after.bytesIn - before.bytesIn, 10 * (40 + MSS), 'each segment with its own headers');
    assert.equal(after.packetsOut - before.packetsOut, 3, 'three segments out');
    assert.equal(after.bytesOut - before.bytesOut, 3 * 40 + answer.length);
    assert.equal(d.balancer.stats.superPackets, 2);
    assert.deepEqual(drops(d), {});
  });

  it('an IPv6 TCP super-packet is translated the same way', () => {
    const d = newDispatcher();
    handshake(d, IN6, { src: D6, dst: C6, srcPort: 8443, dstPort: 50001 });
    const data = payload(4 * MSS);
    const sent = partial(buildTcp({ ...IN6, flags: 'PA', seq: 1001, ack: 5001, payload: data }));
    const got = send(d, sent.bytes, PACKET_FLAG_GSO_TCPV6 | PACKET_FLAG_PARTIAL_CSUM, MSS, sent.csumAt);
    assert.ok(got, `forwarded; drops ${JSON.stringify(drops(d))}`);
    assert.equal(toHex(got.bytes), toHex(partial(buildTcp({ ...FWD6, flags: 'PA', seq: 1001, ack: 5001, payload: data })).bytes));
    assert.equal(d.balancer.stats.daemonCounters(daemonId(d, `[${D6}]:8443`)).packetsIn, 2 + 4, 'SYN, ACK, then four segments');
  });

  it('a header that does not describe its packet is dropped as bad_offload, before anything is looked up', () => {
    const d = newDispatcher();
    handshake(d, IN4, REPLY4);
    const size = d.table.size;
    const data = partial(buildTcp({ ...IN4, flags: 'A', seq: 1001, ack: 5001, payload: payload(3 * MSS) }));
    const udp = partial(buildUdp({ ...IN4, dstPort: 53, payload: payload(3 * MSS) }));
    const cases: Array<[string, Uint8Array, number, number]> = [
      ['TCPv6 super-packet type on IPv4', data.bytes, PACKET_FLAG_GSO_TCPV6 | PACKET_FLAG_PARTIAL_CSUM, data.csumAt],
      ['TCP super-packet type on UDP', udp.bytes, PACKET_FLAG_GSO_TCPV4 | PACKET_FLAG_PARTIAL_CSUM, udp.csumAt],
      ['partial checksum elsewhere', data.bytes, PACKET_FLAG_GSO_TCPV4 | PACKET_FLAG_PARTIAL_CSUM, data.csumAt - 2],
      ['a header the link could not read', data.bytes, PACKET_FLAG_BAD_VNET, 0],
      ['an echo request as a super-packet', buildIcmpEcho({ src: C4, dst: V4, ident: 1, seq: 1 }), PACKET_FLAG_GSO_TCPV4, 0],
    ];
    for (const [name, packet, flags, csumAt] of cases) {
      const before = d.balancer.stats.drops[DROP_REASON_NAMES.indexOf('bad_offload')];
      assert.equal(send(d, packet, flags, MSS, csumAt), null, `${name}: dropped`);
      assert.equal(d.balancer.stats.drops[DROP_REASON_NAMES.indexOf('bad_offload')], before + 1, `${name}: counted as bad_offload`);
    }
    assert.equal(d.table.size, size, 'no record made or removed');
    assert.deepEqual(drops(d), { bad_offload: cases.length });
    assert.ok(send(d, data.bytes, PACKET_FLAG_GSO_TCPV4 | PACKET_FLAG_PARTIAL_CSUM, MSS, data.csumAt), 'the same packet with a fitting header passes');
  });

  it('an answer built from a super-packet goes out without its header: one packet, checksums complete', () => {
    const d = newDispatcher();
    handshake(d, IN4, REPLY4);
    d.resetDaemonFlows(daemonId(d, `${D4}:8080`), 1000);
    const data = partial(buildTcp({ ...IN4, flags: 'A', seq: 1001, ack: 5001, payload: payload(5 * MSS) }));
    const got = send(d, data.bytes, PACKET_FLAG_GSO_TCPV4 | PACKET_FLAG_PARTIAL_CSUM, MSS, data.csumAt);
    assert.ok(got, 'answered');
    const rst = describePacket(got.bytes);
    assert.equal(rst.flags & 0x04, 0x04, 'a RST');
    assert.equal(got.bytes.length, 40, 'headers only');
    assert.equal(got.flags, 0, 'no offload flags: the writer sends a zero header');
  });

  it('fuzzed headers never throw: every packet is dropped once or sent once, and what is sent either keeps its header or has none', () => {
    const packets = [
      buildTcp({ ...IN4, flags: 'S', seq: 1 }),
      buildTcp({ ...IN4, flags: 'A', seq: 1001, ack: 5001, payload: payload(3000) }),
      buildTcp({ ...REPLY4, flags: 'A', seq: 5001, ack: 1001, payload: payload(100) }),
      buildTcp({ ...IN6, flags: 'PA', seq: 1001, ack: 1, payload: payload(2000) }),
      buildUdp({ ...IN4, dstPort: 53, payload: payload(3000) }),
      buildUdp({ ...IN4, dstPort: 53, payload: 'q', noChecksum: true }),
      buildIcmpEcho({ src: C4, dst: V4, ident: 1, seq: 1 }),
    ];
    fc.assert(fc.property(
      fc.array(fc.record({
        which: fc.nat(packets.length - 1), partialSum: fc.boolean(), flags: fc.nat(255), gsoSize: fc.nat(65535), csumAt: fc.nat(65535), exactCsum: fc.boolean(),
      }), { minLength: 1, maxLength: 4 }),
      (items) => {
        const d = newDispatcher();
        handshake(d, IN4, REPLY4);
        const input = createBatch(4, 65536);
        const output = createSiblingBatch(input);
        items.forEach((item, i) => {
          const p = item.partialSum ? partial(packets[item.which]) : { bytes: packets[item.which], csumAt: 0 };
          input.buffer.set(p.bytes, i * input.slotSize);
          input.offsets[i] = i * input.slotSize;
          input.lengths[i] = p.bytes.length;
          input.flags[i] = item.flags;
          input.gsoSizes[i] = item.gsoSize;
          input.csumAt[i] = item.exactCsum ? p.csumAt : item.csumAt;
        });
        input.count = items.length;
        const dropsBefore = d.balancer.stats.drops.reduce((a, b) => a + b, 0);
        const n = d.process(input, output, 2000);
        const dropped = d.balancer.stats.drops.reduce((a, b) => a + b, 0) - dropsBefore;
        assert.ok(n + dropped <= items.length, `${n} sent + ${dropped} dropped of ${items.length}`);
        for (let k = 0; k < n; k++) {
          const slot = Math.floor(output.offsets[k] / input.slotSize);
          assert.ok(output.flags[k] === 0 || output.flags[k] === items[slot].flags, 'sent with its own header or none');
        }
      },
    ), { numRuns: 300, seed: 17 });
  });
});
