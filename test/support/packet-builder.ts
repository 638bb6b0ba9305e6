// Test support: builds complete IPv4/IPv6 packets with correct checksums and
// reads them back as plain values. Every byte is written by the emit functions
// and views of src/wire, so a test that compares builder output with golden
// bytes checks src/wire too. Test-only code: it allocates freely and throws on
// misuse; the packet path never uses it.

import { IpAddress, formatIpv4, formatIpv6, ipv4ToU32, parseIp } from '../../src/wire/address.js';
import { write16, write32 } from '../../src/wire/bytes.js';
import { fold, pseudoSumV4, pseudoSumV6 } from '../../src/wire/checksum.js';
import {
  ICMPV4_DEST_UNREACHABLE, ICMPV4_ECHO_REPLY, ICMPV4_ECHO_REQUEST, ICMPV4_TIME_EXCEEDED, ICMPV4_CODE_FRAG_NEEDED,
  ICMPV4_CODE_PORT_UNREACHABLE, ICMPV6_CODE_PORT_UNREACHABLE, ICMPV6_DEST_UNREACHABLE, ICMPV6_ECHO_REPLY,
  ICMPV6_ECHO_REQUEST, ICMPV6_PACKET_TOO_BIG, ICMPV6_TIME_EXCEEDED, ICMP_HEADER_LEN, IcmpPacket,
} from '../../src/wire/icmp.js';
import { IP_PROTO_ICMP, IP_PROTO_ICMPV6, IP_PROTO_TCP, IP_PROTO_UDP, IPV4_HEADER_LEN, Ipv4Packet, emitIpv4 } from '../../src/wire/ipv4.js';
import {
  IPV6_EXT_DEST_OPTS, IPV6_EXT_FRAGMENT, IPV6_EXT_HOP_BY_HOP, IPV6_EXT_ROUTING, IPV6_HEADER_LEN, Ipv6Packet, emitIpv6,
} from '../../src/wire/ipv6.js';
import {
  TCP_ACK_FLAG, TCP_CWR, TCP_ECE, TCP_FIN, TCP_HEADER_LEN, TCP_PSH, TCP_RST, TCP_SYN, TCP_URG, TcpPacket, emitTcp,
} from '../../src/wire/tcp.js';
import { UDP_HEADER_LEN, UdpPacket, emitUdp } from '../../src/wire/udp.js';
import { WIRE_ERROR_NAMES, WireError } from '../../src/wire/wire-error.js';

/** IPv6 extension headers the builder can insert, written in the order given. */
export type ExtensionHeader = 'hop-by-hop' | 'dest-opts' | 'routing' | 'fragment';

/** Fields shared by every builder. The family follows the address text; both must agree. */
export interface IpOptions {
  src: string;
  dst: string;
  /** IPv4 TTL or IPv6 hop limit; default 64. */
  ttl?: number;
  /** IPv4 only: the don't-fragment flag; default false. */
  dontFrag?: boolean;
  /**
   * IPv6 only: extension headers between the fixed header and the transport
   * header, in this order (no order is enforced, so invalid chains can be built).
   * hop-by-hop and dest-opts carry one PadN option (8 bytes); routing is type 0
   * with segments-left 0 (8 bytes); fragment uses `fragment` below (8 bytes).
   */
  extensionHeaders?: readonly ExtensionHeader[];
  /**
   * Fragment fields: IPv4 identification/flags/offset, or the IPv6 fragment header
   * (appended to the chain when `extensionHeaders` lists none). The transport
   * header is still written and checksummed as if this were a whole first
   * fragment. `offset` in bytes (a multiple of 8).
   */
  fragment?: { ident?: number; offset?: number; moreFrags?: boolean };
}

export interface TcpOptions extends IpOptions {
  srcPort: number;
  dstPort: number;
  /** TCP flag bits (TCP_SYN | TCP_ACK_FLAG ...) or letters as scapy writes them ('S', 'SA', 'PA', 'FA', 'R'); default SYN. */
  flags?: number | string;
  seq?: number;
  ack?: number;
  /** Default 65535. */
  window?: number;
  /** Bytes, or text encoded as UTF-8. */
  payload?: Uint8Array | string;
  /** IPv4 identification; default 0. */
  ident?: number;
}

