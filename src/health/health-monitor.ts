// The health layer at run time: for every daemon of every port, an advisor
// (when configured), passive signals from the data path, and the manager's
// factor; together they give each daemon's effective weight, pushed into the
// port's scheduler whenever it changes. Every change of state is an event.
// The configured weights stay as the operator wrote them.

import type { Balancer } from '../dispatch/balancer.js';
import type { ClusterPort, Daemon } from '../dispatch/config-tree.js';
import { D_ACTIVE_FLOWS, D_NEW_FLOWS, D_SYN_ANSWERED, D_SYN_REFUSED, D_SYN_TIME_MS, D_SYNS, DAEMON_COLUMNS } from '../dispatch/stats.js';
import type { AdvisorSpec } from './advisors/advisor.js';
import { HealthCheck } from './health-check.js';
import type { EventLog } from './events.js';
import { computeFactors, effectiveWeight, meanRamp, slowStartRamp, type DaemonSample, type ManagerSpec } from './manager.js';
import { PassiveMonitor } from './passive.js';

export interface PortHealthSpec {
  /** The port's advisor, or undefined for none. */
  advisor?: AdvisorSpec;
  /** Per-daemon advisor overrides, by daemon name ("198.18.2.1:8080"). */
  advisorOverrides: Map<string, Partial<AdvisorSpec>>;
  manager: ManagerSpec;
  passive: { enabled: boolean; grace: number; threshold: number; holdDown: number };
  whenAllDown: 'reject' | 'use';
  /** Called when a daemon goes down and its flows are to be reset (port option downFlows: reset). */
  onDown?: (daemonId: number) => void;
  /** Daemons that start down and join only when their advisor says up (supervised ones). */
  startDown: boolean;
}

export type HealthState = 'up' | 'down' | 'draining';

export interface DaemonHealthView {
  daemon: string;
  port: string;
  state: HealthState;
  /** Why it is in this state, in a few words. */
  reason: string;
  advisor: 'up' | 'down' | 'unknown' | 'none';
  responseMs: number | null;
  configuredWeight: number;
  effectiveWeight: number;
  factor: number;
  /** 0..1: how far through slow start. */
  ramp: number;
  /** The advisor's latest probe, null before the first (or without an advisor). */
  lastCheck: { ok: boolean; responseMs: number; reason: string } | null;
  /** Failed probes in a row now. */
  failures: number;
  /** Times it went from up to down since hostlb started watching it. */
  flaps: number;
  /** Passive signals (refused or unanswered SYNs) hold it out now, and why. */
  passive: { down: boolean; reason: string };
  /** When its state last changed, ms since the epoch. */
  sinceMs: number;
}

interface Entry {
  daemon: Daemon;
  check: HealthCheck | null;
  advisorState: 'up' | 'down' | 'unknown' | 'none';
  passive: PassiveMonitor;
  passiveDownUntil: number;
  passiveReason: string;
  up: boolean;
  upSince: number;
  reason: string;
  /** Operator or rolling restart: no new flows, whatever health says. */
  draining: boolean;
  /** Up → down transitions. */
  flaps: number;
  /** Wall-clock time of the last change of up, down or draining. */
  changedAt: number;
  factor: number;
  effective: number;
  lastNew: number;
  lastAnswered: number;
  lastSynTime: number;
  /** The configured weight at the last sync: the tree changes the Daemon's weight in place. */
  weight: number;
}

interface PortEntry {
  port: ClusterPort;
  spec: PortHealthSpec;
  daemons: Map<number, Entry>;
  lastManagerRun: number;
}

const TICK_MS = 250;

export class HealthMonitor {
  private readonly ports = new Map<number, PortEntry>();
  private timer: NodeJS.Timeout | null = null;

  constructor(
    private readonly balancer: Balancer,
    private readonly events: EventLog,
    private readonly specOf: (port: ClusterPort) => PortHealthSpec,
    private readonly clock: () => number = Date.now,
  ) {}

  /** Starts the tick that reads passive signals and runs the manager. */
  start(): void {
    if (this.timer) return;
    this.sync();
    this.timer = setInterval(() => this.tick(), TICK_MS);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    for (const p of this.ports.values()) for (const e of p.daemons.values()) e.check?.stop();
    this.ports.clear();
  }

