// Netlink messages as bytes: a writer that appends messages and (nested)
// attributes into one reusable buffer, and readers that walk the messages of
// a datagram and the attributes of a message without allocating. Header
// fields are host order (little-endian here); nfnetlink payloads are network
// order, which the callers handle. Readers never throw on malformed input:
// a length that does not fit ends the walk.

export const NLMSG_HDRLEN = 16;
export const NLA_HDRLEN = 4;
/** Attribute type bits that are flags, not the type: nested and network-byte-order. */
export const NLA_TYPE_MASK = 0x3fff;
export const NLA_F_NESTED = 0x8000;

export const NLM_F_REQUEST = 0x1;
export const NLM_F_MULTI = 0x2;
export const NLM_F_ACK = 0x4;
export const NLM_F_DUMP = 0x300;

export const NLMSG_ERROR = 2;
export const NLMSG_DONE = 3;

/** nfnetlink's generic header after the netlink header: family, version 0, resource id (network order). */
export const NFGEN_HDRLEN = 4;

export function align4(n: number): number {
  return (n + 3) & ~3;
}

/** Appends messages to one buffer; `bytes()` is the datagram to write. Reused: `reset()` between datagrams. */
export class NetlinkWriter {
  readonly buffer: Uint8Array;
  private readonly view: DataView;
  length = 0;
  private messageStart = -1;
  private readonly nests: number[] = [];
  private seq = 1;

  constructor(size = 65536) {
    this.buffer = new Uint8Array(size);
    this.view = new DataView(this.buffer.buffer);
  }

  reset(): void {
    this.length = 0;
    this.messageStart = -1;
    this.nests.length = 0;
  }

  /** Room for `bytes` more, so a caller can flush before a batch overflows. */
  fits(bytes: number): boolean {
    return this.length + bytes <= this.buffer.length;
  }

  /** Starts a message with an nfnetlink header; returns its sequence number. */
  beginNfMessage(type: number, flags: number, family: number, resourceId: number): number {
    const seq = this.beginMessage(type, flags);
    const at = this.messageStart;
    this.buffer[at + 16] = family;
    this.buffer[at + 17] = 0;
    this.view.setUint16(at + 18, resourceId, false);
    this.length = at + NLMSG_HDRLEN + NFGEN_HDRLEN;
    return seq;
  }

  /** Starts a message with a plain netlink header (no nfnetlink one); returns its sequence number. */
  beginMessage(type: number, flags: number): number {
    const at = this.length;
    this.messageStart = at;
    const seq = this.seq++;
    this.view.setUint32(at, 0, true);
    this.view.setUint16(at + 4, type, true);
    this.view.setUint16(at + 6, flags, true);
    this.view.setUint32(at + 8, seq, true);
    this.view.setUint32(at + 12, 0, true);
    this.length = at + NLMSG_HDRLEN;
    return seq;
  }

  /** Appends a fixed struct (a request's body) of `size` zero bytes, and returns where it starts. */
  struct(size: number): number {
    const at = this.length;
    this.buffer.fill(0, at, at + align4(size));
    this.length = at + align4(size);
    return at;
  }

  endMessage(): void {
    this.view.setUint32(this.messageStart, this.length - this.messageStart, true);
    this.messageStart = -1;
  }

  private attrHeader(type: number, payload: number): number {
    const at = this.length;
    this.view.setUint16(at, NLA_HDRLEN + payload, true);
    this.view.setUint16(at + 2, type, true);
    return at + NLA_HDRLEN;
  }

  /** A 32-bit attribute in network order (nfnetlink's convention). */
  u32be(type: number, value: number): void {
    const p = this.attrHeader(type, 4);
    this.view.setUint32(p, value >>> 0, false);
    this.length = p + 4;
  }

  u16be(type: number, value: number): void {
    const p = this.attrHeader(type, 2);
    this.view.setUint16(p, value, false);
    this.view.setUint16(p + 2, 0, true);
    this.length = p + 4;
  }

  u8(type: number, value: number): void {
    const p = this.attrHeader(type, 1);
    this.view.setUint32(p, 0, true);
    this.buffer[p] = value;
    this.length = p + 4;
  }

  /** An attribute whose payload is `bytes` (padded with zeros to 4). */
  raw(type: number, bytes: ArrayLike<number>): void {
    const p = this.attrHeader(type, bytes.length);
    this.buffer.fill(0, p, p + align4(bytes.length));
    this.buffer.set(bytes, p);
    this.length = p + align4(bytes.length);
  }

  beginNest(type: number): void {
    this.nests.push(this.length);
    this.attrHeader(type | NLA_F_NESTED, 0);
    this.length += NLA_HDRLEN;
  }

  endNest(): void {
    const at = this.nests.pop()!;
    this.view.setUint16(at, this.length - at, true);
  }

  /** Overwrites 4 bytes at `at` with `value` in network order (a struct field inside an attribute). */
  putU32be(at: number, value: number): void {
    this.view.setUint32(at, value >>> 0, false);
  }

  bytes(): Uint8Array {
    return this.buffer.subarray(0, this.length);
  }
}

/**
 * Walks the messages of one datagram: `next()` moves to the next complete
 * message and returns false at the end (or at a length that does not fit).
 */
export class MessageReader {
  private buf: Uint8Array = new Uint8Array(0);
  private view: DataView = new DataView(this.buf.buffer);
  private end = 0;
  private nextAt = 0;
  /** The current message: offset of its header, total length, type, flags, seq. */
  at = 0;
  length = 0;
  type = 0;
  flags = 0;
  seq = 0;

  reset(buf: Uint8Array, view: DataView, start: number, end: number): void {
    this.buf = buf;
    this.view = view;
    this.nextAt = start;
    this.end = end;
  }

  next(): boolean {
    const at = this.nextAt;
    if (at + NLMSG_HDRLEN > this.end) return false;
    const length = this.view.getUint32(at, true);
    if (length < NLMSG_HDRLEN || at + length > this.end) return false;
    this.at = at;
    this.length = length;
    this.type = this.view.getUint16(at + 4, true);
    this.flags = this.view.getUint16(at + 6, true);
    this.seq = this.view.getUint32(at + 8, true);
    this.nextAt = at + align4(length);
    return true;
  }

  /** For NLMSG_ERROR: the error code (0 = an acknowledgment, else a negative errno). */
  errorCode(): number {
    if (this.length < NLMSG_HDRLEN + 4) return 0;
    return this.view.getInt32(this.at + NLMSG_HDRLEN, true);
  }

  get buffer(): Uint8Array {
    return this.buf;
  }
}

/**
 * Walks attributes between `start` and `end`, recording the payload offset
 * and length of each type below `slots.length` (0 = absent). Later duplicates
 * win. No allocation: the arrays are the caller's and reused.
 */
export function indexAttributes(view: DataView, start: number, end: number, offsets: Int32Array, lengths: Int32Array): void {
  offsets.fill(0);
  lengths.fill(0);
  let at = start;
  while (at + NLA_HDRLEN <= end) {
    const length = view.getUint16(at, true);
    if (length < NLA_HDRLEN || at + length > end) return;
    const type = view.getUint16(at + 2, true) & NLA_TYPE_MASK;
    if (type < offsets.length) {
      offsets[type] = at + NLA_HDRLEN;
      lengths[type] = length - NLA_HDRLEN;
    }
    at += align4(length);
  }
}
