// The daemon supervisor: endpoint arithmetic, placeholders and the backoff
// sequence as pure functions; then real child processes (small Node HTTP
// daemons from fixtures/ on 127.10.3.x, loopback only) started, killed,
// restarted and stopped, checking PIDs with signal 0.

import { describe, it, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { get } from 'node:http';
import { createServer } from 'node:net';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Logger } from '../../src/control/logger.js';
import { Backoff } from '../../src/health/backoff.js';
import {
  daemonEndpoints, expandPlaceholders, Supervisor, type SuperviseSpec, type SupervisorEvents, type SupervisorLogger,
  type SupervisorOptions,
} from '../../src/health/supervisor.js';
import { INHERITED_ENV, resolveRunAs, runsAsRoot } from '../../src/health/run-as.js';

// Compiled to dist/test/health/: three levels up is the repo root, where the .mjs fixtures stay.
const FIXTURES = fileURLToPath(new URL('../../../test/health/fixtures/', import.meta.url));
const HTTP_DAEMON = `${FIXTURES}http-daemon.mjs`;
const EXIT_DAEMON = `${FIXTURES}exit-daemon.mjs`;
const WAIT_MS = 5_000;
/** For tests with child processes: a hang (a stop that never resolves) fails instead of stalling the run. */
const PROC = { timeout: 15_000 };

// Compile-time check: hostlb's pino logger can be handed to the supervisor as is.
const _loggerFits = (l: Logger): SupervisorLogger => l;

interface LogLine { level: 'info' | 'warn' | 'error'; obj: Record<string, unknown>; msg: string | undefined }

function memoryLogger(): SupervisorLogger & { lines: LogLine[] } {
  const lines: LogLine[] = [];
  const at = (level: LogLine['level']) => (obj: object, msg?: string): void => { lines.push({ level, obj: obj as Record<string, unknown>, msg }); };
  return { lines, info: at('info'), warn: at('warn'), error: at('error') };
}

/** A port free on `address` right now (the kernel's pick, released again). */
async function freePort(address: string): Promise<number> {
  const srv = createServer();
  await new Promise<void>((resolve, reject) => { srv.once('error', reject); srv.listen(0, address, resolve); });
  const { port } = srv.address() as { port: number };
  await new Promise((resolve) => srv.close(resolve));
  return port;
}

interface Answer { index: string; host: string; port: number; greeting?: string; argv: string[]; hasPath: boolean; localAddress: string; pid: number; listenFds?: string; listenPid?: string }

function getJson(address: string, port: number): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = get({ host: address, port, path: '/', agent: false, timeout: 1_000 }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => { body += c; });
      res.on('end', () => { try { resolve(JSON.parse(body) as Answer); } catch (e) { reject(e); } });
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', reject);
  });
}

/** Polls until the daemon at address:port answers (it may still be starting). */
async function answer(address: string, port: number): Promise<Answer> {
  const deadline = Date.now() + WAIT_MS;
  for (;;) {
    try {
      return await getJson(address, port);
    } catch (err) {
      if (Date.now() > deadline) throw new Error(`${address}:${port} did not answer within ${WAIT_MS} ms`, { cause: err });
      await sleep(25);
    }
  }
}

/**
 * The next `event` whose arguments satisfy `match`. The deadline timer is
 * ref'd: it also keeps the test alive while the supervisor waits on its own
 * (unref'd) backoff timer.
 */
function nextEvent<K extends keyof SupervisorEvents>(
  sup: Supervisor, event: K, match: (...args: SupervisorEvents[K]) => boolean = () => true,
): Promise<SupervisorEvents[K]> {
  return new Promise((resolve, reject) => {
    const listener = (...args: unknown[]): void => {
      const a = args as SupervisorEvents[K];
      if (!match(...a)) return;
      clearTimeout(timer);
      sup.off(event, listener as never);
      resolve(a);
    };
    const timer = setTimeout(() => {
      sup.off(event, listener as never);
      reject(new Error(`no '${event}' event within ${WAIT_MS} ms`));
    }, WAIT_MS);
    sup.on(event, listener as never);
  });
}

