// `hostlb run -i 3 -p 3000 -- CMD`: no configuration file. In a server
// namespace, hostlb runs three copies of a small Python HTTP app (as the user
// nobody) behind port 3000 on every address of the host (the socket data
// plane's 0.0.0.0 cluster): it prints one block naming where to connect and
// each instance's PID; clients in another namespace (the server's own
// address) and on the host itself (localhost) are served by all three PIDs;
// --save writes a file `hostlb check` accepts; Ctrl-C (SIGINT) stops the
// copies and leaves the host as before. The other planes, without --address,
// are refused naming the option.
//
// Every wait is for an event (a line printed, a process gone), bounded by a
// hang guard a working hostlb never reaches.

import assert from 'node:assert/strict';
import { chmodSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { tempDir } from '../support/daemons.js';
import { assertPlaneGone } from '../support/dataplanes.js';
import { clusterTopology, curlThrough, HOSTLB_MAIN, SERVER_V4 } from '../support/hostlb-process.js';
import { NetnsSandbox, skipUnlessRoot } from '../support/netns.js';

const WAIT_MS = 60_000;
const PORT = 3000;
const DEVICE = `hlr${PORT}`;

// Answers "<HOSTLB_INDEX> <pid> <uid>" on every GET; listens where hostlb says (HOST, PORT).
const APP = `
import http.server, os
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = f"{os.environ['HOSTLB_INDEX']} {os.getpid()} {os.getuid()}\\n".encode()
        self.send_response(200)
        self.send_header('content-length', str(len(body)))
        self.send_header('connection', 'close')
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
server = http.server.HTTPServer((os.environ['HOST'], int(os.environ['PORT'])), Handler)
print(f"app {os.environ['HOSTLB_INDEX']} serving on {os.environ['HOST']}:{os.environ['PORT']}", flush=True)
server.serve_forever()
`;

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

async function until<T>(what: string, read: () => T | undefined): Promise<T> {
  const deadline = Date.now() + WAIT_MS;
  for (;;) {
    const value = read();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`${what}: not within ${WAIT_MS} ms`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

test('[socket] hostlb run -i 3 -p 3000 -- python3 app.py: one block with the PIDs, every copy serves localhost and the host\'s address, Ctrl-C leaves nothing', async (t) => {
  if (!skipUnlessRoot(t, 'network namespaces, a BPF sk_lookup program, python3 and curl')) return;
  const sandbox = NetnsSandbox.forTest(t);
  const { client, server } = clusterTopology(sandbox);
  const dir = tempDir(t);
  // The copies run as nobody: the app and its directory must be readable to it.
  chmodSync(dir, 0o755);
  const app = join(dir, 'app.py');
  writeFileSync(app, APP, { mode: 0o644 });
  const saved = join(dir, 'saved.yaml');
  const argv = [process.execPath, HOSTLB_MAIN, 'run', '-i', '3', '-p', String(PORT), '--user', 'nobody', '--dataplane', 'socket', '--state-dir', join(dir, 'state'), '--save', saved, '--', 'python3', app];
  const child = sandbox.spawn(server, argv, { sharedMounts: true });
  let stdout = '';
  let stderr = '';
  child.stdout?.setEncoding('utf8').on('data', (c: string) => (stdout += c));
  child.stderr?.setEncoding('utf8').on('data', (c: string) => (stderr += c));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
  try {
    const block = await until('the run block with three PIDs', () => {
      if (child.exitCode !== null) throw new Error(`hostlb run exited ${child.exitCode}:\n${stderr}`);
      return /stop {6}Ctrl-C/.test(stdout) ? stdout : undefined;
    });
    const pids = [...block.matchAll(/instance {2}(\d) {2}127\.11\.184\.(\d+):3000 {2}pid (\d+) {2}up/g)].map((m) => ({ index: Number(m[1]), address: `127.11.184.${m[2]}`, pid: Number(m[3]) }));
    assert.deepEqual(pids.map((p) => [p.index, p.address]), [[0, '127.11.184.1'], [1, '127.11.184.2'], [2, '127.11.184.3']], `one line per instance on its own loopback address, each up:\n${block}`);
    assert.match(block, /^hostlb run: 3 × .*app\.py behind port 3000\/tcp \(data plane socket, scheduler lc\)$/m);
    assert.match(block, /connect {3}localhost:3000, or port 3000 on any address of this host/);

    // The block came once every copy was up: ask until all three have answered (short connections spread by a hash).
    const answers: string[] = [];
    const deadline = Date.now() + WAIT_MS;
    while (new Set(answers.map((a) => a.split(' ')[1])).size < 3 && Date.now() < deadline) {
      const results = await curlThrough(sandbox, client, Array.from({ length: 10 }, () => `http://${SERVER_V4}:${PORT}/`));
      for (const r of results) if (r.httpCode === 200) answers.push(r.body.trim());
    }
    const served = new Set(answers.map((a) => Number(a.split(' ')[1])));
    assert.deepEqual([...served].sort(), pids.map((p) => p.pid).sort(), `the three PIDs the block named served the host's address: ${answers.join(', ')}`);
    assert.ok(answers.every((a) => a.split(' ')[2] !== '0'), `no copy runs as root: ${answers.join(', ')}`);
    const local = await curlThrough(sandbox, server, Array.from({ length: 6 }, () => `http://localhost:${PORT}/`));
    assert.deepEqual(local.map((r) => r.httpCode), local.map(() => 200), `localhost:3000 on the host: ${JSON.stringify(local)}`);

    // What the copies printed: in `hostlb logs`, each line with its instance, and not in hostlb's own log.
    const socket = join(dir, 'state', 'admin.sock');
    const logsRun = await sandbox.run(server, [process.execPath, HOSTLB_MAIN, '--socket', socket, 'logs']);
    assert.equal(logsRun.code, 0, logsRun.stderr);
    for (const p of pids) assert.match(logsRun.stdout, new RegExp(`^app\\.py\\.${p.index} ${p.address.replace(/\./g, '\\.')}:3000 \\| app ${p.index} serving on ${p.address.replace(/\./g, '\\.')}:3000$`, 'm'), `hostlb logs:\n${logsRun.stdout}`);
    const one = await sandbox.run(server, [process.execPath, HOSTLB_MAIN, '--socket', socket, 'logs', '1']);
    assert.deepEqual(one.stdout.trim().split('\n').map((l) => l.split(' ')[0]), ['app.py.1'], `hostlb logs 1:\n${one.stdout}`);
    assert.doesNotMatch(stderr, /serving on/, 'the copies\' output is not in hostlb\'s own log');

    // --save wrote the same configuration as a file `hostlb check` accepts.
    const check = await sandbox.run(server, [process.execPath, HOSTLB_MAIN, 'check', '-c', saved]);
    assert.equal(check.code, 0, `hostlb check of the saved file: ${check.stderr}\n${readFileSync(saved, 'utf8')}`);
    assert.match(readFileSync(saved, 'utf8'), /address: 0\.0\.0\.0/);

    child.kill('SIGINT');
    const exit = await exited;
    assert.deepEqual(exit, { code: 0, signal: null }, `hostlb run exited 0 on Ctrl-C:\n${stderr.slice(-3_000)}`);
    for (const p of pids) assert.ok(!alive(p.pid), `instance ${p.index} (pid ${p.pid}) is gone`);
    assertPlaneGone(server, DEVICE);
  } finally {
    if (child.exitCode === null) child.kill('SIGKILL');
  }
});

test('hostlb run on a plane that serves one address, without --address: refused naming the option, nothing started', async (t) => {
  if (!skipUnlessRoot(t, 'network namespaces')) return;
  const sandbox = NetnsSandbox.forTest(t);
  const { server } = clusterTopology(sandbox);
  const dir = tempDir(t);
  const run = await sandbox.run(server, [process.execPath, HOSTLB_MAIN, 'run', '-i', '2', '-p', String(PORT), '--user', 'nobody', '--dataplane', 'netfilter', '--state-dir', join(dir, 'state'), '--', 'python3', '-c', 'pass']);
  assert.equal(run.code, 2, `a usage error: ${run.stderr}`);
  assert.match(run.stderr, /--address: this host runs the netfilter data plane, which serves one address/);
  assertPlaneGone(server, DEVICE);
});
