// Tests for the Internet checksum and its incremental update (src/wire/checksum.ts):
// the RFC 1071 and RFC 1624 examples, fold edge cases, and property tests that
// an incremental update after any address/port rewrite equals a full
// recomputation, for complete and partial (virtio NEEDS_CSUM) checksums and
// for the RFC 768 zero-checksum rules.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';

import { formatIpv4Bytes, formatIpv6 } from '../../src/wire/address.js';
import { read16, read32, write16 } from '../../src/wire/bytes.js';
import {
  applyComplete, applyPartial, applyUdpV4, checksum, delta16, delta32, deltaBytes, finish, fold, onesSum, pseudoSumV4, pseudoSumV6,
} from '../../src/wire/checksum.js';
import { IP_PROTO_TCP, IP_PROTO_UDP, IPV4_CHECKSUM, Ipv4Packet } from '../../src/wire/ipv4.js';
import { Ipv6Packet } from '../../src/wire/ipv6.js';
import { TCP_CHECKSUM, TcpPacket } from '../../src/wire/tcp.js';
import { UDP_CHECKSUM, UdpPacket } from '../../src/wire/udp.js';
import { WireError } from '../../src/wire/wire-error.js';
import { ExtensionHeader, buildTcp, buildUdp, checksumsValid, fromHex, toHex } from '../support/packet-builder.js';

const RUNS = 1000;

// ---------------------------------------------------------------------------
// Packet model for the properties

interface Flow {
  family: 4 | 6;
  proto: 'tcp' | 'udp';
  src: Uint8Array;
  dst: Uint8Array;
  srcPort: number;
  dstPort: number;
  payload: Uint8Array;
  seq: number;
  ext: ExtensionHeader[];
}

interface Rewrite {
  side: 'src' | 'dst';
  /** New address (4 or 16 bytes), or null to keep it. */
  addr: Uint8Array | null;
  /** New port, or null to keep it. */
  port: number | null;
}

interface Located {
  family: 4 | 6;
  protocol: number;
  l4Off: number;
  l4Len: number;
  srcAddrOff: number;
  dstAddrOff: number;
  csumOff: number;
}

const port = fc.integer({ min: 0, max: 0xffff });
const addr16 = fc.uint8Array({ minLength: 16, maxLength: 16 });
const payload = fc.uint8Array({ minLength: 0, maxLength: 1500 });
const extChains: ExtensionHeader[][] = [[], [], ['hop-by-hop'], ['hop-by-hop', 'dest-opts'], ['dest-opts', 'routing', 'fragment']];

const flowArb: fc.Arbitrary<Flow> = fc.record({
  family: fc.constantFrom<4 | 6>(4, 6),
  proto: fc.constantFrom<'tcp' | 'udp'>('tcp', 'udp'),
  src: addr16,
  dst: addr16,
  srcPort: port,
  dstPort: port,
  payload,
  seq: fc.integer({ min: 0, max: 0xffffffff }),
  ext: fc.constantFrom(...extChains),
}).map((f) => ({
  ...f,
  src: f.family === 4 ? f.src.slice(0, 4) : f.src,
  dst: f.family === 4 ? f.dst.slice(0, 4) : f.dst,
  ext: f.family === 4 ? [] : f.ext,
}));

/** A rewrite of the address and/or port on one side (at least one of them). */
function rewriteArb(family: 4 | 6, which: 'addr' | 'port' | 'any'): fc.Arbitrary<Rewrite> {
  const addr = fc.uint8Array({ minLength: family === 4 ? 4 : 16, maxLength: family === 4 ? 4 : 16 });
  return fc.record({
    side: fc.constantFrom<'src' | 'dst'>('src', 'dst'),
    addr: which === 'port' ? fc.constant(null) : which === 'addr' ? addr : fc.option(addr, { nil: null }),
    port: which === 'addr' ? fc.constant(null) : which === 'port' ? port : fc.option(port, { nil: null }),
    fallbackPort: port,
  }).map(({ side, addr: a, port: p, fallbackPort }) => ({ side, addr: a, port: a === null && p === null ? fallbackPort : p }));
}

