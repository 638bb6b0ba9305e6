// TCP header view (RFC 9293 §3.1). Options are carried, not interpreted.
// After wrap() returns WireError.None, no accessor can fail.

import { read16, read32, write16, write32 } from './bytes.js';
import { checksum } from './checksum.js';
import { WireError } from './wire-error.js';

export const TCP_HEADER_LEN = 20;
export const TCP_SRC_PORT = 0;
export const TCP_DST_PORT = 2;
export const TCP_SEQ = 4;
export const TCP_ACK = 8;
export const TCP_DATA_OFFSET = 12;
export const TCP_FLAGS = 13;
export const TCP_WINDOW = 14;
export const TCP_CHECKSUM = 16;
export const TCP_URGENT = 18;

export const TCP_FIN = 0x01;
export const TCP_SYN = 0x02;
export const TCP_RST = 0x04;
export const TCP_PSH = 0x08;
export const TCP_ACK_FLAG = 0x10;
export const TCP_URG = 0x20;
export const TCP_ECE = 0x40;
export const TCP_CWR = 0x80;

const EMPTY = new Uint8Array(0);

export class TcpPacket {
  buf: Uint8Array = EMPTY;
  off = 0;
  len = 0;

  /** Checked constructor over `buf[off, off + len)` (the segment: header and payload). Never throws. */
  wrap(buf: Uint8Array, off: number, len: number): WireError {
    this.buf = buf;
    this.off = off;
    this.len = len;
    if (len < TCP_HEADER_LEN || off < 0 || off + len > buf.length) return WireError.Truncated;
    const headerLen = (buf[off + TCP_DATA_OFFSET] >>> 4) << 2;
    if (headerLen < TCP_HEADER_LEN) return WireError.BadHeaderLen;
    if (headerLen > len) return WireError.Truncated;
    return WireError.None;
  }

  get srcPort(): number { return read16(this.buf, this.off + TCP_SRC_PORT); }
  get dstPort(): number { return read16(this.buf, this.off + TCP_DST_PORT); }
  get seqNumber(): number { return read32(this.buf, this.off + TCP_SEQ); }
  get ackNumber(): number { return read32(this.buf, this.off + TCP_ACK); }
  get headerLen(): number { return (this.buf[this.off + TCP_DATA_OFFSET] >>> 4) << 2; }
  get flags(): number { return this.buf[this.off + TCP_FLAGS]; }
  get window(): number { return read16(this.buf, this.off + TCP_WINDOW); }
  get checksum(): number { return read16(this.buf, this.off + TCP_CHECKSUM); }
  get urgentPointer(): number { return read16(this.buf, this.off + TCP_URGENT); }
  get payloadOffset(): number { return this.off + this.headerLen; }
  get payloadLen(): number { return this.len - this.headerLen; }

  setSrcPort(value: number): void { write16(this.buf, this.off + TCP_SRC_PORT, value); }
  setDstPort(value: number): void { write16(this.buf, this.off + TCP_DST_PORT, value); }
  setSeqNumber(value: number): void { write32(this.buf, this.off + TCP_SEQ, value); }
  setAckNumber(value: number): void { write32(this.buf, this.off + TCP_ACK, value); }
  setFlags(value: number): void { this.buf[this.off + TCP_FLAGS] = value; }
  setChecksum(value: number): void { write16(this.buf, this.off + TCP_CHECKSUM, value); }

  /** True when the checksum over the pseudo-header sum `pseudo` and the segment is right. */
  verifyChecksum(pseudo: number): boolean { return checksum(this.buf, this.off, this.len, pseudo) === 0; }
  /** Recomputes the checksum in place given the pseudo-header sum. */
  fillChecksum(pseudo: number): void {
    this.setChecksum(0);
    this.setChecksum(checksum(this.buf, this.off, this.len, pseudo));
  }
}

/** The fields a builder needs to emit a TCP header without options. */
export interface TcpRepr {
  srcPort: number;
  dstPort: number;
  seqNumber?: number;
  ackNumber?: number;
  flags: number;
  window?: number;
}

/** Writes a 20-byte TCP header at `buf[off]` with checksum 0 (fill it once the payload is in place). */
export function emitTcp(repr: TcpRepr, buf: Uint8Array, off: number): number {
  write16(buf, off + TCP_SRC_PORT, repr.srcPort);
  write16(buf, off + TCP_DST_PORT, repr.dstPort);
  write32(buf, off + TCP_SEQ, repr.seqNumber ?? 0);
  write32(buf, off + TCP_ACK, repr.ackNumber ?? 0);
  buf[off + TCP_DATA_OFFSET] = (TCP_HEADER_LEN >>> 2) << 4;
  buf[off + TCP_FLAGS] = repr.flags;
  write16(buf, off + TCP_WINDOW, repr.window ?? 65535);
  write16(buf, off + TCP_CHECKSUM, 0);
  write16(buf, off + TCP_URGENT, 0);
  return TCP_HEADER_LEN;
}
