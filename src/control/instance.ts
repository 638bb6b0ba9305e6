// A running hostlb instance: start (validate, clean up after a crashed run or
// adopt its set-up, set up the host for the data plane, start it), live
// reconfiguration (validated whole, host changed to match, applied
// atomically) and stop (undo everything). The CLI, the admin API and the demo
// use this. The data plane is known only through dataplane/data-plane.ts.

import { createDataPlane, planeConfigProblem, type DataPlane, type PlaneContext } from '../dataplane/data-plane.js';
import { Balancer } from '../dispatch/balancer.js';
import { ConfigError, HostlbError } from '../errors.js';
import type { HostSpec } from '../net/host-spec.js';
import { HostWatch } from '../net/host-watch.js';
import { RepairSchedule } from '../net/repair-schedule.js';
import { parseEndpoint, parseIp } from '../wire/address.js';
import type { Controlled } from './api/controlled.js';
import type { HostlbConfig } from './config-schema.js';
import { loadConfig } from './config-file.js';
import { dispatchSpecOf, expandSupervised, HealthRuntime } from './health-runtime.js';
import { NO_HOST, SystemHost, type HostSetup, type Planner } from './host-setup.js';
import type { Logger } from './logger.js';
import { FrontTierAgent, type AgentListenerSpec } from './agent/agent-server.js';
import type { PortCapacity } from './agent/agent-line.js';
import { portName } from './health-runtime.js';

/** What the network set-up needs from a configuration. */
/** The agent listeners a configuration asks for, ports sharing an address and port on one listener. */
export function agentSpecsOf(config: HostlbConfig): AgentListenerSpec[] {
  const out = new Map<string, AgentListenerSpec>();
  for (const c of config.clusters) {
    for (const p of c.ports) {
      if (!p.agent) continue;
      const address = parseIp(p.agent.address ?? c.address)!.text;
      const key = `${address} ${p.agent.port}`;
      const spec = out.get(key) ?? { address, port: p.agent.port, ports: [] };
      spec.ports.push({ name: portName(c.address, p), port: p.port, protocol: p.protocol, maxconn: p.agent.maxconn });
      out.set(key, spec);
    }
  }
  return [...out.values()];
}

export function hostSpecOf(config: HostlbConfig): HostSpec {
  return {
    device: config.device,
    routeTable: config.routeTable,
    clusters: config.clusters.map((c) => ({
      address: c.address,
      ports: c.ports.map((p) => ({
        port: p.port,
        protocol: p.protocol,
        daemons: p.daemons.map((d) => {
          const e = parseEndpoint(d.address)!;
          return { address: e.address.text, port: e.port };
        }),
      })),
    })),
  };
}

/**
 * `spec` plus the daemons a reconfiguration retired that still hold active
 * flows: their replies must keep reaching the device until those flows end,
 * or they leave untranslated and the client never hears from them again.
 * Each joins its own cluster port when that remains, else any port of the
 * same family and protocol (the reply rule names only the daemon, its port
 * and the protocol). With no such port left it is not kept: a removed cluster
 * or port takes its flows with it anyway.
 */
export function withDraining(spec: HostSpec, balancer: Balancer): HostSpec {
  const draining = balancer.tree.daemonsById.filter((d) => d && d.retired && balancer.activeFlows(d.id) > 0);
  if (draining.length === 0) return spec;
  const out: HostSpec = structuredClone(spec);
  for (const d of draining) {
    const own = d.clusterPort;
    const ports = out.clusters.filter((c) => parseIp(c.address)?.family === d.address.family).flatMap((c) => c.ports.map((p) => ({ c, p })));
    const home = ports.find(({ c, p }) => parseIp(c.address)?.text === own.cluster.address.text && p.port === own.port && p.protocol === own.protocol)
      ?? ports.find(({ p }) => p.protocol === own.protocol);
    home?.p.daemons.push({ address: d.address.text, port: d.port });
  }
  return out;
}

/**
 * A retired daemon's id is given to a new daemon once it has held no flow and
 * no record this long (ms): conntrack's TIME_WAIT, so whatever a plane keeps
 * of its last flows (a conntrack mark naming its id) is gone too. Checked
 * every RELEASE_CHECK_MS.
 */
const RELEASE_QUIET_MS = 120_000;
const RELEASE_CHECK_MS = 10_000;
/**
 * At a deliberate stop, how long supervised daemons get to finish their
 * connections (no new ones reach them) before their stop signal.
 */
