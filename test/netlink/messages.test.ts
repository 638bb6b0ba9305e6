// Netlink messages built by NetlinkWriter read back by the readers the
// netfilter data plane uses: queued packets, conntrack events (new, TCP state
// updates, destroy with counters), acknowledgments; and random bytes never
// make a reader throw or read outside its datagram.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { CtMessage, CtTuple, EVENT_DESTROY, EVENT_NEW, EVENT_UPDATE, IPCTNL_MSG_CT_DELETE, IPCTNL_MSG_CT_NEW, TcpCt, DELETE_FLOW_BYTES, writeDeleteByMark, writeDeleteFlow, writeSetMark } from '../../src/netlink/conntrack.js';
import { MessageReader, NetlinkWriter, NLM_F_ACK, NLM_F_REQUEST } from '../../src/netlink/message.js';
import { parseIp } from '../../src/wire/address.js';
import { NF_ACCEPT, NFQNL_MSG_PACKET, QueuedPacket, VERDICT_BYTES, writeQueueBind, writeVerdict } from '../../src/netlink/nfqueue.js';

const NLM_F_CREATE = 0x400;

function readAll(w: NetlinkWriter): { reader: MessageReader; view: DataView } {
  const bytes = w.bytes().slice();
  const view = new DataView(bytes.buffer);
  const reader = new MessageReader();
  reader.reset(bytes, view, 0, bytes.length);
  return { reader, view };
}

function tuple(w: NetlinkWriter, type: number, src: number[], dst: number[], protocol: number, sport: number, dport: number): void {
  w.beginNest(type);
  w.beginNest(1); // CTA_TUPLE_IP
  w.raw(src.length === 4 ? 1 : 3, src);
  w.raw(src.length === 4 ? 2 : 4, dst);
  w.endNest();
  w.beginNest(2); // CTA_TUPLE_PROTO
  w.u8(1, protocol);
  w.u16be(2, sport);
  w.u16be(3, dport);
  w.endNest();
  w.endNest();
}

function ctEvent(w: NetlinkWriter, type: number, flags: number, fields: { id: number; mark: number; state?: number; counters?: [number, number, number, number]; v6?: boolean }): void {
  w.beginNfMessage(type, flags, fields.v6 ? 10 : 2, 0);
  const client = fields.v6 ? [0x20, 1, 0x0d, 0xb8, ...Array(11).fill(0), 9] : [198, 18, 0, 1];
  const cluster = fields.v6 ? [0x20, 1, 0x0d, 0xb8, ...Array(11).fill(0), 0x64] : [198, 18, 100, 1];
  const daemon = fields.v6 ? [0x20, 1, 0x0d, 0xb8, ...Array(11).fill(0), 2] : [198, 18, 2, 1];
  tuple(w, 1, client, cluster, 6, 40000, 80);
  tuple(w, 2, daemon, client, 6, 8080, 40000);
  if (fields.state !== undefined) {
    w.beginNest(4);
    w.beginNest(1);
    w.u8(1, fields.state);
    w.endNest();
    w.endNest();
  }
  if (fields.counters) {
    for (const [type, packets, bytes] of [[9, fields.counters[0], fields.counters[1]], [10, fields.counters[2], fields.counters[3]]]) {
      w.beginNest(type);
      const p = new Uint8Array(8);
      new DataView(p.buffer).setBigUint64(0, BigInt(packets), false);
      w.raw(1, p);
      const b = new Uint8Array(8);
      new DataView(b.buffer).setBigUint64(0, BigInt(bytes), false);
      w.raw(2, b);
      w.endNest();
    }
  }
  w.u32be(8, fields.mark);
  w.u32be(12, fields.id);
  w.endMessage();
}

