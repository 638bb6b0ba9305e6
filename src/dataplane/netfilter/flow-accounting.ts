// The netfilter plane's bookkeeping, as pure logic over the Balancer: which
// flows hostlb has sent to which daemon, and the per-daemon counts the TUN
// dispatcher keeps — active and new flows, SYNs sent, answered or refused —
// so lc, wlc, p2c, the health layer and the metrics work unchanged. Decisions
// come from the queue (decide), the rest from conntrack events (onEvent) and
// from the plane's comparisons with conntrack (confirmed, reconcile). No
// sockets and no timers here: the plane (netfilter-plane.ts) reads the kernel
// and calls in with a clock this file is given, so a test can replay any
// sequence of events (test/dataplane/netfilter/flow-accounting.test.ts).

import type { Balancer } from '../../dispatch/balancer.js';
import type { ClusterPort, Daemon } from '../../dispatch/config-tree.js';
import { Drop } from '../../dispatch/drop-reason.js';
import { D_ACTIVE_FLOWS, D_BYTES_IN, D_BYTES_OUT, D_PACKETS_IN, D_PACKETS_OUT, D_SYN_ANSWERED, D_SYN_REFUSED, D_SYN_TIME_MS, D_SYNS, DAEMON_COLUMNS } from '../../dispatch/stats.js';
import { EVENT_DESTROY, EVENT_NEW, IPS_SEEN_REPLY, TcpCt } from '../../netlink/conntrack.js';
import { tupleKey, type ClientTuple } from './client-key.js';
import { ID_MASK, MARK_MASK, REJECT_ID } from './marks.js';

/** What the accounting reads of one conntrack message (an event, or an entry of a dump). */
export interface FlowEvent {
  /** EVENT_NEW, EVENT_UPDATE or EVENT_DESTROY. */
  readonly kind: number;
  /** Conntrack's id of the entry. */
  readonly id: number;
  readonly mark: number;
  /** IPS_* status bits. */
  readonly status: number;
  /** TcpCt state, or -1 when the message carries none. */
  readonly tcpState: number;
  /** Reads the original tuple into `orig`; false when it is malformed. Asked only when needed: most events are state changes of a known flow. */
  tuples(): boolean;
  readonly orig: ClientTuple;
  /** The reply tuple tuples() read (its source: the daemon the flow was translated to), or null when the message has none. */
  readonly reply: ClientTuple | null;
  /** Reads the counters (a destroy event carries them when nf_conntrack_acct is on). */
  counters(): void;
  readonly packetsOrig: number;
  readonly bytesOrig: number;
  readonly packetsReply: number;
  readonly bytesReply: number;
}

/** An entry of hostlb's live (not ending) flows as a conntrack dump lists it, for reconcile(). */
export interface LiveFlow {
  daemonId: number;
  protocol: number;
  key: number | string;
  tcpState: number;
}

/**
 * A decided flow waiting for the daemon's answer. `reached`: its SYN is known
 * to have reached the daemon (conntrack confirmed the entry) and has been
 * counted as a SYN sent to it (D_SYNS). Only such SYNs feed passive health: one
 * dropped on the way (a martian or spoofed source, a firewall rule) says
 * nothing about the daemon.
 */
interface Pending {
  daemonId: number;
  decided: number;
  port: ClusterPort;
  protocol: number;
  reached: boolean;
  /** A lookup taken after it was decided has looked for it (unconfirmed): not asked again. */
  asked: boolean;
}

/** One hostlb flow conntrack has confirmed, by conntrack id, counted active for its daemon until it ends (its addresses stay in conntrack: the plane's connections() reads them there). */
interface Flow {
  daemonId: number;
  protocol: number;
  created: number;
  tcpState: number;
}

/** What the plane must do after onEvent. */
export const EVENT_DONE = 0;
/** Delete the conntrack entry of the flow a RST ended (see onEvent). */
export const EVENT_FORGET = 1;

/** A decision that is not a daemon: the fallback hash decides (nothing hostlb can name with a mark). */
export const UNDECIDED = -1;