const STOP_DRAIN_MS = 5_000;

/**
 * How often the host set-up is checked for objects that vanished (ms): noticed
 * within 2 s. The checks that spawn a child process (ip, nft, iptables) run
 * only when netlink said their objects changed, or every 30 s
 * (net/repair-schedule.ts); sysctls and bpffs mounts on every tick.
 */
const REPAIR_MS = 1_000;

/** How often retired daemons are checked for their last flow ending (ms). */
const DRAIN_CHECK_MS = 2_000;

/** Keys fixed for the life of an instance: changing one needs a restart. */
const FIXED_KEYS = ['device', 'dataplane', 'stateDir', 'routeTable', 'seed'] as const;

/** Throws ConfigError (CONFIG_NEEDS_RESTART) when `next` changes a key that cannot change while running. */
export function checkLiveChange(current: HostlbConfig, next: HostlbConfig): void {
  for (const key of FIXED_KEYS) {
    if (current[key] !== next[key]) {
      throw new ConfigError(key, `cannot change while hostlb runs (${JSON.stringify(current[key])} → ${JSON.stringify(next[key])}); restart hostlb to change it`, 'CONFIG_NEEDS_RESTART');
    }
  }
  if (JSON.stringify(current.tun) !== JSON.stringify(next.tun)) {
    throw new ConfigError('tun', 'the TUN device\'s offloads and io_uring cannot change while hostlb runs; restart hostlb to change them', 'CONFIG_NEEDS_RESTART');
  }
  if (JSON.stringify(current.netfilter) !== JSON.stringify(next.netfilter)) {
    throw new ConfigError('netfilter', 'the queue and marks of the netfilter data plane cannot change while hostlb runs; restart hostlb to change them', 'CONFIG_NEEDS_RESTART');
  }
  if (JSON.stringify(current.admin) !== JSON.stringify(next.admin)) {
    throw new ConfigError('admin', 'the admin listener cannot change while hostlb runs; restart hostlb to change it', 'CONFIG_NEEDS_RESTART');
  }
  if (current.table.capacity !== next.table.capacity) {
    throw new ConfigError('table.capacity', `cannot change while hostlb runs (${current.table.capacity} → ${next.table.capacity}): the table is allocated at start; restart hostlb to change it`, 'CONFIG_NEEDS_RESTART');
  }
}

export interface ChangeSummary {
  source: string;
  routesAdded: number;
  routesRemoved: number;
  daemonsAdded: string[];
  daemonsRemoved: string[];
}

export interface InstanceOptions {
  /** The file `reload` re-reads. */
  configFile?: string;
  logger: Logger;
  /**
   * Runs the TUN plane over this link (a MemoryLink) instead of a device, and
   * leaves the host alone: no checks, lock, journal or routes. For tests and
   * simulations; needs no root.
   */
  link?: PlaneContext['link'];
}

export class Instance implements Controlled {
  readonly balancer: Balancer;
  readonly plane: DataPlane;
  /** Advisors, passive signals, the manager, supervised daemons and events. */
  readonly health: HealthRuntime;
  /** What a front tier's agent-check hears about each port (agent: in the configuration). */
  readonly agent: FrontTierAgent;
  readonly startedAt = Date.now();
  readonly configFile: string | undefined;
  private current: HostlbConfig;
  private readonly host: HostSetup;
  private readonly log: Logger;
  private stopped = false;
  /** Ids of retired daemons whose reply rules are kept while their flows drain. */
  private draining = new Set<number>();
  private drainTimer: NodeJS.Timeout | null = null;
  private repairTimer: NodeJS.Timeout | null = null;
  private releaseTimer: NodeJS.Timeout | null = null;
  private readonly repairAbort = new AbortController();
  /** Which checks spawn on a tick; its netlink sockets close with stopRepairs(). */
  private repairSchedule: RepairSchedule | null = null;
  private repairing = false;
  private readonly repairErrorsLogged = new Map<string, number>();
  /** Host objects put back after they vanished, by kind (ip, sysctl, nft, iptables, ip6tables, bpffs): hostlb_repairs_total. */
  readonly repairs: Record<string, number> = {};

  private constructor(config: HostlbConfig, options: InstanceOptions, parts: { balancer: Balancer; plane: DataPlane; host: HostSetup }) {
    this.current = config;
    this.configFile = options.configFile;
    this.log = options.logger;
    this.balancer = parts.balancer;
    this.plane = parts.plane;
    this.host = parts.host;
    this.health = new HealthRuntime(this.balancer, this.plane, config, this.log);
    this.agent = new FrontTierAgent((name) => this.capacityOf(name), this.log);
  }

