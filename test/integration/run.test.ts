// `hostlb run -i 3 -p 3000 -- CMD`: no configuration file. In a server
// namespace, hostlb runs three copies of a small Python HTTP app (as the user
// nobody) behind port 3000 on every address of the host (the socket data
// plane's 0.0.0.0 cluster): it prints one block naming where to connect and
// each instance's PID; clients in another namespace (the server's own
// address) and on the host itself (localhost) are served by all three PIDs;
// --save writes a file `hostlb check` accepts; --agent answers a front tier's
// agent-check; Ctrl-C (SIGINT) stops the
// copies and leaves the host as before. The other planes, without --address,
// are refused naming the option.
//
// Every wait is for an event (a line printed, a process gone), bounded by a
// hang guard a working hostlb never reaches.

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { processAlive as alive, tempDir } from '../support/daemons.js';
import { assertPlaneGone } from '../support/dataplanes.js';
import { clusterTopology, curlThrough, HOSTLB_MAIN, SERVER_V4 } from '../support/hostlb-process.js';
import { endRun, runStage, servedByAll, startRun, WAIT_MS } from '../support/hostlb-run.js';
import { NetnsSandbox, skipUnlessRoot } from '../support/netns.js';
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

// The same in Node (a server on $HOST:$PORT), and in C, built as a static binary.
const NODE_APP = `
import { createServer } from 'node:http';
createServer((req, res) => res.end(\`\${process.env.HOSTLB_INDEX} \${process.pid} \${process.getuid()}\\n\`))
  .listen(Number(process.env.PORT), process.env.HOST, () => console.log('node app ready'));
`;
const C_APP = `
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
int main(void) {
  int s = socket(AF_INET, SOCK_STREAM, 0), one = 1;
  setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(atoi(getenv("PORT"))) };
  inet_pton(AF_INET, getenv("HOST"), &a.sin_addr);
  if (bind(s, (struct sockaddr *)&a, sizeof a) < 0 || listen(s, 128) < 0) return 1;
  for (;;) {
    int c = accept(s, 0, 0);
    if (c < 0) continue;
    char req[2048], body[64], out[256];
    (void)!read(c, req, sizeof req);
    int n = snprintf(body, sizeof body, "%s %d %d\\n", getenv("HOSTLB_INDEX"), getpid(), getuid());
    int m = snprintf(out, sizeof out, "HTTP/1.0 200 OK\\r\\ncontent-length: %d\\r\\nconnection: close\\r\\n\\r\\n%s", n, body);
    (void)!write(c, out, m);
    close(c);
  }
}
`;

test('[socket] hostlb run serves a Node app and a static binary alike: every copy answers, none as root, Ctrl-C leaves nothing', async (t) => {
  if (!skipUnlessRoot(t, 'network namespaces, a BPF sk_lookup program, gcc and curl')) return;
  const { sandbox, client, server, dir } = runStage(t, { 'app.mjs': NODE_APP, 'app.c': C_APP });
  const cc = await sandbox.run(server, ['gcc', '-static', '-O2', '-o', join(dir, 'server'), join(dir, 'app.c')]);
  assert.equal(cc.code, 0, `gcc -static built the C app: ${cc.stderr}`);
  const apps: Array<{ what: string; port: number; command: string[] }> = [
    { what: 'a static binary', port: 3002, command: [join(dir, 'server')] },
    { what: 'node app.mjs', port: 3001, command: ['node', join(dir, 'app.mjs')] },
  ];
  for (const app of apps) {
    const running = await startRun(sandbox, server, app.port, ['-i', '2', '--state-dir', join(dir, `state-${app.port}`)], app.command);
    try {
      assert.equal(running.pids.length, 2, `${app.what}: two instances up:\n${running.block}`);
      const socket = join(dir, `state-${app.port}`, 'admin.sock');
      const answers = await servedByAll(sandbox, client, `http://${SERVER_V4}:${app.port}/`, running.pids.map((p) => p.pid)).catch(async (e: Error) => {
        const status = await sandbox.run(server, [process.execPath, HOSTLB_MAIN, '--socket', socket, 'status']);
        const local = await sandbox.run(server, ['curl', '-sS', '-m', '5', `http://127.0.0.1:${app.port}/`]);
        throw new Error(`${e.message}\nstatus:\n${status.stdout}${status.stderr}\nlocalhost: ${local.stdout}${local.stderr}\n${running.stderr().slice(-3_000)}`);
      });
      assert.deepEqual([...new Set(answers.map((a) => Number(a.split(' ')[1])))].sort(), running.pids.map((p) => p.pid).sort(), `${app.what}: both PIDs served: ${answers.join(', ')}`);
      assert.ok(answers.every((a) => a.split(' ')[2] !== '0'), `${app.what}: no copy runs as root: ${answers.join(', ')}`);
      running.child.kill('SIGINT');
      assert.deepEqual(await running.exited, { code: 0, signal: null }, `${app.what}: hostlb run exited 0 on Ctrl-C:\n${running.stderr().slice(-3_000)}`);
      for (const p of running.pids) assert.ok(!alive(p.pid), `${app.what}: instance ${p.index} (pid ${p.pid}) is gone`);
      assertPlaneGone(server, `hlr${app.port}`);
    } finally {
      await endRun(running, server, `hlr${app.port}`);
    }
  }
});

