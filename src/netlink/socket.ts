// A netlink socket over the addon: datagrams are read in batches into slots
// of one preallocated buffer (as the TUN link does with packets) and requests
// are written from a NetlinkWriter. Requests that want an acknowledgment are
// answered synchronously: the kernel handles a netlink request inside the
// write, so the reply is already queued when write returns.

import { HostlbError } from '../errors.js';
import { loadTunAddon, type NativeSystemError, type TunAddon } from '../native/addon.js';
import { MessageReader, NLMSG_DONE, NLMSG_ERROR, type NetlinkWriter } from './message.js';
import { NETLINK_NETFILTER } from './nfqueue.js';

/**
 * The kernel refused a netlink request, or did not answer. The errno is
 * mapped to a stable code here, once, so no caller looks at errno numbers:
 * NETLINK_NOT_FOUND (ENOENT: no such entry), NETLINK_QUEUE_BUSY (EBUSY:
 * another process bound the queue), NEEDS_NET_ADMIN (EPERM),
 * NETLINK_UNSUPPORTED (the kernel or a module lacks it), NETLINK_FAILED
 * (anything else, or no answer). `errno` stays for the log (0: no errno).
 */
export class NetlinkError extends HostlbError {
  constructor(message: string, readonly errno: number) {
    super(codeOf(errno), message);
  }
}

function codeOf(errno: number): string {
  switch (errno) {
    case 1: return 'NEEDS_NET_ADMIN';
    case 2: return 'NETLINK_NOT_FOUND';
    case 16: return 'NETLINK_QUEUE_BUSY';
    case 95: case 97: return 'NETLINK_UNSUPPORTED';
    default: return 'NETLINK_FAILED';
  }
}

/** How request() treats a message the kernel refused because its entry is not there (a delete of an entry already gone). */
export interface RequestOptions {
  /** ENOENT is an answer, not a failure. */
  absentOk?: boolean;
  /** Messages read meanwhile that are not acknowledgments (events, a GET's answer). */
  other?: (m: MessageReader, view: DataView) => void;
}

export class NetlinkSocket {
  readonly fd: number;
  readonly portId: number;
  readonly buffer: Uint8Array;
  readonly view: DataView;
  readonly offsets: Uint32Array;
  readonly lengths: Uint32Array;
  /** Reads that found the receive queue had overflowed (messages lost). */
  overruns = 0;
  /** Poll errors (an overrun's POLLERR) after which the watch was armed again. */
  pollErrors = 0;
  private readonly addon: TunAddon;
  private readonly writeOffsets = new Uint32Array(1);
  private readonly writeLengths = new Uint32Array(1);
  private closed = false;
  /** onReadable calls so far: a re-arm after a poll error belongs to the latest only. */
  private watches = 0;

  /**
   * Opens a netlink socket (NETLINK_NETFILTER unless options.protocol says
   * otherwise) joined to `groups`. Throws NetlinkError (NEEDS_NET_ADMIN
   * without CAP_NET_ADMIN).
   */
  constructor(groups: number[], options: { slots: number; slotSize: number; receiveBuffer: number; protocol?: number }) {
    this.addon = loadTunAddon();
    let opened: { fd: number; portId: number };
    try {
      opened = this.addon.netlinkOpen(options.protocol ?? NETLINK_NETFILTER, groups, options.receiveBuffer);
    } catch (e) {
      const errno = Math.abs((e as NativeSystemError).errno ?? 0);
      throw new NetlinkError(`open a netlink socket (protocol ${options.protocol ?? NETLINK_NETFILTER}): ${errno !== 0 ? errnoText(errno) : (e as Error).message}`, errno);
    }
    const { fd, portId } = opened;
    this.fd = fd;
    this.portId = portId;
    this.buffer = new Uint8Array(options.slots * options.slotSize);
    this.view = new DataView(this.buffer.buffer);
    this.offsets = new Uint32Array(options.slots);
    this.lengths = new Uint32Array(options.slots);
    for (let i = 0; i < options.slots; i++) this.offsets[i] = i * options.slotSize;
    this.slotSize = options.slotSize;
  }

  private readonly slotSize: number;

  /**
   * Reads up to a batch of datagrams; returns how many. An overrun (ENOBUFS:
   * the kernel dropped messages for us) is counted and reads on.
   */
  read(): number {
    for (;;) {
      try {
        return this.addon.recvBatch(this.fd, this.buffer, this.offsets, this.lengths, this.offsets.length, this.slotSize);
      } catch (e) {
        if ((e as NativeSystemError).code === 'ENOBUFS') {
          this.overruns++;
          continue;
        }
        throw e;
      }
    }
  }

  /** Writes the writer's datagram; false when the kernel refused it (queue full). */
  write(w: NetlinkWriter): boolean {
    this.writeOffsets[0] = 0;
    this.writeLengths[0] = w.length;
    return this.addon.writeBatch(this.fd, w.buffer, this.writeOffsets, this.writeLengths, 1) === 1;
  }

