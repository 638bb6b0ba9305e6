// Property tests for the packet views' contract (src/wire): wrap() never throws
// on any bytes, offset or length; after WireError.None every accessor returns a
// number or boolean in range, and no read or write leaves the window
// `buf[off, off + len)`. Buffers are wrapped in a Proxy that records every index
// touched, so a read past the end (which a Uint8Array answers with undefined,
// silently turned into 0 by the bit operators) fails the test.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';

import { formatIpv6 } from '../../src/wire/address.js';
import { IcmpPacket } from '../../src/wire/icmp.js';
import { IP_PROTO_TCP, IP_PROTO_UDP, Ipv4Packet } from '../../src/wire/ipv4.js';
import { Ipv6Packet } from '../../src/wire/ipv6.js';
import { TcpPacket } from '../../src/wire/tcp.js';
import { UdpPacket } from '../../src/wire/udp.js';
import { WIRE_ERROR_NAMES, WireError } from '../../src/wire/wire-error.js';
import { ExtensionHeader, buildIcmpEcho, buildTcp, buildUdp, checksumsValid } from '../support/packet-builder.js';

const RUNS = 1000;

interface Tracked {
  buf: Uint8Array;
  /** Every integer index read or written since the last reset. */
  touched: number[];
}

function track(bytes: Uint8Array): Tracked {
  const touched: number[] = [];
  const index = (prop: string | symbol): number | null => {
    if (typeof prop !== 'string') return null;
    const n = Number(prop);
    return Number.isInteger(n) && (String(n) === prop || prop === '-0') ? n : null;
  };
  const buf = new Proxy(bytes, {
    get(target, prop) {
      const i = index(prop);
      if (i !== null) touched.push(i);
      const value: unknown = Reflect.get(target, prop, target);
      return typeof value === 'function' ? (value as (...args: unknown[]) => unknown).bind(target) : value;
    },
    set(target, prop, value) {
      const i = index(prop);
      if (i !== null) touched.push(i);
      return Reflect.set(target, prop, value, target);
    },
  });
  return { buf, touched };
}

/** Asserts that every index touched lies in the window and in the buffer, then forgets them. */
function assertInWindow(t: Tracked, length: number, off: number, len: number, what: string): void {
  const lo = Math.max(0, off);
  const hi = Math.min(length, off + len);
  for (const i of t.touched) {
    if (i < lo || i >= hi) assert.fail(`${what}: touched index ${i} outside [${lo}, ${hi}) (off ${off}, len ${len}, buffer ${length})`);
  }
  t.touched.length = 0;
}

function isU(value: unknown, bits: 8 | 16 | 32): boolean {
  return typeof value === 'number' && Number.isInteger(value) && value >= 0 && value < 2 ** bits;
}

function assertU(value: unknown, bits: 8 | 16 | 32, what: string): void {
  if (!isU(value, bits)) assert.fail(`${what} = ${String(value)} is not a u${bits}`);
}

function assertBool(value: unknown, what: string): void {
  if (typeof value !== 'boolean') assert.fail(`${what} = ${String(value)} is not a boolean`);
}

function assertInt(value: unknown, min: number, max: number, what: string): void {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
    assert.fail(`${what} = ${String(value)} is not an integer in [${min}, ${max}]`);
  }
}

// Reusable views, as the packet path uses them: state from one wrap must not leak into the next.
const ipv4 = new Ipv4Packet();
const ipv6 = new Ipv6Packet();
const tcp = new TcpPacket();
const udp = new UdpPacket();
const icmp = new IcmpPacket();