test('[socket] hostlb run -i 3 -p 3000 -- python3 app.py: one block with the PIDs, every copy serves localhost and the host\'s address, Ctrl-C leaves nothing', async (t) => {
  if (!skipUnlessRoot(t, 'network namespaces, a BPF sk_lookup program, python3 and curl')) return;
  // The copies run as nobody: runStage makes the app and its directory readable to it.
  const { sandbox, client, server, dir } = runStage(t, { 'app.py': APP });
  const app = join(dir, 'app.py');
  const saved = join(dir, 'saved.yaml');
  const running = await startRun(sandbox, server, PORT, ['-i', '3', '--state-dir', join(dir, 'state'), '--save', saved, '--agent', '9999'], ['python3', app]);
  const { child, block, pids, stderr, exited } = running;
  try {
    assert.deepEqual(pids.map((p) => [p.index, p.address]), [[0, '127.11.184.1'], [1, '127.11.184.2'], [2, '127.11.184.3']], `one line per instance on its own loopback address, each up:\n${block}`);
    assert.match(block, /^hostlb run: 3 × .*app\.py behind port 3000\/tcp \(data plane socket, scheduler lc\)$/m);
    assert.match(block, /connect {3}localhost:3000, or port 3000 on any address of this host/);

    // The block came once every copy was up: ask until all three have answered (short connections spread by a hash).
    const answers = await servedByAll(sandbox, client, `http://${SERVER_V4}:${PORT}/`, pids.map((p) => p.pid));
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
    assert.doesNotMatch(stderr(), /serving on/, 'the copies\' output is not in hostlb\'s own log');

    // --agent: a front tier's agent-check hears the whole port up, from the client's side too.
    assert.match(block, /agent {5}a front tier's HAProxy agent-check answers on port 9999/);
    // Up, at the share slow start has reached so far; full once the copies are through it.
    const agentStatus = async (): Promise<string> => (await sandbox.run(server, [process.execPath, HOSTLB_MAIN, '--socket', socket, 'agent-status', '0.0.0.0', String(PORT)])).stdout.trim();
    assert.match(await agentStatus(), /^up ready ([1-9]\d?|100)%$/);
    const guard = Date.now() + WAIT_MS;
    for (let line = await agentStatus(); line !== 'up ready 100%'; line = await agentStatus()) {
      assert.match(line, /^up ready \d+%$/, 'up all along, the weight ramping');
      assert.ok(Date.now() < guard, `the agent's weight reaches 100% once slow start is over (still "${line}" after ${WAIT_MS} ms)`);
      await new Promise((resolve) => setTimeout(resolve, 250));
    }
    const heard = await sandbox.run(client, ['socat', '-T', '5', '-', `TCP:${SERVER_V4}:9999`]);
    assert.equal(heard.stdout, 'up ready 100%\n', `the agent port answered the client namespace: ${heard.stdout}${heard.stderr}`);

    // reload-app: every instance replaced by a fresh process, one by one; the new ones serve.
    const reload = await sandbox.run(server, [process.execPath, HOSTLB_MAIN, '--socket', socket, 'reload-app'], { timeoutMs: 180_000 });
    assert.equal(reload.code, 0, `hostlb reload-app: ${reload.stdout}${reload.stderr}`);
    assert.match(reload.stdout, /^app\.py: replaced 3 instance\(s\): 127\.11\.184\.1:3000, 127\.11\.184\.2:3000, 127\.11\.184\.3:3000$/m);
    for (const p of pids) assert.ok(!alive(p.pid), `the old instance ${p.index} (pid ${p.pid}) is gone`);
    const named = await sandbox.run(server, [process.execPath, HOSTLB_MAIN, '--socket', socket, 'reload-app', 'other.py']);
    assert.equal(named.code, 1, `a program that does not run here: ${named.stderr}`);
    assert.match(named.stderr, /no supervised program named other\.py runs here; supervised: app\.py \(0\.0\.0\.0 3000\/tcp\)/);
    const fresh = await curlThrough(sandbox, client, Array.from({ length: 6 }, () => `http://${SERVER_V4}:${PORT}/`));
    assert.ok(fresh.every((r) => r.httpCode === 200 && !pids.some((p) => Number(r.body.split(' ')[1]) === p.pid)), `new instances serve after reload-app: ${fresh.map((r) => r.body.trim()).join(', ')}`);

    // --save wrote the same configuration as a file `hostlb check` accepts.
    const check = await sandbox.run(server, [process.execPath, HOSTLB_MAIN, 'check', '-c', saved]);
    assert.equal(check.code, 0, `hostlb check of the saved file: ${check.stderr}\n${readFileSync(saved, 'utf8')}`);
    assert.match(readFileSync(saved, 'utf8'), /address: 0\.0\.0\.0/);

    child.kill('SIGINT');
    const exit = await exited;
    assert.deepEqual(exit, { code: 0, signal: null }, `hostlb run exited 0 on Ctrl-C:\n${stderr().slice(-3_000)}`);
    assertPlaneGone(server, DEVICE);
    // No copy outlives hostlb (the replaced ones included): none runs the app's file now.
    const left = spawnSync('pgrep', ['-f', app], { encoding: 'utf8' });
    assert.equal(left.stdout.trim(), '', `no process runs ${app} after Ctrl-C`);
  } finally {
    await endRun(running, server, DEVICE);
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
