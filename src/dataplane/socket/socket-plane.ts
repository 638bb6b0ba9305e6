// The socket data plane: the kernel's socket lookup decides. hostlb's
// sk_lookup program (bpf/sk-lookup.ts), attached to this network namespace,
// hands each new connection to a cluster port to one of the daemons' own
// listening sockets, chosen by a hash of the client into a table of buckets
// hostlb keeps in step with effective weights, or, for lc, wlc and p2c, the
// daemon with the least connections per weight from counts a second BPF
// program keeps in the kernel (bpf/load-count.ts). No NAT, no conntrack entry, no
// user-space step per connection: the daemon accepts with the cluster
// address as its local address and the real client as its peer.
//
// This file keeps the program's maps in step with the Balancer (ports,
// buckets, each daemon's socket, taken from the daemon with pidfd_getfd) and
// turns the program's per-daemon counters into the Balancer's: a connection
// handed to a daemon is a new flow and an answered SYN; a lookup that found
// the daemon's socket gone (it closed: the daemon died or restarted) counts
// as a refused SYN, so passive health takes the daemon out without an
// advisor. Active connections are counted from the namespace's socket table
// (socket-table.ts). The program and maps are pinned in a bpffs of the
// instance's own (host-plan.ts), so dispatch goes on while hostlb is away
// and the next hostlb adopts them.

import { closeSync, existsSync, openSync } from 'node:fs';
import type { BaseLogger as Logger } from 'pino';
import { BUCKETS, encodePortKey, NO_SLOT, PASSTHROUGH, SkLookupDispatch, type PortKey } from '../../bpf/sk-lookup.js';
import { MAX_MEMBERS, PortMode, type Member, type PortModeValue } from '../../bpf/load-count.js';
import { cgroupRoot } from './cgroup-root.js';
import { closeFd, duplicateFd } from '../../bpf/syscalls.js';
import { findSocketOwner, takeListener } from '../../bpf/listener.js';
import type { HostlbConfig } from '../../control/config-schema.js';
import type { Balancer } from '../../dispatch/balancer.js';
import type { ClusterPort, Daemon } from '../../dispatch/config-tree.js';
import { ConnectionPage, type ConnectionFilter } from '../../dispatch/record-view.js';
import { weightedBuckets, weightedSequence } from '../../dispatch/schedulers/weighted-buckets.js';
import { D_ACTIVE_FLOWS, D_NEW_FLOWS, D_SYN_ANSWERED, D_SYN_REFUSED, D_SYNS, DAEMON_COLUMNS } from '../../dispatch/stats.js';
import { HostlbError } from '../../errors.js';
import type { HostFacts } from '../../net/host-facts.js';
import type { HostSpec } from '../../net/host-spec.js';
import type { NetStep } from '../../net/net-step.js';
import { formatIpv4Bytes, formatIpv6, parseIp } from '../../wire/address.js';
import type { DataPlane, FlowTable, PlaneContext, PlaneCounter } from '../data-plane.js';
import { pinDirectory, planSocketSetup } from './host-plan.js';
import { socketHolders, tcpStateName, TCP_ESTABLISHED, TCP_LISTEN, TcpSocketTable, type TcpSocket } from './socket-table.js';

/** Cluster ports the maps have room for (port ids 0..MAX_PORTS-1). */
const MAX_PORTS = 1024;
/** Daemon slots: daemon id i holds slot i + 1 (slot 0 is "none"). */
const MAX_SLOTS = 8192;

/** How often maps and counters are brought in step, ms: effective weights reach the buckets within this. */
const SYNC_MS = 250;
/** How often active connections are counted from the socket table, ms. */
const COUNT_MS = 1_000;

/**
 * Schedulers that pick by load. With the counting program attached the
 * kernel picks per connection (PortMode); without it (no cgroup v2 on the
 * host, or more than MAX_MEMBERS daemons on the port) their buckets are
 * weighted by effective weight over (1 + active connections) from the last
 * count, as fresh as COUNT_MS.
 */
const LOAD_SCHEDULERS = new Set(['lc', 'wlc', 'p2c']);
/** Schedulers whose TCP connections take turns (mode sequence); over UDP a turn per datagram would split flows, so they hash. */
const TURN_SCHEDULERS = new Set(['rr', 'wrr']);