  /**
   * After every configuration change: adopt the tree's ports and daemons, keep
   * the state of those that remain, start advisors for new ones, stop those of
   * removed ones, and push weights.
   */
  sync(): void {
    const now = this.clock();
    const seen = new Set<number>();
    for (const cluster of this.balancer.tree.clusters) {
      for (const port of cluster.ports) {
        seen.add(port.id);
        const spec = this.specOf(port);
        let pe = this.ports.get(port.id);
        if (!pe) {
          pe = { port, spec, daemons: new Map(), lastManagerRun: now };
          this.ports.set(port.id, pe);
        }
        const advisorChanged = JSON.stringify(pe.spec.advisor) !== JSON.stringify(spec.advisor) ||
          JSON.stringify([...pe.spec.advisorOverrides]) !== JSON.stringify([...spec.advisorOverrides]);
        pe.port = port;
        pe.spec = spec;
        const live = new Set<number>();
        for (const daemon of port.daemons) {
          live.add(daemon.id);
          let e = pe.daemons.get(daemon.id);
          if (e && advisorChanged) {
            e.check?.stop();
            e.check = null;
          }
          if (!e) {
            e = this.newEntry(daemon, spec, now);
            pe.daemons.set(daemon.id, e);
            if (e.up) this.emit('daemon_up', pe, e, 'added');
          }
          // Back from quiesce (weight 0 → more): slow start again, as after coming up or a restart.
          if (e.weight === 0 && daemon.weight > 0 && e.up) e.upSince = now;
          e.weight = daemon.weight;
          e.daemon = daemon;
          if (!e.check && spec.advisor) this.startCheck(pe, e);
          if (!spec.advisor) e.advisorState = 'none';
        }
        for (const [id, e] of pe.daemons) {
          if (!live.has(id)) {
            e.check?.stop();
            pe.daemons.delete(id);
          }
        }
        this.pushWeights(pe, now);
      }
    }
    for (const [id, pe] of this.ports) {
      if (!seen.has(id)) {
        for (const e of pe.daemons.values()) e.check?.stop();
        this.ports.delete(id);
      }
    }
  }

  /** Drain (true) or release (false) a daemon without touching its configured weight (rolling restarts). */
  setDraining(daemonId: number, draining: boolean): void {
    for (const pe of this.ports.values()) {
      const e = pe.daemons.get(daemonId);
      if (!e || e.draining === draining) continue;
      e.draining = draining;
      e.changedAt = Date.now();
      if (!draining) e.upSince = this.clock(); // back from a restart: slow start again
      this.pushWeights(pe, this.clock());
    }
  }

  /** A daemon restarted by the supervisor: forget passive history, wait for the advisor again. */
  restarted(daemonId: number): void {
    for (const pe of this.ports.values()) {
      const e = pe.daemons.get(daemonId);
      if (!e) continue;
      this.resetPassive(e, this.clock());
      if (pe.spec.startDown && (e.check || e.advisorState === 'down')) {
        // A fresh process: probe it from scratch, and keep it out until the advisor says up.
        e.check?.stop();
        e.check = null;
        e.advisorState = 'unknown';
        this.startCheck(pe, e);
        this.evaluate(pe, e, 'restarted', this.clock());
      }
    }
  }

  /** True when the daemon is up (its advisor, passive signals and drain all allow new flows). */
  /**
   * A supervised daemon's process exited: out at once, without waiting for
   * the advisor to notice (a socket hostlb passed it keeps accepting
   * connections into its backlog while no process serves them). restarted()
   * brings its checks back with the next process.
   */
  exited(daemonId: number): void {
    for (const pe of this.ports.values()) {
      const e = pe.daemons.get(daemonId);
      if (!e || !pe.spec.startDown || !e.check) continue;
      e.check.stop();
      e.check = null;
      e.advisorState = 'down';
      this.evaluate(pe, e, 'process exited', this.clock());
    }
  }

  isUp(daemonId: number): boolean {
    for (const pe of this.ports.values()) {
      const e = pe.daemons.get(daemonId);
      if (e) return e.up;
    }
    return false;
  }

  view(): DaemonHealthView[] {
    const now = this.clock();
    const out: DaemonHealthView[] = [];
    for (const pe of this.ports.values()) {
      for (const e of pe.daemons.values()) {
        out.push({
          daemon: e.daemon.name,
          port: pe.port.name,
          state: e.draining ? 'draining' : e.up ? 'up' : 'down',
          reason: e.reason,
          advisor: e.advisorState,
          responseMs: e.check?.smoothedMs !== undefined && Number.isFinite(e.check.smoothedMs) ? Math.round(e.check.smoothedMs * 10) / 10 : null,
          configuredWeight: e.daemon.weight,
          effectiveWeight: e.effective,
          factor: Math.round(e.factor * 1000) / 1000,
          ramp: e.up ? Math.round(slowStartRamp(now - e.upSince, pe.spec.manager.slowStart) * 100) / 100 : 0,
          lastCheck: e.check?.lastResult ? { ok: e.check.lastResult.ok, responseMs: Math.round(e.check.lastResult.responseMs * 10) / 10, reason: e.check.lastResult.reason } : null,
          failures: e.check?.consecutiveFail ?? 0,
          flaps: e.flaps,
          passive: { down: now < e.passiveDownUntil, reason: now < e.passiveDownUntil ? e.passiveReason : '' },
          sinceMs: e.changedAt,
        });
      }
    }
    return out;
  }