test('conntrack events: new, TCP state update and destroy with counters read back field by field', () => {
  const w = new NetlinkWriter();
  ctEvent(w, IPCTNL_MSG_CT_NEW, NLM_F_CREATE, { id: 77, mark: 0x4c420003, state: TcpCt.SynSent });
  ctEvent(w, IPCTNL_MSG_CT_NEW, 0, { id: 77, mark: 0x4c420003, state: TcpCt.Established });
  ctEvent(w, IPCTNL_MSG_CT_DELETE, 0, { id: 77, mark: 0x4c420003, counters: [10, 1500, 8, 90000] });
  const { reader, view } = readAll(w);
  const ct = new CtMessage();
  const seen: Array<[number, number, number, number]> = [];
  while (reader.next()) {
    assert.ok(ct.parse(view, reader));
    assert.ok(ct.tuples(new Uint8Array(view.buffer), view));
    ct.counters(view);
    seen.push([ct.kind, ct.id, ct.mark, ct.tcpState]);
    assert.equal(ct.orig.family, 4);
    assert.deepEqual([...ct.orig.src.subarray(0, 4)], [198, 18, 0, 1]);
    assert.deepEqual([...ct.orig.dst.subarray(0, 4)], [198, 18, 100, 1]);
    assert.equal(ct.orig.srcPort, 40000);
    assert.equal(ct.orig.dstPort, 80);
    assert.equal(ct.orig.protocol, 6);
    assert.ok(ct.hasReply);
    assert.deepEqual([...ct.reply.src.subarray(0, 4)], [198, 18, 2, 1]);
    assert.equal(ct.reply.srcPort, 8080);
    if (ct.kind === EVENT_DESTROY) assert.deepEqual([ct.packetsOrig, ct.bytesOrig, ct.packetsReply, ct.bytesReply], [10, 1500, 8, 90000]);
  }
  assert.deepEqual(seen, [
    [EVENT_NEW, 77, 0x4c420003, TcpCt.SynSent],
    [EVENT_UPDATE, 77, 0x4c420003, TcpCt.Established],
    [EVENT_DESTROY, 77, 0x4c420003, -1],
  ]);
});

test('conntrack events: IPv6 tuples', () => {
  const w = new NetlinkWriter();
  ctEvent(w, IPCTNL_MSG_CT_NEW, NLM_F_CREATE, { id: 5, mark: 0x4c420001, v6: true });
  const { reader, view } = readAll(w);
  const ct = new CtMessage();
  assert.ok(reader.next());
  assert.ok(ct.parse(view, reader));
  assert.ok(ct.tuples(new Uint8Array(view.buffer), view));
  assert.equal(ct.orig.family, 6);
  assert.equal(ct.orig.src[15], 9);
  assert.equal(ct.orig.dst[15], 0x64);
  assert.equal(ct.reply.src[15], 2);
});

test('queued packet: id, mark, protocol and payload position', () => {
  const w = new NetlinkWriter();
  w.beginNfMessage(NFQNL_MSG_PACKET, 0, 2, 4242);
  const hdr = new Uint8Array(7);
  new DataView(hdr.buffer).setUint32(0, 0xdeadbeef, false);
  new DataView(hdr.buffer).setUint16(4, 0x0800, false);
  hdr[6] = 1;
  w.raw(1, hdr);
  w.u32be(3, 0x1234);
  const payload = Array.from({ length: 41 }, (_, i) => i);
  w.raw(10, payload);
  w.endMessage();
  const { reader, view } = readAll(w);
  const p = new QueuedPacket();
  assert.ok(reader.next());
  assert.ok(p.parse(view, reader));
  assert.equal(p.id, 0xdeadbeef);
  assert.equal(p.hwProtocol, 0x0800);
  assert.equal(p.mark, 0x1234);
  assert.equal(p.payloadLength, 41);
  assert.deepEqual([...new Uint8Array(view.buffer, p.payloadAt, 41)], payload);
});

test('verdict: ACCEPT with a mark, in network order, of the advertised size', () => {
  const w = new NetlinkWriter();
  writeVerdict(w, 4242, 99, NF_ACCEPT, 0x4c420002);
  assert.equal(w.length, VERDICT_BYTES);
  const b = w.bytes();
  const v = new DataView(b.buffer);
  assert.equal(v.getUint32(0, true), VERDICT_BYTES, 'nlmsg_len');
  assert.equal(v.getUint16(4, true), (3 << 8) | 1, 'NFQNL_MSG_VERDICT');
  assert.equal(v.getUint16(18, false), 4242, 'queue number in res_id');
  // NFQA_VERDICT_HDR: len 12, type 2, verdict, id.
  assert.deepEqual([v.getUint16(20, true), v.getUint16(22, true), v.getUint32(24, false), v.getUint32(28, false)], [12, 2, NF_ACCEPT, 99]);
  // NFQA_MARK: len 8, type 3, mark.
  assert.deepEqual([v.getUint16(32, true), v.getUint16(34, true), v.getUint32(36, false)], [8, 3, 0x4c420002]);
});

test('requests that want an answer ask for an acknowledgment', () => {
  const w = new NetlinkWriter();
  const seqs = writeQueueBind(w, 7, { copyRange: 256, maxLength: 1024 });
  writeDeleteByMark(w, 0, 0x4c420005, 0xffffffff);
  const { reader } = readAll(w);
  const flags: number[] = [];
  const seen: number[] = [];
  while (reader.next()) {
    flags.push(reader.flags);
    seen.push(reader.seq);
  }
  assert.equal(flags.length, 3);
  for (const f of flags) assert.equal(f & (NLM_F_REQUEST | NLM_F_ACK), NLM_F_REQUEST | NLM_F_ACK);
  assert.deepEqual(seen.slice(0, 2), seqs);
});