/** True when `port`'s connections take turns in the kernel (mode sequence). */
function takesTurns(port: ClusterPort): boolean {
  return TURN_SCHEDULERS.has(port.scheduler) && port.protocol !== 'udp';
}
/** Scales weight / (1 + load) to integers the bucket table takes. */
const LOAD_SCALE = 1000;

/** What the plane knows of one daemon's slot. */
interface SlotState {
  /** The daemon the slot serves: a released id given to a new daemon starts a new state (and an empty slot). */
  daemon: Daemon;
  /** Counters already added to the Balancer's. */
  assigned: number;
  noSocket: number;
  refused: number;
  /** The socket in the slot (its cookie), or null while the daemon has none. */
  cookie: bigint | null;
}

export class SocketPlane implements DataPlane {
  readonly kind = 'socket' as const;
  private dispatch: SkLookupDispatch | null = null;
  private readonly slots = new Map<number, SlotState>();
  /** Port keys in the map now, by their text, with the port index they route to. */
  private readonly routed = new Map<string, { key: PortKey; index: number }>();
  /** Bucket tables written, by port index, as text: rewritten only when they change. */
  private readonly written = new Map<number, string>();
  /** The slots each port's written buckets name. */
  private readonly bucketSlots = new Map<number, Set<number>>();
  /** Connections waiting in each daemon's accept queue, at the last count. */
  private backlog = new Map<number, number>();
  private syncTimer: NodeJS.Timeout | null = null;
  private countTimer: NodeJS.Timeout | null = null;
  /** Lookups that matched a cluster port, and those no daemon took (from the program's counters). */
  private matched = 0;
  private unassigned = 0;
  /** Sockets the plane took from daemons. */
  socketsTaken = 0;
  private active = new Map<number, number>();
  private readonly pinDir: string;
  private readonly sockets = new TcpSocketTable();
  /** The namespace's TCP listeners, read once in a sync that needs them (takeSocket). */
  private listening: TcpSocket[] | null = null;
  /** The process that last held each daemon's listener: searched first next time. */
  private readonly owners = new Map<number, number>();

  constructor(private readonly balancer: Balancer, private config: HostlbConfig, private readonly logger: Logger) {
    this.pinDir = pinDirectory(config.device);
  }

  /** Null when this kernel runs sk_lookup programs for hostlb (a throwaway program is loaded and closed), else why not. */
  static support(): string | null {
    try {
      SkLookupDispatch.create({ maxPorts: 1, maxSlots: 2 }).close();
      return null;
    } catch (e) {
      return (e as Error).message;
    }
  }

  static fromConfig(config: HostlbConfig, context: PlaneContext): SocketPlane {
    return new SocketPlane(context.balancer, config, context.logger);
  }

  checkTools(): void {
    // mount(8) and iproute2: present wherever hostlb runs (NET_* errors say so otherwise).
  }

  plan(spec: HostSpec, baseline: HostFacts): NetStep[] {
    return planSocketSetup(spec, baseline, this.pinDir);
  }

  open(): void {
    // The bpffs is a host step; the program is loaded at start, once it is mounted.
  }