  /**
   * Port `name`'s capacity for the agent's weight: each daemon's configured
   * weight, and what of it takes new connections — configured × slow-start
   * ramp (× 100, the manager's scale) for a daemon that is up, 0 otherwise.
   * Not the effective weight itself: the manager's load factor moves work
   * between this host's daemons and says nothing about how much the host can
   * take, and a daemon whose advisor has not answered yet is not counted.
   */
  private capacityOf(name: string): PortCapacity | undefined {
    const rows = this.health.monitor.view().filter((h) => h.port === name);
    return {
      configured: rows.map((h) => h.configuredWeight),
      effective: rows.map((h) => (h.state === 'up' && h.advisor !== 'unknown' && h.effectiveWeight > 0 ? h.configuredWeight * h.ramp * 100 : 0)),
    };
  }

  /** Opens the agent listeners of the running configuration. Throws what listen throws (EADDRINUSE, ...), naming the listener. */
  async startAgents(): Promise<void> {
    try {
      await this.agent.sync(agentSpecsOf(this.current));
    } catch (e) {
      const err = e as NodeJS.ErrnoException & { address?: string; port?: number };
      throw new HostlbError('AGENT_LISTEN_FAILED', `the front-tier agent cannot listen on ${err.address ?? '?'}:${err.port ?? '?'} (${err.code ?? err.message}): choose another agent.port, or agent.address`);
    }
  }

  get config(): HostlbConfig {
    return this.current;
  }

  /**
   * Starts an instance. Throws HostlbError (NEEDS_NET_ADMIN, CONFIG_*, NET_*,
   * TUN_*, NETFILTER_*) and leaves the host as it found it when any step fails.
   */
  static start(config: HostlbConfig, options: InstanceOptions): Instance {
    const balancer = new Balancer({ seed: config.seed });
    const plane = createDataPlane(config, { balancer, logger: options.logger, link: options.link });
    // Everything that can be checked without touching the host comes first.
    const host = options.link ? NO_HOST : SystemHost.open(config, plane, options.logger);
    try {
      balancer.configure(dispatchSpecOf(config));
      const planner: Planner = (baseline) => plane.plan(hostSpecOf(expandSupervised(config)), baseline);
      plane.open();
      try {
        host.setUp(planner);
      } catch (e) {
        plane.close(false);
        throw e;
      }
      try {
        plane.start(host.adopting);
      } catch (e) {
        if (!host.adopting) host.undo();
        plane.close(false);
        throw e;
      }
    } catch (e) {
      host.release();
      throw e;
    }
    const instance = new Instance(config, options, { balancer, plane, host });
    instance.health.start();
    instance.startRepairs();
    instance.startReleases();
    if (config.dataplane === 'auto') options.logger.info({ event: 'dataplane_chosen', dataplane: plane.kind }, `data plane ${plane.kind}: the fastest this host runs (dataplane: auto; write dataplane: to choose)`);
    options.logger.info({ dataplane: plane.kind, device: config.device, clusters: config.clusters.map((c) => c.address), capacity: config.table.capacity, event: 'started' }, 'started');
    return instance;
  }

  /** The steps the plane wants for `config`, with the daemons still draining kept. */
  private planner(config: HostlbConfig, draining: boolean): Planner {
    return (baseline) => {
      const spec = hostSpecOf(expandSupervised(config));
      return this.plane.plan(draining ? withDraining(spec, this.balancer) : spec, baseline);
    };
  }

