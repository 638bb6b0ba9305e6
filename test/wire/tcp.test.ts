// Golden-byte tests for the TCP header view (src/wire/tcp.ts): deconstruct,
// construct, builder output, truncated, overlong, bad header length, and the
// checksum over the IPv4 and IPv6 pseudo-headers. Golden packets come from
// scapy 2.5, written out literally.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { pseudoSumV4, pseudoSumV6 } from '../../src/wire/checksum.js';
import { IP_PROTO_TCP, Ipv4Packet } from '../../src/wire/ipv4.js';
import { Ipv6Packet } from '../../src/wire/ipv6.js';
import {
  TCP_ACK_FLAG, TCP_CWR, TCP_ECE, TCP_FIN, TCP_HEADER_LEN, TCP_PSH, TCP_RST, TCP_SYN, TCP_URG, TcpPacket, emitTcp,
} from '../../src/wire/tcp.js';
import { WireError } from '../../src/wire/wire-error.js';
import { buildTcp, checksumsValid, describe as describePacket, fromHex, tcpFlags, toHex } from '../support/packet-builder.js';

// SYN 198.18.0.1:40000 -> 198.18.100.1:8080, seq 0x3b9aca07, window 64240, no options.
const SYN_V4 = fromHex(`
  45 00 00 28 1c 46 40 00 40 06 2e 63 c6 12 00 01
  c6 12 64 01 9c 40 1f 90 3b 9a ca 07 00 00 00 00
  50 02 fa f0 03 58 00 00`);

// The same SYN with the options Linux sends: MSS 1460, SACK permitted,
// timestamps, NOP, window scale 7 (data offset 10, a 40-byte header).
const SYN_V4_OPTIONS = fromHex(`
  45 00 00 3c 1c 46 40 00 40 06 2e 4f c6 12 00 01
  c6 12 64 01 9c 40 1f 90 3b 9a ca 07 00 00 00 00
  a0 02 fa f0 85 5d 00 00 02 04 05 b4 04 02 08 0a
  0a 0b 0c 0d 00 00 00 00 01 03 03 07`);

// PSH+ACK [2001:db8::1]:40000 -> [2001:db8::100]:8080, seq 0x3b9aca08, ack 0x11223344, window 502, "hello".
const DATA_V6 = fromHex(`
  60 00 00 00 00 19 06 40 20 01 0d b8 00 00 00 00
  00 00 00 00 00 00 00 01 20 01 0d b8 00 00 00 00
  00 00 00 00 00 00 01 00 9c 40 1f 90 3b 9a ca 08
  11 22 33 44 50 18 01 f6 07 b3 00 00 68 65 6c 6c
  6f`);

const SYN_OPTS = {
  src: '198.18.0.1', dst: '198.18.100.1', srcPort: 40000, dstPort: 8080,
  seq: 0x3b9aca07, window: 64240, ident: 0x1c46, dontFrag: true,
} as const;

const PSEUDO_SYN_V4 = pseudoSumV4(0xc6120001, 0xc6126401, IP_PROTO_TCP, 20);

function copy(bytes: Uint8Array): Uint8Array {
  return Uint8Array.from(bytes);
}