  /**
   * Loads the program and its maps (or, adopting, takes over the pinned ones,
   * still dispatching), fills the maps, attaches to this network namespace and
   * pins everything. Throws HostlbError SOCKET_PLANE_FAILED with the reason
   * (BPF_* in its cause: a kernel without sk_lookup, the verifier's log).
   */
  start(adopt: boolean): void {
    try {
      if (adopt && existsSync(`${this.pinDir}/program`)) {
        this.dispatch = SkLookupDispatch.adopt(this.pinDir);
        this.logger.info({ event: 'dispatch_adopted', attached: this.dispatch.fds.link >= 0 }, 'took over the pinned socket dispatch of an earlier run');
      } else {
        SkLookupDispatch.unpin(this.pinDir);
        this.dispatch = SkLookupDispatch.create({ maxPorts: MAX_PORTS, maxSlots: MAX_SLOTS });
      }
      this.attachCounting(this.dispatch);
      this.sync();
      if (this.dispatch.fds.link < 0) {
        const netns = openSync('/proc/self/ns/net', 'r');
        try {
          this.dispatch.attach(netns);
        } finally {
          closeSync(netns);
        }
      }
      this.dispatch.pin(this.pinDir);
    } catch (e) {
      this.dispatch?.close();
      this.dispatch = null;
      throw e instanceof HostlbError && e.code.startsWith('SOCKET_') ? e : new HostlbError('SOCKET_PLANE_FAILED', `the socket data plane could not start: ${(e as Error).message}`, { cause: e });
    }
    const wildcardUdp = this.balancer.tree.clusters.filter((c) => c.address.text === '0.0.0.0' || c.address.text === '::').flatMap((c) => c.ports.filter((p) => p.protocol === 'udp').map((p) => p.name));
    if (wildcardUdp.length > 0) {
      // host-plan.ts gives UDP replies the cluster's address; a port alone has no one address to give.
      this.logger.warn({ event: 'socket_plane_udp', ports: wildcardUdp }, `UDP on any local address with the socket data plane: the daemons of ${wildcardUdp.join(', ')} must answer from the address each datagram was sent to (bind the wildcard address and reply with IP_PKTINFO / IPV6_PKTINFO), or clients see replies from the daemon's own address`);
    }
    const turning = this.balancer.tree.clusters.flatMap((c) => c.ports.filter(takesTurns).map((p) => p.name));
    if (!this.dispatch.exactTurns && turning.length > 0) {
      this.logger.warn({ event: 'socket_plane_turns', ports: turning }, `rr and wrr on ${turning.join(', ')} take turns without an atomic fetch-and-add (Linux 5.12+): connections that arrive at the same instant on two CPUs may go to the same daemon`);
    }
    this.count();
    // Health's weights reach the buckets at once, with the socket of a daemon that just came up
    // (its first connection must not wait for the timer); counters wait for it.
    this.balancer.weightsChanged = () => {
      this.takeMissingSockets();
      this.syncAllBuckets();
    };
    this.syncTimer = setInterval(() => this.sync(), SYNC_MS);
    this.syncTimer.unref();
    this.countTimer = setInterval(() => this.count(), COUNT_MS);
    this.countTimer.unref();
  }

  /**
   * Attaches the counting program at the cgroup v2 root, so lc, wlc and p2c
   * pick per connection in the kernel. Without cgroup v2 they fall back to
   * buckets reweighted from the last count (a warning says so).
   */
  private attachCounting(dispatch: SkLookupDispatch): void {
    if (dispatch.counting) return;
    const root = cgroupRoot();
    try {
      if (root === null) throw new Error('no cgroup2 file system is mounted (mount -t cgroup2 none /sys/fs/cgroup)');
      const fd = openSync(root, 'r');
      try {
        dispatch.attachCounting(fd);
      } finally {
        closeSync(fd);
      }
    } catch (e) {
      this.logger.warn({ event: 'load_count_unavailable', err: e }, `lc, wlc and p2c pick from connection counts taken every ${COUNT_MS} ms, not per connection: the counting program could not be attached (${(e as Error).message})`);
    }
  }

  follow(config: HostlbConfig): void {
    this.config = config;
    this.sync();
  }

  hostRepaired(kinds: readonly string[]): void {
    // The bpffs came back empty: pin again what this process holds.
    if (kinds.includes('bpffs') && this.dispatch !== null) {
      try {
        this.dispatch.pin(this.pinDir);
      } catch (e) {
        this.logger.error({ err: e }, 'could not pin the socket dispatch again');
      }
    }
  }

  /**
   * Aborts daemon `id`'s connections to its cluster port (SOCK_DESTROY: the
   * client gets a RST, the daemon ECONNABORTED), found as connections() finds
   * them; its other connections are not touched. 0, with a warning, on a
   * kernel built without CONFIG_INET_DIAG_DESTROY.
   */
  resetDaemonFlows(id: number): number {
    try {
      const mine = this.scan().flows.filter((f) => f.daemon.id === id && f.socket.state === TCP_ESTABLISHED).map((f) => f.socket);
      return this.sockets.destroy(mine);
    } catch (e) {
      const daemon = this.balancer.tree.daemonsById[id]?.name;
      this.logger.warn({ event: 'reset_unsupported', daemon, err: e }, `could not reset the connections of ${daemon}; they go on`);
      return 0;
    }
  }

  /**
   * True once daemon `id` can get no new connection and holds none: its
   * buckets have been rewritten without it (a sync now, so a drain does not
   * wait for the timer), its accept queue is empty, and no connection to a
   * cluster port is open in its processes.
   */
  nothingLive(id: number): boolean {
    this.sync();
    for (const slots of this.bucketSlots.values()) if (slots.has(id + 1)) return false;
    const dispatch = this.dispatch;
    if (dispatch?.counting && id + 1 < MAX_SLOTS) {
      // The kernel's count: connections in the accept queue are established, hence counted.
      const load = dispatch.load(id + 1);
      return load.active === 0 && load.pending === 0;
    }
    this.count();
    return (this.active.get(id) ?? 0) === 0 && (this.backlog.get(id) ?? 0) === 0;
  }