  /**
   * Replaces the running configuration with `next`, which must already have
   * passed the schema (parseConfig / validateConfig). Validated whole, then:
   * routes and rules for what is new, the Balancer switch (kept daemons keep
   * their flows), then removal of routes no longer needed. A failure before the
   * switch changes nothing; the error names what to fix.
   */
  apply(next: HostlbConfig, source: string): ChangeSummary {
    if (this.stopped) throw new HostlbError('NOT_RUNNING', 'hostlb is stopping');
    checkLiveChange(this.current, next);
    const problem = planeConfigProblem(next, this.plane.kind);
    if (problem !== null) throw problem;
    const wasLive = new Set(this.balancer.tree.daemons());
    const before = new Set([...wasLive].map((d) => `${d.clusterPort.name} ${d.name}`));
    const routesAdded = this.host.add(this.planner(next, false));
    try {
      this.balancer.configure(dispatchSpecOf(next));
    } catch (e) {
      // Put the host back as the running configuration wants it.
      this.host.remove(this.planner(this.current, true));
      throw e;
    }
    this.health.sync(next);
    this.current = next;
    this.agent.sync(agentSpecsOf(next)).catch((e: Error) => this.log.error({ event: 'agent_listen_failed', err: e }, `a front-tier agent listener could not be opened: ${e.message}`));
    if (next.onDaemonRemoved === 'reset') {
      for (const daemon of this.balancer.tree.daemonsById) {
        if (daemon?.retired && wasLive.has(daemon)) {
          const ended = this.plane.resetDaemonFlows(daemon.id);
          this.log.info({ event: 'daemon_flows_reset', daemon: daemon.name, flows: ended }, 'flows of a removed daemon reset');
        }
      }
    }
    let routesRemoved = 0;
    try {
      // Daemons retired just now (or earlier) keep their reply rules while they have flows.
      routesRemoved = this.host.remove(this.planner(next, true));
    } catch (e) {
      this.log.error({ err: e }, 'some host changes of the old configuration could not be undone');
    }
    // The plane follows the new daemons, and those still draining.
    this.plane.follow(next);
    this.watchDraining();
    const after = new Set([...this.balancer.tree.daemons()].map((d) => `${d.clusterPort.name} ${d.name}`));
    const summary: ChangeSummary = {
      source, routesAdded, routesRemoved,
      daemonsAdded: [...after].filter((d) => !before.has(d)),
      daemonsRemoved: [...before].filter((d) => !after.has(d)),
    };
    this.log.info({ event: 'config_changed', ...summary }, 'configuration changed');
    return summary;
  }

  /** Notes the retired daemons still draining; once a check finds some done, their reply rules go. */
  private watchDraining(): void {
    const ids = (): Set<number> => new Set(this.balancer.tree.daemonsById.filter((d) => d && d.retired && this.balancer.activeFlows(d.id) > 0).map((d) => d.id));
    this.draining = ids();
    if (this.draining.size === 0 || this.drainTimer !== null) return;
    this.drainTimer = setInterval(() => {
      const now = ids();
      if ([...this.draining].every((id) => now.has(id))) return;
      this.draining = now;
      try {
        const removed = this.host.remove(this.planner(this.current, true));
        this.plane.follow(this.current);
        this.log.info({ event: 'daemons_drained', routesRemoved: removed, stillDraining: now.size }, 'removed daemons drained');
      } catch (e) {
        this.log.error({ err: e }, 'the reply rules of drained daemons could not be removed');
      }
      if (now.size === 0 && this.drainTimer !== null) {
        clearInterval(this.drainTimer);
        this.drainTimer = null;
      }
    }, DRAIN_CHECK_MS);
    this.drainTimer.unref();
  }

  /** Re-reads the configuration file and applies it. Throws ConfigError naming file, line and key. */
  reload(): ChangeSummary {
    if (!this.configFile) throw new HostlbError('NO_CONFIG_FILE', 'this hostlb was started without --config, so there is no file to reload');
    return this.apply(loadConfig(this.configFile), `reload ${this.configFile}`);
  }

  /**
   * The graceful part of stopping, before stop(): the front tier hears
   * "maint" for the longest agent.stopGrace (so it stops sending before the
   * rules go), then the daemons hostlb runs drain and stop.
   */
  async stopDaemons(): Promise<void> {
    const grace = Math.max(0, ...this.current.clusters.flatMap((c) => c.ports.map((p) => p.agent?.stopGrace ?? 0)));
    if (this.agent.announceStop() && grace > 0) {
      this.log.info({ event: 'agent_maint', graceMs: grace * 1000 }, 'telling the front tier: maint');
      await new Promise((resolve) => setTimeout(resolve, grace * 1000));
    }
    const idle = await this.health.drainSupervised(STOP_DRAIN_MS);
    if (!idle) this.log.info({ event: 'stop_drain_timeout', waitedMs: STOP_DRAIN_MS }, 'supervised daemons still held connections; stopping them anyway');
    await this.health.stop();
  }

