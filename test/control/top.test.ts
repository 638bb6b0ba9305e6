// hostlb top without a terminal: the screen and the plain lines drawn from a
// snapshot (states with their colours, the selected daemon, the confirmation
// line, nothing wider than the terminal), the share sparkline, port names to
// API paths, the event-stream splitter; and the command itself against a real
// instance over a MemoryLink (plain lines, -n) and with nothing running.

import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { portApiPath } from '../../src/control/cli/top.js';
import { renderLines, renderScreen, sparkline, type TopState } from '../../src/control/cli/top-render.js';
import { splitEvents } from '../../src/control/cli/view-follow.js';
import type { DaemonRow, LiveViewSnapshot } from '../../src/control/view/live-view.js';
import { startMemoryHostlb, type MemoryHostlb } from '../support/memory-hostlb.js';

const MAIN = fileURLToPath(new URL('../../src/control/cli/main.js', import.meta.url));

function row(daemon: string, state: DaemonRow['state'], extra: Partial<DaemonRow> = {}): DaemonRow {
  return {
    daemon, state, why: state === 'down' ? 'http advisor: connection refused' : '', ramp: 1, configuredWeight: 1, effectiveWeight: 100, sinceSeconds: 75,
    health: { advisor: 'up', lastCheck: { ok: true, responseMs: 1.2, reason: 'HTTP 200' }, responseMs: 1.3, failures: 0, flaps: 0, passive: { down: false, reason: '' } },
    activeFlows: 2, newFlows: 100, newPerSecond: 12.5, share: 0.5, series: [1, 2, 4, 8], ...extra,
  };
}

const VIEW: LiveViewSnapshot = {
  at: '2026-12-05T12:00:00.000Z', version: '9.9.9', pid: 1, uptimeSeconds: 3725, device: 'hlb0', windowSeconds: 60,
  dataplane: { kind: 'netfilter', table: { records: 50, capacity: null, limit: 1000, evictions: 0 }, counters: { 'queue.daemon': 7 }, repairs: { route: 1 } },
  totals: { activeFlows: 4, newPerSecond: 25, daemons: 3, up: 2 },
  ports: [{
    port: '198.18.100.1:80/tcp', scheduler: 'wlc', supervised: true,
    daemons: [row('198.18.2.11:8080', 'up'), row('198.18.2.12:8080', 'slow start', { ramp: 0.4, effectiveWeight: 40 }), row('198.18.2.13:8080', 'down', { share: 0 })],
  }],
  errors: [{ reason: 'drop.no_record', total: 12, perSecond: 0.5 }],
  processes: [{ port: '198.18.100.1:80/tcp', index: 0, daemon: '198.18.2.11:8080', pid: 4242, state: 'running', cpuPercent: 3.5, rssBytes: 50 << 20, restarts: 1, uptimeSeconds: 61, lastExit: { code: null, signal: 'SIGKILL', at: '' }, log: ['listening'] }],
  activity: [{ port: '198.18.100.1:80/tcp', daemon: '198.18.2.12:8080', kind: 'drain', phase: 'draining', connectionsLeft: 3, elapsedSeconds: 4 }],
};

const STATE: TopState = { selected: 1, prompt: null, message: '', connected: true };

