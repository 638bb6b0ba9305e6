// `hostlb reload-app` under load drops nothing, even with one instance: hostlb
// runs one copy of a Node app (`hostlb run -i 1`) while a client in another
// namespace keeps eight keep-alive connections busy (20 requests each, then a
// new connection, as browsers and proxies with a per-connection request limit
// do). reload-app runs twice. Each time the surge instance on the next
// address starts before the old copy is stopped, and goes again afterwards;
// not one request fails and no connection is reset; the new copies serve.
//
// Every wait is for an event (a line printed, a count reached), bounded by a
// hang guard a working hostlb never reaches.

import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { processAlive as alive } from '../support/daemons.js';
import { HOSTLB_MAIN, SERVER_V4 } from '../support/hostlb-process.js';
import { endRun, runStage, startRun, until } from '../support/hostlb-run.js';
import { NetnsSandbox, skipUnlessRoot } from '../support/netns.js';

const PORT = 3100;

// Keep-alive HTTP (Node's default); "<index> <pid>" per request; a graceful stop on SIGTERM.
const APP = `
import { createServer } from 'node:http';
const server = createServer((req, res) => res.end(\`\${process.env.HOSTLB_INDEX} \${process.pid}\\n\`));
server.listen(Number(process.env.PORT), process.env.HOST, () => console.log('app ready'));
process.on('SIGTERM', () => server.close(() => process.exit(0)));
`;

// Eight workers, each a keep-alive connection of 20 requests, then the next one; until the stop
// file appears (or 240 s, a bound a working test never reaches). Prints "ok N" every 200 answers,
// then its counts as JSON.
const LOAD = `
import http from 'node:http';
import { existsSync } from 'node:fs';
const [url, stopFile] = process.argv.slice(2);
const started = Date.now();
const r = { ok: 0, failed: 0, resets: 0, errors: {}, pids: {}, connections: 0 };
const stop = () => existsSync(stopFile) || Date.now() - started > 240000;
const get = (agent) => new Promise((resolve) => {
  const req = http.get(url, { agent }, (res) => {
    let body = '';
    res.setEncoding('utf8').on('data', (c) => (body += c)).on('end', () => resolve({ status: res.statusCode, body })).on('error', (error) => resolve({ error }));
  });
  req.on('error', (error) => resolve({ error }));
  req.setTimeout(10000, () => req.destroy(Object.assign(new Error('no answer in 10 s'), { code: 'TIMEOUT' })));
});
async function worker() {
  while (!stop()) {
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    r.connections++;
    for (let i = 0; i < 20 && !stop(); i++) {
      const a = await get(agent);
      const failure = a.error ? (a.error.code ?? a.error.message) : a.status !== 200 ? 'HTTP ' + a.status : null;
      if (failure !== null) {
        r.failed++;
        if (failure === 'ECONNRESET') r.resets++;
        r.errors[failure] = (r.errors[failure] ?? 0) + 1;
        continue;
      }
      r.ok++;
      const pid = a.body.split(' ')[1].trim();
      r.pids[pid] = (r.pids[pid] ?? 0) + 1;
      if (r.ok % 200 === 0) console.log('ok ' + r.ok);
    }
    agent.destroy();
  }
}
await Promise.all(Array.from({ length: 8 }, worker));
console.log(JSON.stringify(r));
`;

interface Event { id: number; type: string; daemon: string; reason?: string }