  /**
   * Every RELEASE_CHECK_MS, retired daemons that have held nothing for
   * RELEASE_QUIET_MS give their ids back (Balancer.releaseRetired), so the
   * ids — and the marks that name them — do not run out over months
   * of daemons added and removed.
   */
  private startReleases(): void {
    this.releaseTimer = setInterval(() => {
      const released = this.balancer.releaseRetired(Date.now(), RELEASE_QUIET_MS, () => this.plane.daemonsHeld());
      if (released.length > 0) this.log.info({ event: 'daemon_ids_released', ids: released }, 'ids of removed daemons released');
    }, RELEASE_CHECK_MS);
    this.releaseTimer.unref();
  }

  /** Checks the host set-up every REPAIR_MS and puts back what vanished (repair.ts). */
  private startRepairs(): void {
    const watch = new HostWatch((problem) => {
      this.log.warn({ event: 'host_watch_unavailable', problem }, `${problem}; the host set-up's checks that depend on it (ip, nft, iptables) run every second instead`);
    });
    this.repairSchedule = new RepairSchedule(watch);
    this.repairTimer = setInterval(() => void this.repairOnce(), REPAIR_MS);
    this.repairTimer.unref();
  }

  private async repairOnce(): Promise<void> {
    if (this.repairing || this.stopped) return;
    this.repairing = true;
    try {
      const report = await this.host.repair(this.repairAbort.signal, this.repairSchedule ?? undefined);
      if (report === null || this.stopped) return;
      for (const [kind, n] of Object.entries(report.repaired)) this.repairs[kind] = (this.repairs[kind] ?? 0) + n;
      if (Object.keys(report.repaired).length > 0) {
        this.plane.hostRepaired(Object.keys(report.repaired));
        this.log.warn({ event: 'host_repaired', repaired: report.repaired }, 'host objects hostlb set up had vanished; put them back');
      }
      // A failing check repeats every second: log each distinct failure once a minute at most.
      const now = Date.now();
      for (const error of report.errors) {
        if ((this.repairErrorsLogged.get(error) ?? 0) > now - 60_000) continue;
        this.repairErrorsLogged.set(error, now);
        this.log.error({ event: 'host_repair_failed', error }, 'could not check or put back a host object');
      }
      if (this.repairErrorsLogged.size > 1000) this.repairErrorsLogged.clear();
    } catch (e) {
      this.log.error({ err: e, event: 'host_repair_failed' }, 'could not check the host set-up');
    } finally {
      this.repairing = false;
    }
  }

  /** Stops repairs at once: commands in flight are killed, so nothing comes back after an undo. */
  private stopRepairs(): void {
    if (this.repairTimer !== null) clearInterval(this.repairTimer);
    if (this.releaseTimer !== null) clearInterval(this.releaseTimer);
    this.repairTimer = this.releaseTimer = null;
    this.repairAbort.abort();
    this.repairSchedule?.close();
    this.repairSchedule = null;
  }

  /**
   * Hands the data plane to a new hostlb (`start --takeover`): the plane
   * stops and leaves its flows (a last checkpoint; the device stays), and the
   * host set-up is not undone, so the new process adopts journal, device and
   * table. The caller exits afterwards.
   */
  handOver(): void {
    if (this.stopped) return;
    this.stopped = true;
    this.stopRepairs();
    if (this.drainTimer !== null) clearInterval(this.drainTimer);
    this.drainTimer = null;
    this.plane.handOver();
    this.agent.close();
    this.health.killAll();
    // The journal stays for the next owner.
    this.host.release();
    this.log.info({ event: 'handed_over' }, 'handed the data plane over; the host set-up stays');
  }

  /**
   * Stops the data plane and undoes every change to the host. Safe to call
   * twice. Throws (after logging `undo_failed`) NetError NET_UNDO_FAILED when
   * some change could not be undone; the journal then keeps those.
   */
  stop(): void {
    if (this.stopped) return;
    this.stopped = true;
    this.stopRepairs();
    if (this.drainTimer !== null) clearInterval(this.drainTimer);
    this.drainTimer = null;
    this.agent.close();
    this.health.killAll();
    void this.health.stop();
    this.plane.stop();
    let undone: number | null = null;
    try {
      undone = this.host.undo();
      // Nothing to adopt after a deliberate stop: its flows ended with the set-up.
      this.host.forget();
    } catch (e) {
      // NET_UNDO_FAILED: the journal keeps what is left, for the next start or a person.
      this.log.error({ event: 'undo_failed', err: e, journal: this.host.journal }, `the host set-up was not completely undone: ${(e as Error).message}`);
      throw e;
    } finally {
      this.plane.close(undone !== null);
      this.host.release();
      this.log.info({ event: 'stopped', undone, undoFailed: undone === null }, 'stopped');
    }
  }
}