const flowAndRewrite = (which: 'addr' | 'port' | 'any'): fc.Arbitrary<[Flow, Rewrite]> =>
  flowArb.chain((flow) => rewriteArb(flow.family, which).map((rw): [Flow, Rewrite] => [flow, rw]));

function addrText(family: 4 | 6, bytes: Uint8Array): string {
  return family === 4 ? formatIpv4Bytes(bytes, 0) : formatIpv6(bytes, 0);
}

function build(flow: Flow, noChecksum = false): Uint8Array {
  const common = {
    src: addrText(flow.family, flow.src), dst: addrText(flow.family, flow.dst),
    srcPort: flow.srcPort, dstPort: flow.dstPort, payload: flow.payload, extensionHeaders: flow.ext,
  };
  return flow.proto === 'tcp'
    ? buildTcp({ ...common, seq: flow.seq, flags: 'PA' })
    : buildUdp({ ...common, noChecksum });
}

function locate(packet: Uint8Array): Located {
  if (packet[0] >>> 4 === 4) {
    const ip = new Ipv4Packet();
    assert.equal(ip.wrap(packet, 0, packet.length), WireError.None);
    return {
      family: 4, protocol: ip.protocol, l4Off: ip.payloadOffset, l4Len: ip.payloadLen, srcAddrOff: 12, dstAddrOff: 16,
      csumOff: ip.payloadOffset + (ip.protocol === IP_PROTO_TCP ? TCP_CHECKSUM : UDP_CHECKSUM),
    };
  }
  const ip = new Ipv6Packet();
  assert.equal(ip.wrap(packet, 0, packet.length), WireError.None);
  return {
    family: 6, protocol: ip.transportProtocol, l4Off: ip.transportOffset, l4Len: ip.transportLen,
    srcAddrOff: ip.srcAddrOffset, dstAddrOff: ip.dstAddrOffset,
    csumOff: ip.transportOffset + (ip.transportProtocol === IP_PROTO_TCP ? TCP_CHECKSUM : UDP_CHECKSUM),
  };
}

function pseudoOf(packet: Uint8Array, loc: Located): number {
  return loc.family === 4
    ? pseudoSumV4(read32(packet, 12), read32(packet, 16), loc.protocol, loc.l4Len)
    : pseudoSumV6(packet, loc.srcAddrOff, loc.dstAddrOff, loc.protocol, loc.l4Len);
}

/** Writes the rewrite's fields, touching no checksum. */
function writeFields(packet: Uint8Array, loc: Located, rw: Rewrite): void {
  if (rw.addr) packet.set(rw.addr, rw.side === 'src' ? loc.srcAddrOff : loc.dstAddrOff);
  if (rw.port !== null) write16(packet, loc.l4Off + (rw.side === 'src' ? 0 : 2), rw.port);
}

/** The slow way: write the fields, then recompute every checksum from scratch. */
function fullRecompute(original: Uint8Array, rw: Rewrite): Uint8Array {
  const packet = Uint8Array.from(original);
  const loc = locate(packet);
  writeFields(packet, loc, rw);
  if (loc.family === 4) {
    const ip = new Ipv4Packet();
    assert.equal(ip.wrap(packet, 0, packet.length), WireError.None);
    ip.fillChecksum();
  }
  const pseudo = pseudoOf(packet, loc);
  if (loc.protocol === IP_PROTO_TCP) {
    const tcp = new TcpPacket();
    assert.equal(tcp.wrap(packet, loc.l4Off, loc.l4Len), WireError.None);
    tcp.fillChecksum(pseudo);
  } else {
    const udp = new UdpPacket();
    assert.equal(udp.wrap(packet, loc.l4Off, loc.l4Len), WireError.None);
    udp.fillChecksum(pseudo);
  }
  return packet;
}

