// The seam between "choose a daemon and account for flows" and "move packets".
// A Balancer owns the configuration tree, one scheduler per cluster port and
// the per-daemon flow counts; a data plane (the TUN dispatcher, or netfilter's
// queue and conntrack events) asks it for a daemon and tells it when flows
// start and end. It never sees a packet.

import assert from 'node:assert/strict';
import { ConfigTree, type ClusterPort, type Daemon, type DispatchSpec } from './config-tree.js';
import { Rng } from './rng.js';
import { createScheduler } from './schedulers/index.js';
import type { Scheduler, SchedulerContext } from './schedulers/scheduler.js';
import { D_ACTIVE_FLOWS, D_NEW_FLOWS, DAEMON_COLUMNS, Stats } from './stats.js';

export interface BalancerOptions {
  /** Seeds the random and p2c schedulers, so a simulation repeats exactly. */
  seed?: number;
  /** Maglev table size (prime). Default 65537. */
  maglevTableSize?: number;
}

export class Balancer implements SchedulerContext {
  tree = new ConfigTree();
  readonly stats = new Stats();
  private schedulers: (Scheduler | undefined)[] = [];
  /** Effective weights set by the health layer, by port id; configured weights apply where absent. */
  private overrides: (Map<number, number> | undefined)[] = [];
  private readonly rng: Rng;
  private readonly maglevTableSize: number | undefined;

  constructor(options: BalancerOptions = {}) {
    this.rng = new Rng(options.seed ?? 1);
    this.maglevTableSize = options.maglevTableSize;
  }

  /**
   * Control path: replaces the configuration with `spec`, atomically. Daemons
   * and ports that remain keep their ids, counters and flows; a port whose
   * scheduler changes gets a fresh scheduler (existing flows keep their daemon,
   * since records, not schedulers, say where a flow goes). Throws ConfigError
   * and changes nothing when the spec is invalid.
   */
  configure(spec: DispatchSpec): ConfigTree {
    const tree = ConfigTree.build(spec, this.tree);
    // Build every scheduler before touching live state, so a failure here changes nothing.
    const schedulers = this.schedulers.slice();
    for (const cluster of tree.clusters) {
      for (const port of cluster.ports) {
        let scheduler = schedulers[port.id];
        if (!scheduler || scheduler.name !== port.scheduler) {
          scheduler = createScheduler(port.scheduler, this, { maglevTableSize: this.maglevTableSize });
        }
        const override = this.overrides[port.id];
        scheduler.setDaemons(port.daemons.map((d) => ({ id: d.id, weight: override?.get(d.id) ?? d.weight })));
        schedulers[port.id] = scheduler;
      }
    }
    this.stats.ensureDaemons(tree.daemonsById.length);
    this.stats.ensurePorts(tree.portsById.length);
    this.schedulers = schedulers;
    this.tree = tree;
    return tree;
  }

  /**
   * Control path: forgets retired daemon `id` so a later configuration may
   * give its id to a new daemon. The caller makes sure nothing names it any
   * more (no active flow, no record, no pending handshake). Its counters are
   * zeroed, so the next daemon with this id starts from nothing.
   */
  releaseDaemon(id: number): void {
    const daemon = this.tree.daemonsById[id];
    assert.ok(daemon !== undefined && daemon.retired, `daemon id ${id} is not a retired daemon`);
    (this.tree.daemonsById as Array<Daemon | undefined>)[id] = undefined;
    this.stats.daemon.fill(0, id * DAEMON_COLUMNS, (id + 1) * DAEMON_COLUMNS);
    for (const override of this.overrides) override?.delete(id);
  }

  /**
   * Control path: releases retired daemons that have held nothing for
   * `quietMs` — no active flow, and not in `held()` (the plane's own records:
   * a table record, a conntrack flow, a pending handshake) — so their ids can
   * be given to new daemons (releaseDaemon). A daemon held again starts its
   * quiet time over. `held` is asked only when some daemon may be released.
   * Returns the released ids.
   */
  releaseRetired(now: number, quietMs: number, held: () => ReadonlySet<number>): number[] {
    const candidates = this.tree.daemonsById.filter((d) => d !== undefined && d.retired && this.activeFlows(d.id) === 0);
    for (const d of this.tree.daemonsById) {
      if (d !== undefined && d.retired && !candidates.includes(d)) d.quietSince = Number.NaN;
    }
    if (candidates.length === 0) return [];
    const named = held();
    const released: number[] = [];
    for (const d of candidates) {
      if (named.has(d.id)) {
        d.quietSince = Number.NaN;
        continue;
      }
      if (Number.isNaN(d.quietSince)) d.quietSince = now;
      if (now - d.quietSince < quietMs) continue;
      this.releaseDaemon(d.id);
      released.push(d.id);
    }
    return released;
  }

  /**
   * Control path: the weights the scheduler of `port` uses from now on, by
   * daemon id (health and the manager decide them; a daemon not in the map
   * keeps its configured weight). Existing flows are not moved.
   */
  setWeights(port: ClusterPort, weights: Map<number, number>): void {
    this.overrides[port.id] = new Map(weights);
    this.schedulers[port.id]?.setDaemons(port.daemons.map((d) => ({ id: d.id, weight: weights.get(d.id) ?? d.weight })));
    this.weightsChanged?.();
  }

  /**
   * Called after every change of effective weights (setWeights), for a plane
   * whose decisions run elsewhere and must be told (the socket plane's
   * buckets): a daemon taken out gets no new flow a moment later. Control path.
   */
  weightsChanged: (() => void) | null = null;

  /** The weight daemon `id` of `port` has now: the health layer's, else the configured one. */
  effectiveWeight(port: ClusterPort, id: number): number {
    return this.overrides[port.id]?.get(id) ?? this.tree.daemonsById[id]?.weight ?? 0;
  }

  /** True when daemon `id` of `port` takes new flows now (its effective, else configured, weight is above 0). */
  takesNewFlows(port: ClusterPort, id: number): boolean {
    const override = this.overrides[port.id]?.get(id);
    return (override ?? this.tree.daemonsById[id]?.weight ?? 0) > 0;
  }

  /** Packet path: the daemon for a new flow on `port`, or null when none takes new flows. */
  choose(port: ClusterPort, flowHash: number, sourceHash: number): Daemon | null {
    const scheduler = this.schedulers[port.id];
    if (scheduler === undefined) return null;
    // As int32: a uint32 above 2^31 would be boxed as a heap number on every call.
    const id = scheduler.pick(flowHash | 0, sourceHash | 0);
    return id < 0 ? null : this.tree.daemonsById[id];
  }

  /** A flow to daemon `id` began (it counts as new and as active). */
  flowStarted(id: number): void {
    const d = this.stats.daemon;
    d[id * DAEMON_COLUMNS + D_NEW_FLOWS]++;
    d[id * DAEMON_COLUMNS + D_ACTIVE_FLOWS]++;
  }

  /** A flow to daemon `id` ended (it no longer counts as active). */
  flowEnded(id: number): void {
    this.stats.daemon[id * DAEMON_COLUMNS + D_ACTIVE_FLOWS]--;
  }

  activeFlows(id: number): number {
    return this.stats.daemon[id * DAEMON_COLUMNS + D_ACTIVE_FLOWS];
  }

  random(): number {
    return this.rng.next();
  }
}