type Recorded = [string, ...unknown[]];

function record(sup: Supervisor): Recorded[] {
  const seen: Recorded[] = [];
  for (const name of ['spawned', 'exited', 'restarting', 'stopped'] as const) {
    sup.on(name, (...args: unknown[]) => seen.push([name, ...args]));
  }
  return seen;
}

function assertGone(pid: number): void {
  assert.throws(() => process.kill(pid, 0), { code: 'ESRCH' }, `process ${pid} is still running`);
}

/** A supervisor stopped when the test ends, pass or fail, so no daemon outlives it. */
function supervise(t: TestContext, spec: SuperviseSpec, options?: SupervisorOptions): Supervisor {
  const sup = new Supervisor(spec, options);
  t.after(() => sup.stop());
  return sup;
}

function httpSpec(port: number, extra: Partial<SuperviseSpec> = {}): SuperviseSpec {
  return { command: process.execPath, args: [HTTP_DAEMON], instances: 3, env: {}, host: '127.10.3.1', port, ...extra };
}

function pids(sup: Supervisor): number[] {
  return sup.instances().map((i) => {
    assert.ok(i.pid !== null, `instance ${i.index} has no pid (${i.state})`);
    return i.pid;
  });
}

describe('daemonEndpoints', () => {
  it('counts IPv4 addresses up from host, carrying across octets', () => {
    assert.deepEqual(daemonEndpoints({ host: '198.18.2.254', instances: 3, port: 8080 }), [
      { index: 0, address: '198.18.2.254', port: 8080 },
      { index: 1, address: '198.18.2.255', port: 8080 },
      { index: 2, address: '198.18.3.0', port: 8080 },
    ]);
    assert.deepEqual(daemonEndpoints({ host: '10.255.255.255', instances: 2, port: 1 }).map((e) => e.address), ['10.255.255.255', '11.0.0.0']);
    assert.deepEqual(daemonEndpoints({ host: '255.255.255.255', instances: 1, port: 65535 }), [{ index: 0, address: '255.255.255.255', port: 65535 }]);
  });

  it('counts IPv6 addresses up in the low 64 bits, in canonical text', () => {
    assert.deepEqual(daemonEndpoints({ host: '2001:DB8:0:0::fffe', instances: 3, port: 80 }).map((e) => e.address),
      ['2001:db8::fffe', '2001:db8::ffff', '2001:db8::1:0']);
    assert.deepEqual(daemonEndpoints({ host: '2001:db8::ffff:ffff', instances: 2, port: 80 }).map((e) => e.address),
      ['2001:db8::ffff:ffff', '2001:db8::1:0:0']);
    assert.deepEqual(daemonEndpoints({ host: '2001:db8:1:2:ffff:ffff:ffff:fffe', instances: 2, port: 80 }).map((e) => e.address),
      ['2001:db8:1:2:ffff:ffff:ffff:fffe', '2001:db8:1:2:ffff:ffff:ffff:ffff']);
  });

  const bad: Array<[string, Partial<SuperviseSpec>, string]> = [
    ['a name instead of an address', { host: 'localhost' }, 'host'],
    ['an endpoint instead of an address', { host: '198.18.2.1:80' }, 'host'],
    ['a prefix', { host: '198.18.2.0/24' }, 'host'],
    ['an IPv6 zone', { host: 'fe80::1%eth0' }, 'host'],
    ['an IPv4 range past 255.255.255.255', { host: '255.255.255.254', instances: 3 }, 'host'],
    ['an IPv6 range past the /64', { host: '2001:db8::ffff:ffff:ffff:ffff', instances: 2 }, 'host'],
    ['zero instances', { instances: 0 }, 'instances'],
    ['a fraction of an instance', { instances: 1.5 }, 'instances'],
    ['NaN instances', { instances: NaN }, 'instances'],
    ['too many instances', { instances: 100_000 }, 'instances'],
    ['port 0', { port: 0 }, 'port'],
    ['port 65536', { port: 65536 }, 'port'],
    ['a fractional port', { port: 80.5 }, 'port'],
  ];
  for (const [what, patch, field] of bad) {
    it(`rejects ${what}, naming ${field}`, () => {
      const spec = { host: '198.18.2.1', instances: 2, port: 8080, ...patch };
      assert.throws(() => daemonEndpoints(spec), (err: Error & { code?: string }) => {
        assert.equal(err.code, 'SUPERVISE_INVALID');
        assert.match(err.message, new RegExp(`^${field}: `));
        return true;
      });
    });
  }
});

