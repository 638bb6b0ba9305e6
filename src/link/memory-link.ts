// An in-memory Link for tests and simulation: packets injected by a test (or
// written by a paired link) queue up to be read; packets written are kept for
// drain() (or delivered to the pair). It copies; the TUN link is the fast one.

import type { Link, PacketBatch } from './link.js';

export interface MemoryLinkOptions {
  /** Name for logs and errors. Default "mem0". */
  name?: string;
  /** Reported MTU in bytes. Default 1500, as for a new TUN device. */
  mtu?: number;
  /**
   * Most packets waiting to be read; more are dropped and counted, as a TUN
   * device's tx queue (500 packets by default) drops. Default 1024.
   */
  queueLimit?: number;
}

/**
 * A Link in memory, used one of two ways:
 * - alone: the test calls `inject(packet)` to queue a packet for `read()`, and
 *   `drain()` to take the packets `write()` sent;
 * - as a pair (`MemoryLink.pair()`): what one side writes, the other reads.
 *
 * It behaves like the TUN link where the dispatcher can tell: `read()` fills
 * slot i of the caller's batch (resetting `offsets[i]` to `i * slotSize`), a
 * packet larger than the slot is cut to the slot, and `onReadable` is
 * level-triggered: it fires on a later turn (setImmediate) after packets
 * arrive, and again after each callback while packets remain unread.
 */
export class MemoryLink implements Link {
  readonly name: string;
  readonly mtu: number;
  readonly maxReadSize: number;
  readonly queueLimit: number;
  /** Packets refused because the read queue was full. */
  dropped = 0;

  private queue: Uint8Array[] = [];
  private head = 0;
  private written: Uint8Array[] = [];
  private peer: MemoryLink | null = null;
  private readableCallback: (() => void) | null = null;
  private notifyPending = false;
  private isClosed = false;

  constructor(options: MemoryLinkOptions = {}) {
    this.name = options.name ?? 'mem0';
    this.mtu = options.mtu ?? 1500;
    this.maxReadSize = this.mtu;
    this.queueLimit = options.queueLimit ?? 1024;
  }

  /** Two links joined back to back: `a.write()` feeds `b.read()` and the reverse. */
  static pair(options: { a?: MemoryLinkOptions; b?: MemoryLinkOptions } = {}): [MemoryLink, MemoryLink] {
    const a = new MemoryLink({ name: 'mem0', ...options.a });
    const b = new MemoryLink({ name: 'mem1', ...options.b });
    a.peer = b;
    b.peer = a;
    return [a, b];
  }

  /** Packets waiting to be read. */
  get queued(): number {
    return this.queue.length - this.head;
  }

  get closed(): boolean {
    return this.isClosed;
  }

  /**
   * Queues a copy of `packet` for read(). Returns false (and counts a drop)
   * when the link is closed or its queue is full.
   */
  inject(packet: Uint8Array): boolean {
    if (this.isClosed || this.queued >= this.queueLimit) {
      this.dropped++;
      return false;
    }
    this.queue.push(packet.slice());
    this.scheduleNotify();
    return true;
  }

  /** Takes (and forgets) the packets written so far, oldest first. Always empty on a paired link. */
  drain(): Uint8Array[] {
    const out = this.written;
    this.written = [];
    return out;
  }

  read(batch: PacketBatch): number {
    const { buffer, offsets, lengths, flags, capacity, slotSize } = batch;
    let count = 0;
    while (count < capacity && this.head < this.queue.length) {
      const packet = this.queue[this.head++];
      const offset = count * slotSize;
      const length = Math.min(packet.length, slotSize);
      buffer.set(length === packet.length ? packet : packet.subarray(0, length), offset);
      offsets[count] = offset;
      lengths[count] = length;
      flags[count] = 0;
      batch.gsoSizes[count] = 0;
      count++;
    }
    if (this.head === this.queue.length) {
      this.queue = [];
      this.head = 0;
    }
    batch.count = count;
    return count;
  }

  write(batch: PacketBatch): number {
    if (this.isClosed) return 0;
    const { buffer, offsets, lengths, count } = batch;
    let accepted = 0;
    for (let i = 0; i < count; i++) {
      const packet = buffer.subarray(offsets[i], offsets[i] + lengths[i]);
      if (this.peer === null) {
        this.written.push(packet.slice());
        accepted++;
      } else if (this.peer.inject(packet)) {
        accepted++;
      }
    }
    return accepted;
  }

  onReadable(onReadable: (() => void) | null): void {
    this.readableCallback = onReadable;
    this.scheduleNotify();
  }

  /** Drops queued and written packets; later reads return 0 and writes accept 0. */
  close(): void {
    this.isClosed = true;
    this.readableCallback = null;
    this.queue = [];
    this.head = 0;
    this.written = [];
  }

  private scheduleNotify(): void {
    if (this.notifyPending || this.readableCallback === null || this.queued === 0) return;
    this.notifyPending = true;
    setImmediate(this.notify);
  }

  private readonly notify = (): void => {
    this.notifyPending = false;
    if (this.readableCallback === null || this.queued === 0) return;
    this.readableCallback();
    // Level-triggered like uv_poll on the TUN fd: unread packets ring again.
    this.scheduleNotify();
  };
}
