// The seam between control and the packets. A data plane carries the flows of
// the cluster ports to the daemons the Balancer picks and keeps the Balancer's
// per-daemon counts; control (the instance, health, the admin API, metrics)
// knows it only through this interface. Three planes exist: `tun` (hostlb's
// own dispatcher behind a TUN device, tun/), `netfilter` (hostlb decides, the
// kernel forwards, netfilter/) and `socket` (the kernel's socket lookup hands
// each connection to a daemon's own socket, socket/). createDataPlane is the only place that looks
// at the configuration's `dataplane:`.

import type { BaseLogger as Logger } from 'pino';
import type { HostlbConfig } from '../control/config-schema.js';
import type { Balancer } from '../dispatch/balancer.js';
import type { ConnectionFilter, ConnectionPage } from '../dispatch/record-view.js';
import type { Link } from '../link/link.js';
import type { HostFacts } from '../net/host-facts.js';
import type { HostSpec } from '../net/host-spec.js';
import type { NetStep } from '../net/net-step.js';
import { ConfigError } from '../errors.js';
import { parseIp } from '../wire/address.js';
import { NetfilterPlane } from './netfilter/netfilter-plane.js';
import { SocketPlane } from './socket/socket-plane.js';
import { TunPlane } from './tun/tun-plane.js';

/** Counters a plane may keep, by name (null from counter() when a plane keeps no such thing). */
export type PlaneCounter =
  /** Packets read from and written to the TUN device, and packets a write refused (tun). */
  | 'link.read' | 'link.written' | 'link.refused'
  /** Super-packets read (offloads on: GSO, up to 64 KB each; each counted once in link.read too) (tun). */
  | 'link.superPackets'
  /** New connections the queue decided, by outcome (netfilter). */
  | 'queue.daemon' | 'queue.rejected' | 'queue.unparsed'
  /** Conntrack events read, event-socket overruns, flow counts a comparison with conntrack corrected (netfilter). */
  | 'conntrack.events' | 'conntrack.overruns' | 'conntrack.swept'
  /** Socket lookups that matched a cluster port, those no daemon's socket took, and daemon sockets taken (socket). */
  | 'socket.matched' | 'socket.unassigned' | 'socket.taken';

/** Where a plane's flows are held, for status and metrics. */
export interface FlowTable {
  /** Flows (or records) held now. */
  records: number;
  /** The most the plane's own table holds; null when it keeps none of its own (conntrack holds the flows). */
  capacity: number | null;
  /** The most the table that holds the flows may hold (for netfilter: conntrack's, shared with the host); 0 when unknown. */
  limit: number;
  /** Records pushed out by new ones when the table was full. */
  evictions: number;
}

/**
 * What control and health need from a data plane.
 *
 * Ownership: the plane owns what moves packets — its device or sockets, its
 * timers, its own flow records (table checkpoint, conntrack bookkeeping) —
 * and keeps the Balancer's per-daemon counts (active and new flows, SYNs
 * answered or refused, bytes). The instance owns the Balancer (configuration
 * and effective weights), and the host set-up: the plane only plans its steps
 * (plan), the instance journals, applies, repairs and undoes them.
 *
 * Calls come from the control path (the instance, health timers, admin API
 * requests), never from inside the plane's packet path; none of them may
 * block for long: a listing or a count may ask the kernel once.
 *
 * Errors: open() and start() throw HostlbError (TUN_*, NETFILTER_*, NETLINK_*)
 * and leave nothing running; every other call reports a failure to the
 * logger it was given and carries on — the packet path never throws.
 *
 * Life: plan* → open → (host set-up) → start → follow* … → stop → close, or
 * handOver instead of stop and close (`start --takeover`).
 */
/** The planes there are; `dataplane: auto` (the default) is the first of them this host runs. */
export const PLANE_KINDS = ['socket', 'netfilter', 'tun'] as const;
export type PlaneKind = (typeof PLANE_KINDS)[number];