describe('expandPlaceholders', () => {
  const vars = { host: '127.10.3.2', port: 8080, index: 1 };

  it('replaces every {host}, {port} and {index}', () => {
    assert.equal(expandPlaceholders('--listen={host}:{port} --id=d{index} --again={index}', vars), '--listen=127.10.3.2:8080 --id=d1 --again=1');
  });

  it('leaves other braces and text alone, and expands only once', () => {
    assert.equal(expandPlaceholders('{hostname} {} {PORT} plain', vars), '{hostname} {} {PORT} plain');
    assert.equal(expandPlaceholders('{host}', { host: '{port}', port: 1, index: 0 }), '{port}');
  });

  it('gives an IPv6 host without brackets', () => {
    assert.equal(expandPlaceholders('[{host}]:{port}', { host: '2001:db8::2', port: 80, index: 1 }), '[2001:db8::2]:80');
  });
});

describe('Backoff', () => {
  it('doubles from initialMs up to maxMs', () => {
    const b = new Backoff({ initialMs: 50, maxMs: 400 });
    assert.deepEqual(Array.from({ length: 6 }, () => b.next()), [50, 100, 200, 400, 400, 400]);
  });

  it('defaults to 500 ms doubling up to 30 s', () => {
    const b = new Backoff();
    assert.deepEqual(Array.from({ length: 8 }, () => b.next()), [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000]);
  });

  it('starts over after a run of at least resetAfterMs, not after a shorter one', () => {
    const b = new Backoff({ initialMs: 50, maxMs: 400, resetAfterMs: 1_000 });
    b.next();
    b.next();
    b.noteRun(999);
    assert.equal(b.next(), 200);
    b.noteRun(1_000);
    assert.equal(b.next(), 50);
  });

  it('rejects options it cannot use, naming them', () => {
    for (const [options, field] of [
      [{ initialMs: 0 }, 'backoff.initialMs'],
      [{ initialMs: Infinity }, 'backoff.initialMs'],
      [{ initialMs: 100, maxMs: 50 }, 'backoff.maxMs'],
      [{ resetAfterMs: -1 }, 'backoff.resetAfterMs'],
    ] as const) {
      assert.throws(() => new Backoff(options), (err: Error & { code?: string }) => err.code === 'SUPERVISE_INVALID' && err.message.startsWith(`${field}: `));
    }
  });
});

