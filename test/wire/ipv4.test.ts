// Golden-byte tests for the IPv4 header view (src/wire/ipv4.ts): deconstruct,
// construct, builder output, truncated, overlong, bad version and header length.
// Golden packets were produced with scapy 2.5 and their checksums re-checked
// with an independent RFC 1071 sum; they are written out literally on purpose.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { formatIpv4 } from '../../src/wire/address.js';
import {
  IP_PROTO_TCP, IP_PROTO_UDP, IPV4_HEADER_LEN, Ipv4Packet, emitIpv4,
} from '../../src/wire/ipv4.js';
import { WireError } from '../../src/wire/wire-error.js';
import { buildTcp, checksumsValid, fromHex, toHex } from '../support/packet-builder.js';

// TCP SYN 198.18.0.1:40000 -> 198.18.100.1:8080, ident 0x1c46, DF, TTL 64.
const SYN_V4 = fromHex(`
  45 00 00 28 1c 46 40 00 40 06 2e 63 c6 12 00 01
  c6 12 64 01 9c 40 1f 90 3b 9a ca 07 00 00 00 00
  50 02 fa f0 03 58 00 00`);

// The header most often quoted for the IPv4 checksum (192.168.0.1 -> 192.168.0.199, UDP, checksum 0xb861).
const UDP_HEADER_B861 = fromHex('45 00 00 73 00 00 40 00 40 11 b8 61 c0 a8 00 01 c0 a8 00 c7');

const SYN_OPTS = {
  src: '198.18.0.1', dst: '198.18.100.1', srcPort: 40000, dstPort: 8080,
  seq: 0x3b9aca07, window: 64240, ident: 0x1c46, dontFrag: true,
} as const;

function copy(bytes: Uint8Array): Uint8Array {
  return Uint8Array.from(bytes);
}

describe('ipv4: deconstruct', () => {
  it('reads every field of a golden SYN', () => {
    const ip = new Ipv4Packet();
    assert.equal(ip.wrap(SYN_V4, 0, SYN_V4.length), WireError.None);
    assert.equal(ip.headerLen, 20);
    assert.equal(ip.dscpEcn, 0);
    assert.equal(ip.totalLen, 40);
    assert.equal(ip.ident, 0x1c46);
    assert.equal(ip.dontFrag, true);
    assert.equal(ip.moreFrags, false);
    assert.equal(ip.fragOffset, 0);
    assert.equal(ip.isFragment, false);
    assert.equal(ip.ttl, 64);
    assert.equal(ip.protocol, IP_PROTO_TCP);
    assert.equal(ip.checksum, 0x2e63);
    assert.equal(ip.srcAddr, 0xc6120001);
    assert.equal(ip.dstAddr, 0xc6126401);
    assert.equal(formatIpv4(ip.srcAddr), '198.18.0.1');
    assert.equal(formatIpv4(ip.dstAddr), '198.18.100.1');
    assert.equal(ip.payloadOffset, 20);
    assert.equal(ip.payloadLen, 20);
    assert.equal(ip.verifyChecksum(), true);
  });

  it('reports absolute offsets when the packet sits inside a larger batch buffer', () => {
    const batch = new Uint8Array(7 + SYN_V4.length + 5).fill(0xee);
    batch.set(SYN_V4, 7);
    const ip = new Ipv4Packet();
    assert.equal(ip.wrap(batch, 7, SYN_V4.length), WireError.None);
    assert.equal(ip.payloadOffset, 27);
    assert.equal(ip.payloadLen, 20);
    assert.equal(ip.srcAddr, 0xc6120001);
    assert.equal(ip.verifyChecksum(), true);
  });

  it('verifies the well-known 0xb861 header and rejects it with one bit flipped', () => {
    const buf = new Uint8Array(0x73);
    buf.set(UDP_HEADER_B861);
    const ip = new Ipv4Packet();
    assert.equal(ip.wrap(buf, 0, buf.length), WireError.None);
    assert.equal(ip.protocol, IP_PROTO_UDP);
    assert.equal(ip.checksum, 0xb861);
    assert.equal(ip.verifyChecksum(), true);
    buf[15] ^= 0x01;
    assert.equal(ip.verifyChecksum(), false);
  });

  it('reads fragment fields: more-fragments, offset in bytes, isFragment', () => {
    const first = buildTcp({ ...SYN_OPTS, dontFrag: undefined, fragment: { moreFrags: true } });
    const ip = new Ipv4Packet();
    assert.equal(ip.wrap(first, 0, first.length), WireError.None);
    assert.deepEqual([first[6], first[7]], [0x20, 0x00]);
    assert.equal(ip.moreFrags, true);
    assert.equal(ip.fragOffset, 0);
    assert.equal(ip.isFragment, true);

    const later = buildTcp({ ...SYN_OPTS, dontFrag: undefined, fragment: { offset: 1480 } });
    assert.equal(ip.wrap(later, 0, later.length), WireError.None);
    assert.deepEqual([later[6], later[7]], [0x00, 0xb9]); // 1480 / 8 = 185
    assert.equal(ip.moreFrags, false);
    assert.equal(ip.fragOffset, 1480);
    assert.equal(ip.isFragment, true);
    assert.equal(ip.dontFrag, false);

    // The largest offset field value, 8191 units.
    const last = copy(SYN_V4);
    last[6] = 0x1f;
    last[7] = 0xff;
    assert.equal(ip.wrap(last, 0, last.length), WireError.None);
    assert.equal(ip.fragOffset, 8191 * 8);
    assert.equal(ip.dontFrag, false);
  });

  it('carries options: IHL 6 moves the payload and the checksum covers them', () => {
    // The golden SYN with a router alert option (RFC 2113: 94 04 00 00).
    const buf = fromHex(`
      46 00 00 2c 1c 46 40 00 40 06 99 5a c6 12 00 01
      c6 12 64 01 94 04 00 00 9c 40 1f 90 3b 9a ca 07
      00 00 00 00 50 02 fa f0 03 58 00 00`);
    const ip = new Ipv4Packet();
    assert.equal(ip.wrap(buf, 0, buf.length), WireError.None);
    assert.equal(ip.headerLen, 24);
    assert.equal(ip.totalLen, 44);
    assert.equal(ip.payloadOffset, 24);
    assert.equal(ip.payloadLen, 20);
    assert.equal(ip.checksum, 0x995a);
    assert.equal(ip.verifyChecksum(), true);
    buf[21] = 0x05; // the option is summed too
    assert.equal(ip.verifyChecksum(), false);
    buf[21] = 0x04;
    ip.setChecksum(0);
    ip.fillChecksum();
    assert.equal(ip.checksum, 0x995a);
    assert.equal(checksumsValid(buf), true);
  });
});

