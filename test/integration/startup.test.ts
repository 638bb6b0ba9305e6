// hostlb at boot: `hostlb startup` writes a systemd unit (Type=notify, the
// file checked before a start and before a reload) that `systemd-analyze
// verify` accepts where it exists; and a hostlb started with NOTIFY_SOCKET
// (as systemd starts it) says READY=1 once its set-up is in place and every
// health check answered once, with a STATUS= summary, RELOADING=1 then
// READY=1 around a SIGHUP reload, and STOPPING=1 at SIGTERM — read from a
// real unix datagram socket standing in for systemd's.

import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { join } from 'node:path';
import { test } from 'node:test';
import { stringify } from 'yaml';
import { tempDir } from '../support/daemons.js';
import { HOSTLB_MAIN, HostlbProcess, CLUSTER_V4 } from '../support/hostlb-process.js';
import { skipUnlessRoot } from '../support/netns.js';
import { FIXTURE, healthSetup, pollUntil } from './health-harness.js';

const WAIT_MS = 60_000;

// Prints {"ready":true} once bound, then one JSON line per datagram.
const RECEIVER = `
import json, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
print(json.dumps({"ready": True}), flush=True)
while True:
    print(json.dumps({"msg": s.recv(65536).decode()}), flush=True)
`;

function config(dir: string): Record<string, unknown> {
  return {
    device: 'hlb0',
    dataplane: 'tun',
    stateDir: join(dir, 'state'),
    clusters: [{
      address: CLUSTER_V4,
      ports: [{ port: 80, advisor: { type: 'tcp', interval: '500ms', timeout: '500ms', rise: 1, fall: 2 }, supervise: { command: process.execPath, args: [FIXTURE], instances: 2, host: '198.18.2.11', port: 8080, user: 'nobody' } }],
    }],
  };
}

test('hostlb startup writes a Type=notify unit that checks the file before start and reload; systemd-analyze verify accepts it', (t) => {
  const dir = tempDir(t);
  const file = join(dir, 'hostlb.yaml');
  writeFileSync(file, stringify(config(dir)));
  const printed = spawnSync(process.execPath, [HOSTLB_MAIN, 'startup', '-c', file, '--print'], { encoding: 'utf8' });
  assert.equal(printed.status, 0, printed.stderr);
  const unit = printed.stdout;
  assert.match(unit, /^Type=notify$/m);
  assert.match(unit, new RegExp(`^ExecStart=\\S+ \\S+main\\.js start --config ${file.replace(/[.]/g, '\\.')}$`, 'm'));
  assert.match(unit, new RegExp(`^ExecStartPre=\\S+ \\S+main\\.js check --config ${file.replace(/[.]/g, '\\.')}$`, 'm'));
  const reload = unit.split('\n').filter((l) => l.startsWith('ExecReload='));
  assert.equal(reload.length, 2, 'check, then SIGHUP');
  assert.match(reload[0], new RegExp(`main\\.js check --config ${file.replace(/[.]/g, '\\.')}$`));
  assert.equal(reload[1], 'ExecReload=/bin/kill -HUP $MAINPID');
  assert.match(unit, /^CapabilityBoundingSet=CAP_NET_ADMIN .*CAP_BPF/m);

  const path = join(dir, 'hostlb-test.service');
  const wrote = spawnSync(process.execPath, [HOSTLB_MAIN, 'startup', '-c', file, '--name', 'hostlb-test', '--unit', path], { encoding: 'utf8' });
  assert.equal(wrote.status, 0, wrote.stderr);
  assert.equal(readFileSync(path, 'utf8'), unit.replace(/enable --now hostlb\b/, 'enable --now hostlb-test'));
  assert.match(wrote.stdout, /systemctl daemon-reload && systemctl enable --now hostlb-test/);

  // A broken file is refused before anything is written.
  writeFileSync(join(dir, 'broken.yaml'), 'clusters: [{ address: 198.18.100.1, ports: [{ port: 80, wieght: 1 }] }]\n');
  const broken = spawnSync(process.execPath, [HOSTLB_MAIN, 'startup', '-c', join(dir, 'broken.yaml'), '--unit', join(dir, 'never.service')], { encoding: 'utf8' });
  assert.equal(broken.status, 2, broken.stderr);
  assert.ok(!existsSync(join(dir, 'never.service')));

  const analyze = spawnSync('systemd-analyze', ['--version'], { encoding: 'utf8' });
  if (analyze.error !== undefined) {
    t.diagnostic('systemd-analyze is not installed (package systemd): the unit was not verified by systemd');
    return;
  }
  const verify = spawnSync('systemd-analyze', ['verify', path], { encoding: 'utf8' });
  assert.equal(verify.status, 0, `systemd-analyze verify ${path}:\n${verify.stdout}${verify.stderr}`);
});

test('hostlb under systemd\'s notify protocol: READY=1 after the first health round with a STATUS line, RELOADING=1/READY=1 on SIGHUP, STOPPING=1 on SIGTERM', async (t) => {
  if (!skipUnlessRoot(t, 'network namespaces, a TUN device, supervised Node daemons')) return;
  const topo = healthSetup(t, ['198.18.2.11', '198.18.2.12']);
  const dir = tempDir(t);
  const socketPath = join(dir, 'notify.sock');
  const script = join(dir, 'receiver.py');
  writeFileSync(script, RECEIVER);
  const receiver = spawn('python3', [script, socketPath], { stdio: ['ignore', 'pipe', 'pipe'] });
  t.after(() => receiver.kill('SIGKILL'));
  const messages: string[] = [];
  let bound = false;
  createInterface({ input: receiver.stdout! }).on('line', (line) => {
    const m = JSON.parse(line) as { ready?: boolean; msg?: string };
    if (m.ready) bound = true;
    if (m.msg !== undefined) messages.push(m.msg);
  });
  await pollUntil('the stand-in notify socket bound', () => Promise.resolve(bound), (b) => b, WAIT_MS);

  const hostlb = await HostlbProcess.start(topo.sandbox, topo.server, config(dir), { dir, env: { NOTIFY_SOCKET: socketPath } });
  try {
    const ready = await pollUntil('READY=1', () => Promise.resolve(messages.find((m) => m.split('\n').includes('READY=1'))), (m) => m !== undefined, WAIT_MS);
    assert.match(ready!, /^STATUS=data plane tun; 1 cluster port; [0-2] of 2 daemons up$/m);
    // Ready comes after the set-up and the first answer of every advisor: the daemons were started and probed.
    const started = hostlb.events.filter((e) => e.event === 'daemon_started').length;
    assert.ok(started >= 2, `both daemons were started before READY=1:\n${hostlb.describe().slice(-2_000)}`);

    const before = messages.length;
    hostlb.child.kill('SIGHUP');
    const afterReload = await pollUntil('RELOADING=1 then READY=1', () => Promise.resolve(messages.slice(before)), (ms) => ms.some((m) => m.includes('READY=1')), WAIT_MS);
    assert.match(afterReload[0], /^RELOADING=1\nMONOTONIC_USEC=\d+$/);
    assert.ok(afterReload.findIndex((m) => m.includes('READY=1')) > 0, `READY=1 after RELOADING=1: ${JSON.stringify(afterReload)}`);

    const stopped = await hostlb.stop();
    assert.deepEqual(stopped, { code: 0, signal: null }, hostlb.describe());
    assert.ok(messages.some((m) => /^STOPPING=1\nSTATUS=stopping \(SIGTERM\)$/.test(m)), `STOPPING=1 at SIGTERM: ${JSON.stringify(messages)}`);
  } finally {
    await hostlb.stop();
  }
});
