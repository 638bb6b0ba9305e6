// Human-readable output of the CLI: aligned tables and short summaries.
// `--json` bypasses all of this and prints the API's answer as it is.

/** Left-aligned columns separated by two spaces; `rows` include the header. */
export function table(rows: (string | number)[][]): string {
  const widths: number[] = [];
  for (const row of rows) row.forEach((cell, i) => { widths[i] = Math.max(widths[i] ?? 0, String(cell).length); });
  return rows.map((row) => row.map((cell, i) => (i === row.length - 1 ? String(cell) : String(cell).padEnd(widths[i]))).join('  ')).join('\n');
}

/**
 * An effective weight as the API gives it (configured weight × the manager's
 * factor × the slow-start ramp, ×100 so the scheduler's integers keep two
 * decimals) on the configured weight's scale: 100 → "1", 57 → "0.57".
 */
export function formatWeight(effective: number): string {
  return Number.isFinite(effective) ? String(Math.round(effective) / 100) : '-';
}

interface DaemonView {
  address: string; weight: number; state: string; activeFlows: number; newFlows: number; packetsIn: number; packetsOut: number; bytesIn: number; bytesOut: number;
  effectiveWeight?: number; reason?: string;
}
interface PortView { port: number; protocol: string; scheduler: string; daemons: DaemonView[]; drops: Record<string, number> }
interface ClusterView { address: string; ports: PortView[] }

export function formatClusters(clusters: ClusterView[]): string {
  const rows: (string | number)[][] = [['CLUSTER', 'PORT', 'SCHEDULER', 'DAEMON', 'WEIGHT', 'EFFECTIVE', 'STATE', 'ACTIVE', 'NEW', 'PKTS IN', 'PKTS OUT', 'WHY']];
  for (const c of clusters) for (const p of c.ports) {
    if (p.daemons.length === 0) rows.push([c.address, `${p.port}/${p.protocol}`, p.scheduler, '-', '-', '-', 'no daemons', 0, 0, 0, 0, '']);
    for (const d of p.daemons) {
      rows.push([c.address, `${p.port}/${p.protocol}`, p.scheduler, d.address, d.weight, d.effectiveWeight === undefined ? d.weight : formatWeight(d.effectiveWeight), d.state, d.activeFlows, d.newFlows, d.packetsIn, d.packetsOut, d.reason ?? '']);
    }
  }
  return table(rows);
}

export function formatStatus(s: Record<string, unknown>, clusters: ClusterView[]): string {
  const t = s.table as { records: number; capacity: number | null };
  const p = s.packets as { in: number; out: number };
  return [
    `hostlb ${String(s.version)} (pid ${String(s.pid)}), up ${String(s.uptimeSeconds)} s, data plane ${String(s.dataplane)} on ${String(s.device)}`,
    `${t.capacity === null ? `${t.records} live flows (${s.dataplane === 'socket' ? 'the daemons\' own connections' : 'in conntrack'})` : `table ${t.records}/${t.capacity} records`}; ${String(s.activeFlows)} active flows; packets in ${p.in}, out ${p.out}; drops ${String(s.drops)}`,
    '',
    formatClusters(clusters),
  ].join('\n');
}

interface ConnView { client: string; cluster: string; daemon: string; protocol: string; state: string; packetsIn: number; packetsOut: number; bytesIn: number; bytesOut: number; created: number }

export function formatConnections(total: number, offset: number, conns: ConnView[]): string {
  const rows: (string | number)[][] = [['PROTO', 'CLIENT', 'CLUSTER', 'DAEMON', 'STATE', 'PKTS IN', 'PKTS OUT', 'BYTES IN', 'BYTES OUT', 'AGE']];
  const now = Date.now();
  for (const c of conns) rows.push([c.protocol, c.client, c.cluster, c.daemon, c.state, c.packetsIn, c.packetsOut, c.bytesIn, c.bytesOut, `${Math.max(0, Math.round((now - c.created) / 1000))}s`]);
  return `${table(rows)}\n${conns.length === 0 ? 'no connections' : `${offset + 1}-${offset + conns.length} of ${total}`}`;
}