const ENDED_TCP = new Set<number>([TcpCt.FinWait, TcpCt.CloseWait, TcpCt.LastAck, TcpCt.TimeWait, TcpCt.Close]);
/**
 * States conntrack reaches only after the daemon's SYN-ACK (from SYN_SENT a
 * FIN is invalid, "we enforce waiting for a SYN/ACK reply first"): a flow
 * whose first state change lands in one of them was answered, even when the
 * events in between were lost. CLOSE is not among them: a client's RST
 * closes an unanswered SYN too.
 */
const ANSWERED_TCP = new Set<number>([TcpCt.SynRecv, TcpCt.Established, TcpCt.FinWait, TcpCt.CloseWait, TcpCt.LastAck, TcpCt.TimeWait]);
/** A followed flow's states while its handshake is still on: a SYN-ACK then is its own answer, not a reopened entry's. */
const HANDSHAKE_TCP = new Set<number>([TcpCt.None, TcpCt.SynSent, TcpCt.SynRecv]);

/** How young a flow may be to be left out of a comparison with conntrack (reconcile), ms. */
export const SWEEP_GRACE_MS = 5_000;

/** How long a decided flow waits for its conntrack entry before it stops counting, ms. */
export const PENDING_MS = 10_000;

/** How long an expired handshake whose SYN reached the daemon may still be answered, ms: conntrack's SYN_SENT timeout (120 s) and a margin. */
export const LATE_MS = 130_000;

/**
 * The most decided flows waiting for an answer hostlb tracks (a spoofed SYN
 * flood at a daemon that answers nothing fills it); about 100 bytes each.
 */
export const MAX_PENDING = 65_536;

export interface FlowAccountingOptions {
  /** The high 16 bits of every mark of this hostlb (netfilter.mark). */
  markBase: number;
  /** Decided flows waiting for their answer tracked at most. Default MAX_PENDING. */
  maxPending?: number;
  /** Milliseconds; every time stamp and age is read from it. */
  clock: () => number;
}

export class FlowAccounting {
  /** Conntrack events of hostlb's flows read. */
  events = 0;
  /** Flows whose count a reconcile corrected (an event was lost). */
  swept = 0;
  /** Decisions not tracked as pending because the pending map was full (they count when conntrack reports them). */
  pendingOverflows = 0;
  private readonly flows = new Map<number, Flow>();
  /**
   * Flows hostlb has sent to a daemon that the daemon has not answered yet,
   * by client key. A flow counts (new, active) when hostlb decides, as in
   * the TUN dispatcher — a burst of connections must see the counts of the
   * ones before it (lc, wlc, drain) — and its first event then only names its
   * conntrack id. One that never gets confirmed (its SYN dropped further on)
   * stops counting after PENDING_MS. At most maxPending: beyond that a flow
   * counts when its first event arrives, as one the fallback hash decided.
   */
  private readonly pending = new Map<number | string, Pending>();
  /**
   * Handshakes that expired from `pending` after conntrack had confirmed them
   * (their SYN reached the daemon): a daemon this slow may still answer, and
   * its SYN-ACK must then continue the flow hostlb counted (new flow and SYN
   * once), not count it again as one the fallback hash decided. Kept for
   * LATE_MS, at most maxPending.
   */
  private readonly late = new Map<number | string, { daemonId: number; decided: number }>();
  private readonly markBase: number;
  private readonly maxPending: number;
  private readonly clock: () => number;

  constructor(private readonly balancer: Balancer, options: FlowAccountingOptions) {
    this.markBase = options.markBase >>> 0;
    this.maxPending = options.maxPending ?? MAX_PENDING;
    this.clock = options.clock;
  }

  /** Hostlb's flows conntrack has confirmed. */
  get flowCount(): number {
    return this.flows.size;
  }

  /** Handshakes decided and not yet answered. */
  get pendingCount(): number {
    return this.pending.size;
  }

  /** When flow `ctId` began (0 when hostlb does not follow it). */
  createdOf(ctId: number): number {
    return this.flows.get(ctId)?.created ?? 0;
  }

