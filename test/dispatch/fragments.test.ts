// Fragments through the dispatcher (fragments.ts): later fragments follow
// their first to the same daemon, with only their address rewritten; the
// reassembled datagram is intact with a right checksum; fragments whose first
// was never seen are dropped; a flood of them cannot grow the table.

import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Dispatcher } from '../../src/dispatch/dispatcher.js';
import { DROP_REASON_NAMES } from '../../src/dispatch/drop-reason.js';
import { FRAG_KEY_WORDS, FragmentTable } from '../../src/dispatch/fragments.js';
import { VERDICT_DROP, VERDICT_FORWARD } from '../../src/dispatch/verdict.js';
import { emitIpv4, IP_PROTO_UDP } from '../../src/wire/ipv4.js';
import { emitIpv6 } from '../../src/wire/ipv6.js';
import { buildUdp, checksumsValid, describe as describePacket } from '../support/packet-builder.js';

interface Fam { cluster: string; daemons: string[]; client: string }
const FAM: Record<4 | 6, Fam> = {
  4: { cluster: '198.18.100.1', daemons: ['198.18.2.1:5353', '198.18.2.2:5353'], client: '198.18.0.1' },
  6: { cluster: '2001:db8:100::1', daemons: ['[2001:db8:2::1]:5353', '[2001:db8:2::2]:5353'], client: '2001:db8::1' },
};

/** Source and destination address bytes of an IP packet, as text for comparison (fragments don't parse whole). */
function addrs(packet: Uint8Array): { src: Uint8Array; dst: Uint8Array; dstHex: string } {
  const v4 = packet[0] >>> 4 === 4;
  const src = packet.slice(v4 ? 12 : 8, v4 ? 16 : 24);
  const dst = packet.slice(v4 ? 16 : 24, v4 ? 20 : 40);
  return { src, dst, dstHex: Buffer.from(dst).toString('hex') };
}

/** Splits a whole IP datagram into fragments of at most `chunk` payload bytes (a multiple of 8). */
function fragment(packet: Uint8Array, family: 4 | 6, ident: number, chunk: number): Uint8Array[] {
  const { src, dst } = addrs(packet);
  const header = family === 4 ? 20 : 40;
  const payload = packet.subarray(header);
  const out: Uint8Array[] = [];
  for (let off = 0; off < payload.length; off += chunk) {
    const part = payload.subarray(off, Math.min(payload.length, off + chunk));
    const more = off + chunk < payload.length;
    if (family === 4) {
      const buf = new Uint8Array(20 + part.length);
      emitIpv4({ srcAddr: u32(src), dstAddr: u32(dst), protocol: IP_PROTO_UDP, payloadLen: part.length, ident, moreFrags: more, fragOffset: off }, buf, 0);
      buf.set(part, 20);
      out.push(buf);
    } else {
      const buf = new Uint8Array(48 + part.length);
      emitIpv6({ srcAddr: src, dstAddr: dst, nextHeader: 44, payloadLen: 8 + part.length }, buf, 0);
      buf[40] = IP_PROTO_UDP;
      buf[41] = 0;
      const word = off | (more ? 1 : 0);
      buf[42] = word >>> 8; buf[43] = word & 0xff;
      buf[44] = ident >>> 24; buf[45] = (ident >>> 16) & 0xff; buf[46] = (ident >>> 8) & 0xff; buf[47] = ident & 0xff;
      buf.set(part, 48);
      out.push(buf);
    }
  }
  return out;
}

function u32(b: Uint8Array): number {
  return ((b[0] << 24) | (b[1] << 16) | (b[2] << 8) | b[3]) >>> 0;
}

/** Reassembles translated fragments into one datagram with `family`'s plain header. */
function reassemble(frags: Uint8Array[], family: 4 | 6): Uint8Array {
  const header = family === 4 ? 20 : 48;
  const total = frags.reduce((n, f) => n + f.length - header, 0);
  const { src, dst } = addrs(frags[0]);
  const whole = new Uint8Array((family === 4 ? 20 : 40) + total);
  let at = family === 4 ? 20 : 40;
  for (const f of frags) { whole.set(f.subarray(header), at); at += f.length - header; }
  if (family === 4) emitIpv4({ srcAddr: u32(src), dstAddr: u32(dst), protocol: IP_PROTO_UDP, payloadLen: total }, whole, 0);
  else emitIpv6({ srcAddr: src, dstAddr: dst, nextHeader: IP_PROTO_UDP, payloadLen: total }, whole, 0);
  return whole;
}

function setUp(f: Fam): Dispatcher {
  const d = new Dispatcher({ capacity: 64 });
  d.configure({ clusters: [{ address: f.cluster, ports: [{ port: 53, protocol: 'udp', daemons: f.daemons.map((address) => ({ address })) }] }] });
  return d;
}

