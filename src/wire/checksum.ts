// The Internet checksum (RFC 1071) and its incremental update (RFC 1624).
// Full sums are for building and verifying packets; the packet path only ever
// applies deltas, so it touches the checksum field and never the payload.

import { read16 } from './bytes.js';

/**
 * One's-complement sum of 16-bit big-endian words in `buf[off, off + len)`,
 * added to `initial`, not folded. An odd trailing byte is padded with zero.
 * Safe for any IP packet: 32768 words of 0xffff stay below 2^32.
 */
export function onesSum(buf: Uint8Array, off: number, len: number, initial = 0): number {
  let sum = initial;
  const end = off + (len & ~1);
  for (let i = off; i < end; i += 2) sum += (buf[i] << 8) | buf[i + 1];
  if (len & 1) sum += buf[off + len - 1] << 8;
  return sum;
}

/** Folds a sum into 16 bits with end-around carry. Accepts sums below 2^53. */
export function fold(sum: number): number {
  while (sum > 0xffff) sum = (sum % 0x10000) + Math.floor(sum / 0x10000);
  return sum;
}

/** The checksum field value for data whose unfolded sum (including any pseudo-header) is `sum`. */
export function finish(sum: number): number {
  return ~fold(sum) & 0xffff;
}

/** Checksum over `buf[off, off + len)` plus `initial` (e.g. a pseudo-header sum). */
export function checksum(buf: Uint8Array, off: number, len: number, initial = 0): number {
  return finish(onesSum(buf, off, len, initial));
}

/** IPv4 pseudo-header sum (RFC 793 §3.1, RFC 768): addresses as uint32, `l4Len` in bytes. */
export function pseudoSumV4(srcAddr: number, dstAddr: number, protocol: number, l4Len: number): number {
  return (srcAddr >>> 16) + (srcAddr & 0xffff) + (dstAddr >>> 16) + (dstAddr & 0xffff) + protocol + l4Len;
}

/** IPv6 pseudo-header sum (RFC 8200 §8.1): 16-byte addresses read from `buf` at the given offsets. */
export function pseudoSumV6(buf: Uint8Array, srcOff: number, dstOff: number, nextHeader: number, l4Len: number): number {
  return onesSum(buf, srcOff, 16, onesSum(buf, dstOff, 16, 0)) + (l4Len >>> 16) + (l4Len & 0xffff) + nextHeader;
}

/** RFC 1624 delta for one 16-bit word changing from `old` to `value`: ~m + m'. */
export function delta16(old: number, value: number): number {
  return (~old & 0xffff) + (value & 0xffff);
}

/** RFC 1624 delta for a 32-bit field (an IPv4 address) changing from `old` to `value`. */
export function delta32(old: number, value: number): number {
  return (~old >>> 16 & 0xffff) + (~old & 0xffff) + (value >>> 16) + (value & 0xffff);
}

/** RFC 1624 delta for `len` bytes (even) at `oldOff` in `oldBuf` replaced by those at `newOff` in `newBuf`. */
export function deltaBytes(oldBuf: Uint8Array, oldOff: number, newBuf: Uint8Array, newOff: number, len: number): number {
  let sum = 0;
  for (let i = 0; i < len; i += 2) {
    sum += (~((oldBuf[oldOff + i] << 8) | oldBuf[oldOff + i + 1]) & 0xffff) + ((newBuf[newOff + i] << 8) | newBuf[newOff + i + 1]);
  }
  return sum;
}

/**
 * Applies a delta to a complete checksum field at `buf[off]`, RFC 1624 eqn. 3:
 * HC' = ~(~HC + ~m + m'). Equals a full recomputation whenever the covered
 * data does not sum to +0 (all zero) before or after the change, since
 * end-around-carry addition of non-zero terms never produces +0; IP headers and
 * pseudo-headers never sum to +0 (version, protocol).
 */
export function applyComplete(buf: Uint8Array, off: number, delta: number): void {
  const hc = read16(buf, off);
  const value = ~fold((~hc & 0xffff) + delta) & 0xffff;
  buf[off] = value >>> 8;
  buf[off + 1] = value & 0xff;
}

/**
 * Applies a delta to a partial checksum field (virtio NEEDS_CSUM): the field
 * holds the folded pseudo-header sum, not complemented, so the delta is added
 * without complementing. Only pseudo-header changes (addresses) belong here;
 * port changes leave a partial field alone because ports are not in it.
 */
export function applyPartial(buf: Uint8Array, off: number, delta: number): void {
  const value = fold(read16(buf, off) + delta);
  buf[off] = value >>> 8;
  buf[off + 1] = value & 0xff;
}

/**
 * Applies a delta to an IPv4 UDP checksum (RFC 768): 0 means "no checksum"
 * and stays 0; a result of 0 is sent as 0xffff.
 */
export function applyUdpV4(buf: Uint8Array, off: number, delta: number): void {
  if (buf[off] === 0 && buf[off + 1] === 0) return;
  applyComplete(buf, off, delta);
  if (buf[off] === 0 && buf[off + 1] === 0) {
    buf[off] = 0xff;
    buf[off + 1] = 0xff;
  }
}
