// IPv6 header view (RFC 8200) that walks the extension-header chain to the
// transport header. After wrap() returns WireError.None, `transportProtocol`
// and `transportOffset` are known and no accessor can fail. A fragment header
// is described (ident, offset, more-fragments), never reassembled.

import { read16, read32, write16 } from './bytes.js';
import { WireError } from './wire-error.js';

export const IPV6_HEADER_LEN = 40;
export const IPV6_PAYLOAD_LEN = 4;
export const IPV6_NEXT_HEADER = 6;
export const IPV6_HOP_LIMIT = 7;
export const IPV6_SRC_ADDR = 8;
export const IPV6_DST_ADDR = 24;
export const IPV6_ADDR_LEN = 16;

export const IPV6_EXT_HOP_BY_HOP = 0;
export const IPV6_EXT_ROUTING = 43;
export const IPV6_EXT_FRAGMENT = 44;
export const IPV6_EXT_AUTH = 51;
export const IPV6_EXT_DEST_OPTS = 60;
export const IPV6_NO_NEXT_HEADER = 59;
export const IPV6_FRAGMENT_HEADER_LEN = 8;

/** A chain longer than this is refused: real stacks send at most a handful. */
export const IPV6_MAX_EXT_HEADERS = 8;

const EMPTY = new Uint8Array(0);

export class Ipv6Packet {
  buf: Uint8Array = EMPTY;
  off = 0;
  /** Protocol of the header after the extension chain (6 TCP, 17 UDP, 58 ICMPv6, 59 none, ...). */
  transportProtocol = IPV6_NO_NEXT_HEADER;
  /** Absolute offset in `buf` of the transport header (or of the payload after the chain). */
  transportOffset = 0;
  /** Absolute offset of the fragment header, or -1 when there is none. */
  fragmentHeaderOffset = -1;
  /** Absolute offset of the byte that names `transportProtocol` (for translation that rewrites the chain). */
  nextHeaderFieldOffset = 0;

  /** Checked constructor: points the view at `buf[off, off + len)` and walks the chain. Never throws. */
  wrap(buf: Uint8Array, off: number, len: number): WireError {
    const fixed = this.wrapFixed(buf, off, len);
    if (fixed !== WireError.None) return fixed;
    const end = off + IPV6_HEADER_LEN + read16(buf, off + IPV6_PAYLOAD_LEN);
    if (end > off + len) return WireError.Truncated;

    let next = buf[off + IPV6_NEXT_HEADER];
    let at = off + IPV6_HEADER_LEN;
    let fieldAt = off + IPV6_NEXT_HEADER;
    for (let n = 0; ; n++) {
      if (next !== IPV6_EXT_HOP_BY_HOP && next !== IPV6_EXT_ROUTING && next !== IPV6_EXT_FRAGMENT &&
          next !== IPV6_EXT_AUTH && next !== IPV6_EXT_DEST_OPTS) break;
      if (n === IPV6_MAX_EXT_HEADERS) return WireError.BadExtensionHeader;
      // RFC 8200 §4.3: hop-by-hop options may only follow the fixed header.
      if (next === IPV6_EXT_HOP_BY_HOP && n !== 0) return WireError.BadExtensionHeader;
      if (at + 8 > end) return WireError.Truncated;
      let extLen: number;
      if (next === IPV6_EXT_FRAGMENT) {
        extLen = IPV6_FRAGMENT_HEADER_LEN;
        if (this.fragmentHeaderOffset !== -1) return WireError.BadExtensionHeader;
        this.fragmentHeaderOffset = at;
      } else if (next === IPV6_EXT_AUTH) {
        extLen = (buf[at + 1] + 2) << 2; // RFC 4302 §2.2: length in 4-octet units, minus 2
      } else {
        extLen = (buf[at + 1] + 1) << 3; // RFC 8200 §4.3: length in 8-octet units, not counting the first
      }
      if (at + extLen > end) return WireError.Truncated;
      fieldAt = at;
      next = buf[at];
      at += extLen;
    }
    this.transportProtocol = next;
    this.transportOffset = at;
    this.nextHeaderFieldOffset = fieldAt;
    return WireError.None;
  }

  /**
   * Checked constructor for a packet of which only the first `copied` bytes
   * are at hand (NFQUEUE copies a packet's head): the version and the fixed
   * header must be there. The extension chain is not walked (it may run past
   * the copy): `transportProtocol` is the fixed header's next header and
   * `transportOffset` follows the fixed header. Never throws.
   */
  wrapHead(buf: Uint8Array, off: number, copied: number): WireError {
    const fixed = this.wrapFixed(buf, off, copied);
    if (fixed === WireError.None) this.transportProtocol = buf[off + IPV6_NEXT_HEADER];
    return fixed;
  }