describe('ipv4: construct', () => {
  it('emitIpv4 writes the golden header byte for byte', () => {
    const buf = new Uint8Array(20).fill(0xaa);
    const n = emitIpv4({
      srcAddr: 0xc6120001, dstAddr: 0xc6126401, protocol: IP_PROTO_TCP, payloadLen: 20,
      ttl: 64, ident: 0x1c46, dontFrag: true,
    }, buf, 0);
    assert.equal(n, IPV4_HEADER_LEN);
    assert.equal(toHex(buf), toHex(SYN_V4.subarray(0, 20)));
  });

  it('emitIpv4 reproduces the 0xb861 header at an offset', () => {
    const buf = new Uint8Array(3 + 20);
    emitIpv4({ srcAddr: 0xc0a80001, dstAddr: 0xc0a800c7, protocol: IP_PROTO_UDP, payloadLen: 0x73 - 20, dontFrag: true }, buf, 3);
    assert.deepEqual(buf.subarray(3), UDP_HEADER_B861);
    assert.deepEqual(buf.subarray(0, 3), new Uint8Array(3));
  });

  it('the builder produces the golden SYN', () => {
    const built = buildTcp(SYN_OPTS);
    assert.equal(toHex(built), toHex(SYN_V4));
    assert.equal(checksumsValid(built), true);
  });

  it('setters write network order and fillChecksum matches a freshly built packet', () => {
    const buf = copy(SYN_V4);
    const ip = new Ipv4Packet();
    assert.equal(ip.wrap(buf, 0, buf.length), WireError.None);
    ip.setDstAddr(0xc6120107);
    ip.setSrcAddr(0xc6120002);
    ip.setTtl(63);
    assert.deepEqual(Array.from(buf.subarray(12, 20)), [198, 18, 0, 2, 198, 18, 1, 7]);
    assert.equal(ip.verifyChecksum(), false);
    ip.fillChecksum();
    assert.equal(ip.verifyChecksum(), true);
    const expected = buildTcp({ ...SYN_OPTS, src: '198.18.0.2', dst: '198.18.1.7', ttl: 63 });
    assert.equal(toHex(buf.subarray(0, 20)), toHex(expected.subarray(0, 20)));
    ip.setChecksum(0x1234);
    assert.deepEqual([buf[10], buf[11]], [0x12, 0x34]);
  });
});