export interface UdpOptions extends IpOptions {
  srcPort: number;
  dstPort: number;
  payload?: Uint8Array | string;
  /** IPv4 identification; default 0. */
  ident?: number;
  /** IPv4 only: true leaves the checksum 0 ("no checksum", RFC 768). */
  noChecksum?: boolean;
}

export interface IcmpEchoOptions extends IpOptions {
  /** Echo identifier. */
  ident: number;
  seq: number;
  /** Default 'request'. ICMPv4 types 8/0, ICMPv6 types 128/129. */
  type?: 'request' | 'reply';
  payload?: Uint8Array | string;
  /** IPv4 identification; default 0. */
  ipIdent?: number;
}

export interface IcmpErrorOptions extends IpOptions {
  /** 'unreachable' (default), 'time-exceeded', or 'too-big' (IPv4: unreachable, fragmentation needed). */
  kind?: 'unreachable' | 'time-exceeded' | 'too-big';
  /** Default: port unreachable for 'unreachable', 0 otherwise. */
  code?: number;
  /** Next-hop MTU for 'too-big'. */
  mtu?: number;
  /** The offending packet (or its first bytes), copied after the 8-byte ICMP header. */
  quote: Uint8Array;
  /** IPv4 identification; default 0. */
  ipIdent?: number;
}

/** A packet read back through the src/wire views; addresses as canonical text. */
export interface PacketDescription {
  family: 4 | 6;
  src: string;
  dst: string;
  /** Transport protocol (for IPv6, after the extension chain). */
  protocol: number;
  /** 0 unless TCP or UDP (and not a later fragment). */
  srcPort: number;
  dstPort: number;
  /** TCP flag bits; 0 for anything else. */
  flags: number;
  /** The transport payload (the IP payload for a later fragment or an unknown protocol); a copy. */
  payload: Uint8Array;
  /** IPv4 TTL or IPv6 hop limit. */
  ttl: number;
  /** TCP sequence and acknowledgment numbers and window; 0 for anything else. */
  seq: number;
  ack: number;
  window: number;
  /** ICMP/ICMPv6 header fields, or null for other protocols. */
  icmp: { type: number; code: number; ident: number; seq: number } | null;
}

const FLAG_LETTERS: Record<string, number> = {
  F: TCP_FIN, S: TCP_SYN, R: TCP_RST, P: TCP_PSH, A: TCP_ACK_FLAG, U: TCP_URG, E: TCP_ECE, C: TCP_CWR,
};

const EXT_CODES: Record<ExtensionHeader, number> = {
  'hop-by-hop': IPV6_EXT_HOP_BY_HOP,
  'dest-opts': IPV6_EXT_DEST_OPTS,
  routing: IPV6_EXT_ROUTING,
  fragment: IPV6_EXT_FRAGMENT,
};

/** Parses TCP flags given as bits or as scapy letters. Throws on an unknown letter. */
export function tcpFlags(flags: number | string): number {
  if (typeof flags === 'number') return flags;
  let bits = 0;
  for (const letter of flags) {
    const bit = FLAG_LETTERS[letter];
    if (bit === undefined) throw new Error(`unknown TCP flag letter ${JSON.stringify(letter)} in ${JSON.stringify(flags)}`);
    bits |= bit;
  }
  return bits;
}

/** Builds one TCP segment inside an IPv4 or IPv6 packet, with correct IP and TCP checksums. */
export function buildTcp(opts: TcpOptions): Uint8Array {
  const payload = bytesOf(opts.payload);
  const segmentLen = TCP_HEADER_LEN + payload.length;
  const { packet, l4Off, pseudo } = ipFrame(opts, IP_PROTO_TCP, segmentLen, opts.ident);
  emitTcp({
    srcPort: opts.srcPort,
    dstPort: opts.dstPort,
    seqNumber: opts.seq ?? 0,
    ackNumber: opts.ack ?? 0,
    flags: tcpFlags(opts.flags ?? TCP_SYN),
    window: opts.window ?? 65535,
  }, packet, l4Off);
  packet.set(payload, l4Off + TCP_HEADER_LEN);
  const tcp = new TcpPacket();
  mustWrap(tcp.wrap(packet, l4Off, segmentLen), 'TCP');
  tcp.fillChecksum(pseudo);
  return packet;
}

