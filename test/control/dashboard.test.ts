// The web dashboard's serving side (docs/dashboard.md): its static files on a
// TCP admin listener with admin.dashboard (types, CSP, no token for the page,
// the token for everything else, a fixed list that no path escapes), the
// configuration rule, and `hostlb dashboard` as users run it — the built CLI
// as a child in front of a real instance over a MemoryLink
// (test/support/memory-hostlb.ts): its one-time token, /v1/* passed on to the
// unix socket (a change, the event stream), and its exits.

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { request } from 'node:http';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { pino } from 'pino';
import { DASHBOARD_CSP, DASHBOARD_FILES } from '../../src/control/api/dashboard-files.js';
import { AdminServer } from '../../src/control/api/server.js';
import { parseConfig } from '../../src/control/config-file.js';
import { ConfigError } from '../../src/errors.js';
import type { LiveViewSnapshot } from '../../src/control/view/live-view.js';
import { TEST_TOKEN, apiRequest, freePort, startMemoryHostlb, type ApiAnswer, type MemoryHostlb } from '../support/memory-hostlb.js';

/** dist/test/control/ → the repository and the built CLI. */
const REPO = fileURLToPath(new URL('../../../', import.meta.url));
const MAIN = join(REPO, 'dist/src/control/cli/main.js');
const C4 = '198.18.100.1';
const D1 = '198.18.2.1:8080';
const enc = encodeURIComponent;
const drainPath = (daemon: string, action: 'drain' | 'undrain'): string => `/v1/clusters/${C4}/ports/80/tcp/daemons/${enc(daemon)}/${action}`;

/** One request with any method and raw path (sent as written: no normalising of `..`), to 127.0.0.1:port. */
function raw(port: number, method: string, path: string, headers: Record<string, string> = {}): Promise<ApiAnswer> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, method, path, headers }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('error', reject);
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        let body: unknown = text;
        if ((res.headers['content-type'] ?? '').includes('application/json') && text !== '') body = JSON.parse(text);
        resolve({ status: res.statusCode ?? 0, headers: res.headers, text, body });
      });
    });
    req.on('error', reject);
    req.end();
  });
}

const bearer = (token: string): Record<string, string> => ({ authorization: `Bearer ${token}` });
const errorCode = (r: ApiAnswer): string | undefined => (r.body as { error?: { code?: string } }).error?.code;

/** The first server-sent event of type `type` on GET `path` (Accept: text/event-stream); the stream is closed after it. */
function firstEvent(port: number, path: string, token: string, type: string, timeoutMs = 10_000): Promise<{ status: number; contentType: string; data: unknown }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path, headers: { accept: 'text/event-stream', ...bearer(token) } }, (res) => {
      let text = '';
      const timer = setTimeout(() => { req.destroy(); reject(new Error(`no "${type}" event within ${timeoutMs} ms: ${text.slice(0, 500)}`)); }, timeoutMs);
      res.setEncoding('utf8').on('data', (chunk: string) => {
        text += chunk;
        for (const block of text.split('\n\n').slice(0, -1)) {
          const lines = block.split('\n');
          if (!lines.includes(`event: ${type}`)) continue;
          const data = lines.find((l) => l.startsWith('data: '));
          clearTimeout(timer);
          req.destroy();
          resolve({ status: res.statusCode ?? 0, contentType: String(res.headers['content-type']), data: data === undefined ? null : JSON.parse(data.slice(6)) });
          return;
        }
      });
    });
    req.on('error', (e) => { if (!req.destroyed) reject(e); });
    req.end();
  });
}

