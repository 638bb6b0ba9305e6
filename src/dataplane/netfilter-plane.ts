// The netfilter data plane at run time: hostlb decides, the kernel forwards.
// The first packet of each new connection arrives on an NFQUEUE queue; the
// Balancer picks a daemon and the packet goes back with verdict ACCEPT and the
// daemon's mark, which hostlb's nftables chain turns into a DNAT. Conntrack
// events (new, TCP state changes, destroyed; only flows carrying hostlb's
// marks) feed the same per-daemon counts the TUN dispatcher keeps — active and
// new flows, SYNs answered or refused — so lc, wlc, p2c, the health layer and
// the metrics work unchanged. The maps' state (marks → daemons, fallback
// buckets) is kept in step with the configuration and effective weights.

import { readFileSync } from 'node:fs';
import type { Balancer } from '../dispatch/balancer.js';
import type { ClusterPort, Daemon } from '../dispatch/config-tree.js';
import { createFlowKey, hashAddress, hashFlowKey } from '../dispatch/flow-hash.js';
import { Drop } from '../dispatch/drop-reason.js';
import { SOURCE_HASH_SEED } from '../dispatch/inbound.js';
import type { ConnectionInfo, ConnectionPage } from '../dispatch/record-view.js';
import { D_ACTIVE_FLOWS, D_BYTES_IN, D_BYTES_OUT, D_PACKETS_IN, D_PACKETS_OUT, D_SYN_ANSWERED, D_SYN_REFUSED, D_SYN_TIME_MS, D_SYNS, DAEMON_COLUMNS } from '../dispatch/stats.js';
import { formatIpv4Bytes, formatIpv6 } from '../wire/address.js';
import { read32 } from '../wire/bytes.js';
import { applyMapScript, mapScript, type MapDaemon, type MapPort } from '../net/nft-maps.js';
import { fallbackBuckets } from './fallback-buckets.js';
import { ENDING_BIT, EVENT_BITS, ID_MASK, MARK_MASK, REJECT_ID } from '../net/netfilter-plan.js';
import { CtMessage, CtTuple, DELETE_FLOW_BYTES, EVENT_DESTROY, IPCTNL_MSG_CT_NEW, EVENT_NEW, IPS_SEEN_REPLY, NFNLGRP_CONNTRACK_DESTROY, NFNLGRP_CONNTRACK_NEW, NFNLGRP_CONNTRACK_UPDATE, TcpCt, writeDeleteByMark, writeDeleteFlow, writeDumpByMark, writeGetFlow } from '../netlink/conntrack.js';
import { MessageReader, NetlinkWriter } from '../netlink/message.js';
import { NF_ACCEPT, QueuedPacket, VERDICT_BYTES, writeQueueBind, writeQueueUnbind, writeVerdict } from '../netlink/nfqueue.js';
import { NetlinkSocket } from '../netlink/socket.js';

export interface NetfilterPlaneOptions {
  queue: number;
  markBase: number;
  /** The nft table (netfilter-plan.ts tableName). */
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
  /** A dump taken after it was decided has looked for it (confirmHandshakes): not asked again. */
  asked: boolean;
}

/** One hostlb flow conntrack has confirmed, by conntrack id (its addresses stay in conntrack: connections() reads them there). */
interface Flow {
  daemonId: number;
  protocol: number;
  created: number;
  tcpState: number;
  active: boolean;
}

const ENDED_TCP = new Set<number>([TcpCt.FinWait, TcpCt.CloseWait, TcpCt.LastAck, TcpCt.TimeWait, TcpCt.Close]);
/** Conntrack's TCP states in the TUN table's words (tcp-state.ts): conntrack's SYN_SENT is a SYN hostlb has passed on (SYN_RECV), its SYN_RECV a daemon's SYN-ACK (SYN_ACK). */
const TCP_STATE_NAMES = ['NONE', 'SYN_RECV', 'SYN_ACK', 'ESTABLISHED', 'FIN_WAIT', 'CLOSE_WAIT', 'LAST_ACK', 'TIME_WAIT', 'CLOSE', 'SYN_RECV'];

