// The web dashboard in a real browser: hostlb runs three supervised Node
// daemons behind 198.18.100.1:80 in a server namespace while wrk opens new
// connections from the client namespace; `hostlb dashboard --port 0` serves
// the page (it reaches the admin socket as a file, so it and the browser run
// in the host's namespace, on 127.0.0.1) and Debian's chromium, driven by
// playwright-core, opens the address it printed. The page must show the three
// daemon rows up, draw the share chart from real counts, turn a daemon's row
// down within 3 s of its process being killed (the one time bound the issue
// sets), and drain a daemon when asked and confirmed (the API says so). It
// saves screenshots to the test output (and, with HOSTLB_DOCS_SCREENSHOTS=1,
// to docs/img/ for docs/dashboard.md).

import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { chromium, type Browser, type Page } from 'playwright-core';
import type { LiveViewSnapshot } from '../../src/control/view/live-view.js';
import { CLUSTER_V4, HOSTLB_MAIN, type HostlbProcess } from '../support/hostlb-process.js';
import { processAlive } from '../support/daemons.js';
import { skipUnlessRoot } from '../support/netns.js';
import { AdminClient, healthSetup, pollUntil, startHostlb, startWrk, THREE_SUPERVISED, type RunningWrk } from './health-harness.js';

const DAEMONS = ['198.18.2.11:8080', '198.18.2.12:8080', '198.18.2.13:8080'];
const PORT = `${CLUSTER_V4}:80/tcp`;
const CHROMIUM = process.env.HOSTLB_CHROMIUM ?? '/usr/bin/chromium';
/**
 * dist/test/integration/ → the repository's docs/img/, written only when
 * HOSTLB_DOCS_SCREENSHOTS=1 asks to renew docs/dashboard.md's pictures: a
 * test run leaves the checkout as it was.
 */
const DOCS_IMG = process.env.HOSTLB_DOCS_SCREENSHOTS === '1' ? fileURLToPath(new URL('../../../docs/img/', import.meta.url)) : null;
/** Kept after the test (the temp dir is not): the screenshots of the last run, and of a failure. */
const OUTPUT = join(process.env.HOSTLB_TEST_OUTPUT ?? join(tmpdir(), 'hostlb-test-output'), 'dashboard');
/** The issue's bound: a killed daemon's row is down within this long. */
const DOWN_WITHIN_MS = 3_000;
// Bound on waiting for a state, a count or a page element: reached only when something is broken.
const WAIT_MS = 60_000;
const PANELS = ['daemons', 'health', 'connections', 'errors', 'processes', 'activity', 'dataplane'];

type Row = LiveViewSnapshot['ports'][number]['daemons'][number];

/** `hostlb --socket S dashboard --port 0` in the host's namespace; resolves with the address it printed. */
function startDashboardCli(socket: string): Promise<{ child: ChildProcess; url: string; output: () => string }> {
  const child = spawn(process.execPath, [HOSTLB_MAIN, '--socket', socket, 'dashboard', '--port', '0'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  child.stderr!.on('data', (c: Buffer) => { output += c.toString(); });
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`hostlb dashboard printed no address within ${WAIT_MS} ms:\n${output}`)), WAIT_MS);
    child.stdout!.on('data', (c: Buffer) => {
      output += c.toString();
      const m = /^dashboard: (http:\/\/127\.0\.0\.1:\d+\/dashboard\/#token=\S+)$/m.exec(output);
      if (m) {
        clearTimeout(timer);
        resolve({ child, url: m[1], output: () => output });
      }
    });
    child.on('exit', (code, signal) => {
      clearTimeout(timer);
      reject(new Error(`hostlb dashboard exited ${code ?? signal}:\n${output}`));
    });
  });
}