async function until(what: string, check: () => Promise<boolean> | boolean, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) assert.fail(`${what}: not within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function viewRow(s: MemoryHostlb, daemon: string): Promise<LiveViewSnapshot['ports'][number]['daemons'][number]> {
  const r = await s.call('GET', '/v1/view');
  assert.equal(r.status, 200, r.text);
  const row = (r.body as LiveViewSnapshot).ports.find((p) => p.port === `${C4}:80/tcp`)!.daemons.find((d) => d.daemon === daemon);
  assert.ok(row, `${daemon} in /v1/view: ${r.text}`);
  return row;
}

describe('the dashboard on the TCP admin listener (admin.dashboard: true)', () => {
  let stack: MemoryHostlb;
  let admin: AdminServer;
  let port: number;

  before(async () => {
    // memory-hostlb's own TCP listener is one without the dashboard; a second AdminServer over the same instance has it.
    stack = await startMemoryHostlb({ tcp: true, traffic: true });
    port = await freePort();
    admin = await AdminServer.start(stack.instance, {
      socket: join(stack.dir, 'dashboard-admin.sock'),
      tcp: { host: '127.0.0.1', port, token: TEST_TOKEN, dashboard: true },
      version: '0.0.0-test', logger: pino({ level: 'silent' }), onStopRequested: () => {},
    });
  });
  after(async () => {
    admin?.close();
    await stack?.close();
  });

  it('serves every file of its fixed list without the token, with its content type, a strict CSP and nosniff', async () => {
    const types: Record<string, RegExp> = { html: /^text\/html; charset=utf-8$/, js: /^text\/javascript; charset=utf-8$/, css: /^text\/css; charset=utf-8$/, svg: /^image\/svg\+xml$/ };
    for (const path of Object.keys(DASHBOARD_FILES)) {
      const r = await raw(port, 'GET', path);
      assert.equal(r.status, 200, `${path}: ${r.text}`);
      const ext = path.endsWith('/') ? 'html' : path.split('.').pop()!;
      assert.match(String(r.headers['content-type']), types[ext], `${path}'s content type`);
      assert.equal(r.headers['content-security-policy'], DASHBOARD_CSP, path);
      assert.equal(r.headers['x-content-type-options'], 'nosniff', path);
      assert.equal(r.headers['x-frame-options'], 'DENY', path);
      assert.ok(r.text.length > 50, `${path} has content`);
      const head = await raw(port, 'HEAD', path);
      assert.equal(head.status, 200);
      assert.equal(head.text, '', 'HEAD answers no body');
      assert.equal(Number(head.headers['content-length']), Buffer.byteLength(r.text), `${path}: HEAD's length is GET's`);
    }
    const csp = DASHBOARD_CSP.split(';').map((d) => d.trim());
    assert.ok(csp.includes("default-src 'self'"), DASHBOARD_CSP);
    assert.ok(!/https?:|\*|'unsafe-|data:/.test(DASHBOARD_CSP), `nothing but 'self' is allowed: ${DASHBOARD_CSP}`);
  });

  it('vendors uPlot through npm: /dashboard/uplot.js and uplot.css are the installed package\'s files, byte for byte', async () => {
    const require = createRequire(import.meta.url);
    const js = await raw(port, 'GET', '/dashboard/uplot.js');
    assert.equal(js.text, readFileSync(require.resolve('uplot/dist/uPlot.esm.js'), 'utf8'));
    const css = await raw(port, 'GET', '/dashboard/uplot.css');
    assert.equal(css.text, readFileSync(require.resolve('uplot/dist/uPlot.min.css'), 'utf8'));
  });

  it('the page loads nothing from elsewhere: every src and href of index.html and every import of app.js is one of its own files', async () => {
    const html = (await raw(port, 'GET', '/dashboard/')).text;
    const refs = [...html.matchAll(/\b(?:src|href)="([^"]*)"/g)].map((m) => m[1]);
    assert.ok(refs.length >= 4, `index.html refers to its files: ${refs.join(', ')}`);
    const app = (await raw(port, 'GET', '/dashboard/app.js')).text;
    const imports = [...app.matchAll(/^import .* from '([^']+)';$/gm)].map((m) => m[1]);
    assert.deepEqual(imports, ['./uplot.js']);
    for (const ref of [...refs, ...imports]) {
      assert.ok(!/^[a-z]+:|^\/\//i.test(ref), `${ref} is on the same origin`);
      assert.ok(Object.hasOwn(DASHBOARD_FILES, new URL(ref, 'http://x/dashboard/').pathname), `${ref} is served`);
    }
    assert.ok(!/innerHTML|outerHTML|insertAdjacentHTML|document\.write|eval\(|new Function/.test(app), 'app.js never turns hostlb\'s text into HTML or code');
  });

  it('redirects / and /dashboard to /dashboard/', async () => {
    for (const path of ['/', '/dashboard']) {
      const r = await raw(port, 'GET', path);
      assert.equal(r.status, 302, path);
      assert.equal(r.headers.location, '/dashboard/');
    }
  });

  it('answers 404 for a file not on its list and never reads outside it: no traversal, encoded or not', async () => {
    const secret = '"name": "hostlb"'; // package.json, two levels above the page's folder
    const r = await raw(port, 'GET', '/dashboard/nope.js');
    assert.equal(r.status, 404);
    assert.equal(errorCode(r), 'NO_SUCH_FILE');
    for (const path of [
      '/dashboard/..%2f..%2fpackage.json', '/dashboard/%2e%2e%2fpackage.json', '/dashboard//etc/passwd',
      '/dashboard/app.js%00.html', '/dashboard/node_modules/uplot/package.json', '/dashboard/dashboard-files.js',
    ]) {
      const a = await raw(port, 'GET', path);
      assert.equal(a.status, 404, `${path}: ${a.status} ${a.text.slice(0, 200)}`);
      assert.ok(!a.text.includes(secret), path);
    }
    // `..` segments are resolved before the lookup: what is left is outside /dashboard/ and needs the token.
    for (const path of ['/dashboard/../package.json', '/dashboard/%2e%2e/%2e%2e/package.json', '/dashboard/.%2e/.%2e/package.json', '/dashboard/..\\..\\package.json', '/dashboard/../v1/status']) {
      const a = await raw(port, 'GET', path);
      assert.equal(a.status, 401, `${path}: ${a.status} ${a.text.slice(0, 200)}`);
      const b = await raw(port, 'GET', path, bearer(TEST_TOKEN));
      assert.ok(!b.text.includes(secret), path);
    }
  });

  it('takes GET and HEAD only for its files', async () => {
    const r = await raw(port, 'POST', '/dashboard/app.js');
    assert.equal(r.status, 405);
    assert.equal(r.headers.allow, 'GET, HEAD');
  });

  it('everything else still needs the token: /v1/* (the view and its stream included) and /metrics', async () => {
    for (const path of ['/v1/status', '/v1/view', '/v1/events', '/metrics', '/favicon.ico']) {
      const r = await raw(port, 'GET', path);
      assert.equal(r.status, 401, path);
      assert.equal(errorCode(r), 'UNAUTHORIZED');
      assert.equal((await raw(port, 'GET', path, bearer('not-the-token-0123456789'))).status, 401, `${path} with a wrong token`);
    }
    const drain = await raw(port, 'POST', drainPath(D1, 'drain'));
    assert.equal(drain.status, 401, 'a change without the token');
    assert.equal((await viewRow(stack, D1)).state, 'up', 'and it changed nothing');
    const view = await raw(port, 'GET', '/v1/view', bearer(TEST_TOKEN));
    assert.equal(view.status, 200, view.text);
    assert.ok(Array.isArray((view.body as LiveViewSnapshot).ports));
    const stream = await firstEvent(port, '/v1/view', TEST_TOKEN, 'view');
    assert.equal(stream.contentType, 'text/event-stream');
    assert.ok(Array.isArray((stream.data as LiveViewSnapshot).ports), 'the stream starts with a view');
  });

  it('a TCP listener without admin.dashboard serves no page: /dashboard/ needs the token like any path', async () => {
    const r = await apiRequest({ port: stack.tcpPort }, 'GET', '/dashboard/');
    assert.equal(r.status, 401);
    const withToken = await apiRequest({ port: stack.tcpPort, token: TEST_TOKEN }, 'GET', '/dashboard/');
    assert.equal(withToken.status, 404);
    assert.equal(errorCode(withToken), 'NO_SUCH_ENDPOINT');
  });
});