export class NetfilterPlane {
  /** Packets hostlb got from the queue, and verdicts by outcome. */
  packetsQueued = 0;
  verdictsDaemon = 0;
  verdictsRejected = 0;
  /** Queued packets hostlb could not read as a flow to a cluster port: accepted unmarked (the fallback hash decides). */
  verdictsUnparsed = 0;
  /** Conntrack events read, and event-socket overruns (events lost: counts may drift until the next resync). */
  events = 0;
  /** Flows whose count a sweep corrected (an event was lost). */
  swept = 0;
  /** Decisions not tracked as pending because the pending map was full (they count when conntrack reports them). */
  pendingOverflows = 0;
  private queueSocket: NetlinkSocket | null = null;
  private eventSocket: NetlinkSocket | null = null;
  /** Requests (dumps, deletes) on a socket of their own: their answers must not be read off the queue or event sockets. */
  private controlSocket: NetlinkSocket | null = null;
  private readonly verdicts = new NetlinkWriter(1 << 16);
  private readonly requests = new NetlinkWriter(1 << 12);
  /** Deletes of released handshakes, up to ~500 to a datagram. */
  private readonly releases = new NetlinkWriter(1 << 16);
  private readonly reader = new MessageReader();
  private readonly packet = new QueuedPacket();
  private readonly ct = new CtMessage();
  private readonly key = createFlowKey();
  private readonly flows = new Map<number, Flow>();
  /**
   * Flows hostlb has sent to a daemon that the daemon has not answered yet,
   * by client tuple. A flow counts (new, active) when hostlb decides, as in
   * the TUN dispatcher — a burst of connections must see the counts of the
   * ones before it (lc, wlc, drain) — and its first event then only names its
   * conntrack id. One that never gets confirmed (its SYN dropped further on)
   * stops counting after PENDING_MS. At most MAX_PENDING: beyond that a flow
   * counts when its first event arrives, as one the fallback hash decided.
   */
  private readonly pending = new Map<number | string, Pending>();
  private readonly clock: () => number;
  private lastScript = '';
  private syncTimer: NodeJS.Timeout | null = null;
  private confirmTimer: NodeJS.Timeout | null = null;
  private running = false;
  /** Daemons the maps must keep (retired ones whose flows drain), besides the live ones. */
  keepDaemons: () => Daemon[] = () => [];

