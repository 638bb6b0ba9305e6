// The netfilter data plane at run time: hostlb decides, the kernel forwards.
// The first packet of each new connection arrives on an NFQUEUE queue; the
// Balancer picks a daemon (queue-decision.ts) and the packet goes back with
// verdict ACCEPT and the daemon's mark, which hostlb's nftables chain turns
// into a DNAT (host-plan.ts). Conntrack events (new, TCP state changes,
// destroyed; only flows carrying hostlb's marks) feed the per-daemon counts
// (flow-accounting.ts). This file owns the sockets and the timers; the maps'
// state (marks → daemons, fallback buckets) is kept in step with the
// configuration and effective weights (nft-maps.ts).

import { readFileSync } from 'node:fs';
import type { BaseLogger as Logger } from 'pino';
import type { HostlbConfig } from '../../control/config-schema.js';
import type { Balancer } from '../../dispatch/balancer.js';
import { ConnectionPage, type ConnectionFilter } from '../../dispatch/record-view.js';
import { HostlbError } from '../../errors.js';
import { LogBudget } from '../../log-budget.js';
import type { HostFacts } from '../../net/host-facts.js';
import type { HostSpec } from '../../net/host-spec.js';
import type { NetStep } from '../../net/net-step.js';
import { checkTools } from '../../net/privileges.js';
import { CtMessage, CtTuple, DELETE_FLOW_BYTES, IPCTNL_MSG_CT_NEW, NFNLGRP_CONNTRACK_DESTROY, NFNLGRP_CONNTRACK_NEW, NFNLGRP_CONNTRACK_UPDATE, writeDeleteByMark, writeDeleteFlow, writeDumpByMark, writeGetFlow, writeSetMark } from '../../netlink/conntrack.js';
import { MessageReader, NetlinkWriter } from '../../netlink/message.js';
import { NF_ACCEPT, QueuedPacket, VERDICT_BYTES, writeQueueBind, writeQueueUnbind, writeVerdict } from '../../netlink/nfqueue.js';
import { NetlinkSocket } from '../../netlink/socket.js';
import { formatIpv4Bytes, formatIpv6 } from '../../wire/address.js';
import type { DataPlane, FlowTable, PlaneContext, PlaneCounter } from '../data-plane.js';
import { clientTuple, tupleKey } from './client-key.js';
import { CtEvent } from './ct-event.js';
import { EVENT_FORGET, FlowAccounting, UNDECIDED, type LiveFlow } from './flow-accounting.js';
import { planNetfilterSetup, tableName } from './host-plan.js';
import { ENDING_BIT, EVENT_BITS, ID_MASK, MARK_MASK, REJECT_ID } from './marks.js';
import { applyMapScript, mapScript, mapState } from './nft-maps.js';
import { QueueDecision } from './queue-decision.js';

export interface NetfilterPlaneOptions {
  queue: number;
  markBase: number;
  /** The nft table (host-plan.ts tableName). */
  table: string;
  /** Packets the kernel may hold in the queue before fail-open accepts the rest. Default 4096. */
  queueLength?: number;
  /** Seeds the flow hash, as the TUN dispatcher's hashSeed does. */
  hashSeed?: number;
  /** Decided flows waiting for their answer hostlb tracks at most. Default MAX_PENDING (65,536). */
  maxPending?: number;
  /** How often effective weights are checked for a change of the fallback buckets, ms. Default 500. */
  syncIntervalMs?: number;
  clock?: () => number;
  /** Told when the maps could not be updated (nft failed); the plane carries on with the old maps. */
  onError?: (error: unknown, what: string) => void;
  /** Where the plane says what it found at start. */
  logger?: Logger;
}

/** Conntrack's TCP states in the TUN table's words (tcp-state.ts): conntrack's SYN_SENT is a SYN hostlb has passed on (SYN_RECV), its SYN_RECV a daemon's SYN-ACK (SYN_ACK). */
const TCP_STATE_NAMES = ['NONE', 'SYN_RECV', 'SYN_ACK', 'ESTABLISHED', 'FIN_WAIT', 'CLOSE_WAIT', 'LAST_ACK', 'TIME_WAIT', 'CLOSE', 'SYN_RECV'];

/** How often flow counts are compared with conntrack (sweep), ms. */
const SWEEP_MS = 60_000;

/** How long a handshake goes unanswered before hostlb asks conntrack whether its SYN reached the daemon, and how often it asks, ms. */
const CONFIRM_AFTER_MS = 50;
const CONFIRM_MS = 100;

