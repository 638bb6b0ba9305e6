// The health layer wired into a running instance: events, the health monitor
// (advisors, passive signals, manager → effective weights), the supervisors of
// ports that run their own daemons, drains and rolling restarts. The instance
// calls sync() after every configuration change and stop() at the end.

import { readFileSync, rmSync } from 'node:fs';
import { basename, join } from 'node:path';
import type { ClusterPort, DispatchSpec } from '../dispatch/config-tree.js';
import type { DataPlane } from '../dataplane/data-plane.js';
import type { Balancer } from '../dispatch/balancer.js';
import { D_ACTIVE_FLOWS, DAEMON_COLUMNS } from '../dispatch/stats.js';
import { HostlbError } from '../errors.js';
import { advisorSpec, type AdvisorSpec } from '../health/advisors/advisor.js';
import { EventLog } from '../health/events.js';
import { HealthMonitor, type PortHealthSpec } from '../health/health-monitor.js';
import { InstanceLogs } from '../health/instance-logs.js';
import { resolveRunAs, runsAsRoot } from '../health/run-as.js';
import { daemonEndpoints, Supervisor, type InstanceInfo } from '../health/supervisor.js';
import { stillAlive } from '../net/apply.js';
import { writeFileAtomic } from '../net/state-files.js';
import { formatEndpoint, parseEndpoint, parseIp } from '../wire/address.js';
import type { HostlbConfig } from './config-schema.js';
import type { Logger } from './logger.js';

type PortConf = HostlbConfig['clusters'][number]['ports'][number];

/** `<stateDir>/<device>.daemons.json`: the hostlb that started them, and each daemon's PID and command. */
interface DaemonPids {
  owner: number;
  daemons: Array<{ pid: number; command: string }>;
}

/** "198.18.100.1:80/tcp", as ClusterPort.name writes it. */
export function portName(clusterAddress: string, port: PortConf): string {
  const address = parseIp(clusterAddress)!;
  return `${formatEndpoint({ address, port: port.port })}/${port.protocol}`;
}

/**
 * The dispatcher's view of a configuration: supervised ports get their daemons
 * from the supervisor's endpoints, and every port answers a new flow it cannot
 * place with a RST or ICMP port unreachable instead of silence.
 */
export function dispatchSpecOf(config: HostlbConfig): DispatchSpec {
  return {
    clusters: config.clusters.map((c) => ({
      address: c.address,
      ports: c.ports.map((p) => ({
        port: p.port,
        protocol: p.protocol,
        scheduler: p.scheduler,
        rejectWhenEmpty: true,
        daemons: p.supervise
          ? daemonEndpoints(p.supervise).map((e) => ({ address: formatEndpoint({ address: parseIp(e.address)!, port: e.port }), weight: 1 }))
          : p.daemons.map((d) => ({ address: d.address, weight: d.weight })),
      })),
    })),
  };
}

/** The configuration with supervised daemons listed, for the network plan and `config show`. */
export function expandSupervised(config: HostlbConfig): HostlbConfig {
  const spec = dispatchSpecOf(config);
  return {
    ...config,
    clusters: config.clusters.map((c, ci) => ({
      ...c,
      ports: c.ports.map((p, pi) => (p.supervise ? { ...p, daemons: spec.clusters[ci].ports[pi].daemons.map((d) => ({ address: d.address, weight: d.weight ?? 1 })) } : p)),
    })),
  };
}

/** An advisor as the config writes it (user and group by name) → the spec probes take (runAs by id). */
function toAdvisor(a: NonNullable<PortConf['advisor']>): AdvisorSpec {
  const { user, group, ...rest } = a;
  return advisorSpec({ ...rest, runAs: resolveRunAs(user, group) } as Parameters<typeof advisorSpec>[0]);
}

/** A per-daemon override, with its user and group resolved when it names them. */
function toOverride(o: NonNullable<PortConf['daemons'][number]['advisor']>): Partial<AdvisorSpec> {
  const { user, group, ...rest } = o;
  return user === undefined && group === undefined ? rest as Partial<AdvisorSpec> : { ...rest, runAs: resolveRunAs(user, group) } as Partial<AdvisorSpec>;
}

/** Something being done to a daemon: an operator's drain, a rolling restart, a surge instance. */
export interface Activity {
  kind: 'drain' | 'restart' | 'surge';
  /** Where it is: "draining", "restarting", "waiting for health", ... */
  phase: string;
  /** ms since the epoch. */
  startedAt: number;
}