  daemonsHeld(): ReadonlySet<number> {
    const held = new Set<number>();
    for (const [id, n] of this.active) if (n > 0) held.add(id);
    return held;
  }

  connections(filter: ConnectionFilter): ConnectionPage {
    const page = new ConnectionPage(filter);
    const { flows } = this.scan();
    const now = Date.now();
    for (const { socket: s, daemon } of flows) {
      const state = tcpStateName(s.state);
      if (!page.admit(6, state, daemon.name, s.family, s.local, s.localPort, s.remote)) continue;
      page.connections.push({
        id: s.inode, protocol: 'tcp', client: endpoint(s.family, s.remote, s.remotePort), cluster: endpoint(s.family, s.local, s.localPort),
        daemon: daemon.name, state, reset: false, created: 0, lastSeen: now, expires: 0, packetsIn: 0, bytesIn: 0, packetsOut: 0, bytesOut: 0,
      });
    }
    return page;
  }

  table(): FlowTable {
    let records = 0;
    for (const n of this.active.values()) records += n;
    return { records, capacity: null, limit: 0, evictions: 0 };
  }

  counter(name: PlaneCounter): number | null {
    switch (name) {
      case 'socket.matched': return this.matched;
      case 'socket.unassigned': return this.unassigned;
      case 'socket.taken': return this.socketsTaken;
      default: return null;
    }
  }

  stop(): void {
    this.balancer.weightsChanged = null;
    this.sockets.close();
    if (this.syncTimer !== null) clearInterval(this.syncTimer);
    if (this.countTimer !== null) clearInterval(this.countTimer);
    this.syncTimer = this.countTimer = null;
  }

  close(): void {
    // A deliberate stop: dispatch ends now, whatever the bpffs did.
    if (this.dispatch === null) return;
    try {
      this.dispatch.detach();
      SkLookupDispatch.unpin(this.pinDir);
    } catch (e) {
      this.logger.error({ err: e }, 'could not detach the socket dispatch');
    } finally {
      this.dispatch.close();
      this.dispatch = null;
    }
  }

  handOver(): void {
    this.stop();
    // The pins keep the program attached and the daemons' sockets in its map for the next owner.
    this.dispatch?.close();
    this.dispatch = null;
  }

  // ---- keeping the maps in step ------------------------------------------

  /** Brings ports, sockets and buckets in line with the Balancer, and its counts in line with the program's. Never throws. */
  private sync(): void {
    const dispatch = this.dispatch;
    if (dispatch === null) return;
    this.listening = null;
    try {
      this.syncPorts(dispatch);
      for (const d of this.balancer.tree.daemonsById) if (d !== undefined) this.syncSocket(dispatch, d);
      this.syncAllBuckets();
      this.syncCounters(dispatch);
    } catch (e) {
      this.logger.error({ err: e }, 'could not bring the socket dispatch maps in step');
    }
  }