export class NetfilterPlane implements DataPlane {
  readonly kind = 'netfilter' as const;
  /** Packets hostlb got from the queue, and verdicts by outcome. */
  packetsQueued = 0;
  verdictsDaemon = 0;
  verdictsRejected = 0;
  /** Queued packets hostlb could not read as a flow to a cluster port: accepted unmarked (the fallback hash decides). */
  verdictsUnparsed = 0;
  readonly accounting: FlowAccounting;
  private readonly decision: QueueDecision;
  private queueSocket: NetlinkSocket | null = null;
  private eventSocket: NetlinkSocket | null = null;
  /** Requests (dumps, deletes) on a socket of their own: their answers must not be read off the queue or event sockets. */
  private controlSocket: NetlinkSocket | null = null;
  private readonly verdicts = new NetlinkWriter(1 << 16);
  private readonly requests = new NetlinkWriter(1 << 12);
  /** Batched deletes and lookups of handshakes, up to ~500 to a datagram. */
  private readonly batch = new NetlinkWriter(1 << 16);
  private readonly reader = new MessageReader();
  private readonly packet = new QueuedPacket();
  private readonly event = new CtEvent();
  private readonly tuple = new CtTuple();
  private readonly clock: () => number;
  private lastScript = '';
  private syncTimer: NodeJS.Timeout | null = null;
  private confirmTimer: NodeJS.Timeout | null = null;
  private running = false;

  constructor(readonly balancer: Balancer, private readonly options: NetfilterPlaneOptions, private readonly tools: readonly string[] = []) {
    this.clock = options.clock ?? Date.now;
    this.accounting = new FlowAccounting(balancer, { markBase: options.markBase, maxPending: options.maxPending, clock: this.clock });
    this.decision = new QueueDecision(balancer, this.accounting, options.hashSeed ?? 0);
  }

  /** Null when nft and iptables are installed, else which packages to install. */
  static support(): string | null {
    return checkTools(['nft', 'iptables']);
  }

  static fromConfig(config: HostlbConfig, context: PlaneContext): NetfilterPlane {
    const v6 = config.clusters.some((c) => c.address.includes(':'));
    const budget = new LogBudget(5, 60_000);
    return new NetfilterPlane(context.balancer, {
      queue: config.netfilter.queue, markBase: config.netfilter.mark, queueLength: config.netfilter.queueLength,
      table: tableName(config.device), hashSeed: config.seed, logger: context.logger,
      // A failure that repeats on every tick is logged a few times a minute, not twice a second.
      onError: (err, what) => {
        const suppressed = budget.take();
        if (suppressed !== null) context.logger.error({ err, ...(suppressed > 0 ? { suppressed } : {}) }, `could not ${what}`);
      },
    }, ['nft', 'iptables', ...(v6 ? ['ip6tables'] : [])]);
  }

  checkTools(): void {
    const missing = checkTools(this.tools);
    if (missing !== null) throw new HostlbError('NETFILTER_TOOLS_MISSING', missing);
  }

  plan(spec: HostSpec, baseline: HostFacts): NetStep[] {
    return planNetfilterSetup({ ...spec, queue: this.options.queue, markBase: this.options.markBase }, baseline);
  }

  open(): void {
    // Nothing to open before the rules exist: conntrack carries the flows, there is no device.
  }

  /** Hostlb's flows conntrack holds now. */
  get flowCount(): number {
    return this.accounting.flowCount;
  }

  get eventOverruns(): number {
    return this.eventSocket?.overruns ?? 0;
  }

  /** The most entries conntrack holds (net.netfilter.nf_conntrack_max), shared with everything else on the host; 0 when unknown. */
  conntrackCapacity(): number {
    try {
      return Number(readFileSync('/proc/sys/net/netfilter/nf_conntrack_max', 'utf8').trim()) || 0;
    } catch {
      return 0;
    }
  }

  table(): FlowTable {
    return { records: this.accounting.flowCount, capacity: null, limit: this.conntrackCapacity(), evictions: 0 };
  }

  counter(name: PlaneCounter): number | null {
    switch (name) {
      case 'queue.daemon': return this.verdictsDaemon;
      case 'queue.rejected': return this.verdictsRejected;
      case 'queue.unparsed': return this.verdictsUnparsed;
      case 'conntrack.events': return this.accounting.events;
      case 'conntrack.overruns': return this.eventOverruns;
      case 'conntrack.swept': return this.accounting.swept;
      default: return null;
    }
  }