async function stopChild(child: ChildProcess): Promise<number | null> {
  if (child.exitCode !== null || child.signalCode !== null) return child.exitCode;
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  child.kill('SIGTERM');
  const code = await Promise.race([exited, sleep(10_000).then(() => 'timeout' as const)]);
  if (code === 'timeout') {
    child.kill('SIGKILL');
    return null;
  }
  return code;
}

/** The row of `daemon` in hostlb's own /v1/view (not the page's). */
async function apiRow(admin: AdminClient, daemon: string): Promise<Row> {
  const view = await admin.get<LiveViewSnapshot>('/v1/view');
  const row = view.ports.find((p) => p.port === PORT)?.daemons.find((d) => d.daemon === daemon);
  if (row === undefined) throw new Error(`${daemon} not in /v1/view: ${JSON.stringify(view.ports)}`);
  return row;
}

const rowSelector = (daemon: string): string => `#ports tr[data-daemon="${daemon}"]`;

async function screenshots(page: Page, name: string, toDocs: boolean): Promise<void> {
  mkdirSync(OUTPUT, { recursive: true });
  // From the top: the header is sticky, and a page left scrolled would show it halfway down the picture.
  await page.evaluate(() => window.scrollTo(0, 0));
  await page.screenshot({ path: join(OUTPUT, `${name}.png`), fullPage: true });
  if (toDocs && DOCS_IMG !== null) {
    mkdirSync(DOCS_IMG, { recursive: true });
    await page.screenshot({ path: join(DOCS_IMG, `${name}.png`), fullPage: true });
  }
}

/** One panel's picture, in the test output (and docs/img/ when asked). */
async function panelShot(page: Page, panel: string): Promise<void> {
  for (const dir of DOCS_IMG === null ? [OUTPUT] : [OUTPUT, DOCS_IMG]) {
    await page.locator(`#panel-${panel}`).screenshot({ path: join(dir, `dashboard-${panel}.png`) });
  }
}