/** The longest a shrinking port waits for the instances it stops to finish their connections. */
const RESIZE_DRAIN_MS = 30_000;

/** Two supervise sections that differ in `instances` alone (`spec` as JSON, as the runtime keeps it). */
function sameButInstances(next: NonNullable<PortConf['supervise']>, spec: string): boolean {
  const running = JSON.parse(spec) as NonNullable<PortConf['supervise']>;
  return running.instances !== next.instances && JSON.stringify({ ...running, instances: next.instances }) === JSON.stringify(next);
}

/** `<stateDir>/<device>.daemons.json`: where an instance records the PIDs of the daemons it runs. */
export function daemonPidsPath(stateDir: string, device: string): string {
  return join(stateDir, `${device}.daemons.json`);
}

/**
 * Ends (SIGKILL) the daemons recorded in `pidFile` by a hostlb that is gone,
 * and removes the record; returns how many it ended. Only PIDs whose command
 * line still names the recorded command, so a reused PID is left alone; none
 * while the hostlb that recorded them runs.
 */
export function endLeftoverDaemons(pidFile: string, log: Pick<Logger, 'info' | 'warn'>): number {
  let recorded: DaemonPids;
  try {
    recorded = JSON.parse(readFileSync(pidFile, 'utf8')) as DaemonPids;
    if (!Number.isInteger(recorded.owner) || recorded.owner < 1 || !Array.isArray(recorded.daemons)) throw new Error('not a PID record');
  } catch {
    return 0;
  }
  if (recorded.owner !== process.pid && stillAlive(recorded.owner, 0)) {
    log.warn({ file: pidFile, owner: recorded.owner }, 'the supervised daemons recorded here belong to a running hostlb; left alone');
    return 0;
  }
  let ended = 0;
  for (const { pid, command } of recorded.daemons) {
    try {
      if (!Number.isInteger(pid) || pid < 2 || typeof command !== 'string') continue;
      const cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
      if (!cmdline.some((arg) => arg === command || arg.endsWith(`/${command}`))) continue;
      process.kill(pid, 'SIGKILL');
      ended++;
      log.info({ pid, command }, 'ended a daemon left by an earlier run');
    } catch {
      // Gone already.
    }
  }
  rmSync(pidFile, { force: true });
  return ended;
}

/** Polls `test` every 100 ms; resolves true once it holds, false after `timeoutMs`. */
export function waitFor(test: () => boolean, timeoutMs: number): Promise<boolean> {
  return new Promise((resolve) => {
    const started = Date.now();
    const poll = (): void => {
      if (test()) return resolve(true);
      if (Date.now() - started >= timeoutMs) return resolve(false);
      setTimeout(poll, 100);
    };
    poll();
  });
}

export class HealthRuntime {
  readonly events = new EventLog();
  readonly monitor: HealthMonitor;
  /** What supervised daemons print: per instance, in memory and in files under the state directory. */
  readonly logs: InstanceLogs;
  private readonly supervisors = new Map<string, { supervisor: Supervisor; spec: string }>();
  private config: HostlbConfig;
  private drainWatch: NodeJS.Timeout | null = null;
  private readonly drainWaiting = new Set<number>();
  /** Drains and rollouts in progress, by daemon id (the live views' "in progress" panel). */
  readonly activity = new Map<number, Activity>();

  /**
   * `plane` ends a down daemon's flows (downFlows: reset) and says when
   * nothing but the counts holds a daemon busy: a plane whose flows the
   * kernel carries asks it before a drain is over, since a connection the
   * kernel carries to the daemon without hostlb having counted it must not be
   * cut by the daemon's stop.
   */
  constructor(private readonly balancer: Balancer, private readonly plane: Pick<DataPlane, 'resetDaemonFlows' | 'nothingLive'>, config: HostlbConfig, private readonly log: Logger) {
    this.config = config;
    this.monitor = new HealthMonitor(balancer, this.events, (port) => this.specOf(port));
    this.logs = new InstanceLogs(join(config.stateDir, `${config.device}.logs`));
    this.events.on('event', (e) => this.log.info({ ...e, event: e.type }, `daemon event: ${e.type}`));
  }

  start(): void {
    this.killLeftovers();
    this.warnExecAsRoot();
    this.syncSupervisors();
    this.monitor.start();
  }

