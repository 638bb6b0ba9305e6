// Golden-byte tests for the UDP header view (src/wire/udp.ts): deconstruct,
// construct, builder output, truncated, overlong, bad length, and the RFC 768
// rules for a zero checksum. Golden packets come from scapy 2.5.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { finish, onesSum, pseudoSumV4, pseudoSumV6 } from '../../src/wire/checksum.js';
import { IP_PROTO_UDP, Ipv4Packet } from '../../src/wire/ipv4.js';
import { Ipv6Packet } from '../../src/wire/ipv6.js';
import { UDP_HEADER_LEN, UdpPacket, emitUdp } from '../../src/wire/udp.js';
import { WireError } from '../../src/wire/wire-error.js';
import { buildUdp, checksumsValid, describe as describePacket, fromHex, toHex } from '../support/packet-builder.js';

// 198.18.0.1:53000 -> 198.18.100.1:53, ident 0x04d2, "hostlb".
const UDP_V4 = fromHex(`
  45 00 00 22 04 d2 00 00 40 11 85 d2 c6 12 00 01
  c6 12 64 01 cf 08 00 35 00 0e f8 26 68 6f 73 74
  6c 62`);

// [2001:db8::1]:5353 -> [2001:db8::100]:53, "ping!" (odd length).
const UDP_V6 = fromHex(`
  60 00 00 00 00 0d 11 40 20 01 0d b8 00 00 00 00
  00 00 00 00 00 00 00 01 20 01 0d b8 00 00 00 00
  00 00 00 00 00 00 01 00 14 e9 00 35 00 0d 8e 72
  70 69 6e 67 21`);

// Payload 0x4075 makes the computed checksum 0, which RFC 768 sends as 0xffff.
const UDP_V4_FFFF = fromHex(`
  45 00 00 1e 04 d2 00 00 40 11 85 d6 c6 12 00 01
  c6 12 64 01 cf 08 00 35 00 0a ff ff 40 75`);

const V4_OPTS = { src: '198.18.0.1', dst: '198.18.100.1', srcPort: 53000, dstPort: 53, ident: 0x04d2 } as const;
const PSEUDO_V4 = pseudoSumV4(0xc6120001, 0xc6126401, IP_PROTO_UDP, 14);

function copy(bytes: Uint8Array): Uint8Array {
  return Uint8Array.from(bytes);
}

describe('udp: deconstruct', () => {
  it('reads every field of a golden IPv4 datagram', () => {
    const udp = new UdpPacket();
    assert.equal(udp.wrap(UDP_V4, 20, 14), WireError.None);
    assert.equal(udp.srcPort, 53000);
    assert.equal(udp.dstPort, 53);
    assert.equal(udp.length, 14);
    assert.equal(udp.checksum, 0xf826);
    assert.equal(udp.payloadOffset, 28);
    assert.equal(udp.payloadLen, 6);
    assert.equal(new TextDecoder().decode(UDP_V4.subarray(28, 34)), 'hostlb');
    assert.equal(udp.verifyChecksum(PSEUDO_V4), true);
    assert.equal(udp.verifyChecksum(pseudoSumV4(0xc6120001, 0xc6126402, IP_PROTO_UDP, 14)), false);
  });

  it('reads a golden IPv6 datagram and verifies it with the IPv6 pseudo-header', () => {
    const ip = new Ipv6Packet();
    assert.equal(ip.wrap(UDP_V6, 0, UDP_V6.length), WireError.None);
    const udp = new UdpPacket();
    assert.equal(udp.wrap(UDP_V6, ip.transportOffset, ip.transportLen), WireError.None);
    assert.equal(udp.srcPort, 5353);
    assert.equal(udp.dstPort, 53);
    assert.equal(udp.length, 13);
    assert.equal(udp.checksum, 0x8e72);
    assert.equal(udp.payloadLen, 5);
    assert.equal(udp.verifyChecksum(pseudoSumV6(UDP_V6, 8, 24, IP_PROTO_UDP, 13)), true);
  });

  it('checksum 0 means "none": the view accepts it, checksumsValid only over IPv4', () => {
    const v4 = copy(UDP_V4);
    v4[26] = 0;
    v4[27] = 0;
    const udp = new UdpPacket();
    assert.equal(udp.wrap(v4, 20, 14), WireError.None);
    assert.equal(udp.verifyChecksum(PSEUDO_V4), true);
    assert.equal(checksumsValid(v4), true);
    const v6 = copy(UDP_V6);
    v6[46] = 0;
    v6[47] = 0;
    assert.equal(checksumsValid(v6), false, 'RFC 8200 §8.1: IPv6 UDP must carry a checksum');
  });
});