describe('tcp: deconstruct', () => {
  it('reads every field of a golden SYN', () => {
    const tcp = new TcpPacket();
    assert.equal(tcp.wrap(SYN_V4, 20, 20), WireError.None);
    assert.equal(tcp.srcPort, 40000);
    assert.equal(tcp.dstPort, 8080);
    assert.equal(tcp.seqNumber, 0x3b9aca07);
    assert.equal(tcp.ackNumber, 0);
    assert.equal(tcp.headerLen, 20);
    assert.equal(tcp.flags, TCP_SYN);
    assert.equal(tcp.window, 64240);
    assert.equal(tcp.checksum, 0x0358);
    assert.equal(tcp.urgentPointer, 0);
    assert.equal(tcp.payloadOffset, 40);
    assert.equal(tcp.payloadLen, 0);
    assert.equal(tcp.verifyChecksum(PSEUDO_SYN_V4), true);
  });

  it('carries options: data offset 10 puts the payload after 40 bytes, checksum covers them', () => {
    const tcp = new TcpPacket();
    assert.equal(tcp.wrap(SYN_V4_OPTIONS, 20, 40), WireError.None);
    assert.equal(tcp.headerLen, 40);
    assert.equal(tcp.payloadOffset, 60);
    assert.equal(tcp.payloadLen, 0);
    assert.equal(tcp.checksum, 0x855d);
    assert.equal(tcp.verifyChecksum(pseudoSumV4(0xc6120001, 0xc6126401, IP_PROTO_TCP, 40)), true);
    assert.deepEqual(Array.from(SYN_V4_OPTIONS.subarray(40, 44)), [0x02, 0x04, 0x05, 0xb4], 'MSS 1460 left in place');
  });

  it('reads a data segment over IPv6 and verifies it with the IPv6 pseudo-header', () => {
    const ip = new Ipv6Packet();
    assert.equal(ip.wrap(DATA_V6, 0, DATA_V6.length), WireError.None);
    const tcp = new TcpPacket();
    assert.equal(tcp.wrap(DATA_V6, ip.transportOffset, ip.transportLen), WireError.None);
    assert.equal(tcp.seqNumber, 0x3b9aca08);
    assert.equal(tcp.ackNumber, 0x11223344);
    assert.equal(tcp.flags, TCP_PSH | TCP_ACK_FLAG);
    assert.equal(tcp.window, 502);
    assert.equal(tcp.checksum, 0x07b3);
    assert.equal(tcp.payloadOffset, 60);
    assert.equal(tcp.payloadLen, 5);
    assert.equal(new TextDecoder().decode(DATA_V6.subarray(tcp.payloadOffset, tcp.payloadOffset + tcp.payloadLen)), 'hello');
    const pseudo = pseudoSumV6(DATA_V6, ip.srcAddrOffset, ip.dstAddrOffset, IP_PROTO_TCP, ip.transportLen);
    assert.equal(tcp.verifyChecksum(pseudo), true);
    // The odd trailing byte is summed: changing it breaks the checksum.
    const bad = copy(DATA_V6);
    bad[64] ^= 0x01;
    assert.equal(tcp.wrap(bad, 40, 25), WireError.None);
    assert.equal(tcp.verifyChecksum(pseudo), false);
  });

  it('a wrong pseudo-header (another address) fails verification', () => {
    const tcp = new TcpPacket();
    assert.equal(tcp.wrap(SYN_V4, 20, 20), WireError.None);
    assert.equal(tcp.verifyChecksum(pseudoSumV4(0xc6120001, 0xc6126402, IP_PROTO_TCP, 20)), false);
    assert.equal(tcp.verifyChecksum(pseudoSumV4(0xc6120001, 0xc6126401, IP_PROTO_TCP, 21)), false);
  });

  it('flag bits are those of RFC 9293 §3.1', () => {
    assert.deepEqual(
      [TCP_FIN, TCP_SYN, TCP_RST, TCP_PSH, TCP_ACK_FLAG, TCP_URG, TCP_ECE, TCP_CWR],
      [0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80],
    );
    assert.equal(tcpFlags('SA'), TCP_SYN | TCP_ACK_FLAG);
    assert.equal(tcpFlags('FA'), TCP_FIN | TCP_ACK_FLAG);
    assert.equal(tcpFlags('R'), TCP_RST);
    assert.throws(() => tcpFlags('SX'));
  });
});