  private newEntry(daemon: Daemon, spec: PortHealthSpec, now: number): Entry {
    const s = this.balancer.stats.daemon;
    const b = daemon.id * DAEMON_COLUMNS;
    const up = !spec.startDown;
    const entry: Entry = {
      daemon, check: null, advisorState: spec.advisor ? 'unknown' : 'none',
      passive: new PassiveMonitor({ grace: spec.passive.grace, threshold: spec.passive.threshold }),
      passiveDownUntil: 0, passiveReason: '',
      up, upSince: now, reason: up ? 'added' : 'waiting for its advisor',
      // -1: nothing pushed yet, so the first pushWeights() always reaches the scheduler.
      draining: false, flaps: 0, changedAt: Date.now(), factor: 1, effective: -1,
      lastNew: s[b + D_NEW_FLOWS], lastAnswered: s[b + D_SYN_ANSWERED], lastSynTime: s[b + D_SYN_TIME_MS],
      weight: daemon.weight,
    };
    this.resetPassive(entry, now);
    return entry;
  }

  /**
   * Forgets a daemon's passive history and takes its counters now as the
   * baseline: SYNs sent before the next tick (up to 250 ms of them, right after
   * hostlb starts or the daemon comes back) are judged like any later ones.
   */
  private resetPassive(e: Entry, now: number): void {
    const s = this.balancer.stats.daemon;
    const b = e.daemon.id * DAEMON_COLUMNS;
    e.passive.reset();
    e.passive.observe(now, s[b + D_SYNS], s[b + D_SYN_ANSWERED], s[b + D_SYN_REFUSED]);
  }

  private startCheck(pe: PortEntry, e: Entry): void {
    const base = pe.spec.advisor!;
    const spec = { ...base, ...(pe.spec.advisorOverrides.get(e.daemon.name) ?? {}) } as AdvisorSpec;
    const target = { address: e.daemon.address.text, port: e.daemon.port };
    e.check = new HealthCheck(target, spec, (state, result) => {
      this.evaluate(pe, e, state === 'down' ? `${spec.type} advisor: ${result.reason}` : `${spec.type} advisor up`, this.clock());
    });
    e.check.start();
  }

  /** Recomputes whether `e` is up; on a change, emits an event and pushes weights. */
  private evaluate(pe: PortEntry, e: Entry, why: string, now: number): void {
    const passiveDown = now < e.passiveDownUntil;
    if (e.check) e.advisorState = e.check.state;
    const advisorOk = e.advisorState === 'up' || e.advisorState === 'none' || (e.advisorState === 'unknown' && !pe.spec.startDown);
    const up = advisorOk && !passiveDown;
    if (up !== e.up) {
      e.up = up;
      e.changedAt = Date.now();
      if (!up) e.flaps++;
      if (up) {
        e.upSince = now;
        this.resetPassive(e, now);
      }
      e.reason = up ? why : passiveDown ? e.passiveReason : why;
      this.emit(up ? 'daemon_up' : 'daemon_down', pe, e, e.reason);
      if (!up) pe.spec.onDown?.(e.daemon.id);
      this.pushWeights(pe, now);
    }
  }

  private tick(): void {
    const now = this.clock();
    const s = this.balancer.stats.daemon;
    for (const pe of this.ports.values()) {
      for (const e of pe.daemons.values()) {
        const b = e.daemon.id * DAEMON_COLUMNS;
        if (pe.spec.passive.enabled && e.up) {
          const verdict = e.passive.observe(now, s[b + D_SYNS], s[b + D_SYN_ANSWERED], s[b + D_SYN_REFUSED]);
          if (verdict !== null) {
            // With an advisor, it returns when the advisor says up after the hold-down; without one, after it.
            e.passiveDownUntil = now + pe.spec.passive.holdDown * 1000;
            e.passiveReason = verdict === 'refuses' ? 'refuses new connections (RST to SYN)' : 'ignores new connections (SYNs unanswered)';
            this.evaluate(pe, e, e.passiveReason, now);
          }
        } else if (!e.up && e.passiveDownUntil !== 0 && now >= e.passiveDownUntil) {
          e.passiveDownUntil = 0;
          this.evaluate(pe, e, 'passive hold-down over', now);
        }
      }
      if (now - pe.lastManagerRun >= pe.spec.manager.interval * 1000) {
        const since = pe.lastManagerRun;
        pe.lastManagerRun = now;
        this.runManager(pe, since, now);
      }
      // Slow start advances with time, not only with events.
      if ([...pe.daemons.values()].some((e) => e.up && now - e.upSince < pe.spec.manager.slowStart * 1000 + TICK_MS)) this.pushWeights(pe, now);
    }
  }

