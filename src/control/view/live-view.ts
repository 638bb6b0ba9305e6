// The one picture both live views draw (hostlb top and the web dashboard):
// GET /v1/view, and every second on its event stream. Built from what the
// admin API already serves — the dispatch tree and its counters, the health
// monitor, the supervisors, the event log, the plane's table and counters —
// plus per-second rates and one-minute shares from a RateSampler that samples
// those same counters once a second while hostlb runs.

import { DROP_REASON_NAMES } from '../../dispatch/drop-reason.js';
import type { PlaneCounter } from '../../dataplane/data-plane.js';
import type { Controlled } from '../api/controlled.js';
import { processUse, type ProcessUse } from './process-stats.js';
import { RateSampler, type CounterSample } from './sampler.js';

export type DaemonDisplayState = 'up' | 'slow start' | 'down' | 'draining' | 'quiesced' | 'removed';

export interface DaemonRow {
  daemon: string;
  state: DaemonDisplayState;
  /** Why it is not simply up (health's reason, "weight 0", "removed from the configuration"); '' when up. */
  why: string;
  /** 0..1 through slow start (1 once done). */
  ramp: number;
  configuredWeight: number;
  effectiveWeight: number;
  /** Seconds since its state last changed. */
  sinceSeconds: number;
  health: {
    advisor: 'up' | 'down' | 'unknown' | 'none';
    lastCheck: { ok: boolean; responseMs: number; reason: string } | null;
    responseMs: number | null;
    failures: number;
    flaps: number;
    passive: { down: boolean; reason: string };
  };
  activeFlows: number;
  newFlows: number;
  newPerSecond: number;
  /** Its share (0..1) of the port's new connections over the last minute. */
  share: number;
  /** New connections per interval over the last minute, oldest first (the share chart). */
  series: number[];
}

export interface PortView {
  port: string;
  scheduler: string;
  supervised: boolean;
  daemons: DaemonRow[];
}

export interface ProcessRow {
  port: string;
  index: number;
  daemon: string;
  pid: number | null;
  state: string;
  cpuPercent: number | null;
  rssBytes: number | null;
  restarts: number;
  uptimeSeconds: number | null;
  lastExit: { code: number | null; signal: string | null; at: string } | null;
  /** Its last few output lines. */
  log: string[];
}

export interface ActivityRow {
  port: string;
  daemon: string;
  kind: 'drain' | 'restart' | 'surge';
  phase: string;
  connectionsLeft: number;
  elapsedSeconds: number;
}

export interface LiveViewSnapshot {
  /** ISO time of the snapshot. */
  at: string;
  version: string;
  pid: number;
  uptimeSeconds: number;
  device: string;
  /** Seconds of history behind rates and shares (up to 60). */
  windowSeconds: number;
  dataplane: {
    kind: string;
    table: { records: number; capacity: number | null; limit: number; evictions: number };
    /** The plane's own counters that it keeps (queue verdicts, overruns, socket lookups, ...). */
    counters: Record<string, number>;
    /** Host objects put back after they vanished, by kind. */
    repairs: Record<string, number>;
  };
  totals: { activeFlows: number; newPerSecond: number; daemons: number; up: number };
  ports: PortView[];
  /** Drops and answered packets: every reason seen, its total and its rate now. */
  errors: Array<{ reason: string; total: number; perSecond: number }>;
  processes: ProcessRow[];
  activity: ActivityRow[];
}

const PLANE_COUNTERS: readonly PlaneCounter[] = [
  'link.read', 'link.written', 'link.refused', 'link.superPackets', 'queue.daemon', 'queue.rejected', 'queue.unparsed',
  'conntrack.events', 'conntrack.overruns', 'conntrack.swept', 'socket.matched', 'socket.unassigned', 'socket.taken',
];
const LOG_TAIL = 5;

export class LiveView {
  private readonly sampler = new RateSampler();
  private timer: NodeJS.Timeout | null = null;
  /** Each supervised process's use at the last sample: snapshots show it without reading /proc again. */
  private use = new Map<number, ProcessUse>();