  private syncPorts(dispatch: SkLookupDispatch): void {
    const wanted = new Map<string, { key: PortKey; index: number }>();
    for (const cluster of this.balancer.tree.clusters) {
      for (const port of cluster.ports) {
        if (port.id >= MAX_PORTS) continue;
        // A daemon's slot holds one socket: an `any` port is dispatched for TCP only (its daemon's
        // listening socket); its UDP datagrams reach whatever the kernel's own lookup finds.
        for (const protocol of port.protocol === 'udp' ? ['udp'] as const : ['tcp'] as const) {
          // A cluster on 0.0.0.0 or :: is the wildcard key: this port on any local address.
          const any = cluster.address.bytes.every((b) => b === 0);
          const key: PortKey = { protocol, family: cluster.address.family, port: port.port, ...(any ? {} : { address: cluster.address.text }) };
          // A cluster port wins over a passthrough of the same address and port.
          wanted.set(`${protocol} ${cluster.address.text} ${port.port}`, { key, index: port.id });
          if (!any) continue;
          // A daemon listening on the wildcard port at its own address is reached there, not dispatched:
          // its health checks (and anyone who names it) must meet it.
          for (const d of this.balancer.tree.daemonsById) {
            if (d === undefined || d.port !== port.port || d.address.family !== cluster.address.family || d.clusterPort.protocol !== port.protocol) continue;
            const own: PortKey = { protocol, family: d.address.family, port: d.port, address: d.address.text };
            const text = `${protocol} ${d.address.text} ${d.port}`;
            if (!wanted.has(text)) wanted.set(text, { key: own, index: PASSTHROUGH });
          }
        }
      }
    }
    if (this.routed.size === 0) {
      // The first sync: the map may hold ports an adopted program routed that this configuration has not.
      const keep = new Set([...wanted.values()].map(({ key }) => Buffer.from(encodePortKey(key)).toString('hex')));
      for (const raw of dispatch.portKeys()) if (!keep.has(Buffer.from(raw).toString('hex'))) dispatch.deletePortBytes(raw);
    }
    for (const [text, { key }] of this.routed) {
      if (!wanted.has(text)) dispatch.deletePort(key);
    }
    for (const [text, entry] of wanted) {
      const had = this.routed.get(text);
      if (had !== undefined && had.index === entry.index) continue;
      if (entry.index === PASSTHROUGH) dispatch.setPassthrough(entry.key);
      else dispatch.setPort(entry.key, entry.index);
    }
    this.routed.clear();
    for (const [text, entry] of wanted) this.routed.set(text, entry);
  }

  /** Takes the sockets of daemons that take new flows but hold none in the map yet (usually none: one map lookup each). Never throws. */
  private takeMissingSockets(): void {
    const dispatch = this.dispatch;
    if (dispatch === null) return;
    this.listening = null;
    try {
      for (const d of this.balancer.tree.daemonsById) {
        if (d === undefined || d.retired || this.slots.get(d.id)?.cookie != null) continue;
        if (this.balancer.effectiveWeight(d.clusterPort, d.id) > 0) this.syncSocket(dispatch, d);
      }
    } catch (e) {
      this.logger.error({ err: e }, 'could not take a daemon\'s socket');
    }
  }

  /** Puts daemon `d`'s socket in its slot when the slot is empty (a new daemon, or one that restarted). */
  private syncSocket(dispatch: SkLookupDispatch, d: Daemon): void {
    const slot = d.id + 1;
    if (slot >= MAX_SLOTS) return;
    let state = this.slots.get(d.id);
    if (state !== undefined && state.daemon.name !== d.name) {
      // The id was released and given to another daemon: the old one's socket must not serve it, nor count in it.
      dispatch.releaseSlot(slot);
      state = undefined;
    }
    if (state === undefined) {
      // Counted from now: an adopted program (or a slot an earlier daemon held) counted before.
      const c = dispatch.counters(slot);
      state = { daemon: d, assigned: c.assigned, noSocket: c.noSocket, refused: c.refused, cookie: null };
      this.slots.set(d.id, state);
      const adopted = dispatch.socketCookie(slot);
      if (adopted !== null) {
        try {
          this.checkAdoptedSocket(dispatch, d, adopted);
        } catch (e) {
          this.logger.error({ err: e, daemon: d.name }, 'could not check the adopted socket of a daemon; it stays');
        }
      }
    }
    state.daemon = d;
    if (d.retired) return;
    state.cookie = dispatch.socketCookie(slot);
    if (state.cookie !== null) return;
    let taken: { fd: number } | null = null;
    try {
      taken = this.takeSocket(d);
    } catch {
      taken = null;
    }
    if (taken === null) return; // not listening (yet): the buckets leave it out
    try {
      dispatch.setSocket(slot, taken.fd);
      state.cookie = dispatch.socketCookie(slot);
      this.socketsTaken++;
      this.logger.info({ event: 'daemon_socket_taken', daemon: d.name, port: d.clusterPort.name }, 'took the daemon\'s listening socket');
    } finally {
      // The map holds the socket; this fd would keep it alive after the daemon closes it.
      closeFd(taken.fd);
    }
  }