/** Wraps `bytes[off, off + len)` with every view and checks the contract. Returns the codes by view name. */
function checkAllViews(bytes: Uint8Array, off: number, len: number, pseudo: number): Record<string, WireError> {
  const codes: Record<string, WireError> = {};
  const end = off + len;

  {
    const t = track(Uint8Array.from(bytes));
    const err = ipv4.wrap(t.buf, off, len);
    codes.ipv4 = err;
    assertInt(err, 0, WIRE_ERROR_NAMES.length - 1, 'ipv4.wrap');
    assertInWindow(t, bytes.length, off, len, `ipv4.wrap -> ${WIRE_ERROR_NAMES[err]}`);
    if (err === WireError.None) {
      assertInt(ipv4.headerLen, 20, 60, 'ipv4.headerLen');
      assertU(ipv4.dscpEcn, 8, 'ipv4.dscpEcn');
      assertInt(ipv4.totalLen, ipv4.headerLen, len, 'ipv4.totalLen');
      assertU(ipv4.ident, 16, 'ipv4.ident');
      assertBool(ipv4.dontFrag, 'ipv4.dontFrag');
      assertBool(ipv4.moreFrags, 'ipv4.moreFrags');
      assertBool(ipv4.isFragment, 'ipv4.isFragment');
      assertInt(ipv4.fragOffset, 0, 8191 * 8, 'ipv4.fragOffset');
      assert.equal(ipv4.fragOffset % 8, 0);
      assertU(ipv4.ttl, 8, 'ipv4.ttl');
      assertU(ipv4.protocol, 8, 'ipv4.protocol');
      assertU(ipv4.checksum, 16, 'ipv4.checksum');
      assertU(ipv4.srcAddr, 32, 'ipv4.srcAddr');
      assertU(ipv4.dstAddr, 32, 'ipv4.dstAddr');
      assert.equal(ipv4.payloadOffset, off + ipv4.headerLen);
      assertInt(ipv4.payloadLen, 0, len - ipv4.headerLen, 'ipv4.payloadLen');
      assertBool(ipv4.verifyChecksum(), 'ipv4.verifyChecksum');
      assertInWindow(t, bytes.length, off, len, 'ipv4 accessors');
      ipv4.setTtl(ipv4.ttl);
      ipv4.setSrcAddr(ipv4.srcAddr);
      ipv4.setDstAddr(ipv4.dstAddr);
      ipv4.fillChecksum();
      assert.equal(ipv4.verifyChecksum(), true, 'ipv4 verifies after fillChecksum');
      assertInWindow(t, bytes.length, off, len, 'ipv4 setters');
    }
  }

  {
    const t = track(Uint8Array.from(bytes));
    const err = ipv6.wrap(t.buf, off, len);
    codes.ipv6 = err;
    assertInt(err, 0, WIRE_ERROR_NAMES.length - 1, 'ipv6.wrap');
    assertInWindow(t, bytes.length, off, len, `ipv6.wrap -> ${WIRE_ERROR_NAMES[err]}`);
    if (err === WireError.None) {
      assertU(ipv6.trafficClass, 8, 'ipv6.trafficClass');
      assertInt(ipv6.flowLabel, 0, 0xfffff, 'ipv6.flowLabel');
      assertInt(ipv6.payloadLen, 0, len - 40, 'ipv6.payloadLen');
      assertU(ipv6.nextHeader, 8, 'ipv6.nextHeader');
      assertU(ipv6.hopLimit, 8, 'ipv6.hopLimit');
      assert.equal(ipv6.srcAddrOffset, off + 8);
      assert.equal(ipv6.dstAddrOffset, off + 24);
      assertU(ipv6.transportProtocol, 8, 'ipv6.transportProtocol');
      assertInt(ipv6.transportOffset, off + 40, off + 40 + ipv6.payloadLen, 'ipv6.transportOffset');
      assertInt(ipv6.transportLen, 0, end - ipv6.transportOffset, 'ipv6.transportLen');
      assert.equal(ipv6.transportOffset + ipv6.transportLen, off + 40 + ipv6.payloadLen);
      assertInt(ipv6.nextHeaderFieldOffset, off, ipv6.transportOffset - 1, 'ipv6.nextHeaderFieldOffset');
      assertBool(ipv6.isFragment, 'ipv6.isFragment');
      if (ipv6.isFragment) assertInt(ipv6.fragmentHeaderOffset, off + 40, ipv6.transportOffset - 8, 'ipv6.fragmentHeaderOffset');
      else assert.equal(ipv6.fragmentHeaderOffset, -1);
      assertInt(ipv6.fragOffset, 0, 0xfff8, 'ipv6.fragOffset');
      assert.equal(ipv6.fragOffset % 8, 0);
      assertBool(ipv6.moreFrags, 'ipv6.moreFrags');
      assertU(ipv6.fragIdent, 32, 'ipv6.fragIdent');
      assert.equal(typeof formatIpv6(t.buf, ipv6.srcAddrOffset), 'string');
      assertInWindow(t, bytes.length, off, len, 'ipv6 accessors');
      ipv6.setHopLimit(ipv6.hopLimit);
      ipv6.setSrcAddr(t.buf, ipv6.dstAddrOffset);
      assertInWindow(t, bytes.length, off, len, 'ipv6 setters');
    }
  }

  {
    const t = track(Uint8Array.from(bytes));
    const err = tcp.wrap(t.buf, off, len);
    codes.tcp = err;
    assertInt(err, 0, WIRE_ERROR_NAMES.length - 1, 'tcp.wrap');
    assertInWindow(t, bytes.length, off, len, `tcp.wrap -> ${WIRE_ERROR_NAMES[err]}`);
    if (err === WireError.None) {
      assertU(tcp.srcPort, 16, 'tcp.srcPort');
      assertU(tcp.dstPort, 16, 'tcp.dstPort');
      assertU(tcp.seqNumber, 32, 'tcp.seqNumber');
      assertU(tcp.ackNumber, 32, 'tcp.ackNumber');
      assertInt(tcp.headerLen, 20, Math.min(60, len), 'tcp.headerLen');
      assertU(tcp.flags, 8, 'tcp.flags');
      assertU(tcp.window, 16, 'tcp.window');
      assertU(tcp.checksum, 16, 'tcp.checksum');
      assertU(tcp.urgentPointer, 16, 'tcp.urgentPointer');
      assert.equal(tcp.payloadOffset, off + tcp.headerLen);
      assertInt(tcp.payloadLen, 0, len - 20, 'tcp.payloadLen');
      assert.equal(tcp.payloadOffset + tcp.payloadLen, end);
      assertBool(tcp.verifyChecksum(pseudo), 'tcp.verifyChecksum');
      assertInWindow(t, bytes.length, off, len, 'tcp accessors');
      tcp.setSrcPort(tcp.dstPort);
      tcp.setDstPort(tcp.srcPort);
      tcp.setSeqNumber(tcp.ackNumber);
      tcp.setAckNumber(tcp.seqNumber);
      tcp.setFlags(tcp.flags);
      tcp.fillChecksum(pseudo);
      assert.equal(tcp.verifyChecksum(pseudo), true, 'tcp verifies after fillChecksum');
      assertInWindow(t, bytes.length, off, len, 'tcp setters');
    }
  }

  {
    const t = track(Uint8Array.from(bytes));
    const err = udp.wrap(t.buf, off, len);
    codes.udp = err;
    assertInt(err, 0, WIRE_ERROR_NAMES.length - 1, 'udp.wrap');
    assertInWindow(t, bytes.length, off, len, `udp.wrap -> ${WIRE_ERROR_NAMES[err]}`);
    if (err === WireError.None) {
      assertU(udp.srcPort, 16, 'udp.srcPort');
      assertU(udp.dstPort, 16, 'udp.dstPort');
      assertInt(udp.length, 8, len, 'udp.length');
      assertU(udp.checksum, 16, 'udp.checksum');
      assert.equal(udp.payloadOffset, off + 8);
      assertInt(udp.payloadLen, 0, len - 8, 'udp.payloadLen');
      assertBool(udp.verifyChecksum(pseudo), 'udp.verifyChecksum');
      assertInWindow(t, bytes.length, off, len, 'udp accessors');
      udp.setSrcPort(udp.dstPort);
      udp.setDstPort(udp.srcPort);
      udp.fillChecksum(pseudo);
      assert.notEqual(udp.checksum, 0, 'a filled UDP checksum is never 0');
      assert.equal(udp.verifyChecksum(pseudo), true, 'udp verifies after fillChecksum');
      assertInWindow(t, bytes.length, off, len, 'udp setters');
    }
  }

  {
    const t = track(Uint8Array.from(bytes));
    const err = icmp.wrap(t.buf, off, len);
    codes.icmp = err;
    assertInt(err, 0, WIRE_ERROR_NAMES.length - 1, 'icmp.wrap');
    assertInWindow(t, bytes.length, off, len, `icmp.wrap -> ${WIRE_ERROR_NAMES[err]}`);
    if (err === WireError.None) {
      assertU(icmp.type, 8, 'icmp.type');
      assertU(icmp.code, 8, 'icmp.code');
      assertU(icmp.checksum, 16, 'icmp.checksum');
      assertU(icmp.ident, 16, 'icmp.ident');
      assertU(icmp.seq, 16, 'icmp.seq');
      assertU(icmp.restOfHeader, 32, 'icmp.restOfHeader');
      assert.equal(icmp.quotedOffset, off + 8);
      assertInt(icmp.quotedLen, 0, len - 8, 'icmp.quotedLen');
      assertBool(icmp.verifyChecksum(pseudo), 'icmp.verifyChecksum');
      assertInWindow(t, bytes.length, off, len, 'icmp accessors');
      icmp.setType(icmp.code);
      icmp.setCode(icmp.type);
      icmp.fillChecksum(pseudo);
      assert.equal(icmp.verifyChecksum(pseudo), true, 'icmp verifies after fillChecksum');
      assertInWindow(t, bytes.length, off, len, 'icmp setters');
    }
  }
  return codes;
}