test('[socket] hostlb reload-app with one instance under keep-alive load: a surge instance first, zero failed requests, zero resets', async (t) => {
  if (!skipUnlessRoot(t, 'network namespaces, a BPF sk_lookup program and node')) return;
  const { sandbox, client, server, dir } = runStage(t, { 'app.mjs': APP, 'load.mjs': LOAD });
  const stopFile = join(dir, 'stop');
  const socket = join(dir, 'state', 'admin.sock');
  const hostlb = (args: string[]): ReturnType<NetnsSandbox['run']> => sandbox.run(server, [process.execPath, HOSTLB_MAIN, '--socket', socket, ...args], { timeoutMs: 180_000 });

  const running = await startRun(sandbox, server, PORT, ['-i', '1', '--state-dir', join(dir, 'state')], ['node', join(dir, 'app.mjs')]);
  try {
    assert.equal(running.pids.length, 1, `one instance up:\n${running.block}`);
    const [first] = running.pids;
    const surgeAddress = `${first.address.split('.').slice(0, 3).join('.')}.${Number(first.address.split('.')[3]) + 1}:${PORT}`;

    const load = sandbox.spawn(client, [process.execPath, join(dir, 'load.mjs'), `http://${SERVER_V4}:${PORT}/`, stopFile]);
    let loadOut = '';
    load.stdout?.setEncoding('utf8').on('data', (c: string) => (loadOut += c));
    const loadDone = new Promise<void>((resolve) => load.once('exit', () => resolve()));
    const answered = (): number => Math.max(0, ...[...loadOut.matchAll(/^ok (\d+)$/gm)].map((m) => Number(m[1])));
    await until('the load\'s first 400 answers', () => (answered() >= 400 ? true : undefined));

    const oldPids = [first.pid];
    for (const round of [1, 2]) {
      const reload = await hostlb(['reload-app', '--drain-timeout', '60']);
      assert.equal(reload.code, 0, `reload-app ${round}: ${reload.stdout}${reload.stderr}`);
      assert.match(reload.stdout, new RegExp(`^app\\.mjs: replaced 1 instance\\(s\\): ${first.address.replace(/\./g, '\\.')}:${PORT}`, 'm'));
      assert.match(reload.stdout, new RegExp(`surge instance ${surgeAddress.replace(/\./g, '\\.')}`), `reload-app ${round} names its surge instance: ${reload.stdout}`);
      // Load keeps flowing through the new copy before the next round.
      const now = answered();
      await until(`400 more answers after reload ${round}`, () => (answered() >= now + 400 ? true : undefined));
      assert.ok(!alive(oldPids[oldPids.length - 1]), `reload ${round}: the old copy (pid ${oldPids[oldPids.length - 1]}) is gone`);
      const events = (await hostlb(['--json', 'events'])).stdout.trim().split('\n').map((l) => JSON.parse(l) as Event);
      const started = events.filter((e) => e.type === 'daemon_started');
      oldPids.push(Number(/pid (\d+)/.exec(started.filter((e) => e.daemon === `${first.address}:${PORT}`).at(-1)!.reason!)![1]));
    }
    writeFileSync(stopFile, '');
    await loadDone;
    const counts = JSON.parse(loadOut.trim().split('\n').at(-1)!) as { ok: number; failed: number; resets: number; errors: Record<string, number>; pids: Record<string, number>; connections: number };
    console.log(`  load across two reloads: ${counts.ok} answers on ${counts.connections} keep-alive connections, ${counts.failed} failed, ${counts.resets} reset; answers per pid ${JSON.stringify(counts.pids)}`);
    assert.equal(counts.failed, 0, `no request failed across two reloads: ${JSON.stringify(counts)}`);
    assert.equal(counts.resets, 0, `no connection was reset: ${JSON.stringify(counts)}`);
    assert.ok(counts.pids[String(oldPids[2])] > 0, `the copy of the second reload served: ${JSON.stringify(counts.pids)}`);

    // The order, from hostlb's own events: surge up, then the old copy out; the surge out last.
    const events = (await hostlb(['--json', 'events'])).stdout.trim().split('\n').map((l) => JSON.parse(l) as Event);
    const at = (type: string, daemon: string): number[] => events.filter((e) => e.type === type && e.daemon === daemon).map((e) => e.id);
    const surgeStarts = at('daemon_started', surgeAddress);
    const surgeExits = at('daemon_exited', surgeAddress);
    const instanceExits = at('daemon_exited', `${first.address}:${PORT}`);
    assert.equal(surgeStarts.length, 2, `one surge per reload: ${JSON.stringify(events)}`);
    assert.equal(instanceExits.length, 2, `the instance was replaced twice: ${JSON.stringify(events)}`);
    for (const i of [0, 1]) {
      assert.ok(surgeStarts[i] < instanceExits[i] && instanceExits[i] < surgeExits[i], `reload ${i + 1}: surge started (#${surgeStarts[i]}) before the old copy stopped (#${instanceExits[i]}), and stopped after it (#${surgeExits[i]})`);
    }
    const surgePids = events.filter((e) => e.type === 'daemon_started' && e.daemon === surgeAddress).map((e) => Number(/pid (\d+)/.exec(e.reason!)![1]));
    for (const pid of surgePids) assert.ok(!alive(pid), `the surge copy ${pid} is gone`);
    const status = await hostlb(['status']);
    assert.doesNotMatch(status.stdout, new RegExp(surgeAddress.replace(/\./g, '\\.')), `the surge daemon left the configuration:\n${status.stdout}`);
  } finally {
    writeFileSync(stopFile, '');
    await endRun(running, server, `hlr${PORT}`);
  }
});