  /**
   * An adopted slot holds the socket an earlier hostlb put there for the
   * daemon that had this id then; the configuration may have changed while no
   * hostlb ran (a daemon removed, the list reordered), and the id now names
   * another daemon. The socket stays only when it is daemon `d`'s own
   * listener; otherwise the slot starts again for `d` (releaseSlot: the old
   * daemon's counts go too) and `d`'s socket is taken as for a new daemon.
   * A UDP socket (no counts) is replaced in place by `d`'s, when it has one.
   */
  private checkAdoptedSocket(dispatch: SkLookupDispatch, d: Daemon, cookie: bigint): void {
    const slot = d.id + 1;
    if (d.clusterPort.protocol === 'udp') {
      const own = takeListener({ protocol: 'udp', address: d.address.text, port: d.port });
      if (own !== null) {
        try {
          dispatch.setSocket(slot, own.fd);
        } finally {
          closeFd(own.fd);
        }
        return;
      }
    } else {
      this.listening ??= this.sockets.read([TCP_LISTEN]);
      if (this.listening.some((s) => s.localPort === d.port && sameAddress(s.local, d.address.bytes) && diagCookie(s) === cookie)) return;
    }
    dispatch.releaseSlot(slot);
    this.logger.warn({ event: 'adopted_socket_replaced', daemon: d.name, port: d.clusterPort.name }, `the adopted dispatch gave ${d.name}'s slot another socket (the configuration changed while hostlb was not running); taking ${d.name}'s own`);
  }

  /**
   * A duplicate of daemon `d`'s listening socket, or null when it has none.
   * TCP listeners are looked up with sock_diag (LISTEN sockets only, one dump
   * per sync, kept for the sync), and their process is searched only when one
   * is there: a daemon that is down costs a small dump, not a read of
   * /proc/net/tcp, which under load holds a million TIME_WAIT sockets.
   */
  private takeSocket(d: Daemon): { fd: number } | null {
    if (d.clusterPort.protocol === 'udp') return takeListener({ protocol: 'udp', address: d.address.text, port: d.port });
    this.listening ??= this.sockets.read([TCP_LISTEN]);
    const listener = this.listening.find((s) => s.localPort === d.port && sameAddress(s.local, d.address.bytes) && s.inode > 0);
    if (listener === undefined) return null;
    const owner = findSocketOwner(listener.inode, { firstPid: this.owners.get(d.id) });
    if (owner === null) return null;
    this.owners.set(d.id, owner.pid);
    return { fd: duplicateFd(owner.pid, owner.fd) };
  }

  /** Rewrites every port's buckets that changed. Never throws. */
  private syncAllBuckets(): void {
    const dispatch = this.dispatch;
    if (dispatch === null) return;
    try {
      for (const cluster of this.balancer.tree.clusters) for (const port of cluster.ports) this.syncBuckets(dispatch, port);
    } catch (e) {
      this.logger.error({ err: e }, 'could not rewrite the socket dispatch buckets');
    }
  }

  /**
   * Writes port `port`'s members (how it picks) and buckets over the daemons
   * that take new flows and hold a socket. The buckets also serve a
   * least-loaded port, when the daemon it picks has just lost its socket.
   */
  private syncBuckets(dispatch: SkLookupDispatch, port: ClusterPort): void {
    if (port.id >= MAX_PORTS) return;
    const live: Array<{ id: number; weight: number }> = [];
    for (const d of port.daemons) {
      const weight = this.balancer.effectiveWeight(port, d.id);
      if (weight <= 0 || d.id + 1 >= MAX_SLOTS || this.slots.get(d.id)?.cookie == null) continue;
      live.push({ id: d.id, weight });
    }
    const byLoad = LOAD_SCHEDULERS.has(port.scheduler);
    const inKernel = byLoad && dispatch.counting && live.length <= MAX_MEMBERS;
    const turns = takesTurns(port);
    const mode: PortModeValue = inKernel ? (port.scheduler === 'p2c' ? PortMode.twoChoices : PortMode.least) : turns ? PortMode.sequence : port.scheduler === 'sh' ? PortMode.source : PortMode.hash;
    // lc ignores weights (a daemon of weight 0 is out all the same); wlc and p2c divide by them.
    const members: Member[] = inKernel ? live.map((m) => ({ slot: m.id + 1, weight: port.scheduler === 'lc' ? 1 : m.weight })) : [];
    // Without the kernel's counts: new connections in proportion to weight over load, recounted every COUNT_MS.
    // rr and lc ignore weight magnitudes (as in IPVS): equal shares of the buckets.
    const weighted = byLoad && !inKernel
      ? live.map((m) => ({ id: m.id, weight: Math.max(1, Math.round(((port.scheduler === 'lc' ? 1 : m.weight) * LOAD_SCALE) / (1 + (this.active.get(m.id) ?? 0)))) }))
      : port.scheduler === 'rr' ? live.map((m) => ({ id: m.id, weight: 1 })) : live;
    // Turns: wrr's order, repeated over every bucket, so the table is right by hash as well (an
    // older program adopted, or a lookup between the two writes below).
    const slots = (turns ? weightedSequence(weighted, BUCKETS) : weightedBuckets(weighted, BUCKETS)).map((id) => (id < 0 ? NO_SLOT : id + 1));
    const text = `${mode} ${members.map((m) => `${m.slot}:${m.weight}`).join(',')} ${slots.join(',')}`;
    if (this.written.get(port.id) === text) return;
    // Members first: a port turning least-loaded never picks among stale members.
    if (turns) dispatch.setSequence(port.id, slots.length);
    else dispatch.setMembers(port.id, mode, members);
    dispatch.setBuckets(port.id, slots);
    this.written.set(port.id, text);
    this.bucketSlots.set(port.id, new Set([...slots.filter((slot) => slot !== NO_SLOT), ...members.map((m) => m.slot)]));
  }

