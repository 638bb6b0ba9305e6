// Golden-byte tests for the IPv6 view (src/wire/ipv6.ts) and its walk along the
// extension-header chain: deconstruct, construct, builder output, truncated,
// overlong, bad version, chain limits, fragment fields and AH length units.
// Golden packets come from scapy 2.5, written out literally.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { formatIpv6, parseIp } from '../../src/wire/address.js';
import { IP_PROTO_TCP, IP_PROTO_UDP } from '../../src/wire/ipv4.js';
import {
  IPV6_EXT_AUTH, IPV6_EXT_DEST_OPTS, IPV6_EXT_FRAGMENT, IPV6_HEADER_LEN, IPV6_MAX_EXT_HEADERS, IPV6_NO_NEXT_HEADER,
  Ipv6Packet, emitIpv6,
} from '../../src/wire/ipv6.js';
import { TcpPacket } from '../../src/wire/tcp.js';
import { UdpPacket } from '../../src/wire/udp.js';
import { WireError } from '../../src/wire/wire-error.js';
import { ExtensionHeader, buildTcp, buildUdp, checksumsValid, describe as describePacket, fromHex, toHex } from '../support/packet-builder.js';

// TCP PSH+ACK [2001:db8::1]:40000 -> [2001:db8::100]:8080 carrying "hello".
const TCP_V6 = fromHex(`
  60 00 00 00 00 19 06 40 20 01 0d b8 00 00 00 00
  00 00 00 00 00 00 00 01 20 01 0d b8 00 00 00 00
  00 00 00 00 00 00 01 00 9c 40 1f 90 3b 9a ca 08
  11 22 33 44 50 18 01 f6 07 b3 00 00 68 65 6c 6c
  6f`);

// SYN behind hop-by-hop (PadN), destination options (PadN) and an atomic
// fragment header (offset 0, M 0, ident 0xdeadbeef).
const SYN_V6_HBH_DEST_FRAG = fromHex(`
  60 00 00 00 00 2c 00 40 20 01 0d b8 00 00 00 00
  00 00 00 00 00 00 00 01 20 01 0d b8 00 00 00 00
  00 00 00 00 00 00 01 00 3c 00 01 04 00 00 00 00
  2c 00 01 04 00 00 00 00 06 00 00 00 de ad be ef
  9c 40 1f 90 3b 9a ca 07 00 00 00 00 50 02 fa f0
  97 0c 00 00`);

// UDP "ping!" behind hop-by-hop, routing (type 0, segments left 0) and destination options.
const UDP_V6_HBH_ROUTING_DEST = fromHex(`
  60 00 00 00 00 25 00 40 20 01 0d b8 00 00 00 00
  00 00 00 00 00 00 00 01 20 01 0d b8 00 00 00 00
  00 00 00 00 00 00 01 00 2b 00 01 04 00 00 00 00
  3c 00 00 00 00 00 00 00 11 00 01 04 00 00 00 00
  14 e9 00 35 00 0d 8e 72 70 69 6e 67 21`);

// A middle fragment: offset 1448 (181 units), more fragments, ident 0x01020304, 16 bytes of data.
const FRAGMENT_V6 = fromHex(`
  60 00 00 00 00 18 2c 40 20 01 0d b8 00 00 00 00
  00 00 00 00 00 00 00 01 20 01 0d b8 00 00 00 00
  00 00 00 00 00 00 01 00 06 00 05 a9 01 02 03 04
  00 01 02 03 04 05 06 07 08 09 0a 0b 0c 0d 0e 0f`);

// SYN behind an authentication header whose length field is 4: (4 + 2) * 4 = 24
// bytes (RFC 4302 §2.2), with a 12-byte ICV. Reading it in 8-octet units would give 40.
const SYN_V6_AH = fromHex(`
  60 00 00 00 00 2c 33 40 20 01 0d b8 00 00 00 00
  00 00 00 00 00 00 00 01 20 01 0d b8 00 00 00 00
  00 00 00 00 00 00 01 00 06 04 00 00 00 00 10 01
  00 00 00 01 aa aa aa aa aa aa aa aa aa aa aa aa
  9c 40 1f 90 3b 9a ca 07 00 00 00 00 50 02 fa f0
  97 0c 00 00`);

const V6 = { src: '2001:db8::1', dst: '2001:db8::100' } as const;