  constructor(readonly balancer: Balancer, private readonly options: NetfilterPlaneOptions) {
    this.clock = options.clock ?? Date.now;
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

  /** Hostlb's flows conntrack holds now. */
  get flowCount(): number {
    return this.flows.size;
  }

  /**
   * Binds the queue (throws NetlinkError EBUSY when another process holds it),
   * subscribes to conntrack events, recounts the flows conntrack already
   * holds with hostlb's marks (a restart), writes the maps, starts.
   */
  start(): void {
    if (this.running) return;
    this.eventSocket = new NetlinkSocket([NFNLGRP_CONNTRACK_NEW, NFNLGRP_CONNTRACK_UPDATE, NFNLGRP_CONNTRACK_DESTROY], { slots: 64, slotSize: 2048, receiveBuffer: 32 << 20 });
    this.queueSocket = new NetlinkSocket([], { slots: 64, slotSize: 1024, receiveBuffer: 8 << 20 });
    this.controlSocket = new NetlinkSocket([], { slots: 16, slotSize: 65536, receiveBuffer: 0 });
    try {
      this.recount();
      this.syncMaps();
      this.requests.reset();
      const seqs = writeQueueBind(this.requests, this.options.queue, { copyRange: 128, maxLength: this.options.queueLength ?? 4096 });
      this.queueSocket.request(this.requests, seqs, `bind NFQUEUE queue ${this.options.queue}`);
    } catch (e) {
      this.eventSocket.close();
      this.queueSocket.close();
      this.controlSocket.close();
      this.eventSocket = this.queueSocket = this.controlSocket = null;
      throw e;
    }
    this.running = true;
    this.queueSocket.onReadable(this.drainQueue);
    this.eventSocket.onReadable(this.drainEvents);
    let lastSweep = this.clock();
    let overrunsAtSweep = 0;
    this.confirmTimer = setInterval(() => this.confirmHandshakes(), CONFIRM_MS);
    this.confirmTimer.unref();
    this.syncTimer = setInterval(() => {
      this.expirePending();
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

  /** Daemon ids that a flow hostlb follows, or a handshake it waits for, still names. Control path. */
  daemonsHeld(): Set<number> {
    const held = new Set<number>();
    for (const f of this.flows.values()) held.add(f.daemonId);
    for (const p of this.pending.values()) held.add(p.daemonId);
    return held;
  }

  /** Rewrites the nft maps whatever hostlb last wrote (their table was flushed and put back). Never throws. */
  resyncMaps(): void {
    this.lastScript = '';
    this.syncMaps();
  }

  /** Rewrites the nft maps when the daemons or effective weights changed. Never throws. */
  syncMaps(): void {
    const tree = this.balancer.tree;
    const daemons = new Map<number, MapDaemon>();
    const add = (d: Daemon): void => {
      daemons.set(d.id, { id: d.id, family: d.address.family, address: d.address.text, port: d.port });
    };
    const ports: MapPort[] = [];
    for (const cluster of tree.clusters) {
      for (const port of cluster.ports) {
        const live: Array<{ id: number; weight: number }> = [];
        for (const d of port.daemons) {
          add(d);
          const weight = this.balancer.effectiveWeight(port, d.id);
          if (weight > 0) live.push({ id: d.id, weight });
        }
        ports.push({ address: cluster.address.text, protocol: port.protocol, port: port.port, buckets: fallbackBuckets(live) });
      }
    }
    for (const d of this.keepDaemons()) add(d);
    const script = mapScript(this.options.table, this.options.markBase, [...daemons.values()].sort((a, b) => a.id - b.id), ports);
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
    let ended = 0;
    for (const [ctId, flow] of this.flows) {
      if (flow.daemonId !== id) continue;
      ended++;
      if (flow.active) this.balancer.flowEnded(id);
      this.flows.delete(ctId);
    }
    const socket = this.controlSocket;
    if (socket) {
      this.requests.reset();
      // Whatever the event bits (netfilter-plan.ts).
      const seq = writeDeleteByMark(this.requests, 0, (this.options.markBase | id) >>> 0, ~EVENT_BITS >>> 0);
      try {
        socket.request(this.requests, [seq], `delete the conntrack entries of daemon ${id}`);
      } catch (e) {
        // ENOENT: none left.
        if ((e as { errno?: number }).errno !== 2) this.options.onError?.(e, 'reset the flows of a daemon');
      }
    }
    return ended;
  }

  /**
   * Hostlb's flows as the admin API shows connections, read from conntrack
   * now (a dump filtered by hostlb's mark): the events hostlb subscribes to
   * are trimmed (netfilter-plan.ts), so only conntrack knows each flow's
   * current state. Control path; allocates freely. With `page`, only the
   * flows it admits (filter, offset, limit) are built; it counts the rest.
   */
  connections(page?: ConnectionPage): ConnectionInfo[] {
    const socket = this.controlSocket;
    if (socket === null) return [];
    const out: ConnectionInfo[] = [];
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
      if (page && !page.admit(o.protocol, o.protocol === 6 ? TCP_STATE_NAMES[ct.tcpState] ?? 'UNKNOWN' : 'UDP', daemon?.name ?? (ct.hasReply ? ep(ct.reply.src, ct.reply.srcPort) : String(id)), o.family, o.dst, o.dstPort, o.src)) return;
      out.push({
        id: ct.id, protocol: o.protocol === 6 ? 'tcp' : 'udp', client: ep(o.src, o.srcPort), cluster: ep(o.dst, o.dstPort),
        daemon: daemon?.name ?? (ct.hasReply ? ep(ct.reply.src, ct.reply.srcPort) : String(id)),
        state: o.protocol === 6 ? TCP_STATE_NAMES[ct.tcpState] ?? 'UNKNOWN' : 'UDP', reset: false,
        created: this.flows.get(ct.id)?.created ?? 0, lastSeen: 0, expires: ct.timeout >= 0 ? now + ct.timeout * 1000 : 0,
        packetsIn: ct.packetsOrig, bytesIn: ct.bytesOrig, packetsOut: ct.packetsReply, bytesOut: ct.bytesReply,
      });
    });
    return out;
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
          const mark = this.decide(socket.buffer, packet.payloadAt, packet.payloadLength);
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

  /** The mark for a queued packet (IPv4/IPv6 header first): a daemon's, the reject mark, or null (unmarked: fallback). */
  private decide(buf: Uint8Array, at: number, length: number): number | null {
    if (length < 20) return this.unparsed();
    const key = this.key;
    const version = buf[at] >>> 4;
    let family: number, protocol: number, l4: number;
    if (version === 4) {
      const ihl = (buf[at] & 0x0f) * 4;
      protocol = buf[at + 9];
      l4 = at + ihl;
      family = 4;
      key[0] = read32(buf, at + 12); key[1] = 0; key[2] = 0; key[3] = 0;
      key[4] = read32(buf, at + 16); key[5] = 0; key[6] = 0; key[7] = 0;
    } else if (version === 6 && length >= 40) {
      protocol = buf[at + 6];
      l4 = at + 40;
      family = 6;
      for (let w = 0; w < 4; w++) {
        key[w] = read32(buf, at + 8 + 4 * w);
        key[4 + w] = read32(buf, at + 24 + 4 * w);
      }
    } else {
      return this.unparsed();
    }
    // Extension headers or no transport ports in the copy: let the fallback hash decide.
    if ((protocol !== 6 && protocol !== 17) || l4 + 4 > at + length) return this.unparsed();
    const srcPort = (buf[l4] << 8) | buf[l4 + 1];
    const dstPort = (buf[l4 + 2] << 8) | buf[l4 + 3];
    key[8] = ((srcPort << 16) | dstPort) >>> 0;
    key[9] = (protocol << 8) | family;
    const port = this.balancer.tree.findPort(family, key, 4, protocol, dstPort);
    if (port === undefined) return this.unparsed();
    const flowKey = clientKey(protocol, buf, family === 4 ? at + 12 : at + 8, family === 4 ? 4 : 16, srcPort, dstPort);
    const earlier = this.pending.get(flowKey);
    if (earlier !== undefined) {
      // A retransmitted first packet (its conntrack entry was never confirmed):
      // the same daemon while it takes new flows, as the TUN dispatcher does.
      if (this.balancer.takesNewFlows(port, earlier.daemonId)) {
        this.verdictsDaemon++;
        return (this.options.markBase | earlier.daemonId) >>> 0;
      }
      this.pending.delete(flowKey);
      this.balancer.flowEnded(earlier.daemonId);
    }
    const daemon = this.balancer.choose(port, hashFlowKey(key, this.options.hashSeed ?? 0), hashAddress(key, 0, SOURCE_HASH_SEED));
    if (daemon === null) {
      // Counted as the TUN dispatcher counts it (hostlb_port_scheduler_decisions_total{result="none"}).
      this.balancer.stats.dropAt(port.id, Drop.NoDaemon);
      this.verdictsRejected++;
      return (this.options.markBase | REJECT_ID) >>> 0;
    }
    if (daemon.id >= REJECT_ID) return this.unparsed(); // beyond what a mark can name: the kernel-side hash decides
    this.verdictsDaemon++;
    if (this.pending.size < (this.options.maxPending ?? MAX_PENDING)) {
      // The SYN counts as sent to the daemon (D_SYNS) once it is known to have reached it: its answer, or confirmHandshakes().
      this.pending.set(flowKey, { daemonId: daemon.id, decided: this.clock(), port, protocol, reached: false, asked: false });
      this.balancer.flowStarted(daemon.id);
    } else {
      this.pendingOverflows++;
    }
    return (this.options.markBase | daemon.id) >>> 0;
  }

  /**
   * Handshakes still pending at a daemon that no longer takes new flows (down,
   * drained, removed): their conntrack entries are deleted and they stop
   * counting, so the client's next SYN from that port is a new connection
   * hostlb decides (to another daemon) instead of a retransmission conntrack
   * sends after the old one. The TUN dispatcher reschedules such a SYN itself.
   */
  private releaseHandshakes(): void {
    const socket = this.controlSocket;
    const w = this.releases;
    const seqs: number[] = [];
    w.reset();
    const flush = (): void => {
      if (socket === null || seqs.length === 0) return;
      // One datagram for the batch; entries already gone answer ENOENT.
      const failed = socket.requestAll(w, seqs, 'delete the conntrack entries of handshakes at a daemon taken out', ENOENT);
      if (failed !== null) this.options.onError?.(failed, 'delete the conntrack entries of handshakes');
      seqs.length = 0;
      w.reset();
    };
    for (const [key, p] of this.pending) {
      if (this.balancer.takesNewFlows(p.port, p.daemonId)) continue;
      this.pending.delete(key);
      this.balancer.flowEnded(p.daemonId);
      if (socket === null || !clientTuple(key, p.port, this.released)) continue;
      if (!w.fits(DELETE_FLOW_BYTES)) flush();
      seqs.push(writeDeleteFlow(w, this.released, 0));
    }
    flush();
  }

  private readonly released = new CtTuple();

  /**
   * Pending TCP handshakes still unanswered a moment after hostlb decided
   * them: those conntrack has confirmed reached the daemon (their SYN passed
   * every hook) and now count as SYNs sent to it, so a daemon that ignores
   * them is judged by passive health. A SYN dropped on the way (no confirmed
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
    const limit = this.clock() - CONFIRM_AFTER_MS;
    const w = this.releases;
    const seqs: number[] = [];
    const stats = this.balancer.stats.daemon;
    const flush = (): void => {
      if (seqs.length === 0) return;
      const failed = socket.requestAll(w, seqs, 'look up unanswered handshakes', ENOENT, (m, view) => {
        const ct = this.ct;
        if (m.type !== IPCTNL_MSG_CT_NEW || !ct.parse(view, m) || !ct.tuples(socket.buffer, view)) return;
        const o = ct.orig;
        const p = this.pending.get(clientKey(o.protocol, o.src, 0, o.family === 4 ? 4 : 16, o.srcPort, o.dstPort));
        if (p === undefined || p.reached || p.daemonId !== (ct.mark & ID_MASK)) return;
        p.reached = true;
        stats[p.daemonId * DAEMON_COLUMNS + D_SYNS]++;
      });
      if (failed !== null) this.options.onError?.(failed, 'look up unanswered handshakes');
      seqs.length = 0;
      w.reset();
    };
    w.reset();
    // Insertion order is decision order: stop at the first one too young.
    for (const [key, p] of this.pending) {
      if (p.decided > limit) break;
      if (p.asked || p.protocol !== 6) continue;
      p.asked = true;
      if (!clientTuple(key, p.port, this.released)) continue;
      if (!w.fits(DELETE_FLOW_BYTES)) flush();
      seqs.push(writeGetFlow(w, this.released));
    }
    flush();
  }


  /** Pending flows whose first packet never made a conntrack entry (dropped after the verdict) stop counting as active. */
  private expirePending(): void {
    const limit = this.clock() - PENDING_MS;
    for (const [k, p] of this.pending) {
      if (p.decided > limit) continue;
      this.pending.delete(k);
      this.balancer.flowEnded(p.daemonId);
    }
  }

  private unparsed(): null {
    this.verdictsUnparsed++;
    return null;
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
        while (this.reader.next()) this.onConntrack(socket.buffer, socket.view, this.reader, false);
      }
      if (!more) return;
    }
  };

  private onConntrack(bytes: Uint8Array, view: DataView, m: MessageReader, restoring: boolean): void {
    const ct = this.ct;
    if (!ct.parse(view, m)) return;
    if (((ct.mark & MARK_MASK) >>> 0) !== (this.options.markBase >>> 0)) return;
    const id = ct.mark & ID_MASK;
    if (id === REJECT_ID) return;
    this.events++;
    const stats = this.balancer.stats.daemon;
    const b = id * DAEMON_COLUMNS;
    let flow = this.flows.get(ct.id);
    if (flow === undefined) {
      if (this.balancer.tree.daemonsById[id] === undefined || !ct.tuples(bytes, view)) return;
      const o = ct.orig;
      if (restoring) {
        const active = o.protocol !== 6 || !ENDED_TCP.has(ct.tcpState);
        this.flows.set(ct.id, { daemonId: id, protocol: o.protocol, created: this.clock(), tcpState: ct.tcpState, active });
        if (active) stats[b + D_ACTIVE_FLOWS]++;
        return;
      }
      const flowKey = clientKey(o.protocol, o.src, 0, o.family === 4 ? 4 : 16, o.srcPort, o.dstPort);
      const pending = this.pending.get(flowKey);
      const decided = pending !== undefined && pending.daemonId === id ? pending : undefined;
      if (ct.kind === EVENT_DESTROY || (o.protocol === 6 && ENDED_TCP.has(ct.tcpState) && decided === undefined)) {
        // Destroyed before its SYN-ACK was heard. Conntrack kills an entry at once when a
        // SYN's only answer is a RST, with no reply seen: that is how a refusal shows. With a
        // reply seen the daemon did answer (its SYN-ACK's event was lost) and the client went
        // away. Otherwise the end of a flow hostlb no longer counts (its first FIN went by,
        // or a sweep ended it): nothing to do.
        if (ct.kind !== EVENT_DESTROY || decided === undefined) return;
        this.pending.delete(flowKey);
        this.balancer.flowEnded(id);
        if (o.protocol === 6) {
          if (!decided.reached) stats[b + D_SYNS]++;
          if ((ct.status & IPS_SEEN_REPLY) === 0) {
            stats[b + D_SYN_REFUSED]++;
          } else {
            stats[b + D_SYN_ANSWERED]++;
            stats[b + D_SYN_TIME_MS] += this.clock() - decided.decided;
          }
        }
        return;
      }
      // A TCP flow's first event is the daemon's answer (its SYN-ACK): it began with the SYN hostlb passed on.
      flow = { daemonId: id, protocol: o.protocol, created: this.clock(), tcpState: TcpCt.SynSent, active: true };
      this.flows.set(ct.id, flow);
      if (decided !== undefined) {
        // Counted active when hostlb decided; the SYN's time runs from then, and it reached the daemon.
        this.pending.delete(flowKey);
        flow.created = decided.decided;
        if (o.protocol === 6 && !decided.reached) stats[b + D_SYNS]++;
      } else {
        // Not decided by this hostlb (the kernel-side hash while it was away, or decided too long ago).
        this.balancer.flowStarted(id);
        if (o.protocol === 6) stats[b + D_SYNS]++;
      }
      if (ct.kind === EVENT_NEW) return;
    }
    if (ct.kind === EVENT_DESTROY) {
      if (flow.active) this.balancer.flowEnded(flow.daemonId);
      this.flows.delete(ct.id);
      // Counters come with the destroy event when nf_conntrack_acct is on.
      ct.counters(view);
      stats[b + D_PACKETS_IN] += ct.packetsOrig;
      stats[b + D_BYTES_IN] += ct.bytesOrig;
      stats[b + D_PACKETS_OUT] += ct.packetsReply;
      stats[b + D_BYTES_OUT] += ct.bytesReply;
      return;
    }
    if (ct.tcpState < 0 || ct.tcpState === flow.tcpState) return;
    const was = flow.tcpState;
    flow.tcpState = ct.tcpState;
    if ((was === TcpCt.SynSent || was === TcpCt.None) && (ct.tcpState === TcpCt.SynRecv || ct.tcpState === TcpCt.Established)) {
      // Passive health (health/passive.ts): the daemon answered the SYN — its SYN-ACK's event
      // (netfilter-plan.ts), or established when that event was lost. Nothing a client does
      // after the SYN counts here: a refusal shows only as a destroy with no reply seen (above).
      stats[b + D_SYN_ANSWERED]++;
      stats[b + D_SYN_TIME_MS] += this.clock() - flow.created;
    }
    if (ENDED_TCP.has(ct.tcpState)) {
      // The flow's last event (netfilter-plan.ts masks the rest): it is no longer active, and forgotten.
      if (flow.active) this.balancer.flowEnded(flow.daemonId);
      this.flows.delete(ct.id);
      if (ct.tcpState === TcpCt.Close && ct.tuples(bytes, view)) this.forget(ct);
    }
  }

  /**
   * Deletes the conntrack entry of a flow a RST ended. Conntrack reopens a
   * closed entry for a new SYN from the same client port only when the client
   * sent the RST; after the daemon's RST the SYN would ride the old entry's
   * NAT to the old daemon for its 10 s in CLOSE, unseen by hostlb — to a
   * daemon that may be draining or gone. Without the entry the SYN is a new
   * connection, and hostlb decides it.
   */
  private forget(ct: CtMessage): void {
    const socket = this.controlSocket;
    if (socket === null) return;
    this.requests.reset();
    const seq = writeDeleteFlow(this.requests, ct.orig, ct.id);
    try {
      socket.request(this.requests, [seq], 'delete the conntrack entry of a reset flow');
    } catch (e) {
      if ((e as { errno?: number }).errno !== 2) this.options.onError?.(e, 'delete the conntrack entry of a reset flow');
    }
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

  /**
   * Brings the flow counts in line with conntrack: a flow hostlb counts as
   * active that conntrack no longer holds as live (not ending) ends; a live
   * one hostlb does not know (its established event lost) counts. The dump
   * holds only live flows (the kernel filters on the ENDING mark bit), so it
   * costs what the active flows number, not the TIME_WAIT crowd.
   */
  private sweep(): void {
    const socket = this.controlSocket;
    if (socket === null) return;
    const live = new Map<number, { daemonId: number; protocol: number; key: number | string; tcpState: number }>();
    this.requests.reset();
    const seq = writeDumpByMark(this.requests, this.options.markBase, (MARK_MASK | ENDING_BIT) >>> 0);
    try {
      socket.dump(this.requests, seq, 'list hostlb\'s live conntrack entries', (m, view) => {
        const ct = this.ct;
        if (!ct.parse(view, m) || !ct.tuples(socket.buffer, view)) return;
        const o = ct.orig;
        live.set(ct.id, { daemonId: ct.mark & ID_MASK, protocol: o.protocol, key: clientKey(o.protocol, o.src, 0, o.family === 4 ? 4 : 16, o.srcPort, o.dstPort), tcpState: ct.tcpState });
      });
    } catch (e) {
      this.options.onError?.(e, 'compare flow counts with conntrack');
      return;
    }
    const now = this.clock();
    const stats = this.balancer.stats.daemon;
    for (const [id, flow] of this.flows) {
      if (live.has(id) || now - flow.created < SWEEP_GRACE_MS) continue;
      if (flow.active) this.balancer.flowEnded(flow.daemonId);
      this.flows.delete(id);
      this.swept++;
    }
    for (const [id, l] of live) {
      // Handshakes in progress are pending, not lost; a flow in conntrack's table only after
      // hostlb's last look is left for the next sweep (its event may be on its way).
      if (this.flows.has(id) || l.daemonId === REJECT_ID || this.balancer.tree.daemonsById[l.daemonId] === undefined) continue;
      if (l.protocol === 6 && (l.tcpState === TcpCt.SynSent || l.tcpState === TcpCt.SynRecv)) continue;
      const pending = this.pending.get(l.key);
      if (pending !== undefined && now - pending.decided < SWEEP_GRACE_MS) continue;
      if (pending !== undefined) this.pending.delete(l.key);
      else stats[l.daemonId * DAEMON_COLUMNS + D_ACTIVE_FLOWS]++;
      this.flows.set(id, { daemonId: l.daemonId, protocol: l.protocol, created: now, tcpState: l.tcpState, active: true });
      this.swept++;
    }
  }

  /** Counts the flows conntrack already holds with hostlb's marks (left by an earlier run, or carried by the fallback). */
  private recount(): void {
    const socket = this.controlSocket!;
    this.requests.reset();
    const seq = writeDumpByMark(this.requests, this.options.markBase, MARK_MASK);
    socket.dump(this.requests, seq, 'list hostlb\'s conntrack entries', (m, view) => this.onConntrack(socket.buffer, view, m, true));
  }
}

/** How often flow counts are compared with conntrack (sweep), ms; and how young a flow may be to be left out of it. */
const SWEEP_MS = 60_000;
const SWEEP_GRACE_MS = 5_000;

/** How long a decided flow waits for its conntrack entry before it stops counting, ms. */
const PENDING_MS = 10_000;

/**
 * The most decided flows waiting for an answer hostlb tracks (a spoofed SYN
 * flood at a daemon that answers nothing fills it); about 100 bytes each.
 */
const MAX_PENDING = 65_536;

/** How long a handshake goes unanswered before hostlb asks conntrack whether its SYN reached the daemon, and how often it asks, ms. */
const CONFIRM_AFTER_MS = 50;
const CONFIRM_MS = 100;

const ENOENT = 2;

/** A flow's client side as a Map key: protocol, ports and the client address. */
/** The original tuple of a pending flow from its clientKey and cluster port; false when the key cannot say. */
function clientTuple(key: number | string, port: ClusterPort, t: CtTuple): boolean {
  const cluster = port.cluster.address;
  t.family = cluster.family;
  t.dst.fill(0).set(cluster.bytes);
  t.dstPort = port.port;
  if (typeof key === 'number') {
    t.protocol = key % 2 === 0 ? 6 : 17;
    t.srcPort = Math.floor(key / 2) % 65536;
    const addr = Math.floor(key / 131072);
    t.src.fill(0).set([addr >>> 24, (addr >>> 16) & 0xff, (addr >>> 8) & 0xff, addr & 0xff]);
    return true;
  }
  const [head, ...bytes] = key.split('.');
  const [protocol, srcPort] = head.split(':').map(Number);
  if (bytes.length !== 16) return false;
  t.protocol = protocol;
  t.srcPort = srcPort;
  t.src.set(bytes.map(Number));
  return true;
}

function clientKey(protocol: number, buf: Uint8Array, at: number, length: number, srcPort: number, dstPort: number): number | string {
  if (length === 4) {
    // IPv4 as a number below 2^53: address, source port, protocol (TCP/UDP: 1 bit). A client
    // using one source port for two cluster ports at once would share a key; the NEW event
    // then finds the other daemon's mark and is counted afresh, the pending entry expires.
    return ((((buf[at] * 256 + buf[at + 1]) * 256 + buf[at + 2]) * 256 + buf[at + 3]) * 65536 + srcPort) * 2 + (protocol === 6 ? 0 : 1);
  }
  let key = `${protocol}:${srcPort}:${dstPort}`;
  for (let i = at; i < at + length; i++) key += `.${buf[i]}`;
  return key;
}

function addressText(family: number, bytes: Uint8Array): string {
  return family === 4 ? formatIpv4Bytes(bytes, 0) : formatIpv6(bytes, 0);
}
