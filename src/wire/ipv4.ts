// IPv4 header view (RFC 791): a reusable zero-copy view over a packet buffer.
// After wrap() returns WireError.None, no accessor can fail or read out of bounds.
// Options are carried, not interpreted; fragments are described, not reassembled.

import { read16, read32, write16, write32 } from './bytes.js';
import { checksum } from './checksum.js';
import { WireError } from './wire-error.js';

export const IPV4_HEADER_LEN = 20;
export const IPV4_VERSION_IHL = 0;
export const IPV4_TOTAL_LEN = 2;
export const IPV4_IDENT = 4;
export const IPV4_FLAGS_FRAG = 6;
export const IPV4_TTL = 8;
export const IPV4_PROTOCOL = 9;
export const IPV4_CHECKSUM = 10;
export const IPV4_SRC_ADDR = 12;
export const IPV4_DST_ADDR = 16;

export const IPV4_FLAG_DF = 0x4000;
export const IPV4_FLAG_MF = 0x2000;
export const IPV4_FRAG_OFFSET_MASK = 0x1fff;

export const IP_PROTO_ICMP = 1;
export const IP_PROTO_TCP = 6;
export const IP_PROTO_UDP = 17;
export const IP_PROTO_ICMPV6 = 58;

const EMPTY = new Uint8Array(0);

export class Ipv4Packet {
  buf: Uint8Array = EMPTY;
  /** Offset of the IP header in `buf`. */
  off = 0;

  /**
   * Checked constructor: points the view at `buf[off, off + len)`. Bytes after
   * the total length (link padding) are ignored. Never throws.
   */
  wrap(buf: Uint8Array, off: number, len: number): WireError {
    this.buf = buf;
    this.off = off;
    if (len < IPV4_HEADER_LEN || off < 0 || off + len > buf.length) return WireError.Truncated;
    const vihl = buf[off];
    if (vihl >>> 4 !== 4) return WireError.BadVersion;
    const headerLen = (vihl & 0x0f) << 2;
    if (headerLen < IPV4_HEADER_LEN) return WireError.BadHeaderLen;
    if (headerLen > len) return WireError.Truncated;
    const totalLen = read16(buf, off + IPV4_TOTAL_LEN);
    if (totalLen < headerLen) return WireError.BadTotalLen;
    if (totalLen > len) return WireError.Truncated;
    return WireError.None;
  }

  /**
   * Checked constructor for a packet of which only the first `copied` bytes
   * are at hand (NFQUEUE copies a packet's head): the version and a whole
   * header must be there; the total length may lie beyond the copy. Never throws.
   */
  wrapHead(buf: Uint8Array, off: number, copied: number): WireError {
    this.buf = buf;
    this.off = off;
    if (copied < IPV4_HEADER_LEN || off < 0 || off + copied > buf.length) return WireError.Truncated;
    if (buf[off] >>> 4 !== 4) return WireError.BadVersion;
    const headerLen = (buf[off] & 0x0f) << 2;
    if (headerLen < IPV4_HEADER_LEN) return WireError.BadHeaderLen;
    return headerLen > copied ? WireError.Truncated : WireError.None;
  }

  get headerLen(): number { return (this.buf[this.off] & 0x0f) << 2; }
  get dscpEcn(): number { return this.buf[this.off + 1]; }
  get totalLen(): number { return read16(this.buf, this.off + IPV4_TOTAL_LEN); }
  get ident(): number { return read16(this.buf, this.off + IPV4_IDENT); }
  get dontFrag(): boolean { return (read16(this.buf, this.off + IPV4_FLAGS_FRAG) & IPV4_FLAG_DF) !== 0; }
  get moreFrags(): boolean { return (read16(this.buf, this.off + IPV4_FLAGS_FRAG) & IPV4_FLAG_MF) !== 0; }
  /** Fragment offset in bytes. */
  get fragOffset(): number { return (read16(this.buf, this.off + IPV4_FLAGS_FRAG) & IPV4_FRAG_OFFSET_MASK) << 3; }
  /** True for any fragment of a fragmented datagram, first or later. */
  get isFragment(): boolean { return (read16(this.buf, this.off + IPV4_FLAGS_FRAG) & (IPV4_FLAG_MF | IPV4_FRAG_OFFSET_MASK)) !== 0; }
  get ttl(): number { return this.buf[this.off + IPV4_TTL]; }
  get protocol(): number { return this.buf[this.off + IPV4_PROTOCOL]; }
  get checksum(): number { return read16(this.buf, this.off + IPV4_CHECKSUM); }
  /** Source address as an unsigned 32-bit number. */
  get srcAddr(): number { return read32(this.buf, this.off + IPV4_SRC_ADDR); }
  get dstAddr(): number { return read32(this.buf, this.off + IPV4_DST_ADDR); }
  /** Absolute offset in `buf` of the payload (the transport header of a first fragment). */
  get payloadOffset(): number { return this.off + this.headerLen; }
  get payloadLen(): number { return this.totalLen - this.headerLen; }