describe('admin.dashboard in the configuration', () => {
  const CLUSTERS = 'clusters:\n  - address: 198.18.100.1\n    ports:\n      - port: 80\n        daemons: [{ address: 198.18.2.1:8080 }]\n';

  function parseError(text: string): ConfigError {
    try {
      parseConfig(text, 'hostlb.yaml');
    } catch (e) {
      assert.ok(e instanceof ConfigError, String(e));
      return e;
    }
    assert.fail(`accepted:\n${text}`);
  }

  it('is off unless set, and on with a TCP listener', () => {
    assert.notEqual(parseConfig(CLUSTERS).admin.dashboard, true);
    const on = parseConfig(`admin:\n  listen: 127.0.0.1:9180\n  token: 0123456789abcdef0\n  dashboard: true\n${CLUSTERS}`);
    assert.equal(on.admin.dashboard, true);
  });

  it('true without admin.listen is an error naming admin.dashboard that says to set admin.listen or use hostlb dashboard', () => {
    const e = parseError(`admin:\n  dashboard: true\n${CLUSTERS}`);
    assert.equal(e.path, 'admin.dashboard');
    assert.equal(e.line, 2);
    assert.match(e.message, /admin\.listen/);
    assert.match(e.message, /hostlb dashboard/);
  });

  it('takes a boolean only', () => {
    assert.equal(parseError(`admin:\n  listen: 127.0.0.1:9180\n  token: 0123456789abcdef0\n  dashboard: "yes"\n${CLUSTERS}`).path, 'admin.dashboard');
  });
});