describe('Supervisor', () => {
  it('rejects a spec it cannot run, naming the field', () => {
    const good = httpSpec(8080);
    const cases: Array<[Partial<SuperviseSpec> | { backoff: object }, string]> = [
      [{ command: '' }, 'command'],
      [{ args: [1] as unknown as string[] }, 'args'],
      [{ env: { A: 1 } as unknown as Record<string, string> }, 'env.A'],
      [{ stopSignal: 'SIGKILL' as 'SIGTERM' }, 'stopSignal'],
      [{ stopTimeout: -1 }, 'stopTimeout'],
      [{ host: '127.10.3' }, 'host'],
      [{ backoff: { initialMs: 0 } }, 'backoff.initialMs'],
    ];
    for (const [patch, field] of cases) {
      const make = 'backoff' in patch ? () => new Supervisor(good, { backoff: patch.backoff }) : () => new Supervisor({ ...good, ...patch });
      assert.throws(make, (err: Error & { code?: string }) => err.code === 'SUPERVISE_INVALID' && err.message.startsWith(`${field}: `), field);
    }
  });

  it('listenFds: each instance gets its listening socket as fd 3 (LISTEN_FDS, LISTEN_PID its own); the socket outlives a kill, so a connection made meanwhile waits and is served', PROC, async (t) => {
    const port = await freePort('127.10.3.1');
    const sup = supervise(t, httpSpec(port, { instances: 2, listenFds: true }));
    sup.start();
    for (let i = 0; i < 2; i++) {
      const got = await answer(`127.10.3.${i + 1}`, port);
      assert.deepEqual({ listenFds: got.listenFds, listenPid: got.listenPid, index: got.index, localAddress: got.localAddress }, { listenFds: '1', listenPid: String(got.pid), index: String(i), localAddress: `127.10.3.${i + 1}` });
    }
    const [before] = pids(sup);
    const exited = nextEvent(sup, 'exited', (index) => index === 0);
    process.kill(before, 'SIGKILL');
    await exited;
    // No daemon runs on 127.10.3.1 now, but hostlb's socket still listens: the connection is queued, not refused.
    const during = await new Promise<Answer>((resolve, reject) => {
      const req = get({ host: '127.10.3.1', port, path: '/', agent: false, timeout: PROC.timeout }, (res) => {
        let body = '';
        res.setEncoding('utf8').on('data', (c: string) => { body += c; }).on('end', () => resolve(JSON.parse(body) as Answer));
      });
      req.on('timeout', () => req.destroy(new Error('timeout')));
      req.on('error', reject);
    });
    assert.notEqual(during.pid, before, 'served by the restarted instance');
    assert.equal(during.listenPid, String(during.pid));
    await sup.stop();
    // Stopped: the sockets closed with the supervisor.
    await assert.rejects(getJson('127.10.3.1', port), { code: 'ECONNREFUSED' });
  });

  it('resize: growing starts the new instances on the next addresses, shrinking stops only the ones past the count; the others keep their PIDs', PROC, async (t) => {
    const port = await freePort('127.10.3.1');
    const sup = supervise(t, httpSpec(port, { instances: 1 }));
    sup.start();
    const first = (await answer('127.10.3.1', port)).pid;
    await sup.resize(3);
    assert.deepEqual(sup.instances().map((i) => [i.index, i.address]), [[0, '127.10.3.1'], [1, '127.10.3.2'], [2, '127.10.3.3']]);
    const grown = [await answer('127.10.3.2', port), await answer('127.10.3.3', port)].map((a) => a.pid);
    assert.equal((await answer('127.10.3.1', port)).pid, first, 'instance 0 was not restarted by the resize');
    await sup.resize(2);
    assert.deepEqual(sup.instances().map((i) => i.index), [0, 1]);
    assertGone(grown[1]);
    await assert.rejects(getJson('127.10.3.3', port), { code: 'ECONNREFUSED' });
    assert.deepEqual([(await answer('127.10.3.1', port)).pid, (await answer('127.10.3.2', port)).pid], [first, grown[0]], 'the instances below both counts kept running');
    assert.throws(() => sup.startInstance(2), { code: 'SUPERVISE_INVALID' });
    await assert.rejects(sup.resize(0), { code: 'SUPERVISE_INVALID' });
    await sup.stop();
  });

  it('refuses calls out of order with stable codes', PROC, async (t) => {
    const sup = supervise(t, { ...httpSpec(await freePort('127.10.3.1')), instances: 1 });
    assert.throws(() => sup.startInstance(0), { code: 'SUPERVISE_NOT_STARTED' });
    await assert.rejects(sup.restartInstance(0), { code: 'SUPERVISE_NOT_STARTED' });
    await sup.stopInstance(0); // stopping what never ran is a no-op
    sup.start();
    assert.throws(() => sup.start(), { code: 'SUPERVISE_STARTED' });
    assert.throws(() => sup.startInstance(1), { code: 'SUPERVISE_INVALID' });
    await assert.rejects(sup.stopInstance(-1), { code: 'SUPERVISE_INVALID' });
    await sup.stop();
  });

  it('starts every instance on its own address with env and args expanded, and logs their output', PROC, async (t) => {
    const port = await freePort('127.10.3.1');
    const logger = memoryLogger();
    const sup = supervise(t, httpSpec(port, { args: [HTTP_DAEMON, '--name=d{index}@{host}:{port}'], env: { GREETING: 'hello {index} at {host}' } }), { logger });
    const spawned = record(sup);
    sup.start();
    for (let i = 0; i < 3; i++) {
      const address = `127.10.3.${i + 1}`;
      const got = await answer(address, port);
      assert.deepEqual(
        { index: got.index, host: got.host, port: got.port, greeting: got.greeting, argv: got.argv, hasPath: got.hasPath, localAddress: got.localAddress },
        { index: String(i), host: address, port, greeting: `hello ${i} at ${address}`, argv: [`--name=d${i}@${address}:${port}`], hasPath: true, localAddress: address },
      );
    }
    const list = sup.instances();
    assert.deepEqual(list.map((i) => [i.index, i.address, i.port, i.state, i.restarts, i.lastExit]), [
      [0, '127.10.3.1', port, 'running', 0, null],
      [1, '127.10.3.2', port, 'running', 0, null],
      [2, '127.10.3.3', port, 'running', 0, null],
    ]);
    assert.equal(new Set(pids(sup)).size, 3);
    assert.deepEqual(spawned.map((e) => e.slice(0, 2)).sort(), [['spawned', 0], ['spawned', 1], ['spawned', 2]]);
    for (let i = 0; i < 3; i++) {
      const daemon = `127.10.3.${i + 1}:${port}`;
      assert.ok(logger.lines.some((l) => l.obj.daemon === daemon && l.obj.stream === 'stdout' && l.msg === `listening on 127.10.3.${i + 1}:${port}`), `stdout of ${daemon}`);
      assert.ok(logger.lines.some((l) => l.obj.daemon === daemon && l.obj.stream === 'stderr' && l.msg === `daemon ${i} ready`), `stderr of ${daemon}`);
    }
  });

  it('restarts a daemon killed with SIGKILL: exited, restarting, spawned, and it answers again', PROC, async (t) => {
    const port = await freePort('127.10.3.1');
    const sup = supervise(t, httpSpec(port), { backoff: { initialMs: 50 } });
    sup.start();
    for (let i = 0; i < 3; i++) await answer(`127.10.3.${i + 1}`, port);
    const before = pids(sup);
    const seen = record(sup);
    const respawn = nextEvent(sup, 'spawned', (index) => index === 1);
    process.kill(before[1], 'SIGKILL');
    const [, newPid] = await respawn;
    assert.deepEqual(seen, [['exited', 1, null, 'SIGKILL'], ['restarting', 1, 50], ['spawned', 1, newPid]]);
    assert.notEqual(newPid, before[1]);
    assertGone(before[1]);
    assert.equal((await answer('127.10.3.2', port)).pid, newPid);
    const after = sup.instances();
    assert.equal(after[1].restarts, 1);
    assert.equal(after[1].lastExit?.signal, 'SIGKILL');
    assert.deepEqual([after[0].pid, after[2].pid], [before[0], before[2]], 'the other daemons are untouched');
  });

  it('backs off a daemon that keeps exiting: 50, 100, 200, 400, 400 ms, and stop() ends the loop', PROC, async (t) => {
    const logger = memoryLogger();
    const sup = supervise(t, { command: process.execPath, args: [EXIT_DAEMON], instances: 1, env: {}, host: '127.10.3.1', port: 9 },
      { backoff: { initialMs: 50, maxMs: 400, resetAfterMs: 60_000 }, logger });
    const seen = record(sup);
    const stamps: Array<[string, number]> = [];
    sup.on('restarting', () => stamps.push(['restarting', performance.now()]));
    sup.on('spawned', () => stamps.push(['spawned', performance.now()]));
    let count = 0;
    const fifth = nextEvent(sup, 'restarting', () => ++count === 5);
    sup.start();
    await fifth; // about 1.2 s of delays plus five Node start-ups
    assert.deepEqual(seen.filter((e) => e[0] === 'restarting').map((e) => e[2]), [50, 100, 200, 400, 400]);
    assert.ok(seen.filter((e) => e[0] === 'exited').every((e) => e[2] === 3 && e[3] === null), 'every exit has status 3');
    // Each respawn waited at least its delay (timers fire no earlier, give or take a millisecond of rounding).
    const delays = [50, 100, 200, 400];
    for (let k = 0; k < delays.length; k++) {
      const [, restartAt] = stamps[2 * k + 1];
      const [what, spawnAt] = stamps[2 * k + 2];
      assert.equal(what, 'spawned');
      assert.ok(spawnAt - restartAt >= delays[k] - 2, `respawn ${k + 1} came after ${spawnAt - restartAt} ms, expected ${delays[k]}`);
    }
    assert.equal(sup.instances()[0].state, 'backoff');
    assert.equal(sup.instances()[0].restarts, 4);
    assert.ok(logger.lines.some((l) => l.msg === 'exiting with 3 (index 0)'), 'a partial last line is still logged');

    await sup.stop();
    const total = seen.length;
    assert.deepEqual(seen.at(-1), ['stopped', 0]);
    await sleep(600); // longer than the pending 400 ms delay: nothing may fire
    assert.equal(seen.length, total, `events after stop(): ${JSON.stringify(seen.slice(total))}`);
    assert.equal(sup.instances()[0].state, 'stopped');
  });

  it('resets the backoff after a run of resetAfterMs', PROC, async (t) => {
    const sup = supervise(t, { command: process.execPath, args: [EXIT_DAEMON], instances: 1, env: {}, host: '127.10.3.1', port: 9 },
      { backoff: { initialMs: 50, maxMs: 400, resetAfterMs: 1 } });
    const delays: number[] = [];
    sup.on('restarting', (_i, d) => delays.push(d));
    const third = nextEvent(sup, 'restarting', () => delays.length === 3);
    sup.start();
    await third;
    assert.deepEqual(delays, [50, 50, 50]);
  });

  it('stopInstance sends the stop signal, does not restart, and startInstance brings it back', PROC, async (t) => {
    const port = await freePort('127.10.3.1');
    const sup = supervise(t, httpSpec(port, { instances: 2, stopSignal: 'SIGINT' }), { backoff: { initialMs: 50 } });
    sup.start();
    await answer('127.10.3.1', port);
    await answer('127.10.3.2', port);
    const [pid0, pid1] = pids(sup);
    const seen = record(sup);
    await sup.stopInstance(0);
    assertGone(pid0);
    assert.deepEqual(seen, [['exited', 0, null, 'SIGINT'], ['stopped', 0]]);
    const [first] = sup.instances();
    assert.equal(first.state, 'stopped');
    assert.equal(first.pid, null);
    assert.equal(first.lastExit?.signal, 'SIGINT');
    await sleep(200); // past the 50 ms backoff: a stopped instance stays stopped
    assert.equal(seen.length, 2);
    assert.equal(sup.instances()[1].pid, pid1);
    await assert.rejects(getJson('127.10.3.1', port), { code: 'ECONNREFUSED' });

    const back = nextEvent(sup, 'spawned', (i) => i === 0);
    sup.startInstance(0);
    const [, pid] = await back;
    assert.equal((await answer('127.10.3.1', port)).pid, pid);
    assert.equal(sup.instances()[0].restarts, 0, 'a start by hand is not a restart');
  });

  it('sends SIGKILL after stopTimeout to a daemon that ignores the stop signal', PROC, async (t) => {
    const port = await freePort('127.10.3.1');
    const logger = memoryLogger();
    const sup = supervise(t, httpSpec(port, { instances: 1, args: [HTTP_DAEMON, '--ignore-sigterm'], stopTimeout: 0.3 }), { logger });
    sup.start();
    await answer('127.10.3.1', port);
    const [pid] = pids(sup);
    const t0 = performance.now();
    await sup.stopInstance(0);
    const took = performance.now() - t0;
    assertGone(pid);
    assert.ok(took >= 290, `stopped after ${took} ms, before the 300 ms stopTimeout`);
    assert.equal(sup.instances()[0].lastExit?.signal, 'SIGKILL');
    assert.ok(logger.lines.some((l) => l.msg === 'got SIGTERM, ignoring it'), 'the daemon saw SIGTERM first');
    assert.ok(logger.lines.some((l) => l.level === 'warn' && /SIGKILL/.test(l.msg ?? '')));
  });

  it('stop() leaves no child behind and the supervisor can start again', PROC, async (t) => {
    const port = await freePort('127.10.3.1');
    const sup = supervise(t, httpSpec(port));
    sup.start();
    for (let i = 0; i < 3; i++) await answer(`127.10.3.${i + 1}`, port);
    const before = pids(sup);
    const seen = record(sup);
    const stopping = sup.stop();
    assert.equal(sup.stop(), stopping, 'a second stop() joins the first');
    await stopping;
    for (const pid of before) assertGone(pid);
    assert.deepEqual(sup.instances().map((i) => [i.state, i.pid, i.lastExit?.signal]), [
      ['stopped', null, 'SIGTERM'], ['stopped', null, 'SIGTERM'], ['stopped', null, 'SIGTERM'],
    ]);
    assert.deepEqual(seen.filter((e) => e[0] === 'stopped').map((e) => e[1]).sort(), [0, 1, 2]);
    assert.ok(!seen.some((e) => e[0] === 'restarting'));

    sup.start();
    const again = await answer('127.10.3.3', port);
    assert.ok(!before.includes(again.pid));
    const second = pids(sup);
    await sup.stop();
    for (const pid of second) assertGone(pid);
  });

  it('restartInstance resolves with a new child spawned and the old one gone', PROC, async (t) => {
    const port = await freePort('127.10.3.1');
    const sup = supervise(t, httpSpec(port, { instances: 2 }));
    sup.start();
    await answer('127.10.3.2', port);
    const [pid0, pid1] = pids(sup);
    await sup.restartInstance(1);
    const [after0, after1] = pids(sup);
    assert.equal(sup.instances()[1].state, 'running');
    assert.notEqual(after1, pid1);
    assertGone(pid1);
    assert.equal(after0, pid0);
    assert.equal((await answer('127.10.3.2', port)).pid, after1);
  });

  it('retries a command that cannot run, and restartInstance rejects with SUPERVISE_SPAWN_FAILED', PROC, async (t) => {
    const logger = memoryLogger();
    const sup = supervise(t, { command: '/nonexistent/hostlb-test-daemon', args: [], instances: 1, env: {}, host: '127.10.3.1', port: 9 },
      { backoff: { initialMs: 50 }, logger });
    const seen = record(sup);
    const retried = nextEvent(sup, 'restarting');
    sup.start();
    await retried;
    assert.deepEqual(seen.slice(0, 2), [['exited', 0, null, null], ['restarting', 0, 50]]);
    assert.ok(logger.lines.some((l) => l.level === 'error' && /ENOENT/.test(String(l.obj.err))));
    await assert.rejects(sup.restartInstance(0), (err: Error & { code?: string }) => err.code === 'SUPERVISE_SPAWN_FAILED' && /ENOENT/.test(err.message));
    await sup.stop();
    assert.equal(sup.instances()[0].state, 'stopped');
  });
});