  setTtl(value: number): void { this.buf[this.off + IPV4_TTL] = value; }
  setSrcAddr(value: number): void { write32(this.buf, this.off + IPV4_SRC_ADDR, value); }
  setDstAddr(value: number): void { write32(this.buf, this.off + IPV4_DST_ADDR, value); }
  setChecksum(value: number): void { write16(this.buf, this.off + IPV4_CHECKSUM, value); }

  /** True when the header checksum is right (RFC 1071: the header sums to 0xffff). */
  verifyChecksum(): boolean {
    const buf = this.buf;
    const o = this.off;
    if ((buf[o] & 0x0f) !== 5) return checksum(buf, o, this.headerLen) === 0;
    return verifyIpv4HeaderChecksum(buf, o);
  }
  /** Recomputes the header checksum in place. */
  fillChecksum(): void {
    this.setChecksum(0);
    this.setChecksum(checksum(this.buf, this.off, this.headerLen));
  }
}

/**
 * True when the 20-byte header (no options) at `buf[o]` sums to 0xffff (RFC
 * 1071). The caller has checked that 20 bytes are there. Ten unrolled words:
 * the generic loop was a visible share of the packet path in bench:core.
 */
export function verifyIpv4HeaderChecksum(buf: Uint8Array, o: number): boolean {
  let sum = ((buf[o] << 8) | buf[o + 1]) + ((buf[o + 2] << 8) | buf[o + 3]) + ((buf[o + 4] << 8) | buf[o + 5]) +
    ((buf[o + 6] << 8) | buf[o + 7]) + ((buf[o + 8] << 8) | buf[o + 9]) + ((buf[o + 10] << 8) | buf[o + 11]) +
    ((buf[o + 12] << 8) | buf[o + 13]) + ((buf[o + 14] << 8) | buf[o + 15]) + ((buf[o + 16] << 8) | buf[o + 17]) +
    ((buf[o + 18] << 8) | buf[o + 19]);
  // Below 2^20, so two end-around-carry folds reach 16 bits.
  sum = (sum & 0xffff) + (sum >>> 16);
  sum = (sum & 0xffff) + (sum >>> 16);
  return sum === 0xffff;
}

/** The fields a builder needs to emit a plain IPv4 header (no options). */
export interface Ipv4Repr {
  srcAddr: number;
  dstAddr: number;
  protocol: number;
  payloadLen: number;
  ttl?: number;
  ident?: number;
  dontFrag?: boolean;
  moreFrags?: boolean;
  /** Fragment offset in bytes (a multiple of 8). */
  fragOffset?: number;
}

/** Writes a 20-byte IPv4 header with a correct checksum at `buf[off]`. Returns the header length. */
export function emitIpv4(repr: Ipv4Repr, buf: Uint8Array, off: number): number {
  buf[off] = 0x45;
  buf[off + 1] = 0;
  write16(buf, off + IPV4_TOTAL_LEN, IPV4_HEADER_LEN + repr.payloadLen);
  write16(buf, off + IPV4_IDENT, repr.ident ?? 0);
  const flags = (repr.dontFrag ? IPV4_FLAG_DF : 0) | (repr.moreFrags ? IPV4_FLAG_MF : 0) | ((repr.fragOffset ?? 0) >>> 3);
  write16(buf, off + IPV4_FLAGS_FRAG, flags);
  buf[off + IPV4_TTL] = repr.ttl ?? 64;
  buf[off + IPV4_PROTOCOL] = repr.protocol;
  write16(buf, off + IPV4_CHECKSUM, 0);
  write32(buf, off + IPV4_SRC_ADDR, repr.srcAddr);
  write32(buf, off + IPV4_DST_ADDR, repr.dstAddr);
  write16(buf, off + IPV4_CHECKSUM, checksum(buf, off, IPV4_HEADER_LEN));
  return IPV4_HEADER_LEN;
}
