// Golden-byte tests for the ICMP/ICMPv6 view (src/wire/icmp.ts): echo request
// and reply, destination unreachable quoting a TCP packet (IPv4 and IPv6),
// packet too big, truncated. Golden packets come from scapy 2.5.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { formatIpv4, formatIpv6 } from '../../src/wire/address.js';
import { pseudoSumV4, pseudoSumV6 } from '../../src/wire/checksum.js';
import {
  ICMPV4_DEST_UNREACHABLE, ICMPV4_ECHO_REPLY, ICMPV4_ECHO_REQUEST, ICMPV4_TIME_EXCEEDED, ICMPV6_DEST_UNREACHABLE,
  ICMPV6_ECHO_REPLY, ICMPV6_ECHO_REQUEST, ICMPV6_PACKET_TOO_BIG, ICMP_HEADER_LEN, IcmpPacket, isIcmpv4Error, isIcmpv6Error,
} from '../../src/wire/icmp.js';
import { IP_PROTO_ICMP, IP_PROTO_ICMPV6, IP_PROTO_TCP, Ipv4Packet } from '../../src/wire/ipv4.js';
import { Ipv6Packet } from '../../src/wire/ipv6.js';
import { TcpPacket } from '../../src/wire/tcp.js';
import { WireError } from '../../src/wire/wire-error.js';
import {
  buildIcmpEcho, buildIcmpError, buildTcp, checksumsValid, describe as describePacket, fromHex, toHex,
} from '../support/packet-builder.js';

// Echo request 198.18.0.1 -> 198.18.100.1, ident 0x1234, seq 1, "abcdefgh".
const ECHO_V4 = fromHex(`
  45 00 00 24 01 01 00 00 40 01 89 b1 c6 12 00 01
  c6 12 64 01 08 00 54 35 12 34 00 01 61 62 63 64
  65 66 67 68`);

// ICMPv6 echo request 2001:db8::1 -> 2001:db8::100, ident 0x1234, seq 1, "abcdefgh".
const ECHO_V6 = fromHex(`
  60 00 00 00 00 10 3a 40 20 01 0d b8 00 00 00 00
  00 00 00 00 00 00 00 01 20 01 0d b8 00 00 00 00
  00 00 00 00 00 00 01 00 80 00 7f 77 12 34 00 01
  61 62 63 64 65 66 67 68`);

// A router (198.18.0.254) reports host unreachable (type 3, code 1) for the
// SYN 198.18.0.1:40000 -> 198.18.100.1:8080, quoting all 40 bytes of it.
const UNREACH_V4 = fromHex(`
  45 00 00 44 02 02 00 00 40 01 eb 93 c6 12 00 fe
  c6 12 00 01 03 01 ed 40 00 00 00 00 45 00 00 28
  1c 46 40 00 40 06 2e 63 c6 12 00 01 c6 12 64 01
  9c 40 1f 90 3b 9a ca 07 00 00 00 00 50 02 fa f0
  03 58 00 00`);

// 2001:db8::fe reports address unreachable (type 1, code 3) for the SYN
// [2001:db8::1]:40000 -> [2001:db8::100]:8080, quoting all 60 bytes of it.
const UNREACH_V6 = fromHex(`
  60 00 00 00 00 44 3a 40 20 01 0d b8 00 00 00 00
  00 00 00 00 00 00 00 fe 20 01 0d b8 00 00 00 00
  00 00 00 00 00 00 00 01 01 03 3b d3 00 00 00 00
  60 00 00 00 00 14 06 40 20 01 0d b8 00 00 00 00
  00 00 00 00 00 00 00 01 20 01 0d b8 00 00 00 00
  00 00 00 00 00 00 01 00 9c 40 1f 90 3b 9a ca 07
  00 00 00 00 50 02 fa f0 97 0c 00 00`);

const SYN_V4 = UNREACH_V4.slice(28);
const SYN_V6 = UNREACH_V6.slice(48);

function copy(bytes: Uint8Array): Uint8Array {
  return Uint8Array.from(bytes);
}