/** The packet-path way: RFC 1624 deltas applied to the checksum fields, nothing else read. */
function incremental(original: Uint8Array, rw: Rewrite, partial: boolean): Uint8Array {
  const packet = Uint8Array.from(original);
  const loc = locate(packet);
  const udp = loc.protocol === IP_PROTO_UDP;
  let addrDelta = 0;
  if (rw.addr) {
    const at = rw.side === 'src' ? loc.srcAddrOff : loc.dstAddrOff;
    addrDelta = loc.family === 4 ? delta32(read32(packet, at), read32(rw.addr, 0)) : deltaBytes(packet, at, rw.addr, 0, 16);
    // The IPv4 header checksum covers the addresses, not the ports.
    if (loc.family === 4) applyComplete(packet, IPV4_CHECKSUM, addrDelta);
  }
  let portDelta = 0;
  if (rw.port !== null) portDelta = delta16(read16(packet, loc.l4Off + (rw.side === 'src' ? 0 : 2)), rw.port);
  if (partial) {
    // Ports are not in the pseudo-header: a partial field only follows the addresses.
    if (rw.addr) applyPartial(packet, loc.csumOff, addrDelta);
  } else if (udp) {
    // RFC 768's zero rules hold for UDP over IPv6 too (a computed 0 is sent as 0xffff).
    applyUdpV4(packet, loc.csumOff, addrDelta + portDelta);
  } else {
    applyComplete(packet, loc.csumOff, addrDelta + portDelta);
  }
  writeFields(packet, loc, rw);
  return packet;
}

/** What a NIC (or skb_checksum_help) does with a NEEDS_CSUM packet: sum from the transport header on, field included. */
function completePartial(packet: Uint8Array): Uint8Array {
  const out = Uint8Array.from(packet);
  const loc = locate(out);
  const value = checksum(out, loc.l4Off, loc.l4Len, 0);
  write16(out, loc.csumOff, loc.protocol === IP_PROTO_UDP && value === 0 ? 0xffff : value);
  return out;
}

/** Turns a built packet into one whose transport field holds fold(pseudo-header sum), as virtio NEEDS_CSUM hands it over. */
function toPartial(packet: Uint8Array): Uint8Array {
  const out = Uint8Array.from(packet);
  const loc = locate(out);
  write16(out, loc.csumOff, fold(pseudoOf(out, loc)));
  return out;
}

function assertSamePacket(actual: Uint8Array, expected: Uint8Array, what: string): void {
  if (actual.length === expected.length && actual.every((b, i) => b === expected[i])) return;
  assert.equal(toHex(actual), toHex(expected), what);
}

// ---------------------------------------------------------------------------