describe('Supervisor: who daemons run as and what they see', () => {
  /** Starts one `sh -c script` daemon and returns the stdout lines it printed up to END. */
  async function output(t: TestContext, extra: Partial<SuperviseSpec>): Promise<string[]> {
    const logger = memoryLogger();
    const script = 'echo "uid=$(id -u) gid=$(id -g) groups=$(id -G)"; env; echo END; exec sleep 60';
    const sup = supervise(t, { command: '/bin/sh', args: ['-c', script], instances: 1, env: { GREETING: 'hi {index}' }, host: '127.10.3.1', port: 8080, stopTimeout: 1, ...extra }, { logger });
    sup.start();
    const deadline = Date.now() + WAIT_MS;
    const lines = (): string[] => logger.lines.filter((l) => l.obj.stream === 'stdout').map((l) => l.msg ?? '');
    while (!lines().includes('END')) {
      if (Date.now() > deadline) assert.fail(`no END from the daemon: ${JSON.stringify(logger.lines)}`);
      await sleep(25);
    }
    return lines();
  }

  it('a daemon sees its HOST, PORT, HOSTLB_INDEX, the configured env and an allow-list of hostlb\'s, never the rest', PROC, async (t) => {
    process.env.HOSTLB_TOKEN = 'secret-token-of-the-admin-api';
    process.env.HOSTLB_TEST_OTHER = 'not for children';
    t.after(() => { delete process.env.HOSTLB_TOKEN; delete process.env.HOSTLB_TEST_OTHER; });
    const lines = await output(t, {});
    const env = new Map(lines.filter((l) => l.includes('=') && !l.startsWith('uid=')).map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]));
    assert.equal(env.get('HOST'), '127.10.3.1');
    assert.equal(env.get('PORT'), '8080');
    assert.equal(env.get('HOSTLB_INDEX'), '0');
    assert.equal(env.get('GREETING'), 'hi 0');
    assert.equal(env.get('PATH'), process.env.PATH);
    assert.equal(env.has('HOSTLB_TOKEN'), false, 'hostlb\'s secrets stay with hostlb');
    assert.equal(env.has('HOSTLB_TEST_OTHER'), false);
    // sh adds PWD, SHLVL and _ by itself.
    const allowed = new Set([...INHERITED_ENV, 'HOST', 'PORT', 'HOSTLB_INDEX', 'GREETING', 'PWD', 'SHLVL', '_']);
    assert.deepEqual([...env.keys()].filter((k) => !allowed.has(k)), []);
  });

  it('runs as the configured user and group (numeric or resolved from names), supplementary groups dropped', { ...PROC, skip: process.getuid?.() !== 0 && 'needs root to change user' }, async (t) => {
    const nobody = resolveRunAs('nobody', 'nogroup');
    assert.deepEqual(nobody, { uid: 65534, gid: 65534, user: 'nobody', home: '/nonexistent' });
    const lines = await output(t, { runAs: nobody, cwd: '/' });
    assert.ok(lines.includes('uid=65534 gid=65534 groups=65534'), lines.join('\n'));
    assert.ok(lines.includes('USER=nobody') && lines.includes('HOME=/nonexistent'), lines.join('\n'));
    const numeric = await output(t, { runAs: resolveRunAs(4321, 4322), cwd: '/' });
    assert.ok(numeric.includes('uid=4321 gid=4322 groups=4322'), numeric.join('\n'));
  });
});

describe('resolveRunAs', () => {
  it('names and ids; a user\'s primary group by default; unknown names say which key to fix', () => {
    assert.equal(resolveRunAs(undefined, undefined), null);
    assert.deepEqual(resolveRunAs('nobody', undefined), { uid: 65534, gid: 65534, user: 'nobody', home: '/nonexistent' });
    assert.deepEqual(resolveRunAs('65534', 'nogroup'), { uid: 65534, gid: 65534, user: 'nobody', home: '/nonexistent' });
    assert.deepEqual(resolveRunAs(5000, undefined), { uid: 5000, gid: 5000, user: null, home: null });
    assert.throws(() => resolveRunAs('no-such-user-x', undefined), { code: 'RUN_AS_UNKNOWN', message: /^user: "no-such-user-x" is not a user of this host \(\/etc\/passwd\)/ });
    assert.throws(() => resolveRunAs('nobody', 'no-such-group-x'), { code: 'RUN_AS_UNKNOWN', message: /^group: "no-such-group-x" is not a group of this host/ });
    assert.equal(runsAsRoot(resolveRunAs('nobody', undefined)), false);
    assert.equal(runsAsRoot(resolveRunAs(0, undefined)), true);
  });
});
