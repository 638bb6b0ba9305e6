// A running hostlb instance with the TUN data plane: start (validate, clean up
// after a crashed run, open the device, set up the host, pump packets), live
// reconfiguration (validated whole, host changed to match, applied atomically)
// and stop (undo everything). The CLI, the admin API and the demo use this.

import { existsSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { restoreTable, snapshotTable } from '../dispatch/checkpoint.js';
import { writeCheckpointFile } from './checkpoint-file.js';
import { Dispatcher } from '../dispatch/dispatcher.js';
import { NetfilterPlane } from '../dataplane/netfilter-plane.js';
import { TunPlane } from '../dataplane/tun-plane.js';
import { ConfigError, HostlbError } from '../errors.js';
import { hugePageAllocator } from '../link/native.js';
import { TunLink } from '../link/tun-link.js';
import { cleanupLeftovers, journalPathFor, readJournal, stillAlive, undoJournal } from '../net/apply.js';
import type { HostFacts } from '../net/host-facts.js';
import type { HostSpec } from '../net/host-spec.js';
import type { NetStep } from '../net/net-step.js';
import { planNetfilterSetup, tableName } from '../net/netfilter-plan.js';
import { planHostSetup } from '../net/plan.js';
import { ensureStateDir, readBaseline, writeFileAtomic } from '../net/state-files.js';
import { DeviceLock } from '../net/device-lock.js';
import { repairMissing } from '../net/repair.js';
import { checkNetAdmin, checkTools } from '../net/privileges.js';
import { probeHost } from '../net/probe.js';
import { addMissing, removeUnwanted } from '../net/reconcile.js';
import { parseEndpoint, parseIp } from '../wire/address.js';
import type { HostlbConfig } from './config-schema.js';
import { installConnectionLog } from './connection-log.js';
import { LogBudget } from './log-budget.js';
import { dispatchSpecOf, expandSupervised, HealthRuntime } from './health-runtime.js';
import { loadConfig } from './config-file.js';
import type { Logger } from './logger.js';

/** What the network set-up needs from a configuration. */
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
export function withDraining(spec: HostSpec, dispatcher: Dispatcher): HostSpec {
  const draining = dispatcher.tree.daemonsById.filter((d) => d && d.retired && dispatcher.balancer.activeFlows(d.id) > 0);
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

/** The host set-up `config`'s data plane needs for `spec`, planned against `baseline`. */
export function planFor(config: HostlbConfig, spec: HostSpec, baseline: HostFacts): NetStep[] {
  if (config.dataplane === 'netfilter') {
    return planNetfilterSetup({ ...spec, queue: config.netfilter.queue, markBase: config.netfilter.mark }, baseline);
  }
  return planHostSetup(spec, baseline);
}

/**
 * A retired daemon's id is given to a new daemon once it has held no flow and
 * no record this long (ms): conntrack's TIME_WAIT, so the netfilter plane's
 * marks of its last flows are gone too. Checked every RELEASE_CHECK_MS.
 */
const RELEASE_QUIET_MS = 120_000;
const RELEASE_CHECK_MS = 10_000;

/** How often the host set-up is checked for objects that vanished (ms): noticed within 2 s. */
const REPAIR_MS = 1_000;

/** How often retired daemons are checked for their last flow ending (ms). */
const DRAIN_CHECK_MS = 2_000;

/** Files an instance keeps beside its journal, named after its device. */
export function stateFiles(config: HostlbConfig): { baseline: string; checkpoint: string } {
  return { baseline: join(config.stateDir, `${config.device}.baseline.json`), checkpoint: join(config.stateDir, `${config.device}.table`) };
}

/** Keys fixed for the life of an instance: changing one needs a restart. */
const FIXED_KEYS = ['device', 'dataplane', 'stateDir', 'routeTable', 'seed'] as const;

/** Throws ConfigError (CONFIG_NEEDS_RESTART) when `next` changes a key that cannot change while running. */
export function checkLiveChange(current: HostlbConfig, next: HostlbConfig): void {
  for (const key of FIXED_KEYS) {
    if (current[key] !== next[key]) {
      throw new ConfigError(key, `cannot change while hostlb runs (${JSON.stringify(current[key])} → ${JSON.stringify(next[key])}); restart hostlb to change it`, 'CONFIG_NEEDS_RESTART');
    }
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
}

export class Instance {
  readonly dispatcher: Dispatcher;
  /** The TUN data plane's pump (dataplane: tun), else null. */
  readonly plane: TunPlane | null;
  /** The netfilter data plane (dataplane: netfilter), else null. */
  readonly netfilter: NetfilterPlane | null;
  /** Advisors, passive signals, the manager, supervised daemons and events. */
  readonly health: HealthRuntime;
  readonly link: TunLink | null;
  readonly journal: string;
  readonly startedAt = Date.now();
  readonly configFile: string | undefined;
  private current: HostlbConfig;
  /** The host as it was before hostlb changed it: every plan is made against this. */
  private readonly baseline: HostFacts;
  private readonly log: Logger;
  /** This device's lock (device-lock.ts), held until stop or hand-over. */
  private readonly lock: DeviceLock;
  private stopped = false;
  /** Ids of retired daemons whose reply rules are kept while their flows drain. */
  private draining = new Set<number>();
  private drainTimer: NodeJS.Timeout | null = null;
  private checkpointTimer: NodeJS.Timeout | null = null;
  private repairTimer: NodeJS.Timeout | null = null;
  private releaseTimer: NodeJS.Timeout | null = null;
  private readonly repairAbort = new AbortController();
  private repairing = false;
  /** Host objects put back after they vanished, by kind (ip, sysctl, nft, iptables, ip6tables): hostlb_repairs_total. */
  readonly repairs: Record<string, number> = {};
  /** A checkpoint is being written slice by slice. */
  private checkpointing = false;

  private constructor(config: HostlbConfig, options: InstanceOptions, parts: { dispatcher: Dispatcher; link: TunLink | null; netfilter: NetfilterPlane | null; baseline: HostFacts; journal: string; lock: DeviceLock }) {
    this.lock = parts.lock;
    this.current = config;
    this.configFile = options.configFile;
    this.log = options.logger;
    this.dispatcher = parts.dispatcher;
    this.link = parts.link;
    this.baseline = parts.baseline;
    this.journal = parts.journal;
    this.netfilter = parts.netfilter;
    this.plane = this.link ? new TunPlane(this.link, this.dispatcher) : null;
    this.health = new HealthRuntime(this.dispatcher, config, this.log);
    const netfilter = this.netfilter;
    if (netfilter) {
      this.health.resetDaemonFlows = (id) => netfilter.resetDaemonFlows(id);
      this.health.nothingLive = (id) => netfilter.liveFlows(id) === 0;
      // Retired daemons keep their map entry while their flows drain.
      netfilter.keepDaemons = () => this.dispatcher.tree.daemonsById.filter((d) => d && d.retired && this.dispatcher.balancer.activeFlows(d.id) > 0);
    }
  }

  get config(): HostlbConfig {
    return this.current;
  }

  /**
   * Starts an instance. Throws HostlbError (NEEDS_NET_ADMIN, CONFIG_*, NET_*,
   * TUN_*) and leaves the host as it found it when any step fails.
   */
  static start(config: HostlbConfig, options: InstanceOptions): Instance {
    const missing = checkNetAdmin();
    if (missing !== null) throw new HostlbError('NEEDS_NET_ADMIN', missing);

    // Everything that can be checked without touching the host comes first.
    const netfilter = config.dataplane === 'netfilter';
    if (netfilter) {
      const v6 = config.clusters.some((c) => c.address.includes(':'));
      const tools = checkTools(['nft', 'iptables', ...(v6 ? ['ip6tables'] : [])]);
      if (tools !== null) throw new HostlbError('NETFILTER_TOOLS_MISSING', tools);
    }
    // Before anything on the host changes: a second hostlb for this device
    // (another stateDir, say) is refused here, and never rolls back the
    // objects of the one running.
    const lock = DeviceLock.acquire(config.device);
    try {
      return Instance.startLocked(config, options, lock);
    } catch (e) {
      lock.release();
      throw e;
    }
  }

  private static startLocked(config: HostlbConfig, options: InstanceOptions, lock: DeviceLock): Instance {
    const netfilter = config.dataplane === 'netfilter';
    const dispatcher = new Dispatcher({
      // The netfilter plane keeps no records of its own (conntrack does): the table stays minimal.
      capacity: netfilter ? 1 : config.table.capacity, timeouts: config.table.timeouts, seed: config.seed, hashSeed: config.seed,
      allocate: hugePageAllocator, passUnmatchedReplies: true,
    });
    dispatcher.configure(dispatchSpecOf(config));
    const spec = hostSpecOf(expandSupervised(config));

    // Root commands are replayed from files in stateDir: it must be root's alone.
    ensureStateDir(config.stateDir);
    const journal = journalPathFor(config.device, config.stateDir);
    const files = stateFiles(config);
    // A run that ended without undoing (a crash, or a --takeover) left its
    // journal, the host as it was before (baseline), its persistent device and
    // a table checkpoint: adopt them, so its flows live on. Otherwise start clean.
    const previous = readJournal(journal);
    const adopt = previous !== null && previous.pid !== process.pid && !stillAlive(previous.pid) && existsSync(files.baseline);
    if (!adopt) {
      const leftovers = cleanupLeftovers(config.device, { journalPath: journal });
      if (leftovers.undone > 0 || leftovers.deviceRemoved) options.logger.info({ ...leftovers }, 'cleaned up after an earlier run');
      rmSync(files.checkpoint, { force: true });
    }

    // Persistent: if this process dies, the device and its routes stay, so
    // daemon replies go nowhere rather than leaking out untranslated (DESIGN.md).
    // The netfilter plane has no device: conntrack carries its flows.
    const link = netfilter ? null : TunLink.open(config.device, { persist: true });
    let baseline: HostFacts;
    try {
      if (adopt) {
        baseline = readBaseline(files.baseline);
        const desired = planFor(config, spec, baseline);
        const added = addMissing(desired, journal);
        const removed = removeUnwanted(desired, journal);
        options.logger.info({ event: 'adopted', steps: previous!.steps.length, added, removed, previousPid: previous!.pid }, 'adopted the host set-up of an earlier run');
      } else {
        baseline = probeHost(config.device);
        writeFileAtomic(files.baseline, JSON.stringify(baseline));
        addMissing(planFor(config, spec, baseline), journal);
      }
    } catch (e) {
      link?.setPersist(false);
      link?.close();
      throw e;
    }
    let plane: NetfilterPlane | null = null;
    if (netfilter) {
      const errorBudget = new LogBudget(5, 60_000);
      plane = new NetfilterPlane(dispatcher.balancer, {
        queue: config.netfilter.queue, markBase: config.netfilter.mark, queueLength: config.netfilter.queueLength,
        table: tableName(config.device), hashSeed: config.seed,
        // A failure that repeats on every tick is logged a few times a minute, not twice a second.
        onError: (err, what) => {
          const suppressed = errorBudget.take();
          if (suppressed !== null) options.logger.error({ err, ...(suppressed > 0 ? { suppressed } : {}) }, `could not ${what}`);
        },
      });
      try {
        plane.start();
      } catch (e) {
        if (!adopt) undoJournal(journal);
        throw e instanceof HostlbError ? e : new HostlbError('NETFILTER_FAILED', `the netfilter data plane could not start: ${(e as Error).message}`, { cause: e });
      }
      if (adopt) options.logger.info({ event: 'flows_recounted', flows: plane.flowCount }, 'flows counted from conntrack');
    }
    if (!netfilter && adopt && existsSync(files.checkpoint)) {
      try {
        const { restored, skipped } = restoreTable(dispatcher, readFileSync(files.checkpoint), Date.now());
        options.logger.info({ event: 'table_restored', restored, skipped }, 'connection table restored from its checkpoint');
      } catch (e) {
        // Only an optimisation: without it flows recover through a consistent-hash scheduler, or end.
        options.logger.warn({ event: 'checkpoint_invalid', file: files.checkpoint, err: (e as Error).message }, 'the table checkpoint cannot be restored; starting with an empty table');
      }
    }
    const instance = new Instance(config, options, { dispatcher, link, netfilter: plane, baseline, journal, lock });
    installConnectionLog(dispatcher, config.log.connections, options.logger);
    instance.plane?.start();
    instance.health.start();
    instance.startCheckpoints();
    instance.startRepairs();
    instance.startReleases();
    options.logger.info({ dataplane: config.dataplane, device: config.device, clusters: config.clusters.map((c) => c.address), capacity: config.table.capacity, event: 'started' }, 'started');
    return instance;
  }

  /**
   * Replaces the running configuration with `next`, which must already have
   * passed the schema (parseConfig / validateConfig). Validated whole, then:
   * routes and rules for what is new, the dispatcher switch (kept daemons keep
   * their flows), then removal of routes no longer needed. A failure before the
   * switch changes nothing; the error names what to fix.
   */
  apply(next: HostlbConfig, source: string): ChangeSummary {
    if (this.stopped) throw new HostlbError('NOT_RUNNING', 'hostlb is stopping');
    checkLiveChange(this.current, next);
    const wasLive = new Set(this.dispatcher.tree.daemons());
    const before = new Set([...wasLive].map((d) => `${d.clusterPort.name} ${d.name}`));
    const desired = planFor(next, hostSpecOf(expandSupervised(next)), this.baseline);
    const routesAdded = addMissing(desired, this.journal);
    try {
      this.dispatcher.configure(dispatchSpecOf(next));
    } catch (e) {
      // Put the host back as the running configuration wants it.
      removeUnwanted(planFor(this.current, withDraining(hostSpecOf(expandSupervised(this.current)), this.dispatcher), this.baseline), this.journal);
      throw e;
    }
    this.dispatcher.setTimeouts(next.table.timeouts);
    installConnectionLog(this.dispatcher, next.log.connections, this.log);
    this.health.sync(next);
    this.current = next;
    if (next.onDaemonRemoved === 'reset') {
      const now = Date.now();
      for (const daemon of this.dispatcher.tree.daemonsById) {
        if (daemon?.retired && wasLive.has(daemon)) {
          const ended = this.netfilter ? this.netfilter.resetDaemonFlows(daemon.id) : this.dispatcher.resetDaemonFlows(daemon.id, now);
          this.log.info({ event: 'daemon_flows_reset', daemon: daemon.name, flows: ended }, 'flows of a removed daemon reset');
        }
      }
    }
    let routesRemoved = 0;
    try {
      // Daemons retired just now (or earlier) keep their reply rules while they have flows.
      routesRemoved = removeUnwanted(planFor(next, withDraining(hostSpecOf(expandSupervised(next)), this.dispatcher), this.baseline), this.journal);
    } catch (e) {
      this.log.error({ err: e }, 'some host changes of the old configuration could not be undone');
    }
    // The maps follow the new daemons at once (the timer would within 500 ms).
    this.netfilter?.syncMaps();
    this.watchDraining();
    const after = new Set([...this.dispatcher.tree.daemons()].map((d) => `${d.clusterPort.name} ${d.name}`));
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
    const ids = (): Set<number> => new Set(this.dispatcher.tree.daemonsById.filter((d) => d && d.retired && this.dispatcher.balancer.activeFlows(d.id) > 0).map((d) => d.id));
    this.draining = ids();
    if (this.draining.size === 0 || this.drainTimer !== null) return;
    this.drainTimer = setInterval(() => {
      const now = ids();
      if ([...this.draining].every((id) => now.has(id))) return;
      this.draining = now;
      try {
        const removed = removeUnwanted(planFor(this.current, withDraining(hostSpecOf(expandSupervised(this.current)), this.dispatcher), this.baseline), this.journal);
        this.netfilter?.syncMaps();
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

  /** Stops the daemons hostlb runs (supervised ports), gracefully; call before stop(). */
  async stopDaemons(): Promise<void> {
    await this.health.stop();
  }

  /** Writes the table checkpoint now, all at once (atomically): for the handover, when packets have stopped. */
  checkpoint(): void {
    // The netfilter plane's flows live in conntrack, which outlives hostlb.
    if (this.netfilter) return;
    // No fsync, as for the periodic checkpoint (checkpoint-file.ts): it is for the next process, not the next boot.
    writeFileAtomic(stateFiles(this.current).checkpoint, snapshotTable(this.dispatcher), { sync: false });
  }

  /**
   * Writes the table checkpoint slice by slice between packets (checkpoint-file.ts).
   * Resolves with the records written, or null when one is already being
   * written or the instance stopped meanwhile (the old file stays).
   */
  async checkpointInSlices(): Promise<number | null> {
    if (this.netfilter || this.checkpointing) return null;
    this.checkpointing = true;
    try {
      return await writeCheckpointFile(stateFiles(this.current).checkpoint, this.dispatcher, { proceed: () => !this.stopped });
    } finally {
      this.checkpointing = false;
    }
  }

  private startCheckpoints(): void {
    const seconds = this.current.table.checkpoint;
    if (seconds <= 0 || this.netfilter) return;
    this.checkpointTimer = setInterval(() => {
      this.checkpointInSlices().catch((e: unknown) => this.log.error({ err: e }, 'table checkpoint failed'));
    }, seconds * 1000);
    this.checkpointTimer.unref();
  }

  /**
   * Every RELEASE_CHECK_MS, retired daemons that have held nothing for
   * RELEASE_QUIET_MS give their ids back (Dispatcher.releaseRetired), so the
   * ids — and the netfilter plane's 13-bit marks — do not run out over months
   * of daemons added and removed.
   */
  private startReleases(): void {
    this.releaseTimer = setInterval(() => {
      const held = this.netfilter?.daemonsHeld() ?? null;
      const released = this.dispatcher.releaseRetired(Date.now(), RELEASE_QUIET_MS, (id) => held?.has(id) ?? false);
      if (released.length > 0) this.log.info({ event: 'daemon_ids_released', ids: released }, 'ids of removed daemons released');
    }, RELEASE_CHECK_MS);
    this.releaseTimer.unref();
  }

  /** Checks the host set-up every REPAIR_MS and puts back what vanished (repair.ts). */
  private startRepairs(): void {
    this.repairTimer = setInterval(() => void this.repairOnce(), REPAIR_MS);
    this.repairTimer.unref();
  }

  private async repairOnce(): Promise<void> {
    if (this.repairing || this.stopped) return;
    this.repairing = true;
    try {
      const journal = readJournal(this.journal);
      if (journal === null) return;
      const report = await repairMissing(journal.steps, this.repairAbort.signal);
      if (this.stopped) return;
      for (const [kind, n] of Object.entries(report.repaired)) this.repairs[kind] = (this.repairs[kind] ?? 0) + n;
      if (Object.keys(report.repaired).length > 0) {
        // A flushed nft table came back empty of map elements: write them again.
        if (report.repaired.nft !== undefined) this.netfilter?.resyncMaps();
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

  private readonly repairErrorsLogged = new Map<string, number>();

  /** Stops repairs at once: commands in flight are killed, so nothing comes back after an undo. */
  private stopRepairs(): void {
    if (this.repairTimer !== null) clearInterval(this.repairTimer);
    if (this.releaseTimer !== null) clearInterval(this.releaseTimer);
    this.repairTimer = this.releaseTimer = null;
    this.repairAbort.abort();
  }

  /**
   * Hands the data plane to a new hostlb (`start --takeover`): stops reading,
   * writes a last checkpoint, and lets go of the device without undoing the
   * host set-up, so the new process adopts journal, device and table. The
   * caller exits afterwards.
   */
  handOver(): void {
    if (this.stopped) return;
    this.stopped = true;
    this.stopRepairs();
    if (this.checkpointTimer) clearInterval(this.checkpointTimer);
    this.plane?.stop();
    // Unbinds the queue: until the next owner binds it, the kernel-side hash rule dispatches.
    this.netfilter?.stop();
    this.checkpoint();
    this.health.killAll();
    // The device stays persistent; the journal stays for the next owner.
    this.link?.close();
    this.lock.release();
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
    if (this.checkpointTimer) clearInterval(this.checkpointTimer);
    this.health.killAll();
    void this.health.stop();
    this.plane?.stop();
    this.netfilter?.stop();
    let undone: number | null = null;
    try {
      undone = undoJournal(this.journal);
      // Nothing to adopt after a deliberate stop: its flows ended with the set-up.
      const files = stateFiles(this.current);
      rmSync(files.baseline, { force: true });
      rmSync(files.checkpoint, { force: true });
    } catch (e) {
      // NET_UNDO_FAILED: the journal keeps what is left, for the next start or a person.
      this.log.error({ event: 'undo_failed', err: e, journal: this.journal }, `the host set-up was not completely undone: ${(e as Error).message}`);
      throw e;
    } finally {
      this.link?.setPersist(false);
      this.link?.close();
      this.lock.release();
      this.log.info({ event: 'stopped', undone, undoFailed: undone === null }, 'stopped');
    }
  }
}