function copy(bytes: Uint8Array): Uint8Array {
  return Uint8Array.from(bytes);
}

describe('ipv6: deconstruct', () => {
  it('reads every field of a golden TCP packet', () => {
    const ip = new Ipv6Packet();
    assert.equal(ip.wrap(TCP_V6, 0, TCP_V6.length), WireError.None);
    assert.equal(ip.trafficClass, 0);
    assert.equal(ip.flowLabel, 0);
    assert.equal(ip.payloadLen, 25);
    assert.equal(ip.nextHeader, IP_PROTO_TCP);
    assert.equal(ip.hopLimit, 64);
    assert.equal(ip.srcAddrOffset, 8);
    assert.equal(ip.dstAddrOffset, 24);
    assert.equal(formatIpv6(TCP_V6, ip.srcAddrOffset), '2001:db8::1');
    assert.equal(formatIpv6(TCP_V6, ip.dstAddrOffset), '2001:db8::100');
    assert.equal(ip.transportProtocol, IP_PROTO_TCP);
    assert.equal(ip.transportOffset, 40);
    assert.equal(ip.transportLen, 25);
    assert.equal(ip.nextHeaderFieldOffset, 6);
    assert.equal(ip.fragmentHeaderOffset, -1);
    assert.equal(ip.isFragment, false);
    assert.equal(ip.fragOffset, 0);
    assert.equal(ip.moreFrags, false);
    assert.equal(ip.fragIdent, 0);
  });

  it('reads the traffic class and flow label across their nibble boundaries', () => {
    const buf = copy(TCP_V6);
    buf.set([0x6b, 0xa1, 0x23, 0x45], 0); // version 6, class 0xba, label 0x12345
    const ip = new Ipv6Packet();
    assert.equal(ip.wrap(buf, 0, buf.length), WireError.None);
    assert.equal(ip.trafficClass, 0xba);
    assert.equal(ip.flowLabel, 0x12345);
  });

  it('reports absolute offsets when the packet sits inside a larger batch buffer', () => {
    const batch = new Uint8Array(11 + SYN_V6_HBH_DEST_FRAG.length + 3);
    batch.set(SYN_V6_HBH_DEST_FRAG, 11);
    const ip = new Ipv6Packet();
    assert.equal(ip.wrap(batch, 11, SYN_V6_HBH_DEST_FRAG.length), WireError.None);
    assert.equal(ip.srcAddrOffset, 19);
    assert.equal(ip.transportOffset, 11 + 64);
    assert.equal(ip.fragmentHeaderOffset, 11 + 56);
    assert.equal(ip.nextHeaderFieldOffset, 11 + 56);
    assert.equal(ip.transportLen, 20);
    assert.equal(ip.fragIdent, 0xdeadbeef);
  });
});