  /** One warning per port whose exec advisor (or a daemon's exec override) would run its command as root. */
  private warnExecAsRoot(): void {
    for (const c of this.config.clusters) {
      for (const p of c.ports) {
        const advisors = [p.advisor, ...p.daemons.map((d) => (d.advisor ? { ...p.advisor, ...d.advisor } : undefined))];
        const asRoot = advisors.some((a) => a?.type === 'exec' && runsAsRoot(resolveRunAs(a.user, a.group)));
        if (asRoot) this.log.warn({ event: 'runs_as_root', port: portName(c.address, p), advisor: 'exec' }, `the exec advisor of ${portName(c.address, p)} runs its command as root: set advisor.user (and group) to an unprivileged user`);
      }
    }
  }

  /**
   * Where the PIDs of supervised daemons are kept, so a crashed hostlb's
   * daemons are ended at the next start. Named after the device: instances
   * that share a stateDir must never end each other's daemons.
   */
  private get pidFile(): string {
    return daemonPidsPath(this.config.stateDir, this.config.device);
  }

  /** Every supervised instance now, by port name: its address, port, PID (null while not running), state, restarts and last exit. */
  supervised(): Array<InstanceInfo & { portName: string }> {
    const out: Array<InstanceInfo & { portName: string }> = [];
    for (const [portName, { supervisor }] of this.supervisors) {
      for (const i of supervisor.instances()) out.push({ portName, ...i });
    }
    return out;
  }

  /** Marks (or with `phase` null, clears) what is being done to a daemon, for the live views. */
  noteActivity(daemonId: number, kind: Activity['kind'], phase: string | null): void {
    if (phase === null) {
      this.activity.delete(daemonId);
      return;
    }
    const now = this.activity.get(daemonId);
    this.activity.set(daemonId, { kind, phase, startedAt: now?.kind === kind ? now.startedAt : Date.now() });
  }

  private writePids(): void {
    const daemons: Array<{ pid: number; command: string }> = [];
    for (const { supervisor, spec } of this.supervisors.values()) {
      const command = (JSON.parse(spec) as { command: string }).command;
      for (const i of supervisor.instances()) if (i.pid) daemons.push({ pid: i.pid, command });
    }
    const record: DaemonPids = { owner: process.pid, daemons };
    try {
      writeFileAtomic(this.pidFile, JSON.stringify(record));
    } catch (e) {
      this.log.warn({ err: e, file: this.pidFile }, 'cannot record supervised daemon PIDs');
    }
  }

  /** Daemons a crashed hostlb started still hold their addresses: end them before starting new ones. */
  private killLeftovers(): void {
    endLeftoverDaemons(this.pidFile, this.log);
  }

  /** After the dispatcher took a new configuration. */
  sync(config: HostlbConfig): void {
    this.config = config;
    this.syncSupervisors();
    this.monitor.sync();
  }

  /**
   * Drains every supervised daemon — no new connection, and up to `timeoutMs`
   * for the ones they hold to end — before they are told to stop: a daemon
   * that exits at once on SIGTERM (Python's http.server does) then cuts no
   * request. Resolves true when every one is idle.
   */
  async drainSupervised(timeoutMs: number): Promise<boolean> {
    const ids: number[] = [];
    for (const name of this.supervisors.keys()) {
      for (const d of this.findPort(name)?.daemons ?? []) {
        this.monitor.setDraining(d.id, true);
        ids.push(d.id);
      }
    }
    if (ids.length === 0) return true;
    return waitFor(() => ids.every((id) => this.balancer.activeFlows(id) === 0 && this.plane.nothingLive(id)), timeoutMs);
  }

  async stop(): Promise<void> {
    this.monitor.stop();
    if (this.drainWatch) clearInterval(this.drainWatch);
    await Promise.all([...this.supervisors.values()].map((s) => s.supervisor.stop()));
    this.supervisors.clear();
    this.logs.close();
    if (this.ownsPidFile()) rmSync(this.pidFile, { force: true });
  }

  /** The PID file is this process's (or there is none): a hostlb refused at start must not remove a running one's. */
  private ownsPidFile(): boolean {
    try {
      return (JSON.parse(readFileSync(this.pidFile, 'utf8')) as DaemonPids).owner === process.pid;
    } catch {
      return true;
    }
  }

  /** Stops supervised daemons synchronously enough for an exit path: SIGKILL to any still running. */
  killAll(): void {
    for (const { supervisor } of this.supervisors.values()) {
      for (const i of supervisor.instances()) if (i.pid) try { process.kill(i.pid, 'SIGKILL'); } catch { /* already gone */ }
    }
  }