/** Builds one UDP datagram inside an IPv4 or IPv6 packet, with correct checksums (a computed 0 is sent as 0xffff). */
export function buildUdp(opts: UdpOptions): Uint8Array {
  const payload = bytesOf(opts.payload);
  const datagramLen = UDP_HEADER_LEN + payload.length;
  const { packet, l4Off, pseudo, family } = ipFrame(opts, IP_PROTO_UDP, datagramLen, opts.ident);
  emitUdp({ srcPort: opts.srcPort, dstPort: opts.dstPort, payloadLen: payload.length }, packet, l4Off);
  packet.set(payload, l4Off + UDP_HEADER_LEN);
  if (opts.noChecksum) {
    if (family !== 4) throw new Error('noChecksum: IPv6 UDP must carry a checksum (RFC 8200 §8.1)');
    return packet;
  }
  const udp = new UdpPacket();
  mustWrap(udp.wrap(packet, l4Off, datagramLen), 'UDP');
  udp.fillChecksum(pseudo);
  return packet;
}

/** Builds an ICMP (IPv4) or ICMPv6 (IPv6) echo request or reply with correct checksums. */
export function buildIcmpEcho(opts: IcmpEchoOptions): Uint8Array {
  const payload = bytesOf(opts.payload);
  const family = familyOf(opts);
  const reply = opts.type === 'reply';
  const type = family === 4 ? (reply ? ICMPV4_ECHO_REPLY : ICMPV4_ECHO_REQUEST) : (reply ? ICMPV6_ECHO_REPLY : ICMPV6_ECHO_REQUEST);
  return buildIcmp(opts, type, 0, ((opts.ident & 0xffff) << 16 | (opts.seq & 0xffff)) >>> 0, payload, opts.ipIdent);
}

/** Builds an ICMP/ICMPv6 error message that quotes `opts.quote`, with correct checksums. */
export function buildIcmpError(opts: IcmpErrorOptions): Uint8Array {
  const family = familyOf(opts);
  const kind = opts.kind ?? 'unreachable';
  let type: number;
  let code: number;
  let rest = 0;
  if (kind === 'unreachable') {
    type = family === 4 ? ICMPV4_DEST_UNREACHABLE : ICMPV6_DEST_UNREACHABLE;
    code = opts.code ?? (family === 4 ? ICMPV4_CODE_PORT_UNREACHABLE : ICMPV6_CODE_PORT_UNREACHABLE);
  } else if (kind === 'time-exceeded') {
    type = family === 4 ? ICMPV4_TIME_EXCEEDED : ICMPV6_TIME_EXCEEDED;
    code = opts.code ?? 0;
  } else {
    // RFC 1191 §4 puts the next-hop MTU in the low 16 bits; RFC 4443 §3.2 uses all 32.
    type = family === 4 ? ICMPV4_DEST_UNREACHABLE : ICMPV6_PACKET_TOO_BIG;
    code = opts.code ?? (family === 4 ? ICMPV4_CODE_FRAG_NEEDED : 0);
    rest = (family === 4 ? (opts.mtu ?? 0) & 0xffff : opts.mtu ?? 0) >>> 0;
  }
  return buildIcmp(opts, type, code, rest, opts.quote, opts.ipIdent);
}

function buildIcmp(opts: IpOptions, type: number, code: number, rest: number, body: Uint8Array, ipIdent: number | undefined): Uint8Array {
  const family = familyOf(opts);
  const len = ICMP_HEADER_LEN + body.length;
  const { packet, l4Off, pseudo } = ipFrame(opts, family === 4 ? IP_PROTO_ICMP : IP_PROTO_ICMPV6, len, ipIdent);
  packet[l4Off] = type;
  packet[l4Off + 1] = code;
  write16(packet, l4Off + 2, 0);
  write32(packet, l4Off + 4, rest);
  packet.set(body, l4Off + ICMP_HEADER_LEN);
  const icmp = new IcmpPacket();
  mustWrap(icmp.wrap(packet, l4Off, len), 'ICMP');
  // ICMPv4 has no pseudo-header (RFC 792); ICMPv6 has one (RFC 4443 §2.3).
  icmp.fillChecksum(family === 4 ? 0 : pseudo);
  return packet;
}

interface Frame {
  packet: Uint8Array;
  family: 4 | 6;
  /** Offset of the transport header. */
  l4Off: number;
  /** Pseudo-header sum for the transport checksum. */
  pseudo: number;
}