describe('ipv6: extension headers', () => {
  it('walks hop-by-hop, destination options and fragment to the TCP header', () => {
    const ip = new Ipv6Packet();
    assert.equal(ip.wrap(SYN_V6_HBH_DEST_FRAG, 0, SYN_V6_HBH_DEST_FRAG.length), WireError.None);
    assert.equal(ip.nextHeader, 0);
    assert.equal(ip.transportProtocol, IP_PROTO_TCP);
    assert.equal(ip.transportOffset, 64);
    assert.equal(ip.transportLen, 20);
    assert.equal(ip.nextHeaderFieldOffset, 56, 'the fragment header names the transport');
    assert.equal(SYN_V6_HBH_DEST_FRAG[ip.nextHeaderFieldOffset], IP_PROTO_TCP);
    assert.equal(ip.fragmentHeaderOffset, 56);
    assert.equal(ip.isFragment, true, 'an atomic fragment still has a fragment header');
    assert.equal(ip.fragOffset, 0);
    assert.equal(ip.moreFrags, false);
    assert.equal(ip.fragIdent, 0xdeadbeef);

    const tcp = new TcpPacket();
    assert.equal(tcp.wrap(SYN_V6_HBH_DEST_FRAG, ip.transportOffset, ip.transportLen), WireError.None);
    assert.equal(tcp.srcPort, 40000);
    assert.equal(tcp.dstPort, 8080);
    assert.equal(checksumsValid(SYN_V6_HBH_DEST_FRAG), true);
  });

  it('the builder writes the same chain byte for byte', () => {
    const built = buildTcp({
      ...V6, srcPort: 40000, dstPort: 8080, seq: 0x3b9aca07, window: 64240,
      extensionHeaders: ['hop-by-hop', 'dest-opts', 'fragment'], fragment: { ident: 0xdeadbeef },
    });
    assert.equal(toHex(built), toHex(SYN_V6_HBH_DEST_FRAG));
  });

  it('walks hop-by-hop, routing and destination options to the UDP header', () => {
    const ip = new Ipv6Packet();
    assert.equal(ip.wrap(UDP_V6_HBH_ROUTING_DEST, 0, UDP_V6_HBH_ROUTING_DEST.length), WireError.None);
    assert.equal(ip.transportProtocol, IP_PROTO_UDP);
    assert.equal(ip.transportOffset, 64);
    assert.equal(ip.transportLen, 13);
    assert.equal(ip.nextHeaderFieldOffset, 56);
    assert.equal(ip.isFragment, false);
    const udp = new UdpPacket();
    assert.equal(udp.wrap(UDP_V6_HBH_ROUTING_DEST, ip.transportOffset, ip.transportLen), WireError.None);
    assert.equal(udp.srcPort, 5353);
    assert.equal(udp.dstPort, 53);
    const built = buildUdp({ ...V6, srcPort: 5353, dstPort: 53, payload: 'ping!', extensionHeaders: ['hop-by-hop', 'routing', 'dest-opts'] });
    assert.equal(toHex(built), toHex(UDP_V6_HBH_ROUTING_DEST));
    assert.equal(describePacket(built).payload.length, 5);
  });

  it('reads a fragment header: ident, offset in bytes, more-fragments', () => {
    const ip = new Ipv6Packet();
    assert.equal(ip.wrap(FRAGMENT_V6, 0, FRAGMENT_V6.length), WireError.None);
    assert.equal(ip.isFragment, true);
    assert.equal(ip.fragmentHeaderOffset, 40);
    assert.equal(ip.fragOffset, 1448);
    assert.equal(ip.moreFrags, true);
    assert.equal(ip.fragIdent, 0x01020304);
    assert.equal(ip.transportProtocol, IP_PROTO_TCP);
    assert.equal(ip.transportOffset, 48);
    assert.equal(ip.transportLen, 16);

    // The reserved bits beside M do not leak into the offset or the flag.
    const noisy = copy(FRAGMENT_V6);
    noisy[43] = 0xa8 | 0x06; // res bits set, M clear
    assert.equal(ip.wrap(noisy, 0, noisy.length), WireError.None);
    assert.equal(ip.fragOffset, 1448);
    assert.equal(ip.moreFrags, false);

    const built = buildTcp({ ...V6, srcPort: 1, dstPort: 2, fragment: { ident: 0x01020304, offset: 1448, moreFrags: true } });
    assert.equal(toHex(built.subarray(40, 48)), toHex(FRAGMENT_V6.subarray(40, 48)));
  });

  it('reads AH length in 4-octet units (RFC 4302), not 8-octet units', () => {
    const ip = new Ipv6Packet();
    assert.equal(ip.wrap(SYN_V6_AH, 0, SYN_V6_AH.length), WireError.None);
    assert.equal(ip.nextHeader, IPV6_EXT_AUTH);
    assert.equal(ip.transportProtocol, IP_PROTO_TCP);
    assert.equal(ip.transportOffset, 64);
    assert.equal(ip.transportLen, 20);
    assert.equal(ip.nextHeaderFieldOffset, 40);
    const tcp = new TcpPacket();
    assert.equal(tcp.wrap(SYN_V6_AH, ip.transportOffset, ip.transportLen), WireError.None);
    assert.equal(tcp.dstPort, 8080);
  });

  it('reads other extension lengths in 8-octet units beyond the first 8', () => {
    // Destination options with length 1 (16 bytes: PadN of 12), then 4 bytes of UDP-less payload (no next header).
    const buf = fromHex(`
      60 00 00 00 00 14 3c 40 20 01 0d b8 00 00 00 00
      00 00 00 00 00 00 00 01 20 01 0d b8 00 00 00 00
      00 00 00 00 00 00 01 00 3b 01 01 0c 00 00 00 00
      00 00 00 00 00 00 00 00 de ad be ef`);
    const ip = new Ipv6Packet();
    assert.equal(ip.wrap(buf, 0, buf.length), WireError.None);
    assert.equal(ip.transportProtocol, IPV6_NO_NEXT_HEADER);
    assert.equal(ip.transportOffset, 56);
    assert.equal(ip.transportLen, 4);
  });

  it(`accepts a chain of ${IPV6_MAX_EXT_HEADERS} headers and refuses 9`, () => {
    const chain = (n: number): ExtensionHeader[] => ['hop-by-hop', ...new Array<ExtensionHeader>(n - 1).fill('dest-opts')];
    const ip = new Ipv6Packet();
    const eight = buildUdp({ ...V6, srcPort: 1, dstPort: 2, payload: 'x', extensionHeaders: chain(8) });
    assert.equal(ip.wrap(eight, 0, eight.length), WireError.None);
    assert.equal(ip.transportProtocol, IP_PROTO_UDP);
    assert.equal(ip.transportOffset, 40 + 8 * 8);
    assert.equal(checksumsValid(eight), true);

    const nine = buildUdp({ ...V6, srcPort: 1, dstPort: 2, payload: 'x', extensionHeaders: chain(9) });
    assert.equal(ip.wrap(nine, 0, nine.length), WireError.BadExtensionHeader);
    // Nine destination-options headers (no hop-by-hop) are refused the same way.
    const nineDest = buildUdp({ ...V6, srcPort: 1, dstPort: 2, extensionHeaders: new Array<ExtensionHeader>(9).fill('dest-opts') });
    assert.equal(ip.wrap(nineDest, 0, nineDest.length), WireError.BadExtensionHeader);
  });

  it('refuses hop-by-hop anywhere but first, and a second fragment header', () => {
    const ip = new Ipv6Packet();
    const late = buildTcp({ ...V6, srcPort: 1, dstPort: 2, extensionHeaders: ['dest-opts', 'hop-by-hop'] });
    assert.equal(ip.wrap(late, 0, late.length), WireError.BadExtensionHeader);
    const twoFrags = buildTcp({ ...V6, srcPort: 1, dstPort: 2, extensionHeaders: ['fragment', 'fragment'] });
    assert.equal(ip.wrap(twoFrags, 0, twoFrags.length), WireError.BadExtensionHeader);
    // A refused packet leaves the view describing no fragment.
    assert.equal(ip.wrap(TCP_V6, 0, TCP_V6.length), WireError.None);
    assert.equal(ip.fragmentHeaderOffset, -1);
  });

  it('a chain cut short by the payload length is Truncated', () => {
    const ip = new Ipv6Packet();
    // Payload length 4: not even the first 8 bytes of the hop-by-hop header.
    const short = copy(SYN_V6_HBH_DEST_FRAG);
    short[5] = 4;
    assert.equal(ip.wrap(short, 0, short.length), WireError.Truncated);
    // Payload length 12: hop-by-hop fits, destination options does not.
    short[5] = 12;
    assert.equal(ip.wrap(short, 0, short.length), WireError.Truncated);
    // A hop-by-hop length field pointing past the end.
    const long = copy(SYN_V6_HBH_DEST_FRAG);
    long[41] = 10; // 88 bytes
    assert.equal(ip.wrap(long, 0, long.length), WireError.Truncated);
    // An AH length past the end.
    const ah = copy(SYN_V6_AH);
    ah[41] = 0xff;
    assert.equal(ip.wrap(ah, 0, ah.length), WireError.Truncated);
  });

  it('every cut of a chained packet is Truncated and never throws', () => {
    const ip = new Ipv6Packet();
    for (let len = 0; len < SYN_V6_HBH_DEST_FRAG.length; len++) {
      assert.equal(ip.wrap(SYN_V6_HBH_DEST_FRAG, 0, len), WireError.Truncated, `len ${len}`);
      const cut = SYN_V6_HBH_DEST_FRAG.slice(0, len);
      assert.equal(ip.wrap(cut, 0, cut.length), WireError.Truncated, `cut ${len}`);
    }
  });
});