test('the web dashboard in chromium: three daemons up, the share chart drawn, a killed daemon down within 3 s, a drain from the page drains', async (t) => {
  if (!skipUnlessRoot(t, 'network namespaces, supervised Node daemons, wrk and chromium')) return;
  if (!existsSync(CHROMIUM)) {
    t.skip(`chromium is not installed at ${CHROMIUM} (apt-get install chromium, or scripts/install-test-peers.sh; HOSTLB_CHROMIUM names another)`);
    return;
  }
  const topo = healthSetup(t, DAEMONS.map((d) => d.split(':')[0]));
  let hostlb: HostlbProcess | undefined;
  let wrk: RunningWrk | undefined;
  let dashboard: Awaited<ReturnType<typeof startDashboardCli>> | undefined;
  let browser: Browser | undefined;
  let page: Page | undefined;
  let dashboardExit: number | null = 0;
  const pageErrors: string[] = [];
  try {
    hostlb = await startHostlb(topo, THREE_SUPERVISED);
    const admin = AdminClient.of(hostlb);
    await pollUntil('three supervised daemons up', () => admin.health(), (h) => h.length === 3 && h.every((d) => d.state === 'up'), WAIT_MS);
    wrk = startWrk(topo.sandbox, topo.client, ['-t1', '-c4', '-d600s', '-H', 'Connection: close', `http://${CLUSTER_V4}/`], 660_000);

    dashboard = await startDashboardCli(admin.socket);
    browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] });
    page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
    const p = page;
    // A CSP violation, a script error or a failed load is a console error: none may happen.
    p.on('console', (m) => { if (m.type() === 'error') pageErrors.push(m.text()); });
    p.on('pageerror', (e) => pageErrors.push(String(e)));
    await p.goto(dashboard.url);
    await p.waitForSelector('#status[data-connected="true"]', { timeout: WAIT_MS });
    assert.ok(!p.url().includes('token='), `the token leaves the address bar once read: ${p.url()}`);

    // 1. The three daemon rows, up.
    for (const d of DAEMONS) await p.waitForSelector(`${rowSelector(d)}[data-state="up"]`, { timeout: WAIT_MS });
    assert.equal(await p.locator('#ports tr[data-daemon]').count(), 3, 'one row per daemon');

    // 2. The share chart, from the last minute's counts: a series per daemon, each with connections in it.
    const chart = await pollUntil('the share chart holds new connections of each daemon',
      () => p.evaluate(() => {
        const c = (window as unknown as { hostlbDashboard: { chart: { data: (number | null)[][]; series: { label: string }[] } | null } }).hostlbDashboard.chart;
        const box = document.getElementById('share-chart')!;
        const canvas = box.querySelector('canvas');
        return {
          labels: c ? c.series.slice(1).map((s) => s.label) : [],
          sums: c ? c.data.slice(1).map((s) => s.reduce<number>((a, b) => a + (b ?? 0), 0)) : [],
          points: c ? c.data[0].length : 0,
          canvas: canvas ? { width: canvas.width, height: canvas.height } : null,
          dataSum: Number(box.dataset.sum),
        };
      }),
      (v) => v.sums.length === 3 && v.sums.every((s) => s > 0) && v.points >= 3, WAIT_MS, 250);
    assert.deepEqual([...chart.labels].sort(), DAEMONS, 'a series per daemon, named by it');
    assert.ok(chart.canvas !== null && chart.canvas.width > 100 && chart.canvas.height > 100, `the chart is drawn on a canvas: ${JSON.stringify(chart.canvas)}`);
    assert.equal(chart.dataSum, chart.sums.reduce((a, b) => a + b, 0), 'the chart draws the counts the page says it has');
    console.log(`  share chart: ${chart.points} seconds, new connections per daemon ${chart.sums.join(' / ')}`);

    // The pictures for docs/dashboard.md, while all is well: the page, a phone's width, each panel.
    await sleep(1_500); // one more view, so the chart has a few more seconds
    await screenshots(p, 'dashboard', true);
    for (const panel of PANELS) await panelShot(p, panel);
    await p.setViewportSize({ width: 360, height: 780 });
    await sleep(500);
    const overflow = await p.evaluate(() => document.documentElement.scrollWidth);
    assert.ok(overflow <= 360, `nothing wider than a 360 px screen (${overflow} px)`);
    await screenshots(p, 'dashboard-phone', true);
    await p.setViewportSize({ width: 1280, height: 900 });

    // 3. Kill one daemon's process (its PID from the view's processes): its row turns down within 3 s.
    const victim = DAEMONS[2];
    const before = await admin.get<LiveViewSnapshot>('/v1/view');
    const pid = before.processes.find((x) => x.daemon === victim)?.pid;
    assert.ok(typeof pid === 'number' && processAlive(pid), `a live PID for ${victim}: ${JSON.stringify(before.processes)}`);
    // Every state the row shows, with the time it showed it: a restarted daemon may be back up before a poll looks.
    await p.evaluate((sel) => {
      const w = window as unknown as { stateLog: { state: string; at: number }[] };
      w.stateLog = [];
      const row = document.querySelector(sel)!;
      new MutationObserver(() => w.stateLog.push({ state: row.getAttribute('data-state')!, at: Date.now() }))
        .observe(row, { attributes: true, attributeFilter: ['data-state'] });
    }, rowSelector(victim));
    const killedAt = Date.now();
    process.kill(pid, 'SIGKILL');
    const log = await pollUntil(`${victim}'s row shows down`, () => p.evaluate(() => (window as unknown as { stateLog: { state: string; at: number }[] }).stateLog),
      (l) => l.some((e) => e.state === 'down'), WAIT_MS, 50);
    const downAfter = log.find((e) => e.state === 'down')!.at - killedAt;
    console.log(`  ${victim} (pid ${pid}) killed: its row down after ${downAfter} ms; states ${log.map((e) => `${e.state}@${e.at - killedAt}`).join(', ')}`);
    assert.ok(downAfter <= DOWN_WITHIN_MS, `the killed daemon's row turned down ${downAfter} ms after the kill (at most ${DOWN_WITHIN_MS})`);
    // hostlb restarts it: the row comes back, and the processes panel says how the last one ended.
    await p.waitForSelector(`${rowSelector(victim)}:is([data-state="up"], [data-state="slow start"])`, { timeout: WAIT_MS });
    await p.waitForSelector(`#processes-table tr[data-daemon="${victim}"]:not([data-pid="${pid}"])`, { timeout: WAIT_MS });
    assert.match(await p.locator(`#processes-table tr[data-daemon="${victim}"]`).innerText(), /SIGKILL/, 'the last exit: killed by SIGKILL');

    // 4. Drain from the page. Cancel first: nothing changes; then confirm: the API shows it draining or quiesced.
    const target = DAEMONS[1];
    const drainButton = p.locator(`${rowSelector(target)} button[data-action="drain"]`);
    await drainButton.click();
    await p.waitForSelector('#confirm[open]', { timeout: WAIT_MS });
    assert.match(await p.locator('#confirm-text').innerText(), new RegExp(`Drain ${target.replace(/\./g, '\\.')}`));
    await p.locator('#confirm-cancel').click();
    await sleep(1_500);
    const cancelled = await apiRow(admin, target);
    assert.ok(cancelled.state !== 'draining' && cancelled.state !== 'quiesced' && cancelled.configuredWeight === 1, `a cancelled drain changes nothing: ${JSON.stringify(cancelled)}`);
    await drainButton.click();
    await p.waitForSelector('#confirm[open]', { timeout: WAIT_MS });
    await p.locator('#confirm-ok').click();
    // The drain in the rollouts panel, for the docs, if it is listed long enough to be seen (it goes once its connections are done).
    const listed = await p.locator('#activity-table tbody tr').first().waitFor({ timeout: 5_000 }).then(() => true, () => false);
    if (listed) await panelShot(p, 'activity');
    const drained = await pollUntil(`${target} draining or quiesced in the API`, () => apiRow(admin, target), (r) => r.state === 'draining' || r.state === 'quiesced', WAIT_MS, 100);
    console.log(`  drained from the page: the API shows ${target} ${drained.state} (${drained.why})`);
    await p.waitForSelector(`${rowSelector(target)}:is([data-state="draining"], [data-state="quiesced"])`, { timeout: WAIT_MS });
    await screenshots(p, 'dashboard-drained', false);

    // And back: undrain from the page.
    await p.locator(`${rowSelector(target)} button[data-action="undrain"]`).click();
    await p.waitForSelector('#confirm[open]', { timeout: WAIT_MS });
    await p.locator('#confirm-ok').click();
    await pollUntil(`${target} back in`, () => apiRow(admin, target), (r) => r.state === 'up' || r.state === 'slow start', WAIT_MS, 100);

    assert.deepEqual(pageErrors, [], 'no error in the page (script, CSP, failed load)');
    console.log(`  screenshots: ${OUTPUT}${DOCS_IMG === null ? '' : `, ${DOCS_IMG}`}`);
  } catch (e) {
    if (page) await screenshots(page, 'dashboard-failure', false).catch(() => {});
    const extra = `\npage errors: ${JSON.stringify(pageErrors)}\nhostlb dashboard: ${dashboard?.output() ?? '(not started)'}\nfailure screenshot: ${join(OUTPUT, 'dashboard-failure.png')}`;
    if (e instanceof Error) e.message += extra;
    throw e;
  } finally {
    await browser?.close().catch(() => {});
    if (dashboard) dashboardExit = await stopChild(dashboard.child);
    wrk?.stop();
    await wrk?.done;
    await hostlb?.stop();
  }
  assert.equal(dashboardExit, 0, 'hostlb dashboard ends with exit 0 on SIGTERM');
});