/** Bytes plus an offset and length that may start before, inside or past the buffer and run past its end. */
const windowed = (bytes: fc.Arbitrary<Uint8Array>): fc.Arbitrary<[Uint8Array, number, number, number]> =>
  bytes.chain((b) => fc.tuple(
    fc.constant(b),
    fc.oneof(fc.constant(0), fc.integer({ min: -8, max: b.length + 8 })),
    fc.oneof(fc.constant(b.length), fc.integer({ min: -8, max: b.length + 24 })),
    fc.integer({ min: 0, max: 0x7ffff }),
  ));

const extChain = fc.array(fc.constantFrom<ExtensionHeader>('hop-by-hop', 'dest-opts', 'routing', 'fragment'), { maxLength: 10 });

/** A valid packet of any kind the builder makes, before mutation. */
const validPacket: fc.Arbitrary<Uint8Array> = fc.record({
  v6: fc.boolean(),
  kind: fc.constantFrom('tcp', 'udp', 'icmp'),
  a: fc.uint8Array({ minLength: 16, maxLength: 16 }),
  b: fc.uint8Array({ minLength: 16, maxLength: 16 }),
  ports: fc.tuple(fc.integer({ min: 0, max: 0xffff }), fc.integer({ min: 0, max: 0xffff })),
  payload: fc.uint8Array({ maxLength: 120 }),
  ext: extChain,
  flags: fc.integer({ min: 0, max: 0xff }),
}).map(({ v6, kind, a, b, ports, payload, ext, flags }) => {
  const src = v6 ? formatIpv6(a, 0) : `${a[0]}.${a[1]}.${a[2]}.${a[3]}`;
  const dst = v6 ? formatIpv6(b, 0) : `${b[0]}.${b[1]}.${b[2]}.${b[3]}`;
  const ip = { src, dst, extensionHeaders: v6 ? ext : [] };
  if (kind === 'tcp') return buildTcp({ ...ip, srcPort: ports[0], dstPort: ports[1], flags, payload });
  if (kind === 'udp') return buildUdp({ ...ip, srcPort: ports[0], dstPort: ports[1], payload });
  return buildIcmpEcho({ ...ip, ident: ports[0], seq: ports[1], payload });
});

