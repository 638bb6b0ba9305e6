// Prometheus metrics (prom-client), read from the Balancer's and the plane's counters at
// scrape time: nothing is counted twice and the packet path never calls into
// prom-client. Names follow Prometheus conventions: hostlb_ prefix, _total
// for counters, base units (bytes).

import { Counter, Gauge, Registry, collectDefaultMetrics } from 'prom-client';
import type { DataPlane, PlaneCounter } from '../dataplane/data-plane.js';
import type { Balancer } from '../dispatch/balancer.js';
import type { Daemon } from '../dispatch/config-tree.js';
import type { DaemonHealthView } from '../health/health-monitor.js';
import type { HealthRuntime } from './health-runtime.js';
import { DROP_REASON_NAMES } from '../dispatch/drop-reason.js';
import { D_ACTIVE_FLOWS, D_BYTES_IN, D_BYTES_OUT, D_NEW_FLOWS, D_PACKETS_IN, D_PACKETS_OUT, DAEMON_COLUMNS } from '../dispatch/stats.js';

export interface MetricsSource {
  readonly balancer: Balancer;
  readonly health?: HealthRuntime;
  /** Where the flows are held, and the plane's own counters by name. */
  readonly plane: Pick<DataPlane, 'table' | 'counter'>;
  /** Host objects put back after they vanished, by kind (instance.ts, net/repair.ts). */
  readonly repairs?: Readonly<Record<string, number>>;
}

const DAEMON_LABELS = ['cluster', 'port', 'protocol', 'daemon'] as const;
const PORT_LABELS = ['cluster', 'port', 'protocol'] as const;

/** Daemons of the running configuration, plus removed ones that still hold flows. */
function reportedDaemons(b: Balancer): Daemon[] {
  const stats = b.stats.daemon;
  return b.tree.daemonsById.filter((x) => x && (!x.retired || stats[x.id * DAEMON_COLUMNS + D_ACTIVE_FLOWS] > 0));
}

function daemonLabels(x: Daemon): Record<(typeof DAEMON_LABELS)[number], string> {
  const p = x.clusterPort;
  return { cluster: p.cluster.address.text, port: String(p.port), protocol: p.protocol, daemon: x.name };
}