/** Allocates the packet and writes the IP header (and IPv6 extension chain) for an `l4Len`-byte transport part. */
function ipFrame(opts: IpOptions, protocol: number, l4Len: number, ipIdent: number | undefined): Frame {
  const src = mustParse(opts.src, 'src');
  const dst = mustParse(opts.dst, 'dst');
  if (src.family !== dst.family) throw new Error(`src ${opts.src} and dst ${opts.dst} are of different families`);
  if (src.family === 4) {
    if (opts.extensionHeaders && opts.extensionHeaders.length > 0) throw new Error('extensionHeaders are IPv6 only');
    const packet = new Uint8Array(IPV4_HEADER_LEN + l4Len);
    const srcAddr = ipv4ToU32(src.bytes);
    const dstAddr = ipv4ToU32(dst.bytes);
    emitIpv4({
      srcAddr, dstAddr, protocol, payloadLen: l4Len,
      ttl: opts.ttl ?? 64,
      ident: opts.fragment?.ident ?? ipIdent ?? 0,
      dontFrag: opts.dontFrag ?? false,
      moreFrags: opts.fragment?.moreFrags ?? false,
      fragOffset: opts.fragment?.offset ?? 0,
    }, packet, 0);
    return { packet, family: 4, l4Off: IPV4_HEADER_LEN, pseudo: pseudoSumV4(srcAddr, dstAddr, protocol, l4Len) };
  }
  if (opts.dontFrag !== undefined) throw new Error('dontFrag is IPv4 only');
  const chain = [...(opts.extensionHeaders ?? [])];
  if (opts.fragment && !chain.includes('fragment')) chain.push('fragment');
  const extLen = chain.length * 8;
  const packet = new Uint8Array(IPV6_HEADER_LEN + extLen + l4Len);
  emitIpv6({
    srcAddr: src.bytes, dstAddr: dst.bytes,
    nextHeader: chain.length > 0 ? EXT_CODES[chain[0]] : protocol,
    payloadLen: extLen + l4Len,
    hopLimit: opts.ttl ?? 64,
  }, packet, 0);
  let at = IPV6_HEADER_LEN;
  chain.forEach((kind, i) => {
    packet[at] = i + 1 < chain.length ? EXT_CODES[chain[i + 1]] : protocol;
    packet[at + 1] = 0; // length in 8-octet units beyond the first (RFC 8200 §4.3)
    if (kind === 'hop-by-hop' || kind === 'dest-opts') {
      packet[at + 2] = 1; // PadN option filling the remaining 4 bytes (RFC 8200 §4.2)
      packet[at + 3] = 4;
    } else if (kind === 'fragment') {
      const frag = opts.fragment ?? {};
      write16(packet, at + 2, ((frag.offset ?? 0) & 0xfff8) | (frag.moreFrags ? 1 : 0));
      write32(packet, at + 4, frag.ident ?? 0);
    }
    // routing: type 0, segments left 0, reserved: all zero bytes already.
    at += 8;
  });
  return { packet, family: 6, l4Off: at, pseudo: pseudoSumV6(packet, 8, 24, protocol, l4Len) };
}

/**
 * True when every checksum in the packet at `packet[off, off + len)` is right:
 * the IPv4 header checksum, and the TCP, UDP, ICMP or ICMPv6 checksum with the
 * right pseudo-header. UDP over IPv4 with checksum 0 counts as valid; over IPv6
 * it does not (RFC 8200 §8.1). For a fragment (offset ≠ 0 or more-fragments),
 * only the IPv4 header checksum is checked. False when the packet does not parse.
 */
export function checksumsValid(packet: Uint8Array, off = 0, len = packet.length - off): boolean {
  const ip = parseIpPacket(packet, off, len);
  if (ip === null) return false;
  if (ip.family === 4 && !ip.v4.verifyChecksum()) return false;
  if (ip.fragmented) return true;
  switch (ip.protocol) {
    case IP_PROTO_TCP: {
      const tcp = new TcpPacket();
      return tcp.wrap(packet, ip.l4Off, ip.l4Len) === WireError.None && tcp.verifyChecksum(pseudoOf(ip, IP_PROTO_TCP, ip.l4Len));
    }
    case IP_PROTO_UDP: {
      const udp = new UdpPacket();
      if (udp.wrap(packet, ip.l4Off, ip.l4Len) !== WireError.None) return false;
      if (udp.checksum === 0) return ip.family === 4;
      return udp.verifyChecksum(pseudoOf(ip, IP_PROTO_UDP, udp.length));
    }
    case IP_PROTO_ICMP:
    case IP_PROTO_ICMPV6: {
      if ((ip.protocol === IP_PROTO_ICMP) !== (ip.family === 4)) return true; // not this family's ICMP: carried, not checked
      const icmp = new IcmpPacket();
      return icmp.wrap(packet, ip.l4Off, ip.l4Len) === WireError.None &&
        icmp.verifyChecksum(ip.family === 4 ? 0 : pseudoOf(ip, IP_PROTO_ICMPV6, ip.l4Len));
    }
    default:
      return true;
  }
}