  /**
   * Packet path: the daemon id for the first packet of the flow `key` to
   * `port`; REJECT_ID when no daemon takes new flows; UNDECIDED when the
   * daemon chosen is beyond what a mark can name. A retransmitted first packet
   * (its conntrack entry was never confirmed) goes to the same daemon while
   * that one takes new flows, as the TUN dispatcher does.
   */
  decide(port: ClusterPort, key: number | string, protocol: number, flowHash: number, sourceHash: number): number {
    const earlier = this.pending.get(key);
    if (earlier !== undefined) {
      if (this.balancer.takesNewFlows(port, earlier.daemonId)) return earlier.daemonId;
      this.pending.delete(key);
      this.balancer.flowEnded(earlier.daemonId);
    }
    const daemon = this.balancer.choose(port, flowHash, sourceHash);
    if (daemon === null) {
      // Counted as the TUN dispatcher counts it (hostlb_port_scheduler_decisions_total{result="none"}).
      this.balancer.stats.dropAt(port.id, Drop.NoDaemon);
      return REJECT_ID;
    }
    if (daemon.id >= REJECT_ID) return UNDECIDED;
    if (this.pending.size < this.maxPending) {
      // The SYN counts as sent to the daemon (D_SYNS) once it is known to have reached it: its answer, or confirmed().
      this.pending.set(key, { daemonId: daemon.id, decided: this.clock(), port, protocol, reached: false, asked: false });
      this.balancer.flowStarted(daemon.id);
    } else {
      this.pendingOverflows++;
    }
    return daemon.id;
  }

  /**
   * One conntrack message of a flow with hostlb's mark. `restoring`: an entry
   * of the dump taken at start (restore()). Returns EVENT_FORGET when the
   * plane should delete the entry (a flow the daemon's RST ended), else
   * EVENT_DONE.
   */
  onEvent(ev: FlowEvent, restoring: boolean): number {
    if (restoring) {
      this.restore(ev);
      return EVENT_DONE;
    }
    if (((ev.mark & MARK_MASK) >>> 0) !== this.markBase) return EVENT_DONE;
    const id = ev.mark & ID_MASK;
    if (id === REJECT_ID) return EVENT_DONE;
    this.events++;
    const stats = this.balancer.stats.daemon;
    let flow = this.flows.get(ev.id);
    if (flow !== undefined && ev.tcpState === TcpCt.SynRecv && !HANDSHAKE_TCP.has(flow.tcpState)) {
      // A daemon's SYN-ACK under the id of a flow past its handshake: conntrack reopened an earlier
      // connection's entry on the same addresses for a new SYN, and the new entry took the old one's
      // place, id included (the id hashes the entry's address and tuples). The old flow ended unseen;
      // this is the new one's answer, which passive health must hear.
      this.balancer.flowEnded(flow.daemonId);
      this.flows.delete(ev.id);
      flow = undefined;
    }
    // A restored flow counts for its daemon, whatever id an earlier run's mark named (restore()).
    const b = (flow?.daemonId ?? id) * DAEMON_COLUMNS;
    if (flow === undefined) {
      if (this.balancer.tree.daemonsById[id] === undefined || !ev.tuples()) return EVENT_DONE;
      const o = ev.orig;
      const key = tupleKey(o);
      const pending = this.pending.get(key);
      const decided = pending !== undefined && pending.daemonId === id ? pending : undefined;
      if (decided === undefined && this.late.size > 0 && this.lateAnswer(key, id, ev)) return EVENT_DONE;
      if (ev.kind === EVENT_DESTROY || (o.protocol === 6 && ENDED_TCP.has(ev.tcpState) && decided === undefined)) {
        // Destroyed before its SYN-ACK was heard. Conntrack kills an entry at once when a
        // SYN's only answer is a RST, with no reply seen: that is how a refusal shows. With a
        // reply seen the daemon did answer (its SYN-ACK's event was lost) and the client went
        // away. Otherwise the end of a flow hostlb no longer counts (its first FIN went by,
        // or a sweep ended it): nothing to do.
        if (ev.kind !== EVENT_DESTROY || decided === undefined) return EVENT_DONE;
        this.pending.delete(key);
        this.balancer.flowEnded(id);
        if (o.protocol === 6) {
          if (!decided.reached) stats[b + D_SYNS]++;
          if ((ev.status & IPS_SEEN_REPLY) === 0) {
            stats[b + D_SYN_REFUSED]++;
          } else {
            stats[b + D_SYN_ANSWERED]++;
            stats[b + D_SYN_TIME_MS] += this.clock() - decided.decided;
          }
        }
        return EVENT_DONE;
      }
      // A TCP flow's first event is the daemon's answer (its SYN-ACK): it began with the SYN hostlb passed on.
      flow = { daemonId: id, protocol: o.protocol, created: this.clock(), tcpState: TcpCt.SynSent };
      this.flows.set(ev.id, flow);
      if (decided !== undefined) {
        // Counted active when hostlb decided; the SYN's time runs from then, and it reached the daemon.
        this.pending.delete(key);
        flow.created = decided.decided;
        if (o.protocol === 6 && !decided.reached) stats[b + D_SYNS]++;
      } else {
        // Not decided by this hostlb (the kernel-side hash while it was away, or decided too long ago).
        this.balancer.flowStarted(id);
        if (o.protocol === 6) stats[b + D_SYNS]++;
      }
      if (ev.kind === EVENT_NEW) return EVENT_DONE;
    }
    if (ev.kind === EVENT_DESTROY) {
      this.balancer.flowEnded(flow.daemonId);
      this.flows.delete(ev.id);
      // Counters come with the destroy event when nf_conntrack_acct is on.
      ev.counters();
      stats[b + D_PACKETS_IN] += ev.packetsOrig;
      stats[b + D_BYTES_IN] += ev.bytesOrig;
      stats[b + D_PACKETS_OUT] += ev.packetsReply;
      stats[b + D_BYTES_OUT] += ev.bytesReply;
      return EVENT_DONE;
    }
    if (ev.tcpState < 0 || ev.tcpState === flow.tcpState) return EVENT_DONE;
    const was = flow.tcpState;
    flow.tcpState = ev.tcpState;
    if ((was === TcpCt.SynSent || was === TcpCt.None) && ANSWERED_TCP.has(ev.tcpState)) {
      // Passive health (health/passive.ts): the daemon answered the SYN — its SYN-ACK's event
      // (host-plan.ts), or a later state when that event was lost. Nothing a client does
      // after the SYN counts here: a refusal shows only as a destroy with no reply seen (above).
      stats[b + D_SYN_ANSWERED]++;
      stats[b + D_SYN_TIME_MS] += this.clock() - flow.created;
    }
    if (ENDED_TCP.has(ev.tcpState)) {
      // The flow's last event (host-plan.ts masks the rest): it is no longer active, and forgotten.
      this.balancer.flowEnded(flow.daemonId);
      this.flows.delete(ev.id);
      // Conntrack reopens a closed entry for a new SYN from the same client port only when the
      // client sent the RST; after the daemon's RST the SYN would ride the old entry's NAT to the
      // old daemon for its 10 s in CLOSE, unseen by hostlb — to a daemon that may be draining or
      // gone. Without the entry the SYN is a new connection, and hostlb decides it.
      if (ev.tcpState === TcpCt.Close && ev.tuples()) return EVENT_FORGET;
    }
    return EVENT_DONE;
  }