  /** Watches a quiesced daemon and emits `daemon_drained` when its last active flow ends. */
  watchDrain(daemonId: number): void {
    this.drainWaiting.add(daemonId);
    this.noteActivity(daemonId, 'drain', 'draining');
    if (this.drainWatch) return;
    this.drainWatch = setInterval(() => {
      const stats = this.balancer.stats.daemon;
      for (const id of this.drainWaiting) {
        if (stats[id * DAEMON_COLUMNS + D_ACTIVE_FLOWS] > 0 || !this.plane.nothingLive(id)) continue;
        this.drainWaiting.delete(id);
        if (this.activity.get(id)?.kind === 'drain') this.noteActivity(id, 'drain', null);
        const d = this.balancer.tree.daemonsById[id];
        if (d) this.events.emitEvent({ type: 'daemon_drained', port: d.clusterPort.name, daemon: d.name });
      }
      if (this.drainWaiting.size === 0 && this.drainWatch) {
        clearInterval(this.drainWatch);
        this.drainWatch = null;
      }
    }, 250);
    this.drainWatch.unref();
  }

  /**
   * Rolling restart of a supervised port: for each daemon in turn, drain (no
   * new flows), wait for its flows to end (at most `drainTimeout` s), stop,
   * start, wait for its advisor to say up (at most `upTimeout` s), then let it
   * back in with slow start. Resolves when every daemon has been restarted
   * (the first `instances` only, when given: a surge instance is not);
   * rejects with RESTART_FAILED naming the daemon that did not come back.
   */
  async rollingRestart(name: string, options: { drainTimeout?: number; upTimeout?: number; instances?: number } = {}): Promise<{ restarted: string[] }> {
    const entry = this.supervisors.get(name);
    if (!entry) throw new HostlbError('NOT_SUPERVISED', `port ${name} does not run its daemons (no supervise section); restart them yourself`);
    const port = this.findPort(name);
    const restarted: string[] = [];
    for (const inst of entry.supervisor.instances().slice(0, options.instances)) {
      const daemon = port?.daemons.find((d) => d.address.text === inst.address && d.port === inst.port);
      if (!daemon) continue;
      this.monitor.setDraining(daemon.id, true);
      this.noteActivity(daemon.id, 'restart', 'draining');
      await waitFor(() => this.balancer.activeFlows(daemon.id) === 0 && this.plane.nothingLive(daemon.id), (options.drainTimeout ?? 30) * 1000);
      this.events.emitEvent({ type: 'daemon_drained', port: name, daemon: daemon.name });
      this.noteActivity(daemon.id, 'restart', 'restarting');
      let up = false;
      try {
        await entry.supervisor.restartInstance(inst.index);
        this.monitor.restarted(daemon.id);
        this.noteActivity(daemon.id, 'restart', 'waiting for its health check');
        up = await waitFor(() => this.monitor.isUp(daemon.id), (options.upTimeout ?? 30) * 1000);
      } finally {
        this.noteActivity(daemon.id, 'restart', null);
      }
      this.monitor.setDraining(daemon.id, false);
      if (!up) throw new HostlbError('RESTART_FAILED', `${daemon.name} did not come back up within ${options.upTimeout ?? 30} s after its restart; the rolling restart stopped there`);
      this.events.emitEvent({ type: 'daemon_restarted', port: name, daemon: daemon.name });
      restarted.push(daemon.name);
    }
    return { restarted };
  }

  private findPort(name: string): ClusterPort | undefined {
    for (const c of this.balancer.tree.clusters) for (const p of c.ports) if (p.name === name) return p;
    return undefined;
  }

  private portConf(port: ClusterPort): PortConf | undefined {
    for (const c of this.config.clusters) for (const p of c.ports) if (portName(c.address, p) === port.name) return p;
    return undefined;
  }

  private specOf(port: ClusterPort): PortHealthSpec {
    const conf = this.portConf(port);
    const overrides = new Map<string, Partial<AdvisorSpec>>();
    for (const d of conf?.daemons ?? []) {
      if (d.advisor) overrides.set(formatEndpoint(parseEndpoint(d.address)!), toOverride(d.advisor));
    }
    // A supervised daemon is probed with at least a TCP connect: it must not get flows before it listens.
    const advisor = conf?.advisor ? toAdvisor(conf.advisor) : conf?.supervise ? advisorSpec({ type: 'tcp', interval: 0.5, timeout: 0.5, rise: 1, fall: 2 }) : undefined;
    return {
      advisor,
      advisorOverrides: overrides,
      manager: conf?.manager ?? { enabled: false, interval: 2, proportions: { active: 0.5, new: 0.5, response: 0, passive: 0 }, smoothing: 0.5, slowStart: 0, minFactor: 0.1, maxFactor: 10 },
      passive: conf?.passive ?? { enabled: true, grace: 1, threshold: 3, holdDown: 5 },
      whenAllDown: conf?.whenAllDown ?? 'reject',
      onDown: conf?.downFlows === 'reset' ? (id) => {
        const ended = this.plane.resetDaemonFlows(id);
        this.log.info({ event: 'daemon_flows_reset', port: port.name, daemon: this.balancer.tree.daemonsById[id]?.name, flows: ended }, 'flows of a down daemon reset');
      } : undefined,
      startDown: conf?.supervise !== undefined,
    };
  }

