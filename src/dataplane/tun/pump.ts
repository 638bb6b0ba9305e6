// The TUN data plane at run time: whenever the link has packets, read a batch,
// let the dispatcher translate it in place, write what it forwards, and repeat
// until the link is empty. A timer collects expired records in bounded slices.
// The clock is read here, once per batch, and handed down as a number.
//
// A link that can write one batch and read the next in one step (Link.cycle:
// TUN through io_uring) gets two batches, used in turn: the packets going out
// are still in one while the next arrive in the other. Under load that step
// is the only system call per batch; the poll is left for when the link is empty.

import type { Dispatcher } from '../../dispatch/dispatcher.js';
import { createBatch, createSiblingBatch, type CycleResult, type Link, type PacketBatch } from '../../link/link.js';

export interface TunPumpOptions {
  /** Packets per batch (one native read and one native write each). Default 64. */
  batchSize?: number;
  /** Batches handled before yielding to the event loop, so timers and the admin API stay responsive. Default 32. */
  batchesPerTurn?: number;
  /** How often to collect expired records, ms. Default 100. */
  collectIntervalMs?: number;
  /** Most records removed per collection slice. Default 8192. */
  collectBudget?: number;
  /** Milliseconds on the clock records are stamped with. Default Date.now. */
  clock?: () => number;
}

export class TunPump {
  /** The batch read into, and its sibling listing what goes out (the first of two with Link.cycle). */
  readonly input: PacketBatch;
  readonly output: PacketBatch;
  /** The other pair with Link.cycle, else the same as input and output. */
  private readonly spareInput: PacketBatch;
  private readonly spareOutput: PacketBatch;
  /** The link has Link.cycle: then the pump keeps two batches. */
  private readonly cycles: boolean;
  private readonly cycled: CycleResult = { written: 0, read: 0 };
  /** Packets read from and written to the link, and link writes that refused packets. */
  packetsRead = 0;
  packetsWritten = 0;
  writeShortfall = 0;
  private timer: NodeJS.Timeout | null = null;
  private scheduled = false;
  private running = false;
  private readonly batchesPerTurn: number;
  private readonly clock: () => number;

  constructor(readonly link: Link, readonly dispatcher: Dispatcher, private readonly options: TunPumpOptions = {}) {
    // A slot holds the largest read (a 64 KB super-packet with offloads on), rounded up to 64 bytes.
    const slotSize = Math.ceil(Math.max(link.maxReadSize, 1500) / 64) * 64;
    this.input = createBatch(options.batchSize ?? 64, slotSize);
    this.output = createSiblingBatch(this.input);
    this.cycles = link.cycle !== undefined;
    this.spareInput = this.cycles ? createBatch(this.input.capacity, slotSize) : this.input;
    this.spareOutput = this.cycles ? createSiblingBatch(this.spareInput) : this.output;
    this.batchesPerTurn = options.batchesPerTurn ?? 32;
    this.clock = options.clock ?? Date.now;
  }

  start(): void {
    if (this.running) return;
    this.running = true;
    this.link.onReadable(this.wake);
    const budget = this.options.collectBudget ?? 8192;
    this.timer = setInterval(() => this.dispatcher.collect(this.clock(), budget), this.options.collectIntervalMs ?? 100);
    this.timer.unref();
    // Packets may have queued before the watch began.
    this.scheduled = true;
    setImmediate(this.yieldThenDrain);
  }

  /** Stops reading; the link stays open (its owner closes it). */
  stop(): void {
    this.running = false;
    this.link.onReadable(null);
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }

  // The device is readable: drain it now, in this callback, rather than a loop
  // turn later — every packet of a handshake waits for this (bench:e2e showed
  // new connections suffering most from extra scheduling delay).
  private readonly wake = (): void => {
    if (!this.running || this.scheduled) return;
    this.drain();
  };

  private readonly yieldThenDrain = (): void => {
    this.scheduled = false;
    this.drain();
  };

  private readonly drain = (): void => {
    if (!this.running) return;
    const { link, dispatcher, cycled } = this;
    let input = this.input;
    let output = this.output;
    let n = link.read(input);
    for (let turn = 1; n > 0; turn++) {
      this.packetsRead += n;
      dispatcher.process(input, output, this.clock());
      const lastTurn = turn >= this.batchesPerTurn;
      if (output.count > 0 && this.cycles && !lastTurn) {
        // Out from this pair, in to the other: the next batch, if any came.
        const next = input === this.input ? this.spareInput : this.input;
        link.cycle!(output, next, cycled);
        this.count(output, cycled.written);
        output = next === this.input ? this.output : this.spareOutput;
        input = next;
        n = cycled.read;
        continue;
      }
      if (output.count > 0) this.count(output, link.write(output));
      // A short batch means the read already met an empty device: another
      // read would only return EAGAIN (one wasted system call per wake-up,
      // which is most of them under request/response load). The poll is
      // level-triggered, so packets that arrive now wake us again.
      if (n < input.capacity) return;
      if (lastTurn) {
        // More may be waiting: come back after timers and the admin API had their turn.
        this.scheduled = true;
        setImmediate(this.yieldThenDrain);
        return;
      }
      n = link.read(input);
    }
  };

  private count(output: PacketBatch, written: number): void {
    this.packetsWritten += written;
    this.writeShortfall += output.count - written;
  }
}