/** A registry whose collectors read `source` at every scrape. */
export function createMetrics(source: MetricsSource): Registry {
  const registry = new Registry();
  // prom-client's names already start with process_/nodejs_: hostlb_process_cpu_seconds_total etc.
  // The event-loop lag histogram samples with a timer: prom-client's default 10 ms
  // wakes an idle hostlb 100 times a second (about 1% of a CPU on the bench's
  // VM, measured with strace and /proc/PID/stat); 100 ms still sees any stall
  // that matters to the packet path, at a tenth of the wake-ups.
  collectDefaultMetrics({ register: registry, prefix: 'hostlb_', eventLoopMonitoringPrecision: 100 });
  new Gauge({
    name: 'hostlb_daemon_active_flows', help: 'Connection records a daemon holds now (not yet ended).',
    labelNames: [...DAEMON_LABELS], registers: [registry],
    collect(this: Gauge) {
      this.reset();
      const stats = source.balancer.stats.daemon;
      for (const x of reportedDaemons(source.balancer)) this.set(daemonLabels(x), stats[x.id * DAEMON_COLUMNS + D_ACTIVE_FLOWS]);
    },
  });
  new Counter({
    name: 'hostlb_daemon_new_flows_total', help: 'New flows the scheduler gave a daemon.',
    labelNames: [...DAEMON_LABELS], registers: [registry],
    collect(this: Counter) {
      this.reset();
      const stats = source.balancer.stats.daemon;
      for (const x of reportedDaemons(source.balancer)) this.inc(daemonLabels(x), stats[x.id * DAEMON_COLUMNS + D_NEW_FLOWS]);
    },
  });

  // Packets and bytes carry a direction label: in = client to daemon, out = daemon to client.
  const inOut = (name: string, what: string, inColumn: number, outColumn: number): void => {
    new Counter({
      name, help: `${what} translated, by direction (in: client to daemon, out: daemon to client).`,
      labelNames: [...DAEMON_LABELS, 'direction'], registers: [registry],
      collect(this: Counter) {
        this.reset();
        const stats = source.balancer.stats.daemon;
        for (const x of reportedDaemons(source.balancer)) {
          this.inc({ ...daemonLabels(x), direction: 'in' }, stats[x.id * DAEMON_COLUMNS + inColumn]);
          this.inc({ ...daemonLabels(x), direction: 'out' }, stats[x.id * DAEMON_COLUMNS + outColumn]);
        }
      },
    });
  };
  inOut('hostlb_daemon_packets_total', 'Packets', D_PACKETS_IN, D_PACKETS_OUT);
  inOut('hostlb_daemon_bytes_total', 'IP bytes', D_BYTES_IN, D_BYTES_OUT);
  new Gauge({
    name: 'hostlb_daemon_weight', help: 'Configured weight of a daemon (0 = quiesced).',
    labelNames: [...DAEMON_LABELS], registers: [registry],
    collect(this: Gauge) {
      this.reset();
      for (const x of source.balancer.tree.daemons()) this.set(daemonLabels(x), x.weight);
    },
  });
  new Counter({
    name: 'hostlb_port_scheduler_decisions_total', help: 'New flows a port\'s scheduler placed (result="daemon") or could not place (result="none").',
    labelNames: [...PORT_LABELS, 'scheduler', 'result'], registers: [registry],
    collect(this: Counter) {
      this.reset();
      const { stats, tree } = source.balancer;
      const noDaemon = DROP_REASON_NAMES.indexOf('no_daemon');
      for (const c of tree.clusters) for (const p of c.ports) {
        const labels = { cluster: c.address.text, port: String(p.port), protocol: p.protocol, scheduler: p.scheduler };
        let placed = 0;
        for (const x of tree.daemonsById) if (x && x.clusterPort.id === p.id) placed += stats.daemon[x.id * DAEMON_COLUMNS + D_NEW_FLOWS];
        this.inc({ ...labels, result: 'daemon' }, placed);
        this.inc({ ...labels, result: 'none' }, stats.portDrops[p.id * DROP_REASON_NAMES.length + noDaemon]);
      }
    },
  });
  new Counter({
    name: 'hostlb_port_drops_total', help: 'Packets to a cluster port dropped, by reason.',
    labelNames: [...PORT_LABELS, 'reason'], registers: [registry],
    collect(this: Counter) {
      this.reset();
      const { stats, tree } = source.balancer;
      for (const c of tree.clusters) for (const p of c.ports) {
        DROP_REASON_NAMES.forEach((reason, i) => {
          const v = stats.portDrops[p.id * DROP_REASON_NAMES.length + i];
          if (i > 0 && v > 0) this.inc({ cluster: c.address.text, port: String(p.port), protocol: p.protocol, reason }, v);
        });
      }
    },
  });
  new Counter({
    name: 'hostlb_drops_total', help: 'Packets dropped by the dispatcher, by reason (all ports and none).',
    labelNames: ['reason'], registers: [registry],
    collect(this: Counter) {
      this.reset();
      const drops = source.balancer.stats.drops;
      DROP_REASON_NAMES.forEach((reason, i) => { if (i > 0) this.inc({ reason }, drops[i]); });
    },
  });
  // Health gauges, per live daemon: its health view when the health layer runs, else a default.
  const perDaemonHealth = (name: string, help: string, value: (h: DaemonHealthView | undefined, x: Daemon) => number): void => {
    new Gauge({
      name, help, labelNames: [...DAEMON_LABELS], registers: [registry],
      collect(this: Gauge) {
        this.reset();
        const views = new Map((source.health?.monitor.view() ?? []).map((h) => [`${h.port} ${h.daemon}`, h]));
        for (const x of source.balancer.tree.daemons()) this.set(daemonLabels(x), value(views.get(`${x.clusterPort.name} ${x.name}`), x));
      },
    });
  };
  perDaemonHealth('hostlb_daemon_up', 'Whether a daemon takes new flows by its health (1 up, 0 down or draining).',
    (h) => (h ? (h.state === 'up' ? 1 : 0) : 1));
  perDaemonHealth('hostlb_daemon_effective_weight', 'Weight the scheduler uses: configured weight x manager factor x slow start, x100 (0 when down).',
    (h, x) => (h ? h.effectiveWeight : x.weight));
  new Counter({
    name: 'hostlb_daemon_events_total', help: 'Daemon events (up, down, drained, restarted, weight changed, started, exited), by type.',
    labelNames: ['type'], registers: [registry],
    collect(this: Counter) {
      this.reset();
      for (const [type, n] of source.health?.events.counts ?? []) this.inc({ type }, n);
    },
  });
  new Counter({
    name: 'hostlb_packets_answered_total', help: 'Packets hostlb answered or handed on itself, by kind: reset, unreachable, echo_reply, icmp_translated, passed_through, recovered.',
    labelNames: ['kind'], registers: [registry],
    collect(this: Counter) {
      this.reset();
      const s = source.balancer.stats;
      this.inc({ kind: 'reset' }, s.resetsSent);
      this.inc({ kind: 'unreachable' }, s.unreachableSent);
      this.inc({ kind: 'echo_reply' }, s.echoReplies);
      this.inc({ kind: 'icmp_translated' }, s.icmpTranslated);
      this.inc({ kind: 'passed_through' }, s.passedThrough);
      this.inc({ kind: 'recovered' }, s.recovered);
    },
  });
  new Gauge({
    name: 'hostlb_table_records', help: 'Connection records in the table.', registers: [registry],
    collect(this: Gauge) { this.set(source.plane.table().records); },
  });
  new Gauge({
    name: 'hostlb_table_capacity', help: 'Most connection records the table holds.', registers: [registry],
    collect(this: Gauge) { this.set(source.plane.table().limit); },
  });
  new Counter({
    name: 'hostlb_table_evictions_total', help: 'Records given up to admit new flows when the table was full.', registers: [registry],
    collect(this: Counter) { this.reset(); this.inc(source.plane.table().evictions); },
  });
  new Counter({
    name: 'hostlb_link_packets_total', help: 'Packets read from and written to the TUN device.',
    labelNames: ['direction'], registers: [registry],
    collect(this: Counter) {
      this.reset();
      labelled(this, source, 'direction', { read: 'link.read', written: 'link.written', refused: 'link.refused' });
    },
  });
  new Counter({
    name: 'hostlb_link_super_packets_total', help: 'Super-packets (GSO, up to 64 KB) read from the TUN device with offloads on; each also counts once as read in hostlb_link_packets_total.', registers: [registry],
    collect(this: Counter) { this.reset(); this.inc(source.plane.counter('link.superPackets') ?? 0); },
  });
  new Counter({
    name: 'hostlb_queue_verdicts_total', help: 'New connections the netfilter data plane decided, by outcome (daemon: marked for a daemon; rejected: no daemon takes flows; unparsed: left to the kernel-side hash).',
    labelNames: ['outcome'], registers: [registry],
    collect(this: Counter) {
      this.reset();
      labelled(this, source, 'outcome', { daemon: 'queue.daemon', rejected: 'queue.rejected', unparsed: 'queue.unparsed' });
    },
  });
  new Counter({
    name: 'hostlb_conntrack_events_total', help: 'Conntrack events of hostlb\'s flows read (netfilter data plane).', registers: [registry],
    collect(this: Counter) { this.reset(); this.inc(source.plane.counter('conntrack.events') ?? 0); },
  });
  new Counter({
    name: 'hostlb_conntrack_event_overruns_total', help: 'Times the kernel dropped conntrack events because hostlb read too slowly (flow counts may be off until they end).', registers: [registry],
    collect(this: Counter) { this.reset(); this.inc(source.plane.counter('conntrack.overruns') ?? 0); },
  });
  new Counter({
    name: 'hostlb_conntrack_swept_total', help: 'Flows whose active count a comparison with conntrack corrected (an event was lost).', registers: [registry],
    collect(this: Counter) { this.reset(); this.inc(source.plane.counter('conntrack.swept') ?? 0); },
  });
  new Counter({
    name: 'hostlb_socket_lookups_total', help: 'Socket lookups the socket data plane\'s program saw for cluster ports, and those no daemon socket took (passed on to the kernel, which refuses them).',
    labelNames: ['result'], registers: [registry],
    collect(this: Counter) {
      this.reset();
      labelled(this, source, 'result', { matched: 'socket.matched', unassigned: 'socket.unassigned' });
    },
  });
  new Counter({
    name: 'hostlb_socket_daemon_sockets_taken_total', help: 'Listening sockets the socket data plane took from daemons (at start, and each time a daemon came back with a new one).', registers: [registry],
    collect(this: Counter) { this.reset(); this.inc(source.plane.counter('socket.taken') ?? 0); },
  });
  new Counter({
    name: 'hostlb_repairs_total', help: 'Host objects hostlb set up that vanished underneath it (nft flush ruleset, a deleted route or rule, a sysctl set back) and were put back, by kind.', labelNames: ['kind'], registers: [registry],
    collect(this: Counter<'kind'>) {
      this.reset();
      for (const [kind, n] of Object.entries(source.repairs ?? {})) this.inc({ kind }, n);
    },
  });
  return registry;
}

/** One sample per label value from the plane's counters; none when the plane keeps no such counters. */
function labelled(metric: Counter, source: MetricsSource, label: string, names: Record<string, PlaneCounter>): void {
  for (const [value, name] of Object.entries(names)) {
    const n = source.plane.counter(name);
    if (n !== null) metric.inc({ [label]: value }, n);
  }
}
