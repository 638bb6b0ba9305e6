// Each advisor against real daemons on loopback ephemeral ports started here:
// what counts as healthy, the reason given when not, that the timeout bounds
// every probe, and that a timed-out command is gone when its probe settles.

import assert from 'node:assert/strict';
import { createSocket, type Socket as UdpSocket } from 'node:dgram';
import { once } from 'node:events';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer as createHttpServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { createServer as createTcpServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { describe, test, type TestContext } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  advisorSpec,
  execProbe,
  HTTP_USER_AGENT,
  httpProbe,
  probeFor,
  tcpProbe,
  udpProbe,
  type AdvisorSpec,
  type AdvisorType,
  type Probe,
  type ProbeResult,
  type ProbeTarget,
} from '../../src/health/advisors/index.js';

const LOCAL = '127.0.0.1';
// The loopback range beyond 127.0.0.1 answers on lo without set-up on Linux.
const LOOPBACK_RANGE = '127.10.1.1';
const SHORT_TIMEOUT = 0.3;
// How late a probe ended by its timeout may settle. A busy machine runs timers
// late; what this must catch is a probe that waits for something other than
// its timeout (the daemons here never answer: that would be for ever).
const TIMEOUT_SLACK_MS = 3_000;
// The timeout of every other probe: far above anything that should end a
// probe "at once" (refused, aborted), so a bound well below it tells the two
// apart without timing the machine.
const LONG_TIMEOUT = 30;
const AT_ONCE_MS = LONG_TIMEOUT * 1000 / 3;

function spec(type: AdvisorType, fields: Partial<AdvisorSpec> = {}): AdvisorSpec {
  return advisorSpec({ type, timeout: LONG_TIMEOUT, ...fields });
}

async function probe(fn: Probe, target: ProbeTarget, s: AdvisorSpec, signal = new AbortController().signal): Promise<ProbeResult & { wallMs: number }> {
  const started = performance.now();
  const result = await fn(target, s, signal);
  return { ...result, wallMs: performance.now() - started };
}