describe('tcp: construct', () => {
  it('emitTcp then fillChecksum reproduces the golden SYN segment', () => {
    const buf = copy(SYN_V4);
    buf.fill(0xaa, 20);
    const n = emitTcp({ srcPort: 40000, dstPort: 8080, seqNumber: 0x3b9aca07, flags: TCP_SYN, window: 64240 }, buf, 20);
    assert.equal(n, TCP_HEADER_LEN);
    assert.equal(buf[36], 0);
    assert.equal(buf[37], 0);
    const tcp = new TcpPacket();
    assert.equal(tcp.wrap(buf, 20, 20), WireError.None);
    tcp.fillChecksum(PSEUDO_SYN_V4);
    assert.equal(toHex(buf), toHex(SYN_V4));
  });

  it('the builder produces the golden SYN and data segment', () => {
    assert.equal(toHex(buildTcp(SYN_OPTS)), toHex(SYN_V4));
    const data = buildTcp({
      src: '2001:db8::1', dst: '2001:db8::100', srcPort: 40000, dstPort: 8080,
      seq: 0x3b9aca08, ack: 0x11223344, flags: TCP_PSH | TCP_ACK_FLAG, window: 502, payload: new TextEncoder().encode('hello'),
    });
    assert.equal(toHex(data), toHex(DATA_V6));
  });

  it('describe() reads a built segment back', () => {
    const d = describePacket(buildTcp({ ...SYN_OPTS, flags: 'PA', ack: 7, payload: 'GET /' }));
    assert.equal(d.family, 4);
    assert.equal(d.src, '198.18.0.1');
    assert.equal(d.dst, '198.18.100.1');
    assert.equal(d.protocol, IP_PROTO_TCP);
    assert.equal(d.srcPort, 40000);
    assert.equal(d.dstPort, 8080);
    assert.equal(d.flags, TCP_PSH | TCP_ACK_FLAG);
    assert.equal(d.seq, 0x3b9aca07);
    assert.equal(d.ack, 7);
    assert.equal(new TextDecoder().decode(d.payload), 'GET /');
  });

  it('setters write network order; fillChecksum equals a freshly built reply', () => {
    const buf = copy(SYN_V4);
    const tcp = new TcpPacket();
    assert.equal(tcp.wrap(buf, 20, 20), WireError.None);
    tcp.setSrcPort(8080);
    tcp.setDstPort(40000);
    tcp.setSeqNumber(0xfedcba98);
    tcp.setAckNumber(0x3b9aca08);
    tcp.setFlags(TCP_SYN | TCP_ACK_FLAG);
    assert.deepEqual(Array.from(buf.subarray(20, 34)), [0x1f, 0x90, 0x9c, 0x40, 0xfe, 0xdc, 0xba, 0x98, 0x3b, 0x9a, 0xca, 0x08, 0x50, 0x12]);
    // Swap the addresses too, as a reply would carry them.
    const ip = new Ipv4Packet();
    assert.equal(ip.wrap(buf, 0, buf.length), WireError.None);
    ip.setSrcAddr(0xc6126401);
    ip.setDstAddr(0xc6120001);
    ip.fillChecksum();
    tcp.fillChecksum(pseudoSumV4(0xc6126401, 0xc6120001, IP_PROTO_TCP, 20));
    const reply = buildTcp({
      ...SYN_OPTS, src: '198.18.100.1', dst: '198.18.0.1', srcPort: 8080, dstPort: 40000,
      seq: 0xfedcba98, ack: 0x3b9aca08, flags: 'SA',
    });
    assert.equal(toHex(buf), toHex(reply));
    assert.equal(checksumsValid(buf), true);
  });
});

describe('tcp: truncated, overlong, bad header length', () => {
  it('every length below 20 is Truncated', () => {
    const tcp = new TcpPacket();
    for (let len = 0; len < TCP_HEADER_LEN; len++) {
      assert.equal(tcp.wrap(SYN_V4, 20, len), WireError.Truncated, `len ${len}`);
    }
  });

  it('every length below a 40-byte header with options is Truncated', () => {
    const tcp = new TcpPacket();
    for (let len = 0; len < 40; len++) {
      assert.equal(tcp.wrap(SYN_V4_OPTIONS, 20, len), WireError.Truncated, `len ${len}`);
    }
    assert.equal(tcp.wrap(SYN_V4_OPTIONS, 20, 40), WireError.None);
  });

  it('a range past the end of the buffer is Truncated', () => {
    const tcp = new TcpPacket();
    assert.equal(tcp.wrap(SYN_V4, 20, 21), WireError.Truncated);
    assert.equal(tcp.wrap(SYN_V4, 21, 20), WireError.Truncated);
    assert.equal(tcp.wrap(SYN_V4, 40, 20), WireError.Truncated);
    assert.equal(tcp.wrap(SYN_V4.subarray(20, 39), 0, 19), WireError.Truncated);
  });

  it('a data offset below 5 is BadHeaderLen', () => {
    const tcp = new TcpPacket();
    for (let dataOffset = 0; dataOffset < 5; dataOffset++) {
      const buf = copy(SYN_V4);
      buf[32] = dataOffset << 4;
      assert.equal(tcp.wrap(buf, 20, 20), WireError.BadHeaderLen, `data offset ${dataOffset}`);
    }
  });

  it('link padding after the IP total length is not part of the segment', () => {
    const buf = new Uint8Array(SYN_V4.length + 6).fill(0x5a);
    buf.set(SYN_V4);
    const ip = new Ipv4Packet();
    assert.equal(ip.wrap(buf, 0, buf.length), WireError.None);
    const tcp = new TcpPacket();
    assert.equal(tcp.wrap(buf, ip.payloadOffset, ip.payloadLen), WireError.None);
    assert.equal(tcp.payloadLen, 0);
    assert.equal(tcp.verifyChecksum(PSEUDO_SYN_V4), true);
    assert.equal(checksumsValid(buf), true);
  });
});
