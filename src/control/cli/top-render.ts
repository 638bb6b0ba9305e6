// What `hostlb top` draws, as text: a full screen for a terminal (colours,
// a selected daemon, a key line or a confirmation), or plain lines when the
// output is not a terminal. Pure: a snapshot of GET /v1/view and the UI's
// state in, strings out — so the layout is tested without a terminal.

import type { DaemonRow, LiveViewSnapshot } from '../view/live-view.js';
import { formatWeight } from './format.js';

export interface TopState {
  /** Index into selectable(view). */
  selected: number;
  /** A question awaiting y (the key line shows it instead of the help). */
  prompt: string | null;
  /** The last action's outcome, or a connection problem. */
  message: string;
  connected: boolean;
}

export interface Selectable {
  port: string;
  supervised: boolean;
  row: DaemonRow;
}

/** Every daemon row of every port, in screen order (what the arrow keys move through). */
export function selectable(view: LiveViewSnapshot): Selectable[] {
  return view.ports.flatMap((p) => p.daemons.map((row) => ({ port: p.port, supervised: p.supervised, row })));
}

type Colour = 'green' | 'red' | 'yellow' | 'cyan' | 'dim' | 'bold' | 'inverse';
const SGR: Record<Colour, string> = { green: '32', red: '31', yellow: '33', cyan: '36', dim: '2', bold: '1', inverse: '7' };
interface Segment { text: string; colour?: Colour }

/** Segments cut to `width` visible characters; with `colour`, SGR codes around coloured parts. */
function fit(segments: Segment[], width: number, colour: boolean): string {
  let out = '';
  let left = width;
  for (const s of segments) {
    if (left <= 0) break;
    const text = [...s.text].slice(0, left).join('');
    left -= [...text].length;
    out += colour && s.colour ? `\x1b[${SGR[s.colour]}m${text}\x1b[0m` : text;
  }
  return out;
}

const STATE_COLOUR: Record<DaemonRow['state'], Colour> = {
  up: 'green', 'slow start': 'cyan', down: 'red', draining: 'yellow', quiesced: 'yellow', removed: 'dim',
};