describe('checksum: RFC examples and edge cases', () => {
  it('RFC 1071 §3 example: 00 01 f2 03 f4 f5 f6 f7 sums to 0xddf2', () => {
    const data = fromHex('00 01 f2 03 f4 f5 f6 f7');
    assert.equal(onesSum(data, 0, 8), 0x2ddf0);
    assert.equal(fold(onesSum(data, 0, 8)), 0xddf2);
    assert.equal(finish(onesSum(data, 0, 8)), 0x220d);
    assert.equal(checksum(data, 0, 8), 0x220d);
    // Byte order independence (RFC 1071 §2 B): the swapped data sums to the swapped result.
    const swapped = fromHex('01 00 03 f2 f5 f4 f7 f6');
    assert.equal(fold(onesSum(swapped, 0, 8)), 0xf2dd);
  });

  it('RFC 1624 §4 example: HC 0xdd2f, m 0x5555 -> 0x3285 gives 0x0000 (eqn. 3, not 0xffff)', () => {
    const buf = fromHex('dd 2f');
    applyComplete(buf, 0, delta16(0x5555, 0x3285));
    assert.equal(read16(buf, 0), 0x0000);
  });

  it('IPv4 header checksum of the well-known 0xb861 header', () => {
    const header = fromHex('45 00 00 73 00 00 40 00 40 11 00 00 c0 a8 00 01 c0 a8 00 c7');
    assert.equal(checksum(header, 0, 20), 0xb861);
    header[10] = 0xb8;
    header[11] = 0x61;
    assert.equal(checksum(header, 0, 20), 0, 'a correct header sums to zero');
  });

  it('fold handles the carry edges', () => {
    const cases: Array<[number, number]> = [
      [0, 0], [1, 1], [0xffff, 0xffff], [0x10000, 1], [0x1fffe, 0xffff], [0x1ffff, 1], [0x2ddf0, 0xddf2],
      [0xffffffff, 0xffff], [0x100000000, 1], [0xfffffffff, 0x000f], [0xffffffffffff, 0xffff], [Number.MAX_SAFE_INTEGER, 0x1f],
    ];
    for (const [sum, expected] of cases) assert.equal(fold(sum), expected, `fold(0x${sum.toString(16)})`);
    assert.equal(finish(0), 0xffff);
    assert.equal(finish(0xffff), 0);
  });

  it('fold is the residue mod 0xffff, with 0xffff for a non-zero multiple (1000 runs)', () => {
    fc.assert(fc.property(fc.maxSafeNat(), (sum) => {
      const folded = fold(sum);
      assert.ok(folded >= 0 && folded <= 0xffff);
      assert.equal(folded, sum === 0 ? 0 : sum % 0xffff || 0xffff);
    }), { numRuns: RUNS });
  });

  it('onesSum pads an odd byte, honours offset and initial value', () => {
    assert.equal(onesSum(fromHex('ab'), 0, 1), 0xab00);
    assert.equal(onesSum(fromHex('ff ff ab cd ef'), 2, 3), 0xabcd + 0xef00);
    assert.equal(onesSum(fromHex('12 34'), 0, 2, 0x10000), 0x11234);
    assert.equal(onesSum(fromHex('12 34'), 0, 0, 7), 7);
    // A whole maximum IP packet of 0xff stays exact (no 32-bit overflow).
    const big = new Uint8Array(65535).fill(0xff);
    assert.equal(onesSum(big, 0, big.length), 32767 * 0xffff + 0xff00);
  });

  it('onesSum equals a word-by-word reference at any offset and odd or even length (1000 runs)', () => {
    fc.assert(fc.property(fc.uint8Array({ maxLength: 300 }), fc.nat(), fc.nat(), (data, a, b) => {
      const off = data.length === 0 ? 0 : a % data.length;
      const len = data.length - off === 0 ? 0 : b % (data.length - off + 1);
      let ref = 0;
      for (let i = 0; i < len; i += 2) ref += data[off + i] * 256 + (i + 1 < len ? data[off + i + 1] : 0);
      assert.equal(onesSum(data, off, len), ref);
    }), { numRuns: RUNS });
  });

  it('delta32 equals the two 16-bit deltas and deltaBytes over the same 4 bytes (1000 runs)', () => {
    fc.assert(fc.property(fc.integer({ min: 0, max: 0xffffffff }), fc.integer({ min: 0, max: 0xffffffff }), (old, value) => {
      const d = delta32(old, value);
      assert.equal(d, delta16(old >>> 16, value >>> 16) + delta16(old & 0xffff, value & 0xffff));
      const o = new Uint8Array(4);
      const n = new Uint8Array(4);
      new DataView(o.buffer).setUint32(0, old);
      new DataView(n.buffer).setUint32(0, value);
      assert.equal(deltaBytes(o, 0, n, 0, 4), d);
    }), { numRuns: RUNS });
  });

  it('the one exception: data that sums to +0 (all zero) before or after the change', () => {
    // RFC 1624 §5: eqn. 3 never yields 0xffff (it cannot produce +0), while a
    // full recomputation over all-zero data does. No IP header or pseudo-header
    // is all zero (version, protocol), so the packet path never meets this.
    const zero = new Uint8Array(4);
    write16(zero, 0, checksum(zero, 0, 4));
    assert.equal(read16(zero, 0), 0xffff);
    applyComplete(zero, 0, delta16(0, 0));
    assert.equal(read16(zero, 0), 0x0000, 'incremental: 0x0000, full recomputation: 0xffff');
  });

  it('applyComplete after changing any one word of random data equals recomputation (1000 runs)', () => {
    fc.assert(fc.property(fc.uint8Array({ minLength: 4, maxLength: 200 }), fc.nat(), fc.integer({ min: 0, max: 0xffff }), (data, at, value) => {
      // Word 0 holds the checksum over the rest; change another aligned word.
      const buf = Uint8Array.from(data);
      write16(buf, 0, 0);
      write16(buf, 0, checksum(buf, 0, buf.length));
      const words = buf.length >>> 1;
      const word = 1 + (at % (words - 1));
      const old = read16(buf, 2 * word);
      // All-zero data is the one exception (next test); IP headers and pseudo-headers are never all zero.
      const restNonZero = (b: Uint8Array): boolean => b.some((x, i) => i >= 2 && x !== 0);
      fc.pre(restNonZero(buf));
      applyComplete(buf, 0, delta16(old, value));
      write16(buf, 2 * word, value);
      fc.pre(restNonZero(buf));
      const expected = Uint8Array.from(buf);
      write16(expected, 0, 0);
      write16(expected, 0, checksum(expected, 0, expected.length));
      assert.equal(read16(buf, 0), read16(expected, 0));
    }), { numRuns: RUNS });
  });
});

