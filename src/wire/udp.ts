// UDP header view (RFC 768). After wrap() returns WireError.None, the length
// field is consistent with the bytes present and no accessor can fail.

import { read16, write16 } from './bytes.js';
import { checksum } from './checksum.js';
import { WireError } from './wire-error.js';

export const UDP_HEADER_LEN = 8;
export const UDP_SRC_PORT = 0;
export const UDP_DST_PORT = 2;
export const UDP_LENGTH = 4;
export const UDP_CHECKSUM = 6;

const EMPTY = new Uint8Array(0);

export class UdpPacket {
  buf: Uint8Array = EMPTY;
  off = 0;

  /** Checked constructor over `buf[off, off + len)`. Bytes past the length field are ignored. Never throws. */
  wrap(buf: Uint8Array, off: number, len: number): WireError {
    this.buf = buf;
    this.off = off;
    if (len < UDP_HEADER_LEN || off < 0 || off + len > buf.length) return WireError.Truncated;
    const length = read16(buf, off + UDP_LENGTH);
    if (length < UDP_HEADER_LEN) return WireError.BadLength;
    if (length > len) return WireError.Truncated;
    return WireError.None;
  }

  get srcPort(): number { return read16(this.buf, this.off + UDP_SRC_PORT); }
  get dstPort(): number { return read16(this.buf, this.off + UDP_DST_PORT); }
  get length(): number { return read16(this.buf, this.off + UDP_LENGTH); }
  get checksum(): number { return read16(this.buf, this.off + UDP_CHECKSUM); }
  get payloadOffset(): number { return this.off + UDP_HEADER_LEN; }
  get payloadLen(): number { return this.length - UDP_HEADER_LEN; }

  setSrcPort(value: number): void { write16(this.buf, this.off + UDP_SRC_PORT, value); }
  setDstPort(value: number): void { write16(this.buf, this.off + UDP_DST_PORT, value); }
  setChecksum(value: number): void { write16(this.buf, this.off + UDP_CHECKSUM, value); }

  /** True when the checksum is right or absent (0, IPv4 only: the caller decides whether absence is allowed). */
  verifyChecksum(pseudo: number): boolean {
    return this.checksum === 0 || checksum(this.buf, this.off, this.length, pseudo) === 0;
  }
  /** Recomputes the checksum in place; a computed 0 is sent as 0xffff (RFC 768). */
  fillChecksum(pseudo: number): void {
    this.setChecksum(0);
    const value = checksum(this.buf, this.off, this.length, pseudo);
    this.setChecksum(value === 0 ? 0xffff : value);
  }
}

export interface UdpRepr {
  srcPort: number;
  dstPort: number;
  payloadLen: number;
}

/** Writes an 8-byte UDP header at `buf[off]` with checksum 0 (fill it once the payload is in place). */
export function emitUdp(repr: UdpRepr, buf: Uint8Array, off: number): number {
  write16(buf, off + UDP_SRC_PORT, repr.srcPort);
  write16(buf, off + UDP_DST_PORT, repr.dstPort);
  write16(buf, off + UDP_LENGTH, UDP_HEADER_LEN + repr.payloadLen);
  write16(buf, off + UDP_CHECKSUM, 0);
  return UDP_HEADER_LEN;
}
