// What a virtio-net header (PACKET_FLAG_*, from a TUN device with offloads on)
// means for the packet path: whether it describes the packet it came with, and
// how many segments a super-packet carries, so counters count what the wire
// will carry. The header itself travels back with the packet untouched
// (translation changes no length and no header offset); only answers hostlb
// builds go out without it.

import {
  PACKET_FLAG_BAD_VNET, PACKET_FLAG_GSO, PACKET_FLAG_GSO_TCPV4, PACKET_FLAG_GSO_TCPV6, PACKET_FLAG_GSO_UDP, PACKET_FLAG_PARTIAL_CSUM,
} from '../link/link.js';
import { IP_PROTO_TCP, IP_PROTO_UDP } from '../wire/ipv4.js';
import { TCP_CHECKSUM } from '../wire/tcp.js';
import { UDP_CHECKSUM, UDP_HEADER_LEN } from '../wire/udp.js';

/**
 * True when link flags `flags` fit a packet of `family` and `protocol` whose
 * transport header starts `l4At` bytes into it, a partial checksum sitting
 * `csumAt` bytes in: a super-packet must be of the protocol (and for TCP the
 * IP version) its type names, and a partial checksum must be the transport's.
 * Anything else would have the kernel complete a checksum or cut segments
 * somewhere the translation did not look. Never throws.
 */
export function offloadFits(flags: number, family: number, protocol: number, l4At: number, csumAt: number): boolean {
  if ((flags & PACKET_FLAG_BAD_VNET) !== 0) return false;
  const gso = flags & PACKET_FLAG_GSO;
  if (gso !== 0) {
    const expected = protocol === IP_PROTO_UDP ? PACKET_FLAG_GSO_UDP
      : protocol === IP_PROTO_TCP ? (family === 4 ? PACKET_FLAG_GSO_TCPV4 : PACKET_FLAG_GSO_TCPV6)
      : -1;
    if (gso !== expected) return false;
  }
  if ((flags & PACKET_FLAG_PARTIAL_CSUM) !== 0) {
    if (protocol === IP_PROTO_TCP) return csumAt === l4At + TCP_CHECKSUM;
    if (protocol === IP_PROTO_UDP) return csumAt === l4At + UDP_CHECKSUM;
    return false;
  }
  return true;
}

/**
 * Bytes of headers each segment of a super-packet repeats: IP (with any
 * extension headers) plus TCP with options, or plus UDP's 8.
 */
export function segmentHeaderBytes(buf: Uint8Array, ipOff: number, l4Off: number, protocol: number): number {
  return l4Off - ipOff + (protocol === IP_PROTO_TCP ? (buf[l4Off + 12] >>> 4) << 2 : UDP_HEADER_LEN);
}

/** Segments a super-packet of `ipLen` bytes carries at `gsoSize` payload bytes each (at least 1). */
export function segmentCount(ipLen: number, headerBytes: number, gsoSize: number): number {
  const payload = ipLen - headerBytes;
  return gsoSize === 0 || payload <= gsoSize ? 1 : Math.ceil(payload / gsoSize);
}