/** A valid packet with some bytes changed, cut short or extended. */
const mutatedPacket: fc.Arbitrary<Uint8Array> = fc.tuple(
  validPacket,
  fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 0xff })), { maxLength: 6 }),
  fc.oneof(fc.constant(null), fc.nat()),
  fc.uint8Array({ maxLength: 16 }),
).map(([packet, edits, cut, tail]) => {
  let out = Uint8Array.from(packet);
  for (const [at, value] of edits) out[at % out.length] = value;
  if (cut !== null) out = out.slice(0, cut % (out.length + 1));
  if (tail.length > 0) {
    const longer = new Uint8Array(out.length + tail.length);
    longer.set(out);
    longer.set(tail, out.length);
    out = longer;
  }
  return out;
});

describe('fuzz: views never throw and never leave their window', () => {
  it('arbitrary bytes (0..200) at arbitrary offsets and lengths (1000 runs)', () => {
    fc.assert(fc.property(windowed(fc.uint8Array({ maxLength: 200 })), ([bytes, off, len, pseudo]) => {
      checkAllViews(bytes, off, len, pseudo);
    }), { numRuns: RUNS });
  });

  it('arbitrary bytes that start like IPv4 or IPv6 (1000 runs)', () => {
    // Random bytes rarely pass the version check; force the first nibble so the deeper paths run.
    const ipish = fc.tuple(fc.uint8Array({ minLength: 1, maxLength: 200 }), fc.constantFrom(0x45, 0x46, 0x4f, 0x60, 0x6f))
      .map(([b, first]) => { const out = Uint8Array.from(b); out[0] = first; return out; });
    fc.assert(fc.property(windowed(ipish), ([bytes, off, len, pseudo]) => {
      checkAllViews(bytes, off, len, pseudo);
      checkAllViews(bytes, 0, bytes.length, pseudo);
    }), { numRuns: RUNS });
  });

  it('mutated valid packets, wrapped whole and at arbitrary windows (1000 runs)', () => {
    fc.assert(fc.property(windowed(mutatedPacket), ([bytes, off, len, pseudo]) => {
      checkAllViews(bytes, 0, bytes.length, pseudo);
      checkAllViews(bytes, off, len, pseudo);
      assertBool(checksumsValid(bytes), 'checksumsValid');
    }), { numRuns: RUNS });
  });

  it('mutated valid packets: the transport view over the window the IP view reports (1000 runs)', () => {
    // This is the dispatcher's order: IP first, then the transport header where the IP view says.
    fc.assert(fc.property(mutatedPacket, fc.integer({ min: 0, max: 0x7ffff }), (bytes, pseudo) => {
      const v4 = new Ipv4Packet();
      const v6 = new Ipv6Packet();
      let at = -1;
      let len = 0;
      if (v4.wrap(bytes, 0, bytes.length) === WireError.None) {
        at = v4.payloadOffset;
        len = v4.payloadLen;
      } else if (v6.wrap(bytes, 0, bytes.length) === WireError.None) {
        at = v6.transportOffset;
        len = v6.transportLen;
      }
      if (at < 0) return;
      assert.ok(at + len <= bytes.length, 'the transport window lies inside the buffer');
      const codes = checkAllViews(bytes, at, len, pseudo);
      // A transport header cut from the IP window is refused, not read past.
      if (len < 20) assert.equal(codes.tcp, WireError.Truncated);
      if (len < 8) assert.equal(codes.udp, WireError.Truncated);
    }), { numRuns: RUNS });
  });

  it('valid packets always parse through the IP view to their transport header (1000 runs)', () => {
    fc.assert(fc.property(validPacket, (bytes) => {
      const v4 = new Ipv4Packet();
      const v6 = new Ipv6Packet();
      if (bytes[0] >>> 4 === 4) {
        assert.equal(v4.wrap(bytes, 0, bytes.length), WireError.None);
        if (v4.protocol === IP_PROTO_TCP) assert.equal(new TcpPacket().wrap(bytes, v4.payloadOffset, v4.payloadLen), WireError.None);
        if (v4.protocol === IP_PROTO_UDP) assert.equal(new UdpPacket().wrap(bytes, v4.payloadOffset, v4.payloadLen), WireError.None);
        assert.ok(checksumsValid(bytes));
        return;
      }
      const err = v6.wrap(bytes, 0, bytes.length);
      // The builder writes chains in any order; the view refuses the invalid ones by name.
      if (err !== WireError.None) {
        assert.equal(err, WireError.BadExtensionHeader);
        return;
      }
      if (v6.transportProtocol === IP_PROTO_TCP) assert.equal(new TcpPacket().wrap(bytes, v6.transportOffset, v6.transportLen), WireError.None);
      if (v6.transportProtocol === IP_PROTO_UDP) assert.equal(new UdpPacket().wrap(bytes, v6.transportOffset, v6.transportLen), WireError.None);
      assert.ok(checksumsValid(bytes));
    }), { numRuns: RUNS });
  });
});
