// ICMP (RFC 792) and ICMPv6 (RFC 4443) header view: the four fixed bytes plus
// the 4-byte rest-of-header (echo identifier and sequence, or the MTU of a
// "packet too big"). Errors quote the offending packet right after those 8 bytes.

import { read16, read32, write16 } from './bytes.js';
import { checksum } from './checksum.js';
import { WireError } from './wire-error.js';

export const ICMP_HEADER_LEN = 8;
export const ICMP_TYPE = 0;
export const ICMP_CODE = 1;
export const ICMP_CHECKSUM = 2;
export const ICMP_IDENT = 4;
export const ICMP_SEQ = 6;

export const ICMPV4_ECHO_REPLY = 0;
export const ICMPV4_DEST_UNREACHABLE = 3;
export const ICMPV4_ECHO_REQUEST = 8;
export const ICMPV4_TIME_EXCEEDED = 11;
export const ICMPV4_CODE_PORT_UNREACHABLE = 3;
export const ICMPV4_CODE_FRAG_NEEDED = 4;

export const ICMPV6_DEST_UNREACHABLE = 1;
export const ICMPV6_PACKET_TOO_BIG = 2;
export const ICMPV6_TIME_EXCEEDED = 3;
export const ICMPV6_ECHO_REQUEST = 128;
export const ICMPV6_ECHO_REPLY = 129;
export const ICMPV6_CODE_PORT_UNREACHABLE = 4;

const EMPTY = new Uint8Array(0);

export class IcmpPacket {
  buf: Uint8Array = EMPTY;
  off = 0;
  len = 0;

  /** Checked constructor over `buf[off, off + len)`. Never throws. */
  wrap(buf: Uint8Array, off: number, len: number): WireError {
    this.buf = buf;
    this.off = off;
    this.len = len;
    if (len < ICMP_HEADER_LEN || off < 0 || off + len > buf.length) return WireError.Truncated;
    return WireError.None;
  }

  get type(): number { return this.buf[this.off + ICMP_TYPE]; }
  get code(): number { return this.buf[this.off + ICMP_CODE]; }
  get checksum(): number { return read16(this.buf, this.off + ICMP_CHECKSUM); }
  get ident(): number { return read16(this.buf, this.off + ICMP_IDENT); }
  get seq(): number { return read16(this.buf, this.off + ICMP_SEQ); }
  /** The 32-bit rest of header: MTU for ICMPv6 packet too big; next-hop MTU in the low 16 bits for IPv4 frag needed. */
  get restOfHeader(): number { return read32(this.buf, this.off + ICMP_IDENT); }
  /** Absolute offset of the quoted packet in an error message. */
  get quotedOffset(): number { return this.off + ICMP_HEADER_LEN; }
  get quotedLen(): number { return this.len - ICMP_HEADER_LEN; }

  setType(value: number): void { this.buf[this.off + ICMP_TYPE] = value; }
  setCode(value: number): void { this.buf[this.off + ICMP_CODE] = value; }
  setChecksum(value: number): void { write16(this.buf, this.off + ICMP_CHECKSUM, value); }

  /** True when the checksum is right. `pseudo` is 0 for ICMPv4 and the pseudo-header sum for ICMPv6. */
  verifyChecksum(pseudo: number): boolean { return checksum(this.buf, this.off, this.len, pseudo) === 0; }
  fillChecksum(pseudo: number): void {
    this.setChecksum(0);
    this.setChecksum(checksum(this.buf, this.off, this.len, pseudo));
  }
}

/** True for the ICMPv4 types that quote an offending packet. */
export function isIcmpv4Error(type: number): boolean {
  return type === ICMPV4_DEST_UNREACHABLE || type === ICMPV4_TIME_EXCEEDED || type === 4 || type === 5 || type === 12;
}

/** True for ICMPv6 error types (RFC 4443 §2.1: types 0-127 are errors). */
export function isIcmpv6Error(type: number): boolean {
  return type < 128;
}