  /**
   * Binds the queue, subscribes to conntrack events, counts the flows
   * conntrack already holds with hostlb's marks (a restart, or the fallback
   * hash's while hostlb was away: whether or not `adopt`), writes the maps,
   * starts. Throws HostlbError NETFILTER_FAILED (the reason in its message
   * and cause: another process bound the queue, a kernel module missing).
   */
  start(adopt: boolean): void {
    if (this.running) return;
    let remarked = 0;
    try {
      this.eventSocket = new NetlinkSocket([NFNLGRP_CONNTRACK_NEW, NFNLGRP_CONNTRACK_UPDATE, NFNLGRP_CONNTRACK_DESTROY], { slots: 64, slotSize: 2048, receiveBuffer: 32 << 20 });
      this.queueSocket = new NetlinkSocket([], { slots: 64, slotSize: 1024, receiveBuffer: 8 << 20 });
      this.controlSocket = new NetlinkSocket([], { slots: 16, slotSize: 65536, receiveBuffer: 0 });
      remarked = this.recount();
      this.syncMaps();
      this.requests.reset();
      const seqs = writeQueueBind(this.requests, this.options.queue, { copyRange: 128, maxLength: this.options.queueLength ?? 4096 });
      this.queueSocket.request(this.requests, seqs, `bind NFQUEUE queue ${this.options.queue}`);
    } catch (e) {
      this.eventSocket?.close();
      this.queueSocket?.close();
      this.controlSocket?.close();
      this.eventSocket = this.queueSocket = this.controlSocket = null;
      throw new HostlbError('NETFILTER_FAILED', `the netfilter data plane could not start: ${(e as Error).message}`, { cause: e });
    }
    if (adopt) this.options.logger?.info({ event: 'flows_recounted', flows: this.flowCount, remarked }, 'flows counted from conntrack');
    this.running = true;
    this.queueSocket.onReadable(this.drainQueue);
    this.eventSocket.onReadable(this.drainEvents);
    let lastSweep = this.clock();
    let overrunsAtSweep = 0;
    this.confirmTimer = setInterval(() => this.confirmHandshakes(), CONFIRM_MS);
    this.confirmTimer.unref();
    this.syncTimer = setInterval(() => {
      this.accounting.expirePending();
      this.releaseHandshakes();
      this.syncMaps();
      // Lost events (an overrun, or one the kernel could not build) would leave a flow counted
      // active for good: compare with conntrack now and then, and at once after an overrun.
      const now = this.clock();
      if (this.eventOverruns !== overrunsAtSweep || now - lastSweep >= SWEEP_MS) {
        overrunsAtSweep = this.eventOverruns;
        lastSweep = now;
        this.sweep();
      }
    }, this.options.syncIntervalMs ?? 500);
    this.syncTimer.unref();
  }

  follow(): void {
    // The maps follow the new daemons at once (the timer would within 500 ms).
    this.syncMaps();
  }

  hostRepaired(kinds: readonly string[]): void {
    // A flushed nft table came back empty of map elements: write them again.
    if (kinds.includes('nft')) this.resyncMaps();
  }

  nothingLive(id: number): boolean {
    return this.liveFlows(id) === 0;
  }

  daemonsHeld(): ReadonlySet<number> {
    return this.accounting.daemonsHeld();
  }

  /**
   * Stops deciding: the queue is unbound (new connections fall through to the
   * kernel-side hash rule, --queue-bypass) and the sockets close. The nft
   * table and iptables rules stay; their owner undoes them or not.
   */
  stop(): void {
    if (!this.running) return;
    this.running = false;
    if (this.syncTimer) clearInterval(this.syncTimer);
    if (this.confirmTimer) clearInterval(this.confirmTimer);
    this.syncTimer = this.confirmTimer = null;
    // Fallback buckets as they are now, so connections go on without hostlb.
    this.syncMaps();
    if (this.queueSocket) {
      this.queueSocket.onReadable(null);
      this.requests.reset();
      writeQueueUnbind(this.requests, this.options.queue);
      this.queueSocket.write(this.requests);
      this.queueSocket.close();
    }
    this.eventSocket?.onReadable(null);
    this.eventSocket?.close();
    this.controlSocket?.close();
    this.queueSocket = this.eventSocket = this.controlSocket = null;
  }

  close(): void {
    // Conntrack outlives hostlb: nothing of the plane's own is left to let go.
  }