/** Listens on an ephemeral port; closed (every connection destroyed) when the test ends. */
async function listen(t: TestContext, server: Server, address = LOCAL): Promise<ProbeTarget> {
  const sockets = new Set<Socket>();
  server.on('connection', (s: Socket) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  server.listen(0, address);
  await once(server, 'listening');
  t.after(async () => {
    for (const s of sockets) s.destroy();
    server.close();
    await once(server, 'close');
  });
  return { address, port: (server.address() as AddressInfo).port };
}

/** A port nothing listens on: bound once for an ephemeral number, then closed. */
async function closedTcpPort(): Promise<ProbeTarget> {
  const server = createTcpServer().listen(0, LOCAL);
  await once(server, 'listening');
  const { port } = server.address() as AddressInfo;
  server.close();
  await once(server, 'close');
  return { address: LOCAL, port };
}

async function udpDaemon(t: TestContext, onMessage: (socket: UdpSocket, msg: Buffer, rinfo: { address: string; port: number }) => void): Promise<ProbeTarget> {
  const socket = createSocket('udp4');
  socket.on('message', (msg, rinfo) => onMessage(socket, msg, rinfo));
  socket.bind(0, LOCAL);
  await once(socket, 'listening');
  t.after(() => socket.close());
  return { address: LOCAL, port: socket.address().port };
}

function tempDir(t: TestContext): string {
  const dir = mkdtempSync(join(tmpdir(), 'hlbt-advisor-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** Whether `pid` names no live process (gone, or a zombie awaiting its reaper). */
function processGone(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (err) {
    if ((err as { code?: string }).code === 'ESRCH') return true;
    throw err;
  }
  try {
    // /proc/<pid>/stat: "pid (comm) state ..."; comm may hold spaces, state follows the last ')'.
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).startsWith('Z');
  } catch {
    return true;
  }
}

async function eventuallyGone(pid: number, withinMs: number): Promise<boolean> {
  const deadline = performance.now() + withinMs;
  while (!processGone(pid)) {
    if (performance.now() > deadline) return false;
    await sleep(10);
  }
  return true;
}

describe('tcp advisor', () => {
  test('a listening daemon is ok, and its connection is closed after the handshake', async (t) => {
    let closed = false;
    const server = createTcpServer((s) => {
      s.on('end', () => { closed = true; s.end(); });
      s.on('error', () => {});
    });
    const target = await listen(t, server);
    const result = await probe(tcpProbe, target, spec('tcp'));
    assert.deepEqual({ ok: result.ok, reason: result.reason }, { ok: true, reason: '' });
    assert.ok(result.responseMs > 0 && result.responseMs < LONG_TIMEOUT * 1000, `responseMs ${result.responseMs}`);
    // The FIN may reach the daemon after the probe has settled.
    for (const deadline = performance.now() + 20_000; !closed && performance.now() < deadline;) await sleep(10);
    assert.ok(closed, 'the daemon saw an orderly close (FIN)');
  });

  test('a daemon in the wider loopback range (127.10.x.x) is ok', async (t) => {
    const target = await listen(t, createTcpServer((s) => s.destroy()), LOOPBACK_RANGE);
    assert.equal((await probe(tcpProbe, target, spec('tcp'))).ok, true);
  });

  test('a closed port: connection refused, at once', async () => {
    const result = await probe(tcpProbe, await closedTcpPort(), spec('tcp'));
    assert.equal(result.ok, false);
    assert.equal(result.reason, 'connection refused');
    assert.ok(result.wallMs < AT_ONCE_MS, `took ${result.wallMs} ms, not the ${LONG_TIMEOUT} s timeout`);
  });

  test('a name or a bad port is refused without touching the network', async () => {
    const named = await probe(tcpProbe, { address: 'localhost', port: 80 }, spec('tcp'));
    assert.deepEqual({ ok: named.ok, reason: named.reason }, { ok: false, reason: 'bad address "localhost"' });
    assert.equal((await probe(tcpProbe, { address: LOCAL, port: 0 }, spec('tcp'))).reason, 'bad port 0');
    assert.equal((await probe(httpProbe, { address: '[::1]', port: 80 }, spec('http'))).reason, 'bad address "[::1]"');
  });
});

describe('http advisor', () => {
  async function httpDaemon(t: TestContext, handler: (req: IncomingMessage, res: ServerResponse) => void): Promise<ProbeTarget> {
    return listen(t, createHttpServer(handler));
  }

  test('200 is ok; the request carries method, path, Host and User-Agent', async (t) => {
    const seen: Array<{ method?: string; url?: string; host?: string; ua?: string }> = [];
    const target = await httpDaemon(t, (req, res) => {
      seen.push({ method: req.method, url: req.url, host: req.headers.host, ua: req.headers['user-agent'] });
      res.end('hello');
    });
    const plain = await probe(httpProbe, target, spec('http'));
    assert.deepEqual({ ok: plain.ok, reason: plain.reason }, { ok: true, reason: '' });
    const custom = await probe(httpProbe, target, spec('http', { method: 'HEAD', path: '/healthz?full=1', host: 'app.example' }));
    assert.equal(custom.ok, true);
    assert.deepEqual(seen, [
      { method: 'GET', url: '/', host: `${LOCAL}:${target.port}`, ua: HTTP_USER_AGENT },
      { method: 'HEAD', url: '/healthz?full=1', host: 'app.example', ua: HTTP_USER_AGENT },
    ]);
  });

  test('a status other than expect fails with both named; expect may be any status', async (t) => {
    const target = await httpDaemon(t, (_req, res) => {
      res.statusCode = 503;
      res.end('down for maintenance');
    });
    const result = await probe(httpProbe, target, spec('http'));
    assert.equal(result.ok, false);
    assert.equal(result.reason, 'status 503, expected 200');
    assert.equal((await probe(httpProbe, target, spec('http', { expect: 503 }))).ok, true);
  });

  test('body: ok when the text appears, even split across chunks; otherwise "body lacks"', async (t) => {
    const target = await httpDaemon(t, (_req, res) => {
      // Two writes with a pause between: "status: o" then "k\n" arrive apart.
      res.write('x'.repeat(5000) + 'status: o');
      setTimeout(() => res.end('k\n'), 20);
    });
    const found = await probe(httpProbe, target, spec('http', { body: 'status: ok' }));
    assert.deepEqual({ ok: found.ok, reason: found.reason }, { ok: true, reason: '' });
    const lacking = await probe(httpProbe, target, spec('http', { body: 'ok"' }));
    assert.equal(lacking.ok, false);
    assert.equal(lacking.reason, 'body lacks "ok\\""');
  });

  test('a daemon that accepts and never answers: timed out, after the timeout and not much later', async (t) => {
    const target = await listen(t, createTcpServer(() => { /* accept, read nothing, say nothing */ }));
    const result = await probe(httpProbe, target, spec('http', { timeout: SHORT_TIMEOUT }));
    assert.equal(result.ok, false);
    assert.equal(result.reason, 'timed out after 300 ms');
    assert.ok(result.wallMs >= 290 && result.wallMs < 300 + TIMEOUT_SLACK_MS, `took ${result.wallMs} ms`);
  });

  test('the timeout bounds the whole exchange, not only the head: a body that never ends', async (t) => {
    const target = await httpDaemon(t, (_req, res) => res.write('partial'));
    const result = await probe(httpProbe, target, spec('http', { timeout: SHORT_TIMEOUT, body: 'complete' }));
    assert.equal(result.reason, 'timed out after 300 ms');
    assert.ok(result.wallMs < 300 + TIMEOUT_SLACK_MS, `took ${result.wallMs} ms`);
  });

  test('response time is measured: a daemon that waits 60 ms reads about 60 ms', async (t) => {
    const target = await httpDaemon(t, (_req, res) => setTimeout(() => res.end('ok'), 60));
    const result = await probe(httpProbe, target, spec('http'));
    assert.equal(result.ok, true);
    // The lower bound is the point (the wait is measured); above, only that it is not the timeout's.
    assert.ok(result.responseMs >= 55 && result.responseMs < AT_ONCE_MS, `responseMs ${result.responseMs}`);
  });

  test('a closed port: connection refused', async () => {
    assert.equal((await probe(httpProbe, await closedTcpPort(), spec('http'))).reason, 'connection refused');
  });

  test('a daemon that closes without answering fails with a reason', async (t) => {
    const target = await listen(t, createTcpServer((s) => s.destroy()));
    const result = await probe(httpProbe, target, spec('http'));
    assert.equal(result.ok, false);
    assert.match(result.reason, /socket hang up|connection reset/);
  });
});

describe('udp advisor', () => {
  test('an echo daemon is ok; it got the payload', async (t) => {
    const got: string[] = [];
    const target = await udpDaemon(t, (socket, msg, rinfo) => {
      got.push(msg.toString());
      socket.send(msg, rinfo.port, rinfo.address);
    });
    const result = await probe(udpProbe, target, spec('udp'));
    assert.deepEqual({ ok: result.ok, reason: result.reason }, { ok: true, reason: '' });
    assert.ok(result.responseMs > 0);
    assert.equal((await probe(udpProbe, target, spec('udp', { payload: 'status?', reply: 'status?' }))).ok, true);
    assert.deepEqual(got, ['ping', 'status?']);
  });

  test('a daemon that stays silent: no reply within the timeout', async (t) => {
    const target = await udpDaemon(t, () => {});
    const result = await probe(udpProbe, target, spec('udp', { timeout: SHORT_TIMEOUT }));
    assert.equal(result.ok, false);
    assert.equal(result.reason, 'no reply within 300 ms');
    assert.ok(result.wallMs >= 290 && result.wallMs < 300 + TIMEOUT_SLACK_MS, `took ${result.wallMs} ms`);
  });

  test('replies without the expected text: reply lacks', async (t) => {
    const target = await udpDaemon(t, (socket, _msg, rinfo) => socket.send('busy', rinfo.port, rinfo.address));
    // The wrong reply must arrive before the timeout for the reason to name it: 2 s, not 300 ms, on a busy machine.
    const result = await probe(udpProbe, target, spec('udp', { timeout: 2, reply: 'ready' }));
    assert.equal(result.reason, 'reply lacks "ready"');
  });

  test('a closed port: the ICMP port unreachable ends the probe at once', async (t) => {
    const socket = createSocket('udp4').bind(0, LOCAL);
    await once(socket, 'listening');
    const port = socket.address().port;
    socket.close();
    const result = await probe(udpProbe, { address: LOCAL, port }, spec('udp'));
    assert.equal(result.reason, 'connection refused');
    assert.ok(result.wallMs < AT_ONCE_MS, `took ${result.wallMs} ms, not the ${LONG_TIMEOUT} s timeout`);
    t.diagnostic(`refused after ${result.wallMs.toFixed(1)} ms`);
  });
});

describe('exec advisor', () => {
  const target: ProbeTarget = { address: '127.10.1.1', port: 1234 };

  test('true is ok, false is exit code 1', async () => {
    assert.deepEqual(await execProbe(target, spec('exec', { command: 'true' }), new AbortController().signal).then((r) => [r.ok, r.reason]), [true, '']);
    assert.deepEqual(await execProbe(target, spec('exec', { command: 'false' }), new AbortController().signal).then((r) => [r.ok, r.reason]), [false, 'exit code 1']);
  });

  test('HOST and PORT name the daemon; of the parent environment only the allow-list (PATH, ...) is passed on', async () => {
    process.env.HLBT_ADVISOR_MARK = 'seen';
    try {
      const check = spec('exec', { command: 'sh', args: ['-c', `test "$PORT" = 1234 && test "$HOST" = 127.10.1.1 && test -z "$HLBT_ADVISOR_MARK" && test "$PATH" = "${process.env.PATH}"`] });
      assert.equal((await probe(execProbe, target, check)).ok, true);
      const wrong = await probe(execProbe, { ...target, port: 1235 }, spec('exec', { command: 'sh', args: ['-c', 'test "$PORT" = 1234'] }));
      assert.equal(wrong.reason, 'exit code 1');
    } finally {
      delete process.env.HLBT_ADVISOR_MARK;
    }
  });

  test('a command that outlives the timeout is killed, with what it started', async (t) => {
    const dir = tempDir(t);
    const pidFile = join(dir, 'pids');
    // sh stays as the leader and waits; `sleep 60 &` is its child in the same group (it would outlive the wait below if not killed).
    const script = `sleep 60 & echo "$$ $!" > ${pidFile}; wait`;
    // Long enough for sh to start and write its pid file on a busy machine before the timeout kills it.
    const timeout = 2;
    const result = await probe(execProbe, target, spec('exec', { command: 'sh', args: ['-c', script], timeout }));
    assert.equal(result.ok, false);
    assert.equal(result.reason, `timed out after ${timeout * 1000} ms`);
    assert.ok(result.wallMs < timeout * 1000 + TIMEOUT_SLACK_MS, `took ${result.wallMs} ms`);
    const [shPid, sleepPid] = readFileSync(pidFile, 'utf8').trim().split(' ').map(Number);
    assert.ok(processGone(shPid), `sh (${shPid}) is gone when the probe settles`);
    // The sleep is reparented and reaped by init: allow it a moment.
    assert.ok(await eventuallyGone(sleepPid, 20_000), `sleep (${sleepPid}) was killed too`);
  });

  test('a command that does not exist, and one killed by a signal', async () => {
    assert.equal((await probe(execProbe, target, spec('exec', { command: '/nonexistent/hlbt-check' }))).reason, 'command not found: /nonexistent/hlbt-check');
    assert.equal((await probe(execProbe, target, spec('exec', { command: 'sh', args: ['-c', 'kill -TERM $$'] }))).reason, 'killed by SIGTERM');
  });
});

describe('every advisor', () => {
  test('abort ends a probe at once with reason "aborted"; an aborted signal never starts one', async (t) => {
    const tcpTarget = await listen(t, createTcpServer(() => {}));
    const udpTarget = await udpDaemon(t, () => {});
    const cases: Array<[AdvisorType, ProbeTarget, Partial<AdvisorSpec>]> = [
      ['http', tcpTarget, {}],
      ['udp', udpTarget, {}],
      ['exec', tcpTarget, { command: 'sleep', args: [String(LONG_TIMEOUT)] }],
    ];
    for (const [type, target, fields] of cases) {
      const controller = new AbortController();
      setTimeout(() => controller.abort(), 50);
      const result = await probe(probeFor(type), target, spec(type, fields), controller.signal);
      assert.equal(result.reason, 'aborted', type);
      assert.ok(result.wallMs < AT_ONCE_MS, `${type} took ${result.wallMs} ms, not the ${LONG_TIMEOUT} s timeout`);
      assert.equal((await probeFor(type)(target, spec(type, fields), controller.signal)).reason, 'aborted');
    }
  });

  test('IPv6 daemons (::1): tcp, http with a bracketed Host, udp', async (t) => {
    if (!existsSync('/proc/sys/net/ipv6')) {
      t.skip('this kernel has no IPv6');
      return;
    }
    const hosts: Array<string | undefined> = [];
    const target = await listen(t, createHttpServer((req, res) => {
      hosts.push(req.headers.host);
      res.end();
    }), '::1');
    assert.equal((await probe(tcpProbe, target, spec('tcp'))).ok, true);
    assert.equal((await probe(httpProbe, target, spec('http'))).ok, true);
    assert.deepEqual(hosts, [`[::1]:${target.port}`]);
    const socket = createSocket('udp6');
    socket.on('message', (msg, rinfo) => socket.send(msg, rinfo.port, rinfo.address));
    socket.bind(0, '::1');
    await once(socket, 'listening');
    t.after(() => socket.close());
    assert.equal((await probe(udpProbe, { address: '::1', port: socket.address().port }, spec('udp'))).ok, true);
  });

  test('probeFor knows the four types and refuses others with a stable code', () => {
    assert.equal(probeFor('tcp'), tcpProbe);
    assert.equal(probeFor('http'), httpProbe);
    assert.equal(probeFor('udp'), udpProbe);
    assert.equal(probeFor('exec'), execProbe);
    assert.throws(() => probeFor('icmp' as AdvisorType), { code: 'ADVISOR_INVALID' });
  });

  test('advisorSpec fills the field defaults and names a bad key', () => {
    assert.deepEqual(advisorSpec({ type: 'tcp' }), { type: 'tcp', interval: 2, timeout: 1, rise: 2, fall: 3 });
    assert.deepEqual(advisorSpec({ type: 'http', interval: undefined, path: '/h' }), { type: 'http', interval: 2, timeout: 1, rise: 2, fall: 3, path: '/h' });
    assert.throws(() => advisorSpec({ type: 'tcp', timeout: 0 }), { code: 'ADVISOR_INVALID', message: /^advisor\.timeout: 0 / });
    assert.throws(() => advisorSpec({ type: 'tcp', rise: 1.5 }), { code: 'ADVISOR_INVALID', message: /^advisor\.rise: / });
    assert.throws(() => advisorSpec({ type: 'http', path: 'health' }), { code: 'ADVISOR_INVALID', message: /^advisor\.path: / });
    assert.throws(() => advisorSpec({ type: 'http', expect: 42 }), { code: 'ADVISOR_INVALID', message: /^advisor\.expect: / });
    assert.throws(() => advisorSpec({ type: 'http', method: 'GE T' }), { code: 'ADVISOR_INVALID', message: /^advisor\.method: / });
    assert.throws(() => advisorSpec({ type: 'exec' }), { code: 'ADVISOR_INVALID', message: /^advisor\.command: / });
  });
});