for (const family of [4, 6] as const) {
  const f = FAM[family];
  describe(`fragments (IPv${family})`, () => {
    it('a 4096-byte UDP datagram sent as 3 fragments reaches one daemon intact, and its reply goes back', () => {
      const d = setUp(f);
      const payload = new Uint8Array(4096 - 8).map((_, i) => (i * 7) & 0xff);
      const datagram = buildUdp({ src: f.client, dst: f.cluster, srcPort: 40000, dstPort: 53, payload });
      const frags = fragment(datagram, family, 0x1234, 1480);
      assert.equal(frags.length, 3);
      const out: Uint8Array[] = [];
      for (const frag of frags) {
        const buf = frag.slice();
        assert.equal(d.processPacket(buf, 0, buf.length, 0, 1), VERDICT_FORWARD);
        out.push(buf);
      }
      const daemons = new Set(out.map((o) => addrs(o).dstHex));
      assert.equal(daemons.size, 1, 'every fragment to the same daemon');
      const whole = reassemble(out, family);
      assert.ok(checksumsValid(whole), 'the reassembled datagram checks');
      const p = describePacket(whole);
      assert.deepEqual([p.src, p.srcPort, p.dstPort], [f.client, 40000, 5353]);
      assert.deepEqual(p.payload, payload);

      // The daemon's reply, fragmented too, comes back from the cluster.
      const reply = buildUdp({ src: p.dst, dst: f.client, srcPort: 5353, dstPort: 40000, payload });
      const back = fragment(reply, family, 0x99, 1480).map((frag) => {
        const buf = frag.slice();
        assert.equal(d.processPacket(buf, 0, buf.length, 0, 2), VERDICT_FORWARD);
        return buf;
      });
      const whole2 = reassemble(back, family);
      assert.ok(checksumsValid(whole2));
      const q = describePacket(whole2);
      assert.deepEqual([q.src, q.srcPort], [f.cluster, 53]);
    });

    it('does not follow a fragment entry whose record was removed and reused by another flow', () => {
      // One record only, so the next flow must take the freed id.
      const d = new Dispatcher({ capacity: 1 });
      d.configure({ clusters: [{ address: f.cluster, ports: [{ port: 53, protocol: 'udp', daemons: f.daemons.map((address) => ({ address })) }] }] });
      const datagram = buildUdp({ src: f.client, dst: f.cluster, srcPort: 40002, dstPort: 53, payload: new Uint8Array(3000) });
      const frags = fragment(datagram, family, 99, 1480);
      const first = frags[0].slice();
      assert.equal(d.processPacket(first, 0, first.length, 0, 1), VERDICT_FORWARD);
      const id = d.lastRecordId;
      d.table.remove(id, 3);
      // Another flow takes the freed record id at once.
      const other = buildUdp({ src: f.client, dst: f.cluster, srcPort: 40003, dstPort: 53, payload: 'x' });
      assert.equal(d.processPacket(other, 0, other.length, 0, 2), VERDICT_FORWARD);
      assert.equal(d.lastRecordId, id, 'the id was reused');
      const late = frags[1].slice();
      assert.equal(d.processPacket(late, 0, late.length, 0, 3), VERDICT_DROP);
    });

    it('drops a later fragment that arrives before its first, and one that never had a first', () => {
      const d = setUp(f);
      const datagram = buildUdp({ src: f.client, dst: f.cluster, srcPort: 40001, dstPort: 53, payload: new Uint8Array(3000) });
      const frags = fragment(datagram, family, 7, 1480);
      const late = frags[2].slice();
      assert.equal(d.processPacket(late, 0, late.length, 0, 1), VERDICT_DROP);
      assert.equal(d.balancer.stats.drops[DROP_REASON_NAMES.indexOf('fragment')], 1);
      // Duplicates of the first are fine; the middle one then follows.
      for (const frag of [frags[0], frags[0], frags[1]]) {
        const buf = frag.slice();
        assert.equal(d.processPacket(buf, 0, buf.length, 0, 2), VERDICT_FORWARD);
      }
    });
  });
}

describe('fragment table', () => {
  it('stays bounded under a flood of first fragments, overwriting the oldest', () => {
    const t = new FragmentTable(64, 30_000);
    const key = new Uint32Array(FRAG_KEY_WORDS);
    for (let i = 0; i < 100_000; i++) {
      key[0] = i; key[8] = i * 7;
      t.remember(key, i % 50, false, i);
    }
    assert.ok(t.overwritten > 0);
    key[0] = 99_999; key[8] = 99_999 * 7;
    assert.equal(t.find(key, 100_000), (99_999 % 50) * 2, 'the newest is found');
    key[0] = 0; key[8] = 0;
    assert.equal(t.find(key, 100_000), -1, 'the oldest is gone');
  });

  it('forgets an entry after its timeout', () => {
    const t = new FragmentTable(64, 1000);
    const key = new Uint32Array(FRAG_KEY_WORDS).fill(3);
    t.remember(key, 5, true, 0);
    assert.equal(t.find(key, 999), 11);
    assert.equal(t.find(key, 1000), -1);
  });
});