test('readers never throw and never read past the datagram on random or truncated input', () => {
  const ct = new CtMessage();
  const p = new QueuedPacket();
  const w = new NetlinkWriter();
  ctEvent(w, IPCTNL_MSG_CT_NEW, NLM_F_CREATE, { id: 1, mark: 2, state: 3, counters: [1, 2, 3, 4] });
  const good = w.bytes().slice();
  fc.assert(fc.property(fc.uint8Array({ maxLength: 400 }), fc.nat(good.length), fc.array(fc.tuple(fc.nat(good.length - 1), fc.integer({ min: 0, max: 255 })), { maxLength: 8 }), (random, cut, flips) => {
    for (const source of [random, good.subarray(0, cut), (() => {
      const m = good.slice();
      for (const [at, value] of flips) m[at] = value;
      return m;
    })()]) {
      // Copy into a buffer with guard bytes, and read only the datagram's span.
      const buf = new Uint8Array(source.length + 64).fill(0xee);
      buf.set(source, 0);
      const view = new DataView(buf.buffer);
      const reader = new MessageReader();
      reader.reset(buf, view, 0, source.length);
      while (reader.next()) {
        assert.ok(reader.at + reader.length <= source.length);
        if (ct.parse(view, reader)) {
          ct.counters(view);
          if (ct.tuples(buf, view)) assert.ok(ct.orig.family === 4 || ct.orig.family === 6);
        }
        if (p.parse(view, reader)) assert.ok(p.payloadAt + p.payloadLength <= source.length);
      }
    }
  }), { numRuns: 2000 });
});

test('deleting one flow names its original tuple and id, and reads back as the same flow', () => {
  const t = new CtTuple();
  t.family = 4;
  t.src.set([198, 18, 0, 1]);
  t.dst.set([198, 18, 100, 1]);
  t.protocol = 6;
  t.srcPort = 40123;
  t.dstPort = 80;
  const w = new NetlinkWriter();
  writeDeleteFlow(w, t, 0xabcdef01);
  const { reader, view } = readAll(w);
  assert.ok(reader.next());
  assert.equal(reader.flags & (NLM_F_REQUEST | NLM_F_ACK), NLM_F_REQUEST | NLM_F_ACK);
  assert.equal(new Uint8Array(view.buffer)[16], 2, 'nfgenmsg family AF_INET');
  const ct = new CtMessage();
  assert.ok(ct.parse(view, reader));
  assert.ok(ct.tuples(new Uint8Array(view.buffer), view));
  assert.equal(ct.id, 0xabcdef01);
  assert.deepEqual([...ct.orig.src.subarray(0, 4), ...ct.orig.dst.subarray(0, 4)], [198, 18, 0, 1, 198, 18, 100, 1]);
  assert.deepEqual([ct.orig.protocol, ct.orig.srcPort, ct.orig.dstPort], [6, 40123, 80]);
});

test('setting a flow\'s mark updates the entry of its original tuple (no create flag) with the mark and the mask of bits to set', () => {
  const t = new CtTuple();
  t.family = 6;
  t.src.set(parseIp('2001:db8:1::10')!.bytes);
  t.dst.set(parseIp('2001:db8::100')!.bytes);
  t.protocol = 6;
  t.srcPort = 40123;
  t.dstPort = 443;
  const w = new NetlinkWriter();
  writeSetMark(w, t, 0x0005, 0x1fff);
  assert.ok(w.length <= DELETE_FLOW_BYTES, `${w.length} bytes`);
  const { reader, view } = readAll(w);
  assert.ok(reader.next());
  assert.equal(reader.type, IPCTNL_MSG_CT_NEW);
  assert.equal(reader.flags, NLM_F_REQUEST | NLM_F_ACK, 'an update of an existing entry: neither NLM_F_CREATE nor NLM_F_EXCL');
  const ct = new CtMessage();
  assert.ok(ct.parse(view, reader));
  assert.ok(ct.tuples(new Uint8Array(view.buffer), view));
  assert.equal(ct.mark, 0x0005);
  assert.deepEqual([ct.orig.family, ct.orig.protocol, ct.orig.srcPort, ct.orig.dstPort], [6, 6, 40123, 443]);
  assert.deepEqual(ct.orig.src, t.src);
  // CTA_MARK_MASK (21), big-endian, right after CTA_MARK in the payload.
  const maskAt = w.length - 4;
  assert.deepEqual([view.getUint16(maskAt - 2, true), view.getUint32(maskAt, false)], [21, 0x1fff]);
});