describe('udp: construct', () => {
  it('emitUdp then fillChecksum reproduces the golden datagram', () => {
    const buf = copy(UDP_V4);
    buf.fill(0xaa, 20, 28);
    assert.equal(emitUdp({ srcPort: 53000, dstPort: 53, payloadLen: 6 }, buf, 20), UDP_HEADER_LEN);
    assert.deepEqual([buf[26], buf[27]], [0, 0]);
    const udp = new UdpPacket();
    assert.equal(udp.wrap(buf, 20, 14), WireError.None);
    udp.fillChecksum(PSEUDO_V4);
    assert.equal(toHex(buf), toHex(UDP_V4));
  });

  it('the builder produces the golden datagrams', () => {
    assert.equal(toHex(buildUdp({ ...V4_OPTS, payload: 'hostlb' })), toHex(UDP_V4));
    assert.equal(toHex(buildUdp({ src: '2001:db8::1', dst: '2001:db8::100', srcPort: 5353, dstPort: 53, payload: 'ping!' })), toHex(UDP_V6));
    const none = buildUdp({ ...V4_OPTS, payload: 'hostlb', noChecksum: true });
    assert.deepEqual([none[26], none[27]], [0, 0]);
    assert.equal(checksumsValid(none), true);
    assert.throws(() => buildUdp({ src: '2001:db8::1', dst: '2001:db8::100', srcPort: 1, dstPort: 2, noChecksum: true }));
  });

  it('a computed checksum of 0 is sent as 0xffff (RFC 768), by the view and by the builder', () => {
    const buf = copy(UDP_V4_FFFF);
    buf[26] = 0;
    buf[27] = 0;
    const pseudo = pseudoSumV4(0xc6120001, 0xc6126401, IP_PROTO_UDP, 10);
    assert.equal(finish(onesSum(buf, 20, 10, pseudo)), 0, 'this payload really sums to a computed 0');
    const udp = new UdpPacket();
    assert.equal(udp.wrap(buf, 20, 10), WireError.None);
    udp.fillChecksum(pseudo);
    assert.equal(udp.checksum, 0xffff);
    assert.equal(toHex(buf), toHex(UDP_V4_FFFF));
    assert.equal(udp.verifyChecksum(pseudo), true, '0xffff verifies as the negative zero it is');
    assert.equal(toHex(buildUdp({ ...V4_OPTS, payload: new Uint8Array([0x40, 0x75]) })), toHex(UDP_V4_FFFF));
    assert.equal(checksumsValid(UDP_V4_FFFF), true);
  });

  it('describe() reads a built datagram back', () => {
    const d = describePacket(buildUdp({ src: '2001:db8::1', dst: '2001:db8::100', srcPort: 5353, dstPort: 53, payload: 'ping!' }));
    assert.deepEqual(
      { family: d.family, src: d.src, dst: d.dst, protocol: d.protocol, srcPort: d.srcPort, dstPort: d.dstPort, flags: d.flags },
      { family: 6, src: '2001:db8::1', dst: '2001:db8::100', protocol: IP_PROTO_UDP, srcPort: 5353, dstPort: 53, flags: 0 },
    );
    assert.equal(new TextDecoder().decode(d.payload), 'ping!');
  });

  it('setters write the ports in network order', () => {
    const buf = copy(UDP_V4);
    const udp = new UdpPacket();
    assert.equal(udp.wrap(buf, 20, 14), WireError.None);
    udp.setSrcPort(0x1234);
    udp.setDstPort(0xabcd);
    udp.setChecksum(0x0102);
    assert.deepEqual(Array.from(buf.subarray(20, 28)), [0x12, 0x34, 0xab, 0xcd, 0x00, 0x0e, 0x01, 0x02]);
  });
});

describe('udp: truncated, overlong, bad length', () => {
  it('every length below 8 is Truncated', () => {
    const udp = new UdpPacket();
    for (let len = 0; len < UDP_HEADER_LEN; len++) {
      assert.equal(udp.wrap(UDP_V4, 20, len), WireError.Truncated, `len ${len}`);
    }
  });

  it('a length field beyond the bytes present is Truncated', () => {
    const udp = new UdpPacket();
    for (let len = UDP_HEADER_LEN; len < 14; len++) {
      assert.equal(udp.wrap(UDP_V4, 20, len), WireError.Truncated, `len ${len}`);
    }
    assert.equal(udp.wrap(UDP_V4, 20, 15), WireError.Truncated, 'past the end of the buffer');
    assert.equal(udp.wrap(UDP_V4, 30, 8), WireError.Truncated);
  });

  it('a length field below 8 is BadLength', () => {
    const udp = new UdpPacket();
    for (let length = 0; length < UDP_HEADER_LEN; length++) {
      const buf = copy(UDP_V4);
      buf[24] = 0;
      buf[25] = length;
      assert.equal(udp.wrap(buf, 20, 14), WireError.BadLength, `length ${length}`);
    }
  });

  it('bytes past the length field are ignored', () => {
    // The IP layer hands over more bytes than the UDP length (e.g. a sender's padding).
    const buf = new Uint8Array(UDP_V4.length + 5).fill(0x33);
    buf.set(UDP_V4);
    const udp = new UdpPacket();
    assert.equal(udp.wrap(buf, 20, buf.length - 20), WireError.None);
    assert.equal(udp.length, 14);
    assert.equal(udp.payloadLen, 6);
    assert.equal(udp.verifyChecksum(PSEUDO_V4), true);
    // And link padding after the IPv4 total length never reaches the UDP view.
    const ip = new Ipv4Packet();
    assert.equal(ip.wrap(buf, 0, buf.length), WireError.None);
    assert.equal(ip.payloadLen, 14);
    assert.equal(checksumsValid(buf), true);
  });
});