describe('ipv4: truncated', () => {
  it('every length below the header is Truncated', () => {
    const ip = new Ipv4Packet();
    for (let len = 0; len < IPV4_HEADER_LEN; len++) {
      assert.equal(ip.wrap(SYN_V4, 0, len), WireError.Truncated, `len ${len}`);
    }
  });

  it('every length below the total length is Truncated', () => {
    const ip = new Ipv4Packet();
    for (let len = IPV4_HEADER_LEN; len < SYN_V4.length; len++) {
      assert.equal(ip.wrap(SYN_V4, 0, len), WireError.Truncated, `len ${len}`);
    }
    // The same when the buffer itself is cut, not just the length argument.
    for (let cut = 0; cut < SYN_V4.length; cut++) {
      const short = SYN_V4.slice(0, cut);
      assert.equal(ip.wrap(short, 0, short.length), WireError.Truncated, `cut ${cut}`);
    }
  });

  it('a length or offset past the end of the buffer is Truncated, not an out-of-bounds read', () => {
    const ip = new Ipv4Packet();
    assert.equal(ip.wrap(SYN_V4, 0, SYN_V4.length + 1), WireError.Truncated);
    assert.equal(ip.wrap(SYN_V4, 1, SYN_V4.length), WireError.Truncated);
    assert.equal(ip.wrap(SYN_V4, SYN_V4.length, 20), WireError.Truncated);
    assert.equal(ip.wrap(SYN_V4, 1000, 40), WireError.Truncated);
  });

  it('a header length (IHL) larger than the bytes present is Truncated', () => {
    const buf = copy(SYN_V4);
    buf[0] = 0x4f; // 60-byte header in a 40-byte packet
    assert.equal(new Ipv4Packet().wrap(buf, 0, buf.length), WireError.Truncated);
  });
});

describe('ipv4: overlong', () => {
  it('link padding after the total length is ignored', () => {
    // A 40-byte packet in a minimum Ethernet frame carries 6 bytes of padding.
    const buf = new Uint8Array(46).fill(0x5a);
    buf.set(SYN_V4);
    const ip = new Ipv4Packet();
    assert.equal(ip.wrap(buf, 0, buf.length), WireError.None);
    assert.equal(ip.totalLen, 40);
    assert.equal(ip.payloadLen, 20);
    assert.equal(ip.verifyChecksum(), true);
    assert.equal(checksumsValid(buf), true);
  });
});

describe('ipv4: bad version and header length', () => {
  it('a version other than 4 is BadVersion, checked before the header length', () => {
    const ip = new Ipv4Packet();
    for (const version of [0, 1, 5, 6, 15]) {
      const buf = copy(SYN_V4);
      buf[0] = (version << 4) | 0x0; // IHL 0 as well: the version must be reported first
      assert.equal(ip.wrap(buf, 0, buf.length), WireError.BadVersion, `version ${version}`);
    }
  });

  it('an IHL below 5 is BadHeaderLen', () => {
    const ip = new Ipv4Packet();
    for (let ihl = 0; ihl < 5; ihl++) {
      const buf = copy(SYN_V4);
      buf[0] = 0x40 | ihl;
      assert.equal(ip.wrap(buf, 0, buf.length), WireError.BadHeaderLen, `ihl ${ihl}`);
    }
  });

  it('a total length below the header length is BadTotalLen', () => {
    const ip = new Ipv4Packet();
    for (const totalLen of [0, 1, 19]) {
      const buf = copy(SYN_V4);
      buf[2] = totalLen >>> 8;
      buf[3] = totalLen & 0xff;
      assert.equal(ip.wrap(buf, 0, buf.length), WireError.BadTotalLen, `totalLen ${totalLen}`);
    }
    // A header-only packet (total length 20) is well formed, with an empty payload.
    const bare = copy(SYN_V4.subarray(0, 20));
    bare[3] = 20;
    assert.equal(ip.wrap(bare, 0, bare.length), WireError.None);
    assert.equal(ip.payloadLen, 0);
  });

  it('a view is reusable: a failed wrap does not poison the next one', () => {
    const ip = new Ipv4Packet();
    assert.equal(ip.wrap(new Uint8Array(3), 0, 3), WireError.Truncated);
    assert.equal(ip.wrap(SYN_V4, 0, SYN_V4.length), WireError.None);
    assert.equal(ip.dstAddr, 0xc6126401);
  });
});