  private syncSupervisors(): void {
    const wanted = new Map<string, PortConf>();
    for (const c of this.config.clusters) for (const p of c.ports) if (p.supervise) wanted.set(portName(c.address, p), p);
    for (const [name, entry] of this.supervisors) {
      const p = wanted.get(name);
      if (p && sameButInstances(p.supervise!, entry.spec)) {
        // Only the count changed: the instances both counts have keep running.
        entry.spec = JSON.stringify(p.supervise);
        void this.resize(name, entry.supervisor, p.supervise!.instances);
        continue;
      }
      if (!p || JSON.stringify(p.supervise) !== entry.spec) {
        void entry.supervisor.stop();
        this.supervisors.delete(name);
      }
    }
    for (const [name, p] of wanted) {
      if (this.supervisors.has(name)) continue;
      const s = p.supervise!;
      const runAs = resolveRunAs(s.user, s.group);
      if (runsAsRoot(runAs)) this.log.warn({ event: 'runs_as_root', port: name, command: s.command }, `the supervised daemons of ${name} run as root: set supervise.user (and group) to an unprivileged user`);
      const supervisor = new Supervisor({ ...s, stopTimeout: s.stopTimeout, runAs }, { logger: this.log });
      supervisor.on('spawned', (index: number, pid: number) => this.supervisorEvent(name, index, 'daemon_started', `pid ${pid}`));
      supervisor.on('exited', (index: number, code: number | null, signal: string | null) => this.supervisorEvent(name, index, 'daemon_exited', signal ? `killed by ${signal}` : `exit code ${code}`));
      // Their output goes to their own logs (hostlb logs), not into hostlb's.
      const program = s.env.HOSTLB_NAME ?? basename(s.command);
      supervisor.on('output', (index, stream, pid, text) => {
        const inst = supervisor.instances()[index];
        const daemon = inst ? formatEndpoint({ address: parseIp(inst.address)!, port: inst.port }) : `#${index}`;
        this.logs.add({ name: program, port: name, index, daemon, pid, stream, text });
      });
      this.supervisors.set(name, { supervisor, spec: JSON.stringify(s) });
      supervisor.start();
    }
  }

  /**
   * Grows at once; shrinks only after the instances that go have drained —
   * the dispatcher retired them with the configuration change, so no new
   * connection reaches them — or RESIZE_DRAIN_MS has passed: a kept-alive
   * connection is not cut by a smaller count.
   */
  private async resize(name: string, supervisor: Supervisor, instances: number): Promise<void> {
    const going = supervisor.instances().slice(instances);
    if (going.length > 0) {
      const retired = this.balancer.tree.daemonsById.filter((d) => d?.retired && d.clusterPort.name === name
        && going.some((i) => formatEndpoint({ address: parseIp(i.address)!, port: i.port }) === d.name));
      await waitFor(() => retired.every((d) => this.balancer.activeFlows(d!.id) === 0 && this.plane.nothingLive(d!.id)), RESIZE_DRAIN_MS);
    }
    try {
      await supervisor.resize(instances);
    } catch (e) {
      this.log.error({ err: e, port: name, instances }, 'the supervised instances could not be resized');
    }
    this.writePids();
  }

  private supervisorEvent(portName: string, index: number, type: 'daemon_started' | 'daemon_exited', reason: string): void {
    this.writePids();
    const entry = this.supervisors.get(portName);
    const inst = entry?.supervisor.instances().find((i) => i.index === index);
    const daemon = inst ? formatEndpoint({ address: parseIp(inst.address)!, port: inst.port }) : `#${index}`;
    this.events.emitEvent({ type, port: portName, daemon, reason });
    const port = this.findPort(portName);
    const d = port?.daemons.find((x) => x.name === daemon);
    if (d === undefined) return;
    if (type === 'daemon_started') this.monitor.restarted(d.id);
    else this.monitor.exited(d.id);
  }
}