describe('hostlb top: drawing', () => {
  it('the screen: header, plane, each daemon with its state, the selected one marked, health of the selected, errors, processes, drains, the key line last', () => {
    const lines = renderScreen(VIEW, STATE, 200, 30, false);
    assert.equal(lines.length, 30);
    const text = lines.join('\n');
    assert.match(lines[0], /^hostlb 9\.9\.9 · netfilter plane · hlb0 · up 1h02m · 4 active · 25 new\/s · 2\/3 daemons up$/);
    assert.match(lines[1], /table 50 \/ 1000 \(5\.0%\) · queue\.daemon 7 · repairs 1/);
    assert.match(text, /^ {4}198\.18\.2\.11:8080 +up +1 +1 +2 +12\.5 +50% /m);
    assert.match(text, /^ {2}> 198\.18\.2\.12:8080 +slow start 40% +1 +0\.4 /m);
    assert.match(text, /^ {4}198\.18\.2\.13:8080 +down .* http advisor: connection refused$/m);
    assert.match(text, /^HEALTH 198\.18\.2\.12:8080: advisor up · last check ok 1\.2 ms/m);
    assert.match(text, /^ERRORS drop\.no_record 0\.5\/s \(12\)$/m);
    assert.match(text, /198\.18\.2\.11:8080 +4242 +3\.5% +50M +1 +1m01s SIGKILL +listening/);
    assert.match(text, /^IN PROGRESS drain 198\.18\.2\.12:8080 \(198\.18\.100\.1:80\/tcp\): draining · 3 connections left · 4s$/m);
    assert.match(lines[29], /^q quit/);
  });

  it('a question replaces the key line; colours only where asked; no line wider than the terminal', () => {
    const asking = renderScreen(VIEW, { ...STATE, prompt: 'drain 198.18.2.12:8080 of 198.18.100.1:80/tcp?' }, 60, 20, false);
    assert.equal(asking.at(-1), 'drain 198.18.2.12:8080 of 198.18.100.1:80/tcp? y to confirm,');
    for (const l of asking) assert.ok([...l].length <= 60, `${[...l].length}: ${l}`);
    const coloured = renderScreen(VIEW, STATE, 200, 30, true).join('\n');
    const ESC = String.fromCharCode(27);
    assert.ok(coloured.includes(`${ESC}[31mdown`), 'down in red');
    assert.ok(coloured.includes(`${ESC}[32mup`), 'up in green');
    assert.ok(!renderScreen(VIEW, STATE, 200, 30, false).join('').includes(ESC), 'no escape codes when not asked for');
  });

  it('before the first snapshot: what it waits for', () => {
    const lines = renderScreen(null, { ...STATE, message: 'hostlb is not running; trying again every second' }, 80, 10, false);
    assert.match(lines.join('\n'), /hostlb is not running/);
  });

  it('plain lines: one per daemon, errors, processes and drains', () => {
    const lines = renderLines(VIEW);
    assert.equal(lines[0], '2026-12-05T12:00:00.000Z hostlb 9.9.9 · netfilter plane · hlb0 · up 1h02m · 4 active · 25 new/s · 2/3 daemons up');
    assert.ok(lines.includes('  198.18.100.1:80/tcp 198.18.2.13:8080 down weight 1 effective 1 active 2 new/s 12.5 share 0% changed 1m15s ago (http advisor: connection refused)'), lines.join('\n'));
    assert.ok(lines.some((l) => l.startsWith('  process 198.18.2.11:8080 pid 4242 cpu 3.5% mem 50M restarts 1')));
    assert.ok(lines.some((l) => l.startsWith('  in progress: drain 198.18.2.12:8080')));
  });

  it('sparkline: scaled to the busiest interval, right-aligned to its width', () => {
    assert.equal(sparkline([0, 1, 2, 4, 8], 8, 6), '  ▁▂▄█');
    assert.equal(sparkline([5, 5], 0, 3), '   ');
  });

  it('port names to API paths, IPv6 too; the event splitter keeps an unfinished event', () => {
    assert.equal(portApiPath('198.18.100.1:80/tcp'), '/v1/clusters/198.18.100.1/ports/80/tcp');
    assert.equal(portApiPath('[2001:db8::100]:443/udp'), '/v1/clusters/2001%3Adb8%3A%3A100/ports/443/udp');
    const seen: string[] = [];
    const rest = splitEvents(': hello\n\nevent: view\ndata: {"a":1}\n\nevent: daemon_up\nid: 3\ndata: {}\n\nevent: view\ndata: {"b"', (type, data) => seen.push(`${type} ${data}`));
    assert.deepEqual(seen, ['view {"a":1}', 'daemon_up {}']);
    assert.equal(rest, 'event: view\ndata: {"b"');
  });
});

describe('hostlb top: the command', () => {
  let s: MemoryHostlb;
  before(async () => { s = await startMemoryHostlb({ traffic: true }); });
  after(async () => { await s.close(); });

  const top = (args: string[]): Promise<{ code: number; stdout: string; stderr: string }> => new Promise((resolve) => {
    execFile(process.execPath, [MAIN, ...args], { timeout: 30_000 }, (err, stdout, stderr) => resolve({ code: err ? (err as { code?: number }).code ?? 1 : 0, stdout, stderr }));
  });

  it('not a terminal: plain lines, -n snapshots, then exit 0', async () => {
    const r = await top(['--socket', s.socket, 'top', '-n', '2']);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout.split('\n').filter((l) => / hostlb .* tun plane · hlbtest0 /.test(l)).length, 2, r.stdout);
    assert.match(r.stdout, /^ {2}198\.18\.100\.1:80\/tcp 198\.18\.2\.1:8080 up weight 1 /m);
  });

  it('nothing running: the usual sentence and exit 3; a bad -n: exit 2', async () => {
    const r = await top(['--socket', `${s.dir}/nothing.sock`, 'top', '-n', '1']);
    assert.equal(r.code, 3, r.stderr);
    assert.match(r.stderr, /hostlb is not running/);
    const bad = await top(['--socket', s.socket, 'top', '-n', '0']);
    assert.equal(bad.code, 2, bad.stderr);
    assert.match(bad.stderr, /--iterations: expected a whole number of at least 1, got "0"/);
  });
});