describe('ipv6: construct', () => {
  it('emitIpv6 writes the golden header byte for byte', () => {
    const buf = new Uint8Array(40).fill(0xaa);
    const n = emitIpv6({
      srcAddr: parseIp('2001:db8::1')!.bytes, dstAddr: parseIp('2001:db8::100')!.bytes,
      nextHeader: IP_PROTO_TCP, payloadLen: 25, hopLimit: 64,
    }, buf, 0);
    assert.equal(n, IPV6_HEADER_LEN);
    assert.equal(toHex(buf), toHex(TCP_V6.subarray(0, 40)));
  });

  it('the builder produces the golden TCP packet', () => {
    const built = buildTcp({ ...V6, srcPort: 40000, dstPort: 8080, seq: 0x3b9aca08, ack: 0x11223344, flags: 'PA', window: 502, payload: 'hello' });
    assert.equal(toHex(built), toHex(TCP_V6));
    assert.equal(checksumsValid(built), true);
  });

  it('setters copy addresses from an offset and set the hop limit', () => {
    const buf = copy(TCP_V6);
    const ip = new Ipv6Packet();
    assert.equal(ip.wrap(buf, 0, buf.length), WireError.None);
    const table = new Uint8Array(48);
    table.set(parseIp('2001:db8:1::7')!.bytes, 16);
    table.set(parseIp('2001:db8::2')!.bytes, 32);
    ip.setDstAddr(table, 16);
    ip.setSrcAddr(table, 32);
    ip.setHopLimit(1);
    assert.equal(formatIpv6(buf, ip.dstAddrOffset), '2001:db8:1::7');
    assert.equal(formatIpv6(buf, ip.srcAddrOffset), '2001:db8::2');
    assert.equal(ip.hopLimit, 1);
    assert.equal(toHex(buf.subarray(40)), toHex(TCP_V6.subarray(40)), 'nothing after the header moved');
  });
});