describe('icmp: echo', () => {
  it('reads every field of a golden ICMPv4 echo request', () => {
    const ip = new Ipv4Packet();
    assert.equal(ip.wrap(ECHO_V4, 0, ECHO_V4.length), WireError.None);
    assert.equal(ip.protocol, IP_PROTO_ICMP);
    const icmp = new IcmpPacket();
    assert.equal(icmp.wrap(ECHO_V4, ip.payloadOffset, ip.payloadLen), WireError.None);
    assert.equal(icmp.type, ICMPV4_ECHO_REQUEST);
    assert.equal(icmp.code, 0);
    assert.equal(icmp.checksum, 0x5435);
    assert.equal(icmp.ident, 0x1234);
    assert.equal(icmp.seq, 1);
    assert.equal(icmp.restOfHeader, 0x12340001);
    assert.equal(icmp.quotedOffset, 28);
    assert.equal(icmp.quotedLen, 8);
    assert.equal(icmp.verifyChecksum(0), true, 'ICMPv4 has no pseudo-header');
    assert.equal(isIcmpv4Error(icmp.type), false);
  });

  it('the builder produces the golden echo request, and a valid reply', () => {
    const opts = { src: '198.18.0.1', dst: '198.18.100.1', ident: 0x1234, seq: 1, payload: 'abcdefgh', ipIdent: 0x0101 } as const;
    assert.equal(toHex(buildIcmpEcho(opts)), toHex(ECHO_V4));
    const reply = buildIcmpEcho({ ...opts, src: opts.dst, dst: opts.src, type: 'reply' });
    assert.equal(reply[20], ICMPV4_ECHO_REPLY);
    assert.equal(checksumsValid(reply), true);
    const d = describePacket(reply);
    assert.deepEqual(d.icmp, { type: ICMPV4_ECHO_REPLY, code: 0, ident: 0x1234, seq: 1 });
    assert.equal(d.srcPort, 0);
  });

  it('setType and fillChecksum turn the request into the builder reply', () => {
    const buf = copy(ECHO_V4);
    const icmp = new IcmpPacket();
    assert.equal(icmp.wrap(buf, 20, 16), WireError.None);
    icmp.setType(ICMPV4_ECHO_REPLY);
    icmp.setCode(0);
    assert.equal(icmp.verifyChecksum(0), false);
    icmp.fillChecksum(0);
    assert.equal(icmp.verifyChecksum(0), true);
    const reply = buildIcmpEcho({ src: '198.18.0.1', dst: '198.18.100.1', ident: 0x1234, seq: 1, payload: 'abcdefgh', ipIdent: 0x0101, type: 'reply' });
    assert.equal(toHex(buf), toHex(reply));
  });

  it('reads a golden ICMPv6 echo request; its checksum needs the pseudo-header', () => {
    const ip = new Ipv6Packet();
    assert.equal(ip.wrap(ECHO_V6, 0, ECHO_V6.length), WireError.None);
    assert.equal(ip.transportProtocol, IP_PROTO_ICMPV6);
    const icmp = new IcmpPacket();
    assert.equal(icmp.wrap(ECHO_V6, ip.transportOffset, ip.transportLen), WireError.None);
    assert.equal(icmp.type, ICMPV6_ECHO_REQUEST);
    assert.equal(icmp.checksum, 0x7f77);
    assert.equal(icmp.ident, 0x1234);
    assert.equal(icmp.seq, 1);
    assert.equal(icmp.verifyChecksum(pseudoSumV6(ECHO_V6, 8, 24, IP_PROTO_ICMPV6, 16)), true);
    assert.equal(icmp.verifyChecksum(0), false, 'RFC 4443 §2.3: the pseudo-header is part of the sum');
    assert.equal(isIcmpv6Error(icmp.type), false);
    assert.equal(toHex(buildIcmpEcho({ src: '2001:db8::1', dst: '2001:db8::100', ident: 0x1234, seq: 1, payload: 'abcdefgh' })), toHex(ECHO_V6));
    const reply = buildIcmpEcho({ src: '2001:db8::100', dst: '2001:db8::1', ident: 0x1234, seq: 1, type: 'reply' });
    assert.equal(reply[40], ICMPV6_ECHO_REPLY);
    assert.equal(checksumsValid(reply), true);
  });
});