  private runManager(pe: PortEntry, since: number, now: number): void {
    const s = this.balancer.stats.daemon;
    const entries = [...pe.daemons.values()];
    const slowStart = pe.spec.manager.slowStart;
    const samples: DaemonSample[] = entries.map((e) => {
      const b = e.daemon.id * DAEMON_COLUMNS;
      const newFlows = s[b + D_NEW_FLOWS] - e.lastNew;
      const answered = s[b + D_SYN_ANSWERED] - e.lastAnswered;
      const synTime = s[b + D_SYN_TIME_MS] - e.lastSynTime;
      e.lastNew = s[b + D_NEW_FLOWS];
      e.lastAnswered = s[b + D_SYN_ANSWERED];
      e.lastSynTime = s[b + D_SYN_TIME_MS];
      return {
        active: s[b + D_ACTIVE_FLOWS],
        // New flows per unit of the weight it was given: a daemon meant to take twice the share is not "busier"
        // for doing so, nor is one in slow start idle for taking the small share the ramp allows it.
        newFlows: rampedFlows(newFlows, Math.max(1, e.daemon.weight) * meanRamp(since, now, e.upSince, slowStart)),
        responseMs: e.check?.smoothedMs ?? NaN,
        handshakeMs: answered > 0 ? synTime / answered : NaN,
      };
    });
    if (!pe.spec.manager.enabled) return;
    const live = entries.map((e, i) => ({ e, i })).filter(({ e }) => e.up && !e.draining && e.daemon.weight > 0);
    const factors = computeFactors(live.map(({ e, i }) => ({ ...samples[i], active: samples[i].active / (Math.max(1, e.daemon.weight) * slowStartRamp(now - e.upSince, slowStart)) })), live.map(({ e }) => e.factor), pe.spec.manager);
    // Slow start is a promise to the daemon: while it ramps the manager may lower its factor, never raise it.
    live.forEach(({ e }, k) => { e.factor = now - e.upSince < slowStart * 1000 ? Math.min(e.factor, factors[k]) : factors[k]; });
    this.pushWeights(pe, now);
  }

  /** Effective weights → the port's scheduler, when any changed; weight events for real changes. */
  private pushWeights(pe: PortEntry, now: number): void {
    const entries = [...pe.daemons.values()];
    const allDown = entries.length > 0 && entries.every((e) => !e.up || e.draining);
    const useAnyway = allDown && pe.spec.whenAllDown === 'use';
    let changed = false;
    const weights = new Map<number, number>();
    for (const e of entries) {
      const usable = (e.up || useAnyway) && !e.draining;
      const factor = pe.spec.manager.enabled ? e.factor : 1;
      const ramp = e.up ? slowStartRamp(now - e.upSince, pe.spec.manager.slowStart) : 1;
      const w = usable ? effectiveWeight(e.daemon.weight, factor, ramp) : 0;
      if (w !== e.effective) {
        // Only moves of a quarter or more are events; the manager's small steps would drown the log.
        // Slow start's steady climb is not news either: its start is the daemon_up event.
        if (ramp === 1 && e.effective > 0 && w > 0 && Math.abs(w - e.effective) / e.effective >= 0.25) {
          this.events.emitEvent({ type: 'weight_changed', port: pe.port.name, daemon: e.daemon.name, weight: w, previousWeight: e.effective });
        }
        e.effective = w;
        changed = true;
      }
      weights.set(e.daemon.id, w);
    }
    if (changed) this.balancer.setWeights(pe.port, weights);
  }

  private emit(type: 'daemon_up' | 'daemon_down', pe: PortEntry, e: Entry, reason: string): void {
    this.events.emitEvent({ type, port: pe.port.name, daemon: e.daemon.name, reason });
  }
}

/** Flows per unit of the weight a daemon was given; unknown (NaN) when it was given none (it just came back). */
function rampedFlows(flows: number, given: number): number {
  return given > 0 ? flows / given : NaN;
}