  handOver(): void {
    // Until the next owner binds the queue, the kernel-side hash rule dispatches.
    this.stop();
  }

  /** Rewrites the nft maps whatever hostlb last wrote (their table was flushed and put back). Never throws. */
  resyncMaps(): void {
    this.lastScript = '';
    this.syncMaps();
  }

  /** Rewrites the nft maps when the daemons or effective weights changed. Never throws. */
  syncMaps(): void {
    // Retired daemons keep their map entry while their flows drain.
    const draining = this.balancer.tree.daemonsById.filter((d) => d !== undefined && d.retired && this.balancer.activeFlows(d.id) > 0);
    const { daemons, ports } = mapState(this.balancer, draining);
    const script = mapScript(this.options.table, this.options.markBase, daemons, ports);
    if (script === this.lastScript) return;
    try {
      applyMapScript(script);
      this.lastScript = script;
    } catch (e) {
      this.options.onError?.(e, 'update the nftables maps');
    }
  }

  /**
   * Ends every flow of daemon `id` now: its conntrack entries are deleted,
   * so each connection's next packet is answered with a RST. Returns how many
   * flows hostlb knew of.
   */
  resetDaemonFlows(id: number): number {
    const ended = this.accounting.forgetDaemon(id);
    const socket = this.controlSocket;
    if (socket) {
      this.requests.reset();
      // Whatever the event bits (host-plan.ts).
      const seq = writeDeleteByMark(this.requests, 0, (this.options.markBase | id) >>> 0, ~EVENT_BITS >>> 0);
      // None left is no failure.
      const failed = socket.requestAll(this.requests, [seq], `delete the conntrack entries of daemon ${id}`, { absentOk: true });
      if (failed !== null) this.options.onError?.(failed, 'reset the flows of a daemon');
    }
    return ended;
  }

  /**
   * Hostlb's flows as the admin API shows connections, read from conntrack
   * now (a dump filtered by hostlb's mark): the events hostlb subscribes to
   * are trimmed (host-plan.ts), so only conntrack knows each flow's current
   * state. Control path; allocates freely. Every match of `filter` is
   * counted; only the flows of the page asked for are built.
   */
  connections(filter: ConnectionFilter): ConnectionPage {
    const page = new ConnectionPage(filter);
    const socket = this.controlSocket;
    if (socket === null) return page;
    const ct = new CtMessage();
    const now = Date.now();
    this.requests.reset();
    const seq = writeDumpByMark(this.requests, this.options.markBase, MARK_MASK);
    socket.dump(this.requests, seq, 'list hostlb\'s conntrack entries', (m, view) => {
      if (!ct.parse(view, m) || !ct.tuples(socket.buffer, view)) return;
      const id = ct.mark & ID_MASK;
      if (id === REJECT_ID || ((ct.mark & MARK_MASK) >>> 0) !== (this.options.markBase >>> 0)) return;
      ct.counters(view);
      const o = ct.orig;
      const ep = (bytes: Uint8Array, p: number): string => (o.family === 6 ? `[${addressText(6, bytes)}]:${p}` : `${addressText(4, bytes)}:${p}`);
      const daemon = this.balancer.tree.daemonsById[id];
      const daemonName = daemon?.name ?? (ct.hasReply ? ep(ct.reply.src, ct.reply.srcPort) : String(id));
      const state = o.protocol === 6 ? TCP_STATE_NAMES[ct.tcpState] ?? 'UNKNOWN' : 'UDP';
      if (!page.admit(o.protocol, state, daemonName, o.family, o.dst, o.dstPort, o.src)) return;
      page.connections.push({
        id: ct.id, protocol: o.protocol === 6 ? 'tcp' : 'udp', client: ep(o.src, o.srcPort), cluster: ep(o.dst, o.dstPort),
        daemon: daemonName, state, reset: false,
        created: this.accounting.createdOf(ct.id), lastSeen: 0, expires: ct.timeout >= 0 ? now + ct.timeout * 1000 : 0,
        packetsIn: ct.packetsOrig, bytesIn: ct.bytesOrig, packetsOut: ct.packetsReply, bytesOut: ct.bytesReply,
      });
    });
    return page;
  }