  /**
   * Writes a request whose messages ask for acknowledgments and checks the
   * answers. Other messages read meanwhile (events) are handed to `other`.
   * Throws NetlinkError when a message was refused (an absent entry too,
   * unless options.absentOk) or went unanswered.
   */
  request(w: NetlinkWriter, seqs: readonly number[], what: string, options: RequestOptions = {}): void {
    const failed = this.requestAll(w, seqs, what, options);
    if (failed !== null) throw failed;
  }

  /**
   * Like request(), for a batch whose messages may fail one by one: reads
   * every answer, and returns the first failure (see RequestOptions for an
   * absent entry), or null. Messages with data (a GET's answer) go to
   * options.other.
   */
  requestAll(w: NetlinkWriter, seqs: readonly number[], what: string, options: RequestOptions = {}): NetlinkError | null {
    const { absentOk = false, other } = options;
    if (!this.write(w)) return new NetlinkError(`${what}: the kernel did not take the request`, 0);
    const waiting = new Set(seqs);
    const m = new MessageReader();
    let first: NetlinkError | null = null;
    for (let round = 0; waiting.size > 0 && round < 64 + seqs.length; round++) {
      const n = this.read();
      if (n === 0) break;
      for (let i = 0; i < n; i++) {
        m.reset(this.buffer, this.view, this.offsets[i], this.offsets[i] + this.lengths[i]);
        while (m.next()) {
          if (m.type !== NLMSG_ERROR || !waiting.has(m.seq)) {
            // An answer with data (a GET's entry) comes before its acknowledgment.
            if (m.type !== NLMSG_ERROR && other) other(m, this.view);
            continue;
          }
          const code = m.errorCode();
          waiting.delete(m.seq);
          if (code < 0 && !(absentOk && -code === ENOENT) && first === null) first = new NetlinkError(`${what}: ${errnoText(-code)}`, -code);
        }
      }
    }
    if (waiting.size > 0 && first === null) first = new NetlinkError(`${what}: no answer from the kernel for ${waiting.size} of ${seqs.length}`, 0);
    return first;
  }

  /**
   * Writes a dump request and hands every message of the answer to `each`,
   * until the kernel says done. Events read meanwhile go to `each` too; the
   * caller tells them apart by type.
   */
  dump(w: NetlinkWriter, seq: number, what: string, each: (m: MessageReader, view: DataView) => void): void {
    if (!this.write(w)) throw new NetlinkError(`${what}: the kernel did not take the request`, 0);
    const m = new MessageReader();
    // The kernel fills the next part of a dump as each read drains the last.
    for (let round = 0; round < 1_000_000; round++) {
      const n = this.read();
      if (n === 0) throw new NetlinkError(`${what}: the dump ended without NLMSG_DONE`, 0);
      for (let i = 0; i < n; i++) {
        m.reset(this.buffer, this.view, this.offsets[i], this.offsets[i] + this.lengths[i]);
        while (m.next()) {
          if (m.seq === seq && m.type === NLMSG_DONE) return;
          if (m.seq === seq && m.type === NLMSG_ERROR) {
            const code = m.errorCode();
            if (code < 0) throw new NetlinkError(`${what}: ${errnoText(-code)}`, -code);
            return;
          }
          each(m, this.view);
        }
      }
    }
  }

  /**
   * Calls `callback` whenever the socket is readable, until onReadable(null)
   * or close(). An overrun sets an error on the socket, which polls as
   * POLLERR, and libuv stops a poll handle after POLLERR: the watch is armed
   * again after the callback (whose read took the error off the socket), or
   * one burst of events, a SYN flood's conntrack events say, would leave the
   * socket unread for good.
   */
  onReadable(callback: (() => void) | null): void {
    if (this.closed) return;
    const watch = ++this.watches;
    if (callback === null) {
      this.addon.unwatch(this.fd);
      return;
    }
    const arm = (): void => this.addon.watch(this.fd, (error) => {
      callback();
      if (error === undefined) return;
      this.pollErrors++;
      // On the next turn, not inside the poll handle's own callback; unless closed or watched anew meanwhile.
      setImmediate(() => {
        if (!this.closed && this.watches === watch) arm();
      });
    });
    arm();
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.addon.close(this.fd);
  }
}

const ENOENT = 2;

const ERRNO: Record<number, string> = {
  1: 'EPERM (operation not permitted: hostlb needs CAP_NET_ADMIN)', 2: 'ENOENT (no such entry)', 16: 'EBUSY (another process has bound this queue: choose another netfilter.queue)',
  22: 'EINVAL (invalid argument)', 95: 'EOPNOTSUPP (not supported by this kernel)', 97: 'EAFNOSUPPORT (the kernel module is not loaded)',
};

function errnoText(errno: number): string {
  return ERRNO[errno] ?? `errno ${errno}`;
}