describe('hostlb dashboard', () => {
  let stack: MemoryHostlb;
  const children: ChildProcess[] = [];

  before(async () => {
    stack = await startMemoryHostlb({ traffic: true });
  });
  after(async () => {
    for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
    await stack?.close();
  });

  interface Running { child: ChildProcess; port: number; token: string; url: string; stderr: () => string; exit: Promise<number | null> }

  /** Starts `hostlb --socket <stack> dashboard --port 0`; resolves once it printed its address. */
  function startCli(extra: string[] = []): Promise<Running> {
    const child = spawn(process.execPath, [MAIN, '--socket', stack.socket, 'dashboard', '--port', '0', ...extra], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, HOSTLB_SOCKET: undefined, HOSTLB_TOKEN: undefined } });
    children.push(child);
    let stdout = '';
    let stderr = '';
    const exit = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
    child.stderr!.on('data', (c: Buffer) => { stderr += c.toString(); });
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`hostlb dashboard printed no address within 20 s:\n${stdout}${stderr}`)), 20_000);
      child.stdout!.on('data', (c: Buffer) => {
        stdout += c.toString();
        const m = /^dashboard: (http:\/\/127\.0\.0\.1:(\d+)\/dashboard\/#token=([A-Za-z0-9_-]+))$/m.exec(stdout);
        if (m) {
          clearTimeout(timer);
          resolve({ child, url: m[1], port: Number(m[2]), token: m[3], stderr: () => stderr, exit });
        }
      });
      void exit.then((code) => reject(new Error(`hostlb dashboard exited ${code}:\n${stdout}${stderr}`)));
    });
  }

  function runCli(args: string[]): Promise<{ code: number | null; stderr: string }> {
    const child = spawn(process.execPath, [MAIN, ...args], { stdio: ['ignore', 'ignore', 'pipe'], timeout: 20_000, env: { ...process.env, HOSTLB_SOCKET: undefined, HOSTLB_TOKEN: undefined } });
    let stderr = '';
    child.stderr!.on('data', (c: Buffer) => { stderr += c.toString(); });
    return new Promise((resolve) => child.on('close', (code) => resolve({ code, stderr })));
  }

  it('prints the page\'s address with a fresh token, serves the page without it, and passes /v1/* on to the socket only with it', async () => {
    const a = await startCli();
    const b = await startCli();
    assert.notEqual(a.token, b.token, 'each run makes its own token');
    assert.ok(a.token.length >= 32, `a long random token: ${a.token}`);
    b.child.kill('SIGTERM');
    assert.equal(await b.exit, 0, 'SIGTERM ends it cleanly');

    const page = await raw(a.port, 'GET', '/dashboard/');
    assert.equal(page.status, 200);
    assert.equal(page.headers['content-security-policy'], DASHBOARD_CSP);
    assert.match(page.text, /<script type="module" src="app.js"><\/script>/);
    assert.equal((await raw(a.port, 'GET', '/')).headers.location, '/dashboard/');

    for (const headers of [{}, bearer(b.token), bearer(TEST_TOKEN), { authorization: a.token }]) {
      const r = await raw(a.port, 'GET', '/v1/status', headers);
      assert.equal(r.status, 401, `without its own token: ${JSON.stringify(headers)}`);
      assert.equal(errorCode(r), 'UNAUTHORIZED');
    }
    const status = await raw(a.port, 'GET', '/v1/status', bearer(a.token));
    assert.equal(status.status, 200, status.text);
    assert.equal((status.body as { pid: number }).pid, process.pid, 'the hostlb behind the socket answered');
    const metrics = await raw(a.port, 'GET', '/metrics', bearer(a.token));
    assert.equal(metrics.status, 404, 'only /v1/* is passed on');
    const traversal = await raw(a.port, 'GET', '/dashboard/..%2f..%2fpackage.json');
    assert.equal(traversal.status, 404);
    a.child.kill('SIGTERM');
    assert.equal(await a.exit, 0);
  });

  it('passes a change on (drain, undrain) and the view\'s event stream, and ends the stream upstream when the browser leaves', async () => {
    const d = await startCli();
    try {
      const before = stack.admin.eventStreams.clients;
      const drained = await raw(d.port, 'POST', drainPath(D1, 'drain'), { ...bearer(d.token), 'content-type': 'application/json' });
      assert.equal(drained.status, 200, drained.text);
      assert.ok(['draining', 'quiesced'].includes((await viewRow(stack, D1)).state), 'drained through the dashboard');
      const undrained = await raw(d.port, 'POST', drainPath(D1, 'undrain'), bearer(d.token));
      assert.equal(undrained.status, 200, undrained.text);
      assert.equal((await viewRow(stack, D1)).state, 'up');

      const stream = await firstEvent(d.port, '/v1/view', d.token, 'view');
      assert.equal(stream.status, 200);
      assert.equal(stream.contentType, 'text/event-stream');
      assert.equal((stream.data as LiveViewSnapshot).pid, process.pid);
      await until('the stream upstream closed after the browser left', () => stack.admin.eventStreams.clients === before);
    } finally {
      d.child.kill('SIGTERM');
      await d.exit;
    }
  });

  it('says so and exits 3 when no hostlb answers on the socket, and 2 on a bad --port or with --url', async () => {
    const none = await runCli(['--socket', join(stack.dir, 'nobody.sock'), 'dashboard', '--port', '0']);
    assert.equal(none.code, 3, none.stderr);
    assert.match(none.stderr, /not running/);
    const bad = await runCli(['--socket', stack.socket, 'dashboard', '--port', 'eighty']);
    assert.equal(bad.code, 2, bad.stderr);
    assert.match(bad.stderr, /--port/);
    const url = await runCli(['--url', 'http://127.0.0.1:9180', '--socket', stack.socket, 'dashboard']);
    assert.equal(url.code, 2, url.stderr);
    assert.match(url.stderr, /admin\.dashboard/);
  });
});