  /**
   * Connections conntrack holds for daemon `id` that have not begun to close
   * (no FIN or RST yet), counted or not: what a drain must wait for before
   * the daemon may stop. Control path: one dump filtered by the daemon's mark.
   */
  liveFlows(id: number): number {
    const socket = this.controlSocket;
    if (socket === null) return 0;
    let live = 0;
    this.requests.reset();
    const seq = writeDumpByMark(this.requests, (this.options.markBase | id) >>> 0, (MARK_MASK | ENDING_BIT | ID_MASK) >>> 0);
    try {
      socket.dump(this.requests, seq, `list the live conntrack entries of daemon ${id}`, (m) => {
        if (m.type === IPCTNL_MSG_CT_NEW) live++;
      });
    } catch (e) {
      this.options.onError?.(e, 'list the live flows of a daemon');
    }
    return live;
  }

  // ---- queue: one verdict per new connection ------------------------------

  private readonly drainQueue = (): void => {
    const socket = this.queueSocket;
    if (!this.running || socket === null) return;
    const { reader, packet, verdicts } = this;
    for (let turn = 0; turn < 16; turn++) {
      const n = socket.read();
      if (n === 0) break;
      const more = n === socket.offsets.length;
      verdicts.reset();
      for (let i = 0; i < n; i++) {
        reader.reset(socket.buffer, socket.view, socket.offsets[i], socket.offsets[i] + socket.lengths[i]);
        while (reader.next()) {
          if (!packet.parse(socket.view, reader)) continue;
          this.packetsQueued++;
          const mark = this.markOf(this.decision.decide(socket.buffer, packet.payloadAt, packet.payloadLength));
          if (!verdicts.fits(VERDICT_BYTES)) {
            socket.write(verdicts);
            verdicts.reset();
          }
          writeVerdict(verdicts, this.options.queue, packet.id, NF_ACCEPT, mark);
        }
      }
      if (verdicts.length > 0) socket.write(verdicts);
      // A short batch drained the socket: the (level-triggered) poll calls again when more arrive.
      if (!more) break;
    }
  };

  /** The verdict's mark for a decision, counted by outcome: a daemon's, the reject mark, or null (unmarked: the fallback hash decides). */
  private markOf(id: number): number | null {
    if (id === UNDECIDED) {
      this.verdictsUnparsed++;
      return null;
    }
    if (id === REJECT_ID) this.verdictsRejected++;
    else this.verdictsDaemon++;
    return (this.options.markBase | id) >>> 0;
  }

  /** Deletes the conntrack entries of handshakes at daemons taken out (FlowAccounting.releaseTakenOut), in batches. */
  private releaseHandshakes(): void {
    const socket = this.controlSocket;
    this.batched(socket, 'delete the conntrack entries of handshakes at a daemon taken out', null, (write) => {
      this.accounting.releaseTakenOut((key, port) => {
        if (socket !== null && clientTuple(key, port, this.tuple)) write((w) => writeDeleteFlow(w, this.tuple, 0));
      });
    });
  }

  /**
   * Pending TCP handshakes still unanswered a moment after hostlb decided
   * them: those conntrack has confirmed reached the daemon (their SYN passed
   * every hook) now count as SYNs sent to it, so a daemon that ignores them
   * is judged by passive health. A SYN dropped on the way (no confirmed
   * entry) never counts. Each is looked up once by its tuple (a GET: a hash
   * lookup in the kernel, batched in one datagram), never by a walk of the
   * conntrack table on this thread: a dump of the table 10 times a second cost
   * 15% of new connections in bench:e2e. Queued events are read first: they
   * answer most handshakes that only look old under load.
   */
  private confirmHandshakes(): void {
    const socket = this.controlSocket;
    if (socket === null || !this.running) return;
    this.drainEvents();
    const answer = (m: MessageReader, view: DataView): void => {
      if (m.type === IPCTNL_MSG_CT_NEW && this.event.parse(socket.buffer, view, m)) this.accounting.confirmed(this.event);
    };
    this.batched(socket, 'look up unanswered handshakes', answer, (write) => {
      this.accounting.unconfirmed(this.clock() - CONFIRM_AFTER_MS, (key, port) => {
        if (clientTuple(key, port, this.tuple)) write((w) => writeGetFlow(w, this.tuple));
      });
    });
  }

  /**
   * Runs `fill`, which writes requests through `write`, sending them in as
   * few datagrams as fit; entries already gone are no failure. Failures go to
   * onError as `what`.
   */
  private batched(socket: NetlinkSocket | null, what: string, other: ((m: MessageReader, view: DataView) => void) | null, fill: (write: (one: (w: NetlinkWriter) => number) => void) => void): void {
    const w = this.batch;
    const seqs: number[] = [];
    const flush = (): void => {
      if (socket === null || seqs.length === 0) return;
      const failed = socket.requestAll(w, seqs, what, { absentOk: true, other: other ?? undefined });
      if (failed !== null) this.options.onError?.(failed, what);
      seqs.length = 0;
      w.reset();
    };
    w.reset();
    fill((one) => {
      if (!w.fits(DELETE_FLOW_BYTES)) flush();
      seqs.push(one(w));
    });
    flush();
  }