  constructor(private readonly ctl: Controlled, private readonly version: string) {}

  /** Samples now and once a second from now on (the timer does not hold hostlb up). */
  start(): void {
    if (this.timer) return;
    this.sample();
    this.timer = setInterval(() => this.sample(), 1000);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }

  /** Takes one sample of the counters (tests call it in place of the timer). */
  sample(): void {
    this.sampler.add(this.read());
  }

  private read(): CounterSample {
    const { balancer, health } = this.ctl;
    const stats = balancer.stats;
    const newFlows = new Map<string, number>();
    for (const d of balancer.tree.daemonsById) if (d) newFlows.set(`${d.clusterPort.name} ${d.name}`, stats.daemonCounters(d.id).newFlows);
    const events = this.eventTotals();
    this.use = new Map();
    for (const i of health.supervised()) {
      const use = i.pid !== null ? processUse(i.pid) : null;
      if (use) this.use.set(i.pid!, use);
    }
    const cpuSeconds = new Map([...this.use].map(([pid, use]) => [pid, use.cpuSeconds]));
    return { at: performance.now(), newFlows, events, cpuSeconds };
  }

  private answered(): Record<string, number> {
    const s = this.ctl.balancer.stats;
    return {
      resets: s.resetsSent, unreachable: s.unreachableSent, echo_replies: s.echoReplies,
      icmp_translated: s.icmpTranslated, passed_through: s.passedThrough, recovered: s.recovered,
    };
  }