/** Reads a packet back through the src/wire views. Throws (naming the WireError) when it does not parse. */
export function describe(packet: Uint8Array, off = 0, len = packet.length - off): PacketDescription {
  const ip = parseIpPacket(packet, off, len);
  if (ip === null) throw new Error(`describe: not an IP packet (${ipErrorName(packet, off, len)})`);
  const result: PacketDescription = {
    family: ip.family,
    src: ip.family === 4 ? formatIpv4(ip.v4.srcAddr) : formatIpv6(packet, ip.v6.srcAddrOffset),
    dst: ip.family === 4 ? formatIpv4(ip.v4.dstAddr) : formatIpv6(packet, ip.v6.dstAddrOffset),
    protocol: ip.protocol,
    srcPort: 0,
    dstPort: 0,
    flags: 0,
    payload: packet.slice(ip.l4Off, ip.l4Off + ip.l4Len),
    ttl: ip.family === 4 ? ip.v4.ttl : ip.v6.hopLimit,
    seq: 0,
    ack: 0,
    window: 0,
    icmp: null,
  };
  if (ip.fragmented && ip.fragOffset !== 0) return result;
  if (ip.protocol === IP_PROTO_TCP) {
    const tcp = new TcpPacket();
    const err = tcp.wrap(packet, ip.l4Off, ip.l4Len);
    if (err !== WireError.None) throw new Error(`describe: TCP ${WIRE_ERROR_NAMES[err]}`);
    result.srcPort = tcp.srcPort;
    result.dstPort = tcp.dstPort;
    result.flags = tcp.flags;
    result.seq = tcp.seqNumber;
    result.ack = tcp.ackNumber;
    result.window = tcp.window;
    result.payload = packet.slice(tcp.payloadOffset, tcp.payloadOffset + tcp.payloadLen);
  } else if (ip.protocol === IP_PROTO_UDP) {
    const udp = new UdpPacket();
    const err = udp.wrap(packet, ip.l4Off, ip.l4Len);
    if (err !== WireError.None) throw new Error(`describe: UDP ${WIRE_ERROR_NAMES[err]}`);
    result.srcPort = udp.srcPort;
    result.dstPort = udp.dstPort;
    result.payload = packet.slice(udp.payloadOffset, udp.payloadOffset + udp.payloadLen);
  } else if (ip.protocol === IP_PROTO_ICMP || ip.protocol === IP_PROTO_ICMPV6) {
    const icmp = new IcmpPacket();
    const err = icmp.wrap(packet, ip.l4Off, ip.l4Len);
    if (err !== WireError.None) throw new Error(`describe: ICMP ${WIRE_ERROR_NAMES[err]}`);
    result.icmp = { type: icmp.type, code: icmp.code, ident: icmp.ident, seq: icmp.seq };
    result.payload = packet.slice(icmp.quotedOffset, icmp.quotedOffset + icmp.quotedLen);
  }
  return result;
}