describe('ipv6: truncated, overlong, bad version', () => {
  it('every length below the fixed header is Truncated', () => {
    const ip = new Ipv6Packet();
    for (let len = 0; len < IPV6_HEADER_LEN; len++) {
      assert.equal(ip.wrap(TCP_V6, 0, len), WireError.Truncated, `len ${len}`);
    }
  });

  it('a payload length beyond the bytes present is Truncated', () => {
    const ip = new Ipv6Packet();
    for (let len = IPV6_HEADER_LEN; len < TCP_V6.length; len++) {
      assert.equal(ip.wrap(TCP_V6, 0, len), WireError.Truncated, `len ${len}`);
    }
    assert.equal(ip.wrap(TCP_V6, 0, TCP_V6.length + 1), WireError.Truncated);
    assert.equal(ip.wrap(TCP_V6, 1, TCP_V6.length), WireError.Truncated);
    assert.equal(ip.wrap(TCP_V6, 500, 40), WireError.Truncated);
  });

  it('trailing bytes after the payload length are ignored', () => {
    const buf = new Uint8Array(TCP_V6.length + 9).fill(0x77);
    buf.set(TCP_V6);
    const ip = new Ipv6Packet();
    assert.equal(ip.wrap(buf, 0, buf.length), WireError.None);
    assert.equal(ip.payloadLen, 25);
    assert.equal(ip.transportLen, 25);
    assert.equal(checksumsValid(buf), true);
  });

  it('a version other than 6 is BadVersion', () => {
    const ip = new Ipv6Packet();
    for (const version of [0, 4, 5, 7, 15]) {
      const buf = copy(TCP_V6);
      buf[0] = version << 4;
      assert.equal(ip.wrap(buf, 0, buf.length), WireError.BadVersion, `version ${version}`);
    }
  });

  it('an empty payload with no next header is well formed', () => {
    const buf = copy(TCP_V6.subarray(0, 40));
    buf[5] = 0;
    buf[6] = IPV6_NO_NEXT_HEADER;
    const ip = new Ipv6Packet();
    assert.equal(ip.wrap(buf, 0, buf.length), WireError.None);
    assert.equal(ip.transportProtocol, IPV6_NO_NEXT_HEADER);
    assert.equal(ip.transportLen, 0);
    // An extension header announced with no bytes for it is Truncated.
    buf[6] = IPV6_EXT_DEST_OPTS;
    assert.equal(ip.wrap(buf, 0, buf.length), WireError.Truncated);
    buf[6] = IPV6_EXT_FRAGMENT;
    assert.equal(ip.wrap(buf, 0, buf.length), WireError.Truncated);
  });
});