  snapshot(): LiveViewSnapshot {
    const { ctl } = this;
    const { balancer, health, plane } = ctl;
    const now = Date.now();
    const healthOf = new Map(health.monitor.view().map((h) => [`${h.port} ${h.daemon}`, h]));
    const lastEventAt = new Map<string, number>();
    for (const e of health.events.since(0)) lastEventAt.set(`${e.port} ${e.daemon}`, Date.parse(e.at));
    const supervised = health.supervised();
    const supervisedPorts = new Set(supervised.map((i) => i.portName));

    const ports: PortView[] = [];
    let activeTotal = 0;
    let newTotal = 0;
    let up = 0;
    let daemonCount = 0;
    for (const c of balancer.tree.clusters) {
      for (const p of c.ports) {
        // Removed daemons still holding flows are shown until their last flow ends.
        const members = [...p.daemons, ...balancer.tree.daemonsById.filter((d) => d && d.retired && d.clusterPort === p && balancer.activeFlows(d.id) > 0)];
        const keys = members.map((d) => `${p.name} ${d!.name}`);
        const shares = this.sampler.shares(keys);
        const rows = members.map((d, i): DaemonRow => {
          const key = keys[i];
          const h = healthOf.get(key);
          const counters = balancer.stats.daemonCounters(d!.id);
          const state: DaemonDisplayState = d!.retired ? 'removed'
            : h?.state === 'draining' ? 'draining'
              : h !== undefined && h.state === 'down' ? 'down'
                : d!.weight === 0 ? 'quiesced'
                  : h !== undefined && h.ramp < 1 ? 'slow start' : 'up';
          const why = state === 'removed' ? 'removed from the configuration; its flows finish'
            : state === 'quiesced' ? 'weight 0: no new connections'
              : state === 'draining' ? `${health.activity.get(d!.id)?.phase ?? 'drained'}: no new connections, its open ones finish`
                : state === 'up' ? '' : h?.reason ?? '';
          const changed = Math.max(h?.sinceMs ?? 0, lastEventAt.get(key) ?? 0) || ctl.startedAt;
          const newPerSecond = this.sampler.newPerSecond(key);
          activeTotal += counters.activeFlows;
          newTotal += newPerSecond;
          if (!d!.retired) {
            daemonCount++;
            if (state === 'up' || state === 'slow start') up++;
          }
          return {
            daemon: d!.name, state, why,
            ramp: h ? (state === 'slow start' ? h.ramp : state === 'up' ? 1 : h.ramp) : 1,
            configuredWeight: d!.weight,
            effectiveWeight: h ? h.effectiveWeight : d!.weight,
            sinceSeconds: Math.max(0, Math.round((now - changed) / 1000)),
            health: {
              advisor: h?.advisor ?? 'none', lastCheck: h?.lastCheck ?? null, responseMs: h?.responseMs ?? null,
              failures: h?.failures ?? 0, flaps: h?.flaps ?? 0, passive: h?.passive ?? { down: false, reason: '' },
            },
            activeFlows: counters.activeFlows,
            newFlows: counters.newFlows,
            newPerSecond: round(newPerSecond),
            share: round(shares.get(key) ?? 0, 3),
            series: this.sampler.series(key),
          };
        });
        ports.push({ port: p.name, scheduler: p.scheduler, supervised: supervisedPorts.has(p.name), daemons: rows });
      }
    }

    const totals = this.eventTotals();
    const rates = this.sampler.eventsPerSecond();
    const errors = [...totals.entries()].filter(([name, total]) => total > 0 || (rates[name] ?? 0) > 0)
      .map(([reason, total]) => ({ reason, total, perSecond: round(rates[reason] ?? 0) }));

    const processes: ProcessRow[] = supervised.map((i) => {
      const daemon = i.address.includes(':') ? `[${i.address}]:${i.port}` : `${i.address}:${i.port}`;
      // The last sample's reading (at most a second old); a process spawned since is read now.
      const use = i.pid !== null ? this.use.get(i.pid) ?? processUse(i.pid) : null;
      const cpu = i.pid !== null ? this.sampler.cpuPercent(i.pid) : null;
      return {
        port: i.portName, index: i.index, daemon, pid: i.pid, state: i.state,
        cpuPercent: cpu === null ? null : round(cpu),
        rssBytes: use?.rssBytes ?? null,
        restarts: i.restarts,
        uptimeSeconds: i.startedAt !== null ? Math.max(0, Math.round((now - i.startedAt) / 1000)) : null,
        lastExit: i.lastExit && { code: i.lastExit.code, signal: i.lastExit.signal, at: new Date(i.lastExit.at).toISOString() },
        log: health.logs.lines({ instance: daemon, limit: LOG_TAIL }).map((l) => l.text),
      };
    });

    const activity: ActivityRow[] = [...health.activity.entries()].flatMap(([id, a]) => {
      const d = balancer.tree.daemonsById[id];
      if (!d) return [];
      return [{ port: d.clusterPort.name, daemon: d.name, kind: a.kind, phase: a.phase, connectionsLeft: balancer.activeFlows(id), elapsedSeconds: Math.round((now - a.startedAt) / 1000) }];
    });

    const table = plane.table();
    const counters: Record<string, number> = {};
    for (const name of PLANE_COUNTERS) {
      const v = plane.counter(name);
      if (v !== null) counters[name] = v;
    }
    return {
      at: new Date(now).toISOString(),
      version: this.version,
      pid: process.pid,
      uptimeSeconds: Math.round((now - ctl.startedAt) / 1000),
      device: ctl.config.device,
      windowSeconds: Math.round(this.sampler.spanSeconds),
      dataplane: { kind: plane.kind, table: { ...table }, counters, repairs: { ...ctl.repairs } },
      totals: { activeFlows: activeTotal, newPerSecond: round(newTotal), daemons: daemonCount, up },
      ports, errors, processes, activity,
    };
  }

  /** Totals of every drop and answer reason now. */
  private eventTotals(): Map<string, number> {
    const out = new Map<string, number>();
    for (const [name, n] of Object.entries(this.answered())) out.set(`answered.${name}`, n);
    DROP_REASON_NAMES.forEach((name, i) => { if (i > 0) out.set(`drop.${name}`, this.ctl.balancer.stats.drops[i]); });
    return out;
  }
}

function round(n: number, digits = 1): number {
  const f = 10 ** digits;
  return Math.round(n * f) / f;
}