  /** Points the view at `buf[off…]` with no chain walked yet; checks the version and that `len` bytes hold the fixed header. */
  private wrapFixed(buf: Uint8Array, off: number, len: number): WireError {
    this.buf = buf;
    this.off = off;
    this.fragmentHeaderOffset = -1;
    this.transportProtocol = IPV6_NO_NEXT_HEADER;
    this.transportOffset = off + IPV6_HEADER_LEN;
    this.nextHeaderFieldOffset = off + IPV6_NEXT_HEADER;
    if (len < IPV6_HEADER_LEN || off < 0 || off + len > buf.length) return WireError.Truncated;
    if (buf[off] >>> 4 !== 6) return WireError.BadVersion;
    return WireError.None;
  }

  get trafficClass(): number { return ((this.buf[this.off] & 0x0f) << 4) | (this.buf[this.off + 1] >>> 4); }
  get flowLabel(): number { return read32(this.buf, this.off) & 0xfffff; }
  get payloadLen(): number { return read16(this.buf, this.off + IPV6_PAYLOAD_LEN); }
  get nextHeader(): number { return this.buf[this.off + IPV6_NEXT_HEADER]; }
  get hopLimit(): number { return this.buf[this.off + IPV6_HOP_LIMIT]; }
  /** Absolute offset of the 16-byte source address in `buf`. */
  get srcAddrOffset(): number { return this.off + IPV6_SRC_ADDR; }
  get dstAddrOffset(): number { return this.off + IPV6_DST_ADDR; }
  /** Bytes from the transport header to the end of the packet. */
  get transportLen(): number { return this.off + IPV6_HEADER_LEN + this.payloadLen - this.transportOffset; }
  get isFragment(): boolean { return this.fragmentHeaderOffset !== -1; }
  /** Fragment offset in bytes (0 when not a fragment). */
  get fragOffset(): number { return this.fragmentHeaderOffset === -1 ? 0 : read16(this.buf, this.fragmentHeaderOffset + 2) & 0xfff8; }
  get moreFrags(): boolean { return this.fragmentHeaderOffset !== -1 && (this.buf[this.fragmentHeaderOffset + 3] & 1) === 1; }
  get fragIdent(): number { return this.fragmentHeaderOffset === -1 ? 0 : read32(this.buf, this.fragmentHeaderOffset + 4); }

  setHopLimit(value: number): void { this.buf[this.off + IPV6_HOP_LIMIT] = value; }
  /** Copies a 16-byte address from `src[srcOff]` into the source address (a loop, so no subarray per packet). */
  setSrcAddr(src: Uint8Array, srcOff: number): void { copy16(src, srcOff, this.buf, this.off + IPV6_SRC_ADDR); }
  setDstAddr(src: Uint8Array, srcOff: number): void { copy16(src, srcOff, this.buf, this.off + IPV6_DST_ADDR); }
}

function copy16(src: Uint8Array, srcOff: number, dst: Uint8Array, dstOff: number): void {
  for (let i = 0; i < 16; i++) dst[dstOff + i] = src[srcOff + i];
}

/** The fields a builder needs to emit a plain IPv6 header (no extension headers). */
export interface Ipv6Repr {
  srcAddr: Uint8Array;
  dstAddr: Uint8Array;
  nextHeader: number;
  payloadLen: number;
  hopLimit?: number;
}

/** Writes a 40-byte IPv6 header at `buf[off]`. Returns the header length. */
export function emitIpv6(repr: Ipv6Repr, buf: Uint8Array, off: number): number {
  buf[off] = 0x60;
  buf[off + 1] = 0;
  buf[off + 2] = 0;
  buf[off + 3] = 0;
  write16(buf, off + IPV6_PAYLOAD_LEN, repr.payloadLen);
  buf[off + IPV6_NEXT_HEADER] = repr.nextHeader;
  buf[off + IPV6_HOP_LIMIT] = repr.hopLimit ?? 64;
  buf.set(repr.srcAddr.subarray(0, 16), off + IPV6_SRC_ADDR);
  buf.set(repr.dstAddr.subarray(0, 16), off + IPV6_DST_ADDR);
  return IPV6_HEADER_LEN;
}
