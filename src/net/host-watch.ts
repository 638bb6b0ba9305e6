// Notices that the host's network set-up may have changed, without a child
// process: a netlink socket per subsystem, joined to the kernel's change
// notifications. It only remembers *that* a subsystem changed; what changed,
// and whether any of it is hostlb's, is for repair.ts to find out.

import { NETLINK_NETFILTER } from '../netlink/nfqueue.js';
import { NetlinkSocket } from '../netlink/socket.js';

/**
 * `route`: links, addresses, routes and rules (rtnetlink), IPv4 and IPv6.
 * `nftables`: every nftables table, chain, rule and set, which includes what
 * iptables-nft does (iptables-legacy notifies nothing).
 */
export type WatchedSubsystem = 'route' | 'nftables';

/** What repair-schedule.ts needs of a watcher; tests give it a fake. */
export interface ChangeSource {
  /**
   * Starts watching `subsystem` unless it does already; false when it cannot
   * (could not open, or failed since): then nothing says when it changes.
   * Never throws.
   */
  watch(subsystem: WatchedSubsystem): boolean;
  /**
   * Whether `subsystem` may have changed since the last take: a notification
   * or an overrun (notifications lost) since, or the watch started since
   * (what happened before it is unknown). Clears the flag.
   */
  take(subsystem: WatchedSubsystem): boolean;
  /** Stops watching everything; nothing is left polling. */
  close(): void;
}

const NETLINK_ROUTE = 0;

// Group numbers, not RTMGRP_* bits: the addon joins each with
// NETLINK_ADD_MEMBERSHIP (native/tun.cc NetlinkOpen). linux/rtnetlink.h.
const RTNLGRP_LINK = 1;
const RTNLGRP_IPV4_IFADDR = 5;
const RTNLGRP_IPV4_ROUTE = 7;
const RTNLGRP_IPV4_RULE = 8;
const RTNLGRP_IPV6_IFADDR = 9;
const RTNLGRP_IPV6_ROUTE = 11;
const RTNLGRP_IPV6_RULE = 19;
// linux/netfilter/nfnetlink.h.
const NFNLGRP_NFTABLES = 7;

const SUBSYSTEMS: Record<WatchedSubsystem, { protocol: number; groups: number[]; what: string }> = {
  // Links too: a device deleted or set down takes its IPv4 routes with it,
  // and the kernel sends no RTM_DELROUTE for those (fib_sync_down_dev).
  route: {
    protocol: NETLINK_ROUTE,
    groups: [RTNLGRP_LINK, RTNLGRP_IPV4_IFADDR, RTNLGRP_IPV6_IFADDR, RTNLGRP_IPV4_ROUTE, RTNLGRP_IPV6_ROUTE, RTNLGRP_IPV4_RULE, RTNLGRP_IPV6_RULE],
    what: 'links, addresses, routes and rules (NETLINK_ROUTE)',
  },
  nftables: { protocol: NETLINK_NETFILTER, groups: [NFNLGRP_NFTABLES], what: 'nftables (NETLINK_NETFILTER)' },
};

// The messages are thrown away unread, so slots need not hold a whole one (a
// longer datagram is cut to its slot). An overrun only means "changed", so
// the receive buffer need not hold a burst either.
const SLOTS = 16;
const SLOT_SIZE = 4096;
const RECEIVE_BUFFER = 256 << 10;
/** Batches read per wake-up; the poll is level-triggered, so what is left wakes it again. */
const READS_PER_WAKE = 64;

/** Watches through netlink multicast groups, opening each subsystem's socket on first watch(). */
export class HostWatch implements ChangeSource {
  private readonly sockets = new Map<WatchedSubsystem, NetlinkSocket>();
  private readonly failed = new Set<WatchedSubsystem>();
  private readonly changed = new Set<WatchedSubsystem>();
  private lostOverruns = 0;
  private closed = false;

  /** `onProblem` hears, once per subsystem, why it cannot be watched (for the log). */
  constructor(private readonly onProblem: (problem: string) => void = () => {}) {}

  /** Notifications the kernel dropped because they were not read in time (ENOBUFS), over every socket. */
  get overruns(): number {
    let n = this.lostOverruns;
    for (const socket of this.sockets.values()) n += socket.overruns;
    return n;
  }

  watch(subsystem: WatchedSubsystem): boolean {
    if (this.sockets.has(subsystem)) return true;
    if (this.closed || this.failed.has(subsystem)) return false;
    const { protocol, groups, what } = SUBSYSTEMS[subsystem];
    let socket: NetlinkSocket;
    try {
      socket = new NetlinkSocket(groups, { slots: SLOTS, slotSize: SLOT_SIZE, receiveBuffer: RECEIVE_BUFFER, protocol });
    } catch (e) {
      this.fail(subsystem, `cannot watch ${what}: ${(e as Error).message}`);
      return false;
    }
    this.sockets.set(subsystem, socket);
    // Whatever changed before the socket joined its groups went unseen.
    this.changed.add(subsystem);
    const wake = (): void => this.drain(subsystem, socket);
    try {
      socket.onReadable(wake);
    } catch (e) {
      this.fail(subsystem, `cannot watch ${what}: ${(e as Error).message}`);
      return false;
    }
    return true;
  }

  take(subsystem: WatchedSubsystem): boolean {
    const was = this.changed.has(subsystem);
    this.changed.delete(subsystem);
    return was;
  }

  close(): void {
    this.closed = true;
    for (const subsystem of [...this.sockets.keys()]) this.drop(subsystem);
  }

  /** Runs from the poll callback: must not throw (an exception there is fatal to the process). */
  private drain(subsystem: WatchedSubsystem, socket: NetlinkSocket): void {
    if (this.sockets.get(subsystem) !== socket) return;
    this.changed.add(subsystem);
    try {
      // read() counts an overrun (ENOBUFS) and reads on; the socket watches on after one (onReadable).
      for (let i = 0; i < READS_PER_WAKE && socket.read() > 0; i++);
    } catch (e) {
      this.fail(subsystem, `stopped watching ${SUBSYSTEMS[subsystem].what}: ${(e as Error).message}`);
    }
  }

  private fail(subsystem: WatchedSubsystem, problem: string): void {
    this.drop(subsystem);
    this.failed.add(subsystem);
    // A check is due: nothing watches it any more.
    this.changed.add(subsystem);
    try {
      this.onProblem(problem);
    } catch {
      // A logger that throws must not take the watcher (or the poll callback) down.
    }
  }

  private drop(subsystem: WatchedSubsystem): void {
    const socket = this.sockets.get(subsystem);
    if (socket === undefined) return;
    this.sockets.delete(subsystem);
    this.lostOverruns += socket.overruns;
    try {
      socket.close();
    } catch {
      // close(2) failed (EBADF): the fd is gone either way, and its poll handle went first.
    }
  }
}