  // ---- conntrack events: the per-daemon counts ----------------------------

  private readonly drainEvents = (): void => {
    const socket = this.eventSocket;
    if (!this.running || socket === null) return;
    for (let turn = 0; turn < 16; turn++) {
      const n = socket.read();
      if (n === 0) return;
      const more = n === socket.offsets.length;
      for (let i = 0; i < n; i++) {
        this.reader.reset(socket.buffer, socket.view, socket.offsets[i], socket.offsets[i] + socket.lengths[i]);
        while (this.reader.next()) {
          if (this.event.parse(socket.buffer, socket.view, this.reader) && this.accounting.onEvent(this.event, false) === EVENT_FORGET) this.forget(this.event.ct);
        }
      }
      if (!more) return;
    }
  };

  /** Deletes the conntrack entry of a flow a RST ended (see FlowAccounting.onEvent). */
  private forget(ct: CtMessage): void {
    const socket = this.controlSocket;
    if (socket === null) return;
    this.requests.reset();
    const seq = writeDeleteFlow(this.requests, ct.orig, ct.id);
    const failed = socket.requestAll(this.requests, [seq], 'delete the conntrack entry of a reset flow', { absentOk: true });
    if (failed !== null) this.options.onError?.(failed, 'delete the conntrack entry of a reset flow');
  }

  /**
   * Brings the flow counts in line with conntrack (FlowAccounting.reconcile).
   * The dump holds only live flows (the kernel filters on the ENDING mark
   * bit), so it costs what the active flows number, not the TIME_WAIT crowd.
   */
  private sweep(): void {
    const socket = this.controlSocket;
    if (socket === null) return;
    const live = new Map<number, LiveFlow>();
    const ct = new CtMessage();
    this.requests.reset();
    const seq = writeDumpByMark(this.requests, this.options.markBase, (MARK_MASK | ENDING_BIT) >>> 0);
    try {
      socket.dump(this.requests, seq, 'list hostlb\'s live conntrack entries', (m, view) => {
        if (!ct.parse(view, m) || !ct.tuples(socket.buffer, view)) return;
        // Marks were set right at start (recount); a flow the fallback placed between that dump and
        // the new maps still carries an earlier run's id.
        const daemonId = this.accounting.ownerOf(ct.mark & ID_MASK, ct.hasReply ? ct.reply : null);
        live.set(ct.id, { daemonId, protocol: ct.orig.protocol, key: tupleKey(ct.orig), tcpState: ct.tcpState });
      });
    } catch (e) {
      this.options.onError?.(e, 'compare flow counts with conntrack');
      return;
    }
    this.accounting.reconcile(live);
  }

  /**
   * Counts the flows conntrack already holds with hostlb's marks (left by an
   * earlier run, or carried by the fallback). A mark names its daemon by the
   * id it had in that run; when this configuration gives the id to another
   * daemon (FlowAccounting.restore), the entry gets the id of the daemon it
   * was translated to, or REJECT_ID when no daemon of this configuration is
   * there, so the listing, drains and resets that go by marks find it where
   * it is. Returns how many marks were changed.
   */
  private recount(): number {
    const socket = this.controlSocket!;
    const moved: Array<{ tuple: CtTuple; id: number }> = [];
    this.requests.reset();
    const seq = writeDumpByMark(this.requests, this.options.markBase, MARK_MASK);
    socket.dump(this.requests, seq, 'list hostlb\'s conntrack entries', (m, view) => {
      const ev = this.event;
      if (!ev.parse(socket.buffer, view, m)) return;
      const id = this.accounting.restore(ev);
      if (id !== (ev.mark & ID_MASK)) moved.push({ tuple: ev.orig.clone(), id });
    });
    this.batched(socket, 'give recounted flows the ids of their daemons', null, (write) => {
      for (const f of moved) write((w) => writeSetMark(w, f.tuple, f.id, ID_MASK));
    });
    return moved.length;
  }
}

function addressText(family: number, bytes: Uint8Array): string {
  return family === 4 ? formatIpv4Bytes(bytes, 0) : formatIpv6(bytes, 0);
}