  /**
   * Adds what the program counted since the last time to the Balancer's
   * per-daemon counts. A daemon that takes new flows but has no listening
   * socket (it died, or closed its port) gets no lookups — its buckets went
   * to the others at once, so no client is refused — and is counted instead
   * as refusing: `threshold` refused SYNs a sync (the port's passive
   * threshold), which passive health reads as a daemon that refuses every
   * connection, as the kernel would answer its clients.
   */
  private syncCounters(dispatch: SkLookupDispatch): void {
    const stats = this.balancer.stats.daemon;
    for (const [id, state] of this.slots) {
      const slot = id + 1;
      const daemon = this.balancer.tree.daemonsById[id];
      if (daemon === undefined) {
        // Released: its slot empties and its counts start again, so nothing of the old daemon waits there for the id's next owner.
        dispatch.releaseSlot(slot);
        this.slots.delete(id);
        continue;
      }
      if (state.cookie === null && !daemon.retired && daemon.clusterPort.protocol !== 'udp' && this.balancer.takesNewFlows(daemon.clusterPort, id)) {
        const threshold = this.passiveThreshold(daemon.clusterPort);
        stats[id * DAEMON_COLUMNS + D_SYNS] += threshold;
        stats[id * DAEMON_COLUMNS + D_SYN_REFUSED] += threshold;
      }
      const c = dispatch.counters(slot);
      const assigned = c.assigned - state.assigned;
      const failed = c.noSocket - state.noSocket + (c.refused - state.refused);
      state.assigned = c.assigned;
      state.noSocket = c.noSocket;
      state.refused = c.refused;
      const b = id * DAEMON_COLUMNS;
      // Every assigned lookup is a new connection the kernel answered for the daemon's socket.
      stats[b + D_NEW_FLOWS] += assigned;
      if (this.balancer.tree.daemonsById[id]?.clusterPort.protocol !== 'udp') {
        stats[b + D_SYNS] += assigned + failed;
        stats[b + D_SYN_ANSWERED] += assigned;
        // The daemon's socket was gone: as a refused SYN, for passive health.
        stats[b + D_SYN_REFUSED] += failed;
      }
    }
    const t = dispatch.totals();
    this.matched = t.matched;
    this.unassigned = t.unassigned;
  }

  /** The passive threshold configured for `port` (0 when passive signals are off there). */
  private passiveThreshold(port: ClusterPort): number {
    for (const c of this.config.clusters) {
      for (const p of c.ports) {
        if (p.port !== port.port || p.protocol !== port.protocol || parseIp(c.address)?.text !== port.cluster.address.text) continue;
        return p.passive.enabled ? p.passive.threshold : 0;
      }
    }
    return 0;
  }

  // ---- active connections ------------------------------------------------