describe('checksum: incremental update equals full recomputation', () => {
  it('complete checksums: IPv4/IPv6 TCP/UDP, random address and/or port rewrite (1000 runs)', () => {
    fc.assert(fc.property(flowAndRewrite('any'), ([flow, rw]) => {
      const original = build(flow);
      assert.ok(checksumsValid(original));
      const fast = incremental(original, rw, false);
      const slow = fullRecompute(original, rw);
      if (flow.family === 4) assert.equal(read16(fast, IPV4_CHECKSUM), read16(slow, IPV4_CHECKSUM), 'IPv4 header checksum');
      assertSamePacket(fast, slow, `${flow.family}/${flow.proto} ${rw.side} addr=${rw.addr !== null} port=${rw.port}`);
      assert.ok(checksumsValid(fast));
    }), { numRuns: RUNS });
  });

  it('complete checksums: rewriting there and back restores the original bytes (1000 runs)', () => {
    fc.assert(fc.property(flowAndRewrite('any'), ([flow, rw]) => {
      const original = build(flow);
      const loc = locate(original);
      const back: Rewrite = {
        side: rw.side,
        addr: rw.addr ? original.slice(rw.side === 'src' ? loc.srcAddrOff : loc.dstAddrOff, (rw.side === 'src' ? loc.srcAddrOff : loc.dstAddrOff) + rw.addr.length) : null,
        port: rw.port === null ? null : read16(original, loc.l4Off + (rw.side === 'src' ? 0 : 2)),
      };
      assertSamePacket(incremental(incremental(original, rw, false), back, false), original, 'round trip');
    }), { numRuns: RUNS });
  });

  it('partial checksums: an address rewrite leaves fold(new pseudo-header sum) (1000 runs)', () => {
    fc.assert(fc.property(flowAndRewrite('addr'), ([flow, rw]) => {
      const partial = toPartial(build(flow));
      const fast = incremental(partial, rw, true);
      const loc = locate(fast);
      assert.equal(read16(fast, loc.csumOff), fold(pseudoOf(fast, loc)));
      if (flow.family === 4) assert.equal(checksum(fast, 0, 20), 0, 'IPv4 header checksum');
      // Once the NIC completes it, the packet equals a full recomputation.
      assertSamePacket(completePartial(fast), fullRecompute(build(flow), rw), 'completed after offload');
    }), { numRuns: RUNS });
  });

  it('partial checksums: a port rewrite leaves the field unchanged, and that is right (1000 runs)', () => {
    fc.assert(fc.property(flowAndRewrite('port'), ([flow, rw]) => {
      const partial = toPartial(build(flow));
      const fast = incremental(partial, rw, true);
      const loc = locate(fast);
      assert.equal(read16(fast, loc.csumOff), read16(partial, loc.csumOff), 'field untouched');
      assert.equal(read16(fast, loc.csumOff), fold(pseudoOf(fast, loc)), 'still the pseudo-header sum');
      assertSamePacket(completePartial(fast), fullRecompute(build(flow), rw), 'completed after offload');
    }), { numRuns: RUNS });
  });

  it('partial checksums: address and port together (1000 runs)', () => {
    fc.assert(fc.property(flowAndRewrite('any'), ([flow, rw]) => {
      const fast = incremental(toPartial(build(flow)), rw, true);
      const loc = locate(fast);
      assert.equal(read16(fast, loc.csumOff), fold(pseudoOf(fast, loc)));
      assertSamePacket(completePartial(fast), fullRecompute(build(flow), rw), 'completed after offload');
    }), { numRuns: RUNS });
  });
});