describe('icmp: errors quoting a TCP packet', () => {
  it('reads an ICMPv4 host unreachable and the SYN it quotes', () => {
    const ip = new Ipv4Packet();
    assert.equal(ip.wrap(UNREACH_V4, 0, UNREACH_V4.length), WireError.None);
    assert.equal(formatIpv4(ip.srcAddr), '198.18.0.254');
    const icmp = new IcmpPacket();
    assert.equal(icmp.wrap(UNREACH_V4, ip.payloadOffset, ip.payloadLen), WireError.None);
    assert.equal(icmp.type, ICMPV4_DEST_UNREACHABLE);
    assert.equal(icmp.code, 1);
    assert.equal(icmp.checksum, 0xed40);
    assert.equal(icmp.restOfHeader, 0);
    assert.equal(icmp.verifyChecksum(0), true);
    assert.equal(isIcmpv4Error(icmp.type), true);
    assert.equal(icmp.quotedOffset, 28);
    assert.equal(icmp.quotedLen, 40);

    const quoted = new Ipv4Packet();
    assert.equal(quoted.wrap(UNREACH_V4, icmp.quotedOffset, icmp.quotedLen), WireError.None);
    assert.equal(quoted.protocol, IP_PROTO_TCP);
    assert.equal(formatIpv4(quoted.srcAddr), '198.18.0.1');
    assert.equal(formatIpv4(quoted.dstAddr), '198.18.100.1');
    assert.equal(quoted.verifyChecksum(), true);
    const tcp = new TcpPacket();
    assert.equal(tcp.wrap(UNREACH_V4, quoted.payloadOffset, quoted.payloadLen), WireError.None);
    assert.equal(tcp.srcPort, 40000);
    assert.equal(tcp.dstPort, 8080);
    assert.equal(tcp.seqNumber, 0x3b9aca07);
    assert.equal(tcp.verifyChecksum(pseudoSumV4(quoted.srcAddr, quoted.dstAddr, IP_PROTO_TCP, 20)), true);
    assert.equal(checksumsValid(UNREACH_V4, icmp.quotedOffset, icmp.quotedLen), true);
  });

  it('the builder produces the golden unreachable around a built SYN', () => {
    const syn = buildTcp({
      src: '198.18.0.1', dst: '198.18.100.1', srcPort: 40000, dstPort: 8080,
      seq: 0x3b9aca07, window: 64240, ident: 0x1c46, dontFrag: true,
    });
    assert.equal(toHex(syn), toHex(SYN_V4));
    const built = buildIcmpError({ src: '198.18.0.254', dst: '198.18.0.1', kind: 'unreachable', code: 1, quote: syn, ipIdent: 0x0202 });
    assert.equal(toHex(built), toHex(UNREACH_V4));
  });

  it('an RFC 792 minimal quote (IP header + 8 bytes) is Truncated for the full views', () => {
    // The quoted total length describes the original datagram, not the quote,
    // so a dispatcher that translates ICMP errors must read such quotes itself.
    const minimal = buildIcmpError({ src: '198.18.0.254', dst: '198.18.0.1', code: 1, quote: SYN_V4.subarray(0, 28) });
    assert.equal(checksumsValid(minimal), true);
    const icmp = new IcmpPacket();
    assert.equal(icmp.wrap(minimal, 20, minimal.length - 20), WireError.None);
    assert.equal(icmp.quotedLen, 28);
    assert.equal(new Ipv4Packet().wrap(minimal, icmp.quotedOffset, icmp.quotedLen), WireError.Truncated);
    assert.equal(new TcpPacket().wrap(minimal, icmp.quotedOffset + 20, 8), WireError.Truncated);
  });

  it('reads an ICMPv6 address unreachable and the SYN it quotes', () => {
    const ip = new Ipv6Packet();
    assert.equal(ip.wrap(UNREACH_V6, 0, UNREACH_V6.length), WireError.None);
    const icmp = new IcmpPacket();
    assert.equal(icmp.wrap(UNREACH_V6, ip.transportOffset, ip.transportLen), WireError.None);
    assert.equal(icmp.type, ICMPV6_DEST_UNREACHABLE);
    assert.equal(icmp.code, 3);
    assert.equal(icmp.checksum, 0x3bd3);
    assert.equal(icmp.verifyChecksum(pseudoSumV6(UNREACH_V6, 8, 24, IP_PROTO_ICMPV6, 68)), true);
    assert.equal(isIcmpv6Error(icmp.type), true);
    assert.equal(icmp.quotedLen, 60);

    const quoted = new Ipv6Packet();
    assert.equal(quoted.wrap(UNREACH_V6, icmp.quotedOffset, icmp.quotedLen), WireError.None);
    assert.equal(formatIpv6(UNREACH_V6, quoted.srcAddrOffset), '2001:db8::1');
    assert.equal(formatIpv6(UNREACH_V6, quoted.dstAddrOffset), '2001:db8::100');
    assert.equal(quoted.transportProtocol, IP_PROTO_TCP);
    const tcp = new TcpPacket();
    assert.equal(tcp.wrap(UNREACH_V6, quoted.transportOffset, quoted.transportLen), WireError.None);
    assert.equal(tcp.srcPort, 40000);
    assert.equal(tcp.dstPort, 8080);
    assert.equal(checksumsValid(UNREACH_V6, icmp.quotedOffset, icmp.quotedLen), true);

    const built = buildIcmpError({ src: '2001:db8::fe', dst: '2001:db8::1', code: 3, quote: SYN_V6 });
    assert.equal(toHex(built), toHex(UNREACH_V6));
  });

  it('packet too big carries the MTU: low 16 bits over IPv4 (RFC 1191), 32 bits over IPv6', () => {
    const icmp = new IcmpPacket();
    const v4 = buildIcmpError({ src: '198.18.0.254', dst: '198.18.0.1', kind: 'too-big', mtu: 1400, quote: SYN_V4 });
    assert.equal(icmp.wrap(v4, 20, v4.length - 20), WireError.None);
    assert.equal(icmp.type, ICMPV4_DEST_UNREACHABLE);
    assert.equal(icmp.code, 4);
    assert.equal(icmp.restOfHeader, 1400);
    assert.equal(icmp.seq, 1400, 'the next-hop MTU shares its bytes with the echo sequence field');
    assert.equal(checksumsValid(v4), true);
    const v6 = buildIcmpError({ src: '2001:db8::fe', dst: '2001:db8::1', kind: 'too-big', mtu: 1280, quote: SYN_V6 });
    assert.equal(icmp.wrap(v6, 40, v6.length - 40), WireError.None);
    assert.equal(icmp.type, ICMPV6_PACKET_TOO_BIG);
    assert.equal(icmp.restOfHeader, 1280);
    assert.equal(checksumsValid(v6), true);
    const ttl = buildIcmpError({ src: '198.18.0.254', dst: '198.18.0.1', kind: 'time-exceeded', quote: SYN_V4 });
    assert.equal(ttl[20], ICMPV4_TIME_EXCEEDED);
    assert.equal(isIcmpv4Error(ttl[20]), true);
  });
});