/** Bytes from hex text; whitespace and `//` comments are ignored. Throws on anything else. */
export function fromHex(text: string): Uint8Array {
  const digits = text.replace(/\/\/[^\n]*/g, '').replace(/\s+/g, '');
  if (!/^([0-9a-fA-F]{2})*$/.test(digits)) throw new Error(`fromHex: not hex bytes: ${JSON.stringify(text.slice(0, 40))}`);
  const out = new Uint8Array(digits.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(digits.slice(2 * i, 2 * i + 2), 16);
  return out;
}

/** Hex text of bytes, 16 to a line, for readable assertion failures. */
export function toHex(bytes: Uint8Array): string {
  const lines: string[] = [];
  for (let i = 0; i < bytes.length; i += 16) {
    lines.push(Array.from(bytes.subarray(i, i + 16), (b) => b.toString(16).padStart(2, '0')).join(' '));
  }
  return lines.join('\n');
}

type ParsedIp =
  | { family: 4; v4: Ipv4Packet; protocol: number; l4Off: number; l4Len: number; fragmented: boolean; fragOffset: number }
  | { family: 6; v6: Ipv6Packet; protocol: number; l4Off: number; l4Len: number; fragmented: boolean; fragOffset: number };

function parseIpPacket(packet: Uint8Array, off: number, len: number): ParsedIp | null {
  if (len < 1 || off >= packet.length) return null;
  const version = packet[off] >>> 4;
  if (version === 4) {
    const v4 = new Ipv4Packet();
    if (v4.wrap(packet, off, len) !== WireError.None) return null;
    return {
      family: 4, v4, protocol: v4.protocol, l4Off: v4.payloadOffset, l4Len: v4.payloadLen,
      fragmented: v4.isFragment, fragOffset: v4.fragOffset,
    };
  }
  if (version === 6) {
    const v6 = new Ipv6Packet();
    if (v6.wrap(packet, off, len) !== WireError.None) return null;
    return {
      family: 6, v6, protocol: v6.transportProtocol, l4Off: v6.transportOffset, l4Len: v6.transportLen,
      fragmented: v6.fragOffset !== 0 || v6.moreFrags, fragOffset: v6.fragOffset,
    };
  }
  return null;
}

function ipErrorName(packet: Uint8Array, off: number, len: number): string {
  const version = off < packet.length ? packet[off] >>> 4 : 0;
  if (version === 4) return WIRE_ERROR_NAMES[new Ipv4Packet().wrap(packet, off, len)];
  if (version === 6) return WIRE_ERROR_NAMES[new Ipv6Packet().wrap(packet, off, len)];
  return len < 1 ? 'truncated' : 'bad_version';
}

function pseudoOf(ip: ParsedIp, protocol: number, l4Len: number): number {
  if (ip.family === 4) return pseudoSumV4(ip.v4.srcAddr, ip.v4.dstAddr, protocol, l4Len);
  return pseudoSumV6(ip.v6.buf, ip.v6.srcAddrOffset, ip.v6.dstAddrOffset, protocol, l4Len);
}

function familyOf(opts: IpOptions): 4 | 6 {
  return mustParse(opts.src, 'src').family;
}

function mustParse(text: string, what: string): IpAddress {
  const addr = parseIp(text);
  if (addr === null) throw new Error(`${what}: not an IP address: ${JSON.stringify(text)}`);
  return addr;
}

function mustWrap(err: WireError, what: string): void {
  if (err !== WireError.None) throw new Error(`packet-builder: built ${what} does not parse (${WIRE_ERROR_NAMES[err]})`);
}

function bytesOf(payload: Uint8Array | string | undefined): Uint8Array {
  if (payload === undefined) return new Uint8Array(0);
  return typeof payload === 'string' ? new TextEncoder().encode(payload) : payload;
}

/**
 * The TCP or UDP packet as a virtio-net NEEDS_CSUM read delivers it: the
 * transport checksum field holds the folded pseudo-header sum, not
 * complemented (DESIGN.md). `csumAt` is where that field is (bytes from the
 * IP header: csum_start + csum_offset). A copy; throws on another protocol.
 */
export function toPartialChecksum(packet: Uint8Array): { bytes: Uint8Array; csumAt: number } {
  const p = packet.slice();
  let csumAt: number;
  let pseudo: number;
  if (p[0] >>> 4 === 4) {
    const ip = new Ipv4Packet();
    if (ip.wrap(p, 0, p.length) !== 0) throw new Error('toPartialChecksum: not a valid IPv4 packet');
    csumAt = ip.payloadOffset + (ip.protocol === IP_PROTO_TCP ? 16 : 6);
    pseudo = pseudoSumV4(ip.srcAddr, ip.dstAddr, ip.protocol, ip.totalLen - ip.headerLen);
  } else {
    const ip = new Ipv6Packet();
    if (ip.wrap(p, 0, p.length) !== 0) throw new Error('toPartialChecksum: not a valid IPv6 packet');
    csumAt = ip.transportOffset + (ip.transportProtocol === IP_PROTO_TCP ? 16 : 6);
    pseudo = pseudoSumV6(p, 8, 24, ip.transportProtocol, ip.transportLen);
  }
  const v = fold(pseudo);
  p[csumAt] = v >>> 8;
  p[csumAt + 1] = v & 0xff;
  return { bytes: p, csumAt };
}