export interface DataPlane {
  readonly kind: PlaneKind;
  /** Throws HostlbError (e.g. NETFILTER_TOOLS_MISSING) when a program the plane's host set-up runs is not on PATH; checked before anything changes. */
  checkTools(): void;
  /** The host set-up steps that bring `spec`'s clusters to this plane, planned against `baseline`. Pure; throws NetError on a spec it cannot set up. */
  plan(spec: HostSpec, baseline: HostFacts): NetStep[];
  /** Opens what must exist before the host set-up runs (the TUN device); nothing to do for some planes. */
  open(): void;
  /**
   * Starts moving packets. `adopt`: a previous run left its host set-up (it
   * crashed, or handed over): take over its flows (the table checkpoint, the
   * flows conntrack holds) instead of starting empty.
   */
  start(adopt: boolean): void;
  /** The configuration changed (timeouts, connection log) or daemons did: follow it now. */
  follow(config: HostlbConfig): void;
  /** Host objects the plane depends on were put back after they vanished, by kind (ip, sysctl, nft, iptables, ip6tables). */
  hostRepaired(kinds: readonly string[]): void;
  /** Ends every flow of daemon `id` now (down with downFlows: reset, or removed with onDaemonRemoved: reset); returns how many. */
  resetDaemonFlows(id: number): number;
  /** True when nothing beyond the Balancer's counts keeps daemon `id` busy (a drain may end once this and the counts say so). */
  nothingLive(id: number): boolean;
  /** Daemon ids the plane's own records still name: a retired daemon's id is not given to a new one while listed. */
  daemonsHeld(): ReadonlySet<number>;
  /** Flows as the admin API lists them: every match of `filter` counted, only the page built. */
  connections(filter: ConnectionFilter): ConnectionPage;
  /** Where the flows are held. */
  table(): FlowTable;
  /** A counter by name; null when this plane keeps no such counter. */
  counter(name: PlaneCounter): number | null;
  /** Stops moving packets (and writes nothing more); the device or rules stay until close / undo. */
  stop(): void;
  /** After stop and the undo: lets go of everything; `undone`: the host set-up is gone, so nothing is kept for a next run. */
  close(undone: boolean): void;
  /** Stops and leaves its flows for the next hostlb (a last checkpoint; a persistent device stays): `start --takeover`. */
  handOver(): void;
}

export interface PlaneContext {
  /** Shared with health and the admin API; the plane decides with it and keeps its counts. */
  balancer: Balancer;
  /** For what the plane cannot do and carries on without (a failing map update, a checkpoint). */
  logger: Logger;
  /**
   * A link to use instead of a TUN device (tun only): a MemoryLink in tests
   * and simulations. The plane then never touches the host.
   */
  link?: Link;
}

/**
 * Whether each plane can run on this host, as a person should read it: null
 * when it can, else why not. Loads nothing that stays; safe to call anywhere.
 */
export function planeSupport(): Record<PlaneKind, string | null> {
  return { socket: SocketPlane.support(), netfilter: NetfilterPlane.support(), tun: TunPlane.support() };
}

/**
 * The plane `dataplane` names; for `auto`, the fastest this host runs —
 * socket, then netfilter, then tun (measured in docs/dataplanes.md) — or tun
 * when none answers (its start then says what is missing).
 */
export function choosePlane(dataplane: HostlbConfig['dataplane']): PlaneKind {
  if (dataplane !== 'auto') return dataplane;
  const support = planeSupport();
  return PLANE_KINDS.find((kind) => support[kind] === null) ?? 'tun';
}

/** True for 0.0.0.0 and ::, a cluster written for any local address of its family. */
export function anyLocalAddress(address: string): boolean {
  const ip = parseIp(address);
  return ip !== null && ip.bytes.every((b) => b === 0);
}

/**
 * What `config` asks that plane `kind` cannot do, as the ConfigError to
 * throw (naming the key), or null. A cluster on 0.0.0.0 or :: (any local
 * address) is served by the socket plane only: the others translate or queue
 * by the destination address, and need one.
 */
export function planeConfigProblem(config: HostlbConfig, kind: PlaneKind): ConfigError | null {
  if (kind === 'socket') return null;
  const at = config.clusters.findIndex((c) => anyLocalAddress(c.address));
  if (at < 0) return null;
  return new ConfigError(`clusters[${at}].address`, `${config.clusters[at].address} (any local address) is served by dataplane: socket only, and this hostlb runs the ${kind} plane; give the cluster an address of its own, or run dataplane: socket (hostlb check says whether this host can)`);
}

/** The data plane `config.dataplane` names (choosePlane), not yet opened. Throws planeConfigProblem's error. */
export function createDataPlane(config: HostlbConfig, context: PlaneContext): DataPlane {
  const kind = choosePlane(config.dataplane);
  const problem = planeConfigProblem(config, kind);
  if (problem !== null) throw problem;
  switch (kind) {
    case 'netfilter':
      return NetfilterPlane.fromConfig(config, context);
    case 'tun':
      return TunPlane.fromConfig(config, context);
    case 'socket':
      return SocketPlane.fromConfig(config, context);
  }
}