describe('checksum: RFC 768 zero rules', () => {
  it('IPv4 UDP with checksum 0 stays 0 after any rewrite (1000 runs)', () => {
    const v4udp = flowArb.map((f) => ({ ...f, family: 4 as const, proto: 'udp' as const, src: f.src.slice(0, 4), dst: f.dst.slice(0, 4), ext: [] }));
    fc.assert(fc.property(v4udp.chain((f) => rewriteArb(4, 'any').map((rw): [Flow, Rewrite] => [f, rw])), ([flow, rw]) => {
      const original = build(flow, true);
      const fast = incremental(original, rw, false);
      const loc = locate(fast);
      assert.equal(read16(fast, loc.csumOff), 0);
      assert.equal(checksum(fast, 0, 20), 0, 'the IPv4 header checksum still follows the address');
      assert.ok(checksumsValid(fast));
    }), { numRuns: RUNS });
  });

  /** A port for the `side` rewrite of `packet` that makes the new UDP checksum compute to 0. */
  function portForZero(packet: Uint8Array, side: 'src' | 'dst'): number {
    const loc = locate(packet);
    const portOff = loc.l4Off + (side === 'src' ? 0 : 2);
    const hc = read16(packet, loc.csumOff);
    // New checksum ~fold(~HC + ~m + m') is 0 when fold(~HC + ~m + m') = 0xffff.
    const t = fold((~hc & 0xffff) + (~read16(packet, portOff) & 0xffff));
    return t === 0xffff ? 0xffff : 0xffff - t;
  }

  for (const family of [4, 6] as const) {
    it(`IPv${family} UDP: a computed 0 after a rewrite is written as 0xffff, and back again`, () => {
      const src = family === 4 ? '198.18.0.1' : '2001:db8::1';
      const dst = family === 4 ? '198.18.100.1' : '2001:db8::100';
      const original = buildUdp({ src, dst, srcPort: 53000, dstPort: 53, payload: 'hostlb' });
      const loc = locate(original);
      const newPort = portForZero(original, 'dst');
      const rw: Rewrite = { side: 'dst', addr: null, port: newPort };
      const slow = fullRecompute(original, rw);
      assert.equal(read16(slow, loc.csumOff), 0xffff, 'full recomputation sends 0 as 0xffff');
      const fast = incremental(original, rw, false);
      assert.equal(toHex(fast), toHex(slow));
      assert.ok(checksumsValid(fast));
      // applyComplete alone would leave 0x0000: "no checksum" over IPv4, a drop over IPv6.
      const naive = Uint8Array.from(original);
      applyComplete(naive, loc.csumOff, delta16(53, newPort));
      assert.equal(read16(naive, loc.csumOff), 0x0000);
      // From 0xffff, rewriting back gives the original checksum.
      const back = incremental(fast, { side: 'dst', addr: null, port: 53 }, false);
      assert.equal(toHex(back), toHex(original));
    });
  }

  it('applyUdpV4 leaves 0 alone even for a non-zero delta, and maps 0 to 0xffff', () => {
    const buf = fromHex('00 00');
    applyUdpV4(buf, 0, delta32(0xc6126401, 0xc6120107));
    assert.deepEqual(Array.from(buf), [0, 0]);
    // HC 0x0001, m 0 -> 1: ~(0xfffe + 0xffff + 0x0001) folds to ~0xffff = 0.
    const one = fromHex('00 01');
    applyUdpV4(one, 0, delta16(0, 1));
    assert.deepEqual(Array.from(one), [0xff, 0xff]);
    const tcpLike = fromHex('00 01');
    applyComplete(tcpLike, 0, delta16(0, 1));
    assert.deepEqual(Array.from(tcpLike), [0, 0]);
  });

  it('applyPartial adds without complementing', () => {
    const buf = fromHex('12 34');
    applyPartial(buf, 0, delta16(0x0001, 0x0002));
    assert.equal(read16(buf, 0), 0x1235);
    const carry = fromHex('ff ff');
    applyPartial(carry, 0, delta16(0x0000, 0x0001));
    assert.equal(read16(carry, 0), 0x0001, 'end-around carry');
  });
});