describe('icmp: truncated and overlong', () => {
  it('every length below 8 is Truncated; 8 is a bare header', () => {
    const icmp = new IcmpPacket();
    for (let len = 0; len < ICMP_HEADER_LEN; len++) {
      assert.equal(icmp.wrap(ECHO_V4, 20, len), WireError.Truncated, `len ${len}`);
    }
    assert.equal(icmp.wrap(ECHO_V4, 20, 8), WireError.None);
    assert.equal(icmp.quotedLen, 0);
    assert.equal(icmp.wrap(ECHO_V4, 20, 17), WireError.Truncated, 'past the end of the buffer');
    assert.equal(icmp.wrap(ECHO_V4, 30, 8), WireError.Truncated);
  });

  it('link padding after the IP total length stays out of the ICMP message', () => {
    const buf = new Uint8Array(ECHO_V4.length + 10).fill(0x99);
    buf.set(ECHO_V4);
    const ip = new Ipv4Packet();
    assert.equal(ip.wrap(buf, 0, buf.length), WireError.None);
    const icmp = new IcmpPacket();
    assert.equal(icmp.wrap(buf, ip.payloadOffset, ip.payloadLen), WireError.None);
    assert.equal(icmp.quotedLen, 8);
    assert.equal(icmp.verifyChecksum(0), true);
    assert.equal(checksumsValid(buf), true);
  });

  it('classifies error types', () => {
    for (const type of [3, 4, 5, 11, 12]) assert.equal(isIcmpv4Error(type), true, `v4 type ${type}`);
    for (const type of [0, 8, 13, 14]) assert.equal(isIcmpv4Error(type), false, `v4 type ${type}`);
    for (const type of [1, 2, 3, 4, 127]) assert.equal(isIcmpv6Error(type), true, `v6 type ${type}`);
    for (const type of [128, 129, 133, 255]) assert.equal(isIcmpv6Error(type), false, `v6 type ${type}`);
  });
});