  /**
   * Pending TCP handshakes decided before `before` and not looked up yet, each
   * once: the plane asks conntrack whether their SYN reached the daemon
   * (confirmed). Stops at the first one too young (the map is in decision order).
   */
  unconfirmed(before: number, each: (key: number | string, port: ClusterPort) => void): void {
    for (const [key, p] of this.pending) {
      if (p.decided > before) break;
      if (p.asked || p.protocol !== 6) continue;
      p.asked = true;
      each(key, p.port);
    }
  }

  /** Conntrack holds a confirmed entry for a pending handshake (an answer to unconfirmed()): its SYN counts as sent to the daemon. */
  confirmed(ev: FlowEvent): void {
    if (!ev.tuples()) return;
    const p = this.pending.get(tupleKey(ev.orig));
    if (p === undefined || p.reached || p.daemonId !== (ev.mark & ID_MASK)) return;
    p.reached = true;
    this.balancer.stats.daemon[p.daemonId * DAEMON_COLUMNS + D_SYNS]++;
  }

  /**
   * Handshakes still pending at a daemon that no longer takes new flows (down,
   * drained, removed) stop counting; `each` gets each one, for the plane to
   * delete its conntrack entry, so the client's next SYN from that port is a
   * new connection hostlb decides (to another daemon) instead of a
   * retransmission conntrack sends after the old one. The TUN dispatcher
   * reschedules such a SYN itself.
   */
  releaseTakenOut(each: (key: number | string, port: ClusterPort) => void): void {
    for (const [key, p] of this.pending) {
      if (this.balancer.takesNewFlows(p.port, p.daemonId)) continue;
      this.pending.delete(key);
      this.balancer.flowEnded(p.daemonId);
      each(key, p.port);
    }
  }

