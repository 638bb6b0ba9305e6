// The seam packets cross. A Link moves batches of raw IP packets (no link-layer
// header) between the dispatcher and whatever carries them: the TUN device in
// production, a MemoryLink in tests and simulation. dispatch/ knows only this file.

/**
 * A batch is one large preallocated buffer plus parallel typed arrays that say
 * where each packet lives in it. The same shape serves reads and writes, so the
 * dispatcher rewrites packets in place and hands the same buffer back.
 *
 * Contract:
 * - `count` packets are valid; packet i occupies
 *   `buffer[offsets[i], offsets[i] + lengths[i])`.
 * - `capacity` is the most packets the arrays hold; `slotSize` is the most
 *   bytes one packet may occupy when a link fills the batch (packet i is read
 *   into `buffer[i * slotSize, (i + 1) * slotSize)`).
 * - `flags[i]` carries per-packet metadata from the link (PACKET_FLAG_*):
 *   what its virtio-net header said, when the link has offloads on. Then
 *   `gsoSizes[i]` is the segment size of a super-packet (0 for one packet) and
 *   `csumAt[i]` where a partial checksum lives (bytes from the IP header); the
 *   raw header is kept in `vnetHeaders[i * VNET_HEADER_LEN ...]` for the write.
 * - The caller owns the batch; a link never keeps a reference after a call returns.
 */
export interface PacketBatch {
  readonly buffer: Uint8Array;
  readonly offsets: Uint32Array;
  readonly lengths: Uint32Array;
  readonly flags: Uint8Array;
  readonly gsoSizes: Uint16Array;
  readonly csumAt: Uint16Array;
  /** Per slot (not per listed packet): a sibling batch shares its input's. */
  readonly vnetHeaders: Uint8Array;
  readonly capacity: number;
  readonly slotSize: number;
  count: number;
}

/**
 * The transport checksum field holds the folded pseudo-header sum, not a full
 * checksum (virtio-net NEEDS_CSUM, once offloads are on). See DESIGN.md.
 */
export const PACKET_FLAG_PARTIAL_CSUM = 1;
/** A TCP/IPv4 super-packet (GSO): one header, a payload of `gsoSizes[i]`-byte segments. */
export const PACKET_FLAG_GSO_TCPV4 = 2;
/** A TCP/IPv6 super-packet. */
export const PACKET_FLAG_GSO_TCPV6 = 4;
/** A UDP super-packet (USO: each segment a datagram of its own). */
export const PACKET_FLAG_GSO_UDP = 8;
/** A virtio-net header hostlb cannot use (UFO, an unknown type, GSO without a segment size): dropped. */
export const PACKET_FLAG_BAD_VNET = 16;
/** Any super-packet. */
export const PACKET_FLAG_GSO = PACKET_FLAG_GSO_TCPV4 | PACKET_FLAG_GSO_TCPV6 | PACKET_FLAG_GSO_UDP;
/** Flags whose packet the dispatcher checks against its headers before translating (see Drop.BadOffload). */
export const PACKET_FLAGS_OFFLOAD = PACKET_FLAG_PARTIAL_CSUM | PACKET_FLAG_GSO | PACKET_FLAG_BAD_VNET;

/** Bytes of a virtio-net header (struct virtio_net_hdr). */
export const VNET_HEADER_LEN = 10;

/** Default slot: the largest IP packet a TUN device delivers, a super-packet included. */
export const DEFAULT_SLOT_SIZE = 65536;

/** Allocates a batch of `capacity` slots of `slotSize` bytes each. Control path only. */
export function createBatch(capacity: number, slotSize = DEFAULT_SLOT_SIZE): PacketBatch {
  if (!Number.isInteger(capacity) || capacity < 1) throw new RangeError(`batch capacity must be a positive integer, got ${capacity}`);
  if (!Number.isInteger(slotSize) || slotSize < 64) throw new RangeError(`batch slotSize must be an integer >= 64, got ${slotSize}`);
  const offsets = new Uint32Array(capacity);
  for (let i = 0; i < capacity; i++) offsets[i] = i * slotSize;
  return {
    buffer: new Uint8Array(capacity * slotSize),
    offsets,
    lengths: new Uint32Array(capacity),
    flags: new Uint8Array(capacity),
    gsoSizes: new Uint16Array(capacity),
    csumAt: new Uint16Array(capacity),
    vnetHeaders: new Uint8Array(capacity * VNET_HEADER_LEN),
    capacity,
    slotSize,
    count: 0,
  };
}

/**
 * A packet carrier. Reads fill a batch's slots; writes send `count` packets
 * described by a batch's offsets and lengths (which may point anywhere in its
 * buffer, so rewritten packets are sent from where they were read).
 */
export interface Link {
  /** A name for logs and errors (the device name for TUN). */
  readonly name: string;
  /** Largest packet the link carries, in bytes. */
  readonly mtu: number;
  /** Largest packet a read may return: the MTU, or 65535 when the link hands over super-packets. Batch slots must hold it. */
  readonly maxReadSize: number;
  /**
   * Reads as many ready packets as fit (at most `batch.capacity`) into the
   * batch's slots, sets `batch.count` and returns it. Returns 0 when nothing is
   * ready; never blocks. Throws only when the link itself fails (closed device).
   */
  read(batch: PacketBatch): number;
  /**
   * Sends the first `batch.count` packets of the batch. Returns how many were
   * accepted; a packet the carrier refuses (full queue) is dropped, not retried.
   */
  write(batch: PacketBatch): number;
  /**
   * Optional: write(output), then read(input), in one step where the carrier
   * batches both (TUN through io_uring: one system call where the pair took
   * two, plus the poll that would have found `input`'s packets). `output` and
   * `input` must be batches over different buffers (RangeError otherwise).
   * Sets `result.written` and `result.read` to what the pair would return.
   */
  cycle?(output: PacketBatch, input: PacketBatch, result: CycleResult): void;
  /** Calls `onReadable` whenever packets may be ready; replaces an earlier callback. */
  onReadable(onReadable: (() => void) | null): void;
  /** Releases the carrier. Further reads return 0; further writes accept 0. */
  close(): void;
}

/** What Link.cycle wrote and read; the caller owns one and passes it each time (no allocation per call). */
export interface CycleResult {
  written: number;
  read: number;
}

/**
 * A batch over another batch's buffer, with its own offsets and lengths: the
 * dispatcher lists the packets it forwards here, in place, without copying.
 */
export function createSiblingBatch(batch: PacketBatch): PacketBatch {
  return {
    buffer: batch.buffer,
    offsets: new Uint32Array(batch.capacity),
    lengths: new Uint32Array(batch.capacity),
    flags: new Uint8Array(batch.capacity),
    gsoSizes: new Uint16Array(batch.capacity),
    csumAt: new Uint16Array(batch.capacity),
    vnetHeaders: batch.vnetHeaders,
    capacity: batch.capacity,
    slotSize: batch.slotSize,
    count: 0,
  };
}