  /**
   * Counts each daemon's connections now (D_ACTIVE_FLOWS): from the kernel's
   * counts when the counting program runs (a map read per daemon), else from
   * the socket table and /proc (a dump and a walk of every process's fds).
   * Never throws.
   */
  private count(): void {
    const dispatch = this.dispatch;
    if (dispatch?.counting) {
      try {
        const counts = new Map<number, number>();
        for (const d of this.balancer.tree.daemonsById) {
          if (d === undefined || d.clusterPort.protocol === 'udp' || d.id + 1 >= MAX_SLOTS) continue;
          counts.set(d.id, dispatch.load(d.id + 1).active);
        }
        const stats = this.balancer.stats.daemon;
        for (const [id, n] of counts) stats[id * DAEMON_COLUMNS + D_ACTIVE_FLOWS] = n;
        this.active = counts;
      } catch (e) {
        this.logger.error({ err: e }, 'could not read the daemons\' connection counts');
      }
      return;
    }
    try {
      const { flows, daemons, backlog } = this.scan();
      this.backlog = backlog;
      const counts = new Map<number, number>();
      for (const d of daemons) counts.set(d.id, 0);
      for (const f of flows) if (f.socket.state === TCP_ESTABLISHED) counts.set(f.daemon.id, (counts.get(f.daemon.id) ?? 0) + 1);
      const stats = this.balancer.stats.daemon;
      for (const [id, n] of counts) stats[id * DAEMON_COLUMNS + D_ACTIVE_FLOWS] = n;
      this.active = counts;
      // Load schedulers' buckets follow the new counts at the next sync.
    } catch (e) {
      this.logger.error({ err: e }, 'could not count the daemons\' connections');
    }
  }

  /**
   * The namespace's TCP connections to cluster ports, each with the daemon
   * that holds it: a connection belongs to the daemon whose listening socket
   * the same process holds (a forking server's workers inherit it).
   */
  private scan(): { flows: Array<{ socket: TcpSocket; daemon: Daemon }>; daemons: Daemon[]; backlog: Map<number, number> } {
    const sockets = this.sockets.read();
    const tree = this.balancer.tree;
    const daemons = tree.daemonsById.filter((d): d is Daemon => d !== undefined && d.clusterPort.protocol !== 'udp');
    const listeners = new Map<number, Daemon>();
    const backlog = new Map<number, number>();
    const clusterSockets: TcpSocket[] = [];
    for (const s of sockets) {
      if (s.inode === 0) continue;
      if (s.state === TCP_LISTEN) {
        const d = daemons.find((x) => x.port === s.localPort && sameAddress(x.address.bytes, s.local));
        if (d !== undefined) {
          listeners.set(s.inode, d);
          backlog.set(d.id, (backlog.get(d.id) ?? 0) + s.rxQueue);
        }
      } else if (tree.findPort(s.family, words(s.local), 0, 6, s.localPort) !== undefined || tree.findPort(s.family, ANY_ADDRESS, 0, 6, s.localPort) !== undefined) {
        clusterSockets.push(s);
      }
    }
    const holders = socketHolders(new Set([...listeners.keys(), ...clusterSockets.map((s) => s.inode)]));
    const daemonOfPid = new Map<number, Daemon>();
    for (const [inode, d] of listeners) for (const pid of holders.get(inode) ?? []) if (!daemonOfPid.has(pid)) daemonOfPid.set(pid, d);
    const flows: Array<{ socket: TcpSocket; daemon: Daemon }> = [];
    for (const s of clusterSockets) {
      const pid = holders.get(s.inode)?.find((p) => daemonOfPid.has(p));
      if (pid !== undefined) flows.push({ socket: s, daemon: daemonOfPid.get(pid)! });
    }
    return { flows, daemons, backlog };
  }
}

/** 0.0.0.0 or :: as findPort reads it: a cluster on any local address. */
const ANY_ADDRESS = new Uint32Array(4);

/** An address as the four words ConfigTree.findPort reads (IPv4 in the first). */
function words(bytes: Uint8Array): Uint32Array {
  const w = new Uint32Array(4);
  for (let i = 0; i < bytes.length; i += 4) w[i / 4] = ((bytes[i] << 24) | (bytes[i + 1] << 16) | (bytes[i + 2] << 8) | bytes[i + 3]) >>> 0;
  return w;
}

/** A sock_diag socket's cookie as SO_COOKIE and the sockmap give it (idiag_cookie[0] is the low word). */
function diagCookie(s: TcpSocket): bigint {
  return BigInt(s.cookie[0]) | (BigInt(s.cookie[1]) << 32n);
}

function sameAddress(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

function endpoint(family: 4 | 6, bytes: Uint8Array, port: number): string {
  return family === 4 ? `${formatIpv4Bytes(bytes, 0)}:${port}` : `[${formatIpv6(bytes, 0)}]:${port}`;
}