  /**
   * Pending flows unanswered for PENDING_MS stop counting as active: their
   * first packet never made a conntrack entry (dropped after the verdict), or
   * the daemon ignores their SYN. The latter are remembered for LATE_MS, in
   * case the daemon answers after all (lateAnswer).
   */
  expirePending(): void {
    const now = this.clock();
    const limit = now - PENDING_MS;
    for (const [k, p] of this.pending) {
      if (p.decided > limit) continue;
      this.pending.delete(k);
      this.balancer.flowEnded(p.daemonId);
      if (p.reached && p.protocol === 6 && this.late.size < this.maxPending) this.late.set(k, { daemonId: p.daemonId, decided: p.decided });
    }
    for (const [k, l] of this.late) {
      // Insertion order is expiry order: the rest are younger.
      if (l.decided > now - LATE_MS) break;
      this.late.delete(k);
    }
  }

  /**
   * The first event of an expired handshake whose SYN had reached the daemon
   * (see `late`): the flow counts as active again and, when answered, its
   * SYN as answered; its SYN and the new flow were counted already. False
   * when the event is not such a flow's.
   */
  private lateAnswer(key: number | string, id: number, ev: FlowEvent): boolean {
    const l = this.late.get(key);
    if (l === undefined || l.daemonId !== id) return false;
    this.late.delete(key);
    const b = id * DAEMON_COLUMNS;
    const stats = this.balancer.stats.daemon;
    if (ev.kind === EVENT_DESTROY) {
      // Gone without hostlb hearing more: refused (no reply seen), or answered and ended at once.
      if ((ev.status & IPS_SEEN_REPLY) === 0) {
        stats[b + D_SYN_REFUSED]++;
      } else {
        stats[b + D_SYN_ANSWERED]++;
        stats[b + D_SYN_TIME_MS] += this.clock() - l.decided;
      }
      return true;
    }
    if (ev.tcpState === TcpCt.Close) return true;
    stats[b + D_ACTIVE_FLOWS]++;
    const flow: Flow = { daemonId: id, protocol: 6, created: l.decided, tcpState: TcpCt.SynSent };
    this.flows.set(ev.id, flow);
    if (ANSWERED_TCP.has(ev.tcpState)) {
      stats[b + D_SYN_ANSWERED]++;
      stats[b + D_SYN_TIME_MS] += this.clock() - l.decided;
      flow.tcpState = ev.tcpState;
      if (ENDED_TCP.has(ev.tcpState)) {
        this.balancer.flowEnded(id);
        this.flows.delete(ev.id);
      }
    }
    return true;
  }

  /** Forgets every flow of daemon `id` (the plane deletes their conntrack entries). Returns how many hostlb knew of. */
  forgetDaemon(id: number): number {
    let ended = 0;
    for (const [ctId, flow] of this.flows) {
      if (flow.daemonId !== id) continue;
      ended++;
      this.balancer.flowEnded(id);
      this.flows.delete(ctId);
    }
    return ended;
  }