export function duration(seconds: number): string {
  if (seconds < 60) return `${seconds}s`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)}m${String(seconds % 60).padStart(2, '0')}s`;
  if (seconds < 86_400) return `${Math.floor(seconds / 3600)}h${String(Math.floor(seconds / 60) % 60).padStart(2, '0')}m`;
  return `${Math.floor(seconds / 86_400)}d${String(Math.floor(seconds / 3600) % 24).padStart(2, '0')}h`;
}

function bytes(n: number | null): string {
  if (n === null) return '-';
  if (n >= 1 << 30) return `${(n / (1 << 30)).toFixed(1)}G`;
  if (n >= 1 << 20) return `${Math.round(n / (1 << 20))}M`;
  return `${Math.round(n / 1024)}K`;
}

const BARS = ' ▁▂▃▄▅▆▇█';

/** New connections per interval as bar characters, scaled to `max` (the port's busiest interval). */
export function sparkline(series: readonly number[], max: number, width: number): string {
  const tail = series.slice(-width);
  return tail.map((v) => (max <= 0 || v <= 0 ? BARS[0] : BARS[Math.max(1, Math.round((v / max) * 8))])).join('').padStart(width);
}

function stateText(row: DaemonRow): string {
  return row.state === 'slow start' ? `slow start ${Math.round(row.ramp * 100)}%` : row.state;
}

function exitText(e: { code: number | null; signal: string | null } | null): string {
  if (e === null) return '-';
  return e.signal !== null ? e.signal : `exit ${e.code}`;
}

function header(view: LiveViewSnapshot): string {
  return `hostlb ${view.version} · ${view.dataplane.kind} plane · ${view.device} · up ${duration(view.uptimeSeconds)} · `
    + `${view.totals.activeFlows} active · ${view.totals.newPerSecond} new/s · ${view.totals.up}/${view.totals.daemons} daemons up`;
}

function planeLine(view: LiveViewSnapshot): string {
  const t = view.dataplane.table;
  const cap = t.capacity ?? t.limit;
  const use = cap > 0 ? ` / ${cap} (${((t.records / cap) * 100).toFixed(1)}%)` : '';
  const counters = Object.entries(view.dataplane.counters).map(([k, v]) => `${k} ${v}`);
  const repairs = Object.values(view.dataplane.repairs).reduce((a, b) => a + b, 0);
  return [`table ${t.records}${use}${t.evictions ? `, ${t.evictions} evicted` : ''}`, ...counters, `repairs ${repairs}`].join(' · ');
}

function errorsLine(view: LiveViewSnapshot): string {
  if (view.errors.length === 0) return 'none';
  return view.errors.map((e) => `${e.reason} ${e.perSecond}/s (${e.total})`).join(' · ');
}

/** The full screen: `height` lines of at most `width` characters. */
export function renderScreen(view: LiveViewSnapshot | null, state: TopState, width: number, height: number, colour = true): string[] {
  const lines: string[] = [];
  const put = (segments: Segment[]): void => { lines.push(fit(segments, width, colour)); };
  if (view === null) {
    put([{ text: 'hostlb top', colour: 'bold' }]);
    put([{ text: state.message || 'waiting for hostlb…', colour: 'yellow' }]);
  } else {
    put([{ text: header(view), colour: 'bold' }, { text: state.connected ? '' : '  [disconnected]', colour: 'red' }]);
    put([{ text: planeLine(view), colour: 'dim' }]);
    const rows = selectable(view);
    const chosen = rows[Math.min(state.selected, rows.length - 1)];
    const spark = Math.max(10, Math.min(30, width - 118));
    for (const p of view.ports) {
      lines.push('');
      put([{ text: `${p.port}  ${p.scheduler}${p.supervised ? '  supervised' : ''}`, colour: 'bold' }]);
      put([{ text: `    ${'DAEMON'.padEnd(24)} ${'STATE'.padEnd(15)} ${'WEIGHT'.padStart(6)} ${'EFF'.padStart(5)} ${'ACTIVE'.padStart(7)} ${'NEW/S'.padStart(7)} ${'SHARE'.padStart(6)} ${'LAST 60 S'.padEnd(spark)} ${'CHANGED'.padStart(7)}  WHY`, colour: 'dim' }]);
      const max = Math.max(0, ...p.daemons.flatMap((d) => d.series));
      for (const d of p.daemons) {
        const mine = chosen !== undefined && chosen.row === d;
        put([
          { text: mine ? '  > ' : '    ', colour: mine ? 'bold' : undefined },
          { text: `${d.daemon.padEnd(24)} `, colour: mine ? 'inverse' : undefined },
          { text: stateText(d).padEnd(15), colour: STATE_COLOUR[d.state] },
          { text: ` ${String(d.configuredWeight).padStart(6)} ${formatWeight(d.effectiveWeight).padStart(5)} ${String(d.activeFlows).padStart(7)} ${d.newPerSecond.toFixed(1).padStart(7)} ${`${Math.round(d.share * 100)}%`.padStart(6)} ` },
          { text: sparkline(d.series, max, spark), colour: 'cyan' },
          { text: ` ${duration(d.sinceSeconds).padStart(7)}  ${d.why}` },
        ]);
      }
    }
    lines.push('');
    if (chosen) {
      const h = chosen.row.health;
      const check = h.lastCheck ? `${h.lastCheck.ok ? 'ok' : 'failed'} ${h.lastCheck.responseMs} ms${h.lastCheck.ok ? '' : ` (${h.lastCheck.reason})`}` : '-';
      put([{ text: 'HEALTH ', colour: 'bold' }, { text: `${chosen.row.daemon}: advisor ${h.advisor} · last check ${check} · response ${h.responseMs ?? '-'} ms · failures ${h.failures} · flaps ${h.flaps} · passive ${h.passive.down ? `down (${h.passive.reason})` : 'ok'}` }]);
    }
    put([{ text: 'ERRORS ', colour: 'bold' }, { text: errorsLine(view), colour: view.errors.some((e) => e.perSecond > 0) ? 'red' : undefined }]);
    if (view.processes.length > 0) {
      put([{ text: `PROCESSES  ${'DAEMON'.padEnd(24)} ${'PID'.padStart(7)} ${'CPU'.padStart(6)} ${'MEM'.padStart(6)} ${'RESTARTS'.padStart(8)} ${'UPTIME'.padStart(7)} ${'LAST EXIT'.padEnd(10)} LOG`, colour: 'bold' }]);
      for (const pr of view.processes) {
        put([{ text: `           ${pr.daemon.padEnd(24)} ${String(pr.pid ?? '-').padStart(7)} ${(pr.cpuPercent === null ? '-' : `${pr.cpuPercent}%`).padStart(6)} ${bytes(pr.rssBytes).padStart(6)} ${String(pr.restarts).padStart(8)} ${(pr.uptimeSeconds === null ? '-' : duration(pr.uptimeSeconds)).padStart(7)} ${exitText(pr.lastExit).padEnd(10)} ${pr.log.at(-1) ?? ''}` }]);
      }
    }
    if (view.activity.length > 0) {
      for (const a of view.activity) put([{ text: 'IN PROGRESS ', colour: 'bold' }, { text: `${a.kind} ${a.daemon} (${a.port}): ${a.phase} · ${a.connectionsLeft} connections left · ${duration(a.elapsedSeconds)}`, colour: 'yellow' }]);
    }
  }
  // The key line sits on the last row; the message just above it.
  const body = lines.slice(0, Math.max(0, height - 2));
  while (body.length < height - 2) body.push('');
  body.push(fit([{ text: state.message, colour: 'yellow' }], width, colour));
  body.push(state.prompt !== null
    ? fit([{ text: `${state.prompt} y to confirm, any other key to cancel`, colour: 'inverse' }], width, colour)
    : fit([{ text: 'q quit  ↑↓/tab select  d drain  u undrain  r rolling restart (supervised port)', colour: 'dim' }], width, colour));
  return body;
}

/** One snapshot as plain lines, for output that is not a terminal. */
export function renderLines(view: LiveViewSnapshot): string[] {
  const out = [`${view.at} ${header(view)}`, `  plane: ${planeLine(view)}`];
  for (const p of view.ports) {
    for (const d of p.daemons) {
      out.push(`  ${p.port} ${d.daemon} ${stateText(d)} weight ${d.configuredWeight} effective ${formatWeight(d.effectiveWeight)} active ${d.activeFlows} new/s ${d.newPerSecond} share ${Math.round(d.share * 100)}% changed ${duration(d.sinceSeconds)} ago${d.why ? ` (${d.why})` : ''}`);
    }
  }
  out.push(`  errors: ${errorsLine(view)}`);
  for (const pr of view.processes) out.push(`  process ${pr.daemon} pid ${pr.pid ?? '-'} cpu ${pr.cpuPercent ?? '-'}% mem ${bytes(pr.rssBytes)} restarts ${pr.restarts} up ${pr.uptimeSeconds === null ? '-' : duration(pr.uptimeSeconds)} last exit ${exitText(pr.lastExit)}`);
  for (const a of view.activity) out.push(`  in progress: ${a.kind} ${a.daemon} (${a.port}) ${a.phase}, ${a.connectionsLeft} connections left, ${duration(a.elapsedSeconds)}`);
  return out;
}