  /**
   * Brings the flow counts in line with conntrack's live flows (by conntrack
   * id): a flow hostlb counts as active that conntrack no longer holds as
   * live ends; a live one hostlb does not know (its established event lost)
   * counts. Flows younger than SWEEP_GRACE_MS are left for the next time.
   */
  reconcile(live: ReadonlyMap<number, LiveFlow>): void {
    const now = this.clock();
    const stats = this.balancer.stats.daemon;
    for (const [id, flow] of this.flows) {
      if (live.has(id) || now - flow.created < SWEEP_GRACE_MS) continue;
      this.balancer.flowEnded(flow.daemonId);
      this.flows.delete(id);
      this.swept++;
    }
    for (const [id, l] of live) {
      // Handshakes in progress are pending, not lost; a flow in conntrack's table only after
      // hostlb's last look is left for the next sweep (its event may be on its way).
      if (this.flows.has(id) || l.daemonId === REJECT_ID || this.balancer.tree.daemonsById[l.daemonId] === undefined) continue;
      if (l.protocol === 6 && (l.tcpState === TcpCt.SynSent || l.tcpState === TcpCt.SynRecv)) continue;
      // Only a handshake decided for this daemon is this flow (an IPv4 key leaves out the cluster port).
      const found = this.pending.get(l.key);
      const pending = found !== undefined && found.daemonId === l.daemonId ? found : undefined;
      if (pending !== undefined && now - pending.decided < SWEEP_GRACE_MS) continue;
      if (pending !== undefined) this.pending.delete(l.key);
      else stats[l.daemonId * DAEMON_COLUMNS + D_ACTIVE_FLOWS]++;
      this.flows.set(id, { daemonId: l.daemonId, protocol: l.protocol, created: now, tcpState: l.tcpState });
      this.swept++;
    }
  }

  /**
   * One entry of the dump taken at start (flows an earlier run or the
   * fallback hash left), counted as it stands for the daemon conntrack
   * translated it to (ownerOf). Returns the id its mark should name now: that
   * daemon's, REJECT_ID when no daemon of this configuration is there, or the
   * mark's own id when the entry is not one to count (another hostlb's mark,
   * the reject mark, a flow already known, an unreadable message).
   */
  restore(ev: FlowEvent): number {
    const id = ev.mark & ID_MASK;
    if (((ev.mark & MARK_MASK) >>> 0) !== this.markBase || id === REJECT_ID) return id;
    this.events++;
    if (this.flows.has(ev.id) || !ev.tuples()) return id;
    const owner = this.ownerOf(id, ev.reply);
    if (owner < 0) return REJECT_ID;
    // An ended connection (TIME_WAIT for two minutes after a run of short ones: thousands) is not
    // followed: nothing of it is left to count, and a client's new SYN on the same addresses makes
    // conntrack reopen it as a new entry under the same id (see onEvent).
    if (ev.orig.protocol === 6 && ENDED_TCP.has(ev.tcpState)) return owner;
    this.flows.set(ev.id, { daemonId: owner, protocol: ev.orig.protocol, created: this.clock(), tcpState: ev.tcpState });
    this.balancer.stats.daemon[owner * DAEMON_COLUMNS + D_ACTIVE_FLOWS]++;
    return owner;
  }

  /**
   * The daemon a conntrack entry left by an earlier run belongs to, or -1
   * when none of this configuration does. Its mark names the daemon by that
   * run's id, and ids are per run: with the configuration changed in between
   * (a daemon removed, the list reordered) the id may name another daemon
   * now. The reply tuple's source is where conntrack translated the flow
   * to: the mark's id stands when its daemon is there, else the daemon that
   * is. Without a reply tuple the mark's id stands.
   */
  ownerOf(id: number, reply: ClientTuple | null): number {
    const daemons = this.balancer.tree.daemonsById;
    const named = daemons[id];
    if (reply === null) return named === undefined ? -1 : id;
    if (named !== undefined && translatedTo(named, reply)) return id;
    for (const d of daemons) if (d !== undefined && translatedTo(d, reply)) return d.id;
    return -1;
  }

  /** Daemon ids that a flow hostlb follows, or a handshake it waits for, still names. */
  daemonsHeld(): Set<number> {
    const held = new Set<number>();
    for (const f of this.flows.values()) held.add(f.daemonId);
    for (const p of this.pending.values()) held.add(p.daemonId);
    for (const l of this.late.values()) held.add(l.daemonId);
    return held;
  }
}

/** True when `reply`'s source, the address a flow was translated to, is daemon `d` (same protocol). */
function translatedTo(d: Daemon, reply: ClientTuple): boolean {
  const protocol = d.clusterPort.protocol;
  if (protocol !== 'any' && (protocol === 'tcp') !== (reply.protocol === 6)) return false;
  if (d.port !== reply.srcPort || d.address.family !== reply.family) return false;
  const bytes = d.address.bytes;
  for (let i = 0; i < bytes.length; i++) if (bytes[i] !== reply.src[i]) return false;
  return true;
}
