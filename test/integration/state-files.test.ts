// hostlb's state directory as a real process sees it, each case in its own
// namespaces: two instances sharing a stateDir (different devices) leave each
// other's supervised daemons alone (and a daemon runs as its supervise.user,
// or as root with a warning); an undo that fails at stop is logged and
// makes hostlb exit non-zero with the journal kept; a foreign journal, a
// corrupt baseline and a stateDir others may write refuse the start with the
// file and what to do, touching nothing; a corrupt checkpoint is a warning
// and a fresh table. Needs root.

import assert from 'node:assert/strict';
import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { addLoopbackAddress, tempDir } from '../support/daemons.js';
import { HostlbProcess } from '../support/hostlb-process.js';
import { NetnsSandbox, skipUnlessRoot, type Namespace } from '../support/netns.js';

const FIXTURE = fileURLToPath(new URL('../../../test/integration/fixtures/graceful-http-daemon.mjs', import.meta.url));
const CLUSTER = '198.18.100.1';
const DAEMON_HOST = '198.18.2.11';

function supervisedConfig(device: string, dir: string, stateDir: string, user = 'root'): Record<string, unknown> {
  return {
    device,
    dataplane: 'tun',
    stateDir,
    admin: { socket: join(dir, `${device}.sock`) },
    table: { capacity: 1024 },
    clusters: [{ address: CLUSTER, ports: [{ port: 80, supervise: { command: process.execPath, args: [FIXTURE], instances: 1, host: DAEMON_HOST, port: 8080, stopTimeout: '2s', user } }] }],
  };
}

/** The PID of the first daemon hostlb reports started (logged after its PID was recorded). */
async function daemonPid(hostlb: HostlbProcess): Promise<number> {
  const started = await hostlb.waitForEvent('daemon_started');
  const pid = /^pid (\d+)$/.exec(String(started.reason));
  assert.ok(pid, JSON.stringify(started));
  return Number(pid[1]);
}

/** Alive and not a zombie waiting to be reaped. */
function running(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2)[0] !== 'Z';
  } catch {
    return false;
  }
}

test('two instances sharing a stateDir, with different devices, leave each other\'s supervised daemons running', async (t) => {
  if (!skipUnlessRoot(t, 'network namespaces, TUN devices and supervised Node daemons')) return;
  const sandbox = NetnsSandbox.forTest(t);
  const dir = tempDir(t, 'hlbt-shared-');
  const stateDir = join(dir, 'state');
  const [nsA, nsB] = [sandbox.namespace(), sandbox.namespace()];
  for (const ns of [nsA, nsB]) addLoopbackAddress(ns, DAEMON_HOST);

  const a = await HostlbProcess.start(sandbox, nsA, supervisedConfig('hlba', dir, stateDir), { dir });
  let b: HostlbProcess | undefined;
  try {
    const pidA = await daemonPid(a);
    assert.ok(existsSync(join(stateDir, 'hlba.daemons.json')), 'A records its daemons under its device');
    b = await HostlbProcess.start(sandbox, nsB, supervisedConfig('hlbb', dir, stateDir, 'nobody'), { dir });
    const pidB = await daemonPid(b);
    // A runs its daemon as root and says so; B's runs as nobody.
    assert.ok(a.events.some((e) => e.event === 'runs_as_root' && e.port === `${CLUSTER}:80/tcp`), a.describe());
    assert.ok(!b.events.some((e) => e.event === 'runs_as_root'), b.describe());
    assert.match(readFileSync(`/proc/${pidB}/status`, 'utf8'), /^Uid:\t65534\t65534\t65534\t65534$/m);
    assert.match(readFileSync(`/proc/${pidA}/status`, 'utf8'), /^Uid:\t0\t0\t0\t0$/m);
    // B's start (which ends daemons a crashed run left) is over once it logged "started".
    assert.ok(running(pidA), `A's daemon ${pidA} still runs after B started; A: ${a.describe()}\nB: ${b.describe()}`);
    assert.equal(a.events.filter((e) => e.event === 'daemon exited').length, 0, a.describe());

    const exitB = await b.stop();
    assert.equal(exitB.code, 0, b.describe());
    assert.ok(!running(pidB), 'B stopped its own daemon');
    assert.ok(running(pidA), `A's daemon ${pidA} outlives B's stop`);
    assert.ok(existsSync(join(stateDir, 'hlba.daemons.json')), 'B\'s stop left A\'s record alone');
    assert.equal(a.events.filter((e) => e.event === 'daemon exited').length, 0, a.describe());
  } finally {
    await b?.stop();
    const exitA = await a.stop();
    assert.equal(exitA.code, 0, a.describe());
  }
  assert.ok(!existsSync(join(stateDir, 'hlba.daemons.json')), 'A removed its record at stop');
});

test('an undo that fails at stop is logged and hostlb exits non-zero; the journal keeps what is left', async (t) => {
  if (!skipUnlessRoot(t, 'network namespaces, nftables and iptables')) return;
  const sandbox = NetnsSandbox.forTest(t);
  const dir = tempDir(t, 'hlbt-undo-');
  const ns = sandbox.namespace();
  addLoopbackAddress(ns, '198.18.2.1');
  const hostlb = await HostlbProcess.start(sandbox, ns, {
    device: 'hlb0', dataplane: 'netfilter',
    clusters: [{ address: CLUSTER, ports: [{ port: 80, daemons: [{ address: '198.18.2.1:8080' }] }] }],
  }, { dir });
  // Somebody else's rule now jumps to hostlb's chain, so iptables cannot delete the chain.
  ns.exec(['iptables', '-w', '5', '-t', 'mangle', '-I', 'FORWARD', '-j', 'HOSTLB-hlb0']);
  const exit = await hostlb.stop();
  assert.equal(exit.code, 5, `exit status 5 (hostlb failed); ${hostlb.describe()}`);
  const failed = hostlb.events.find((e) => e.event === 'undo_failed');
  assert.ok(failed, hostlb.describe());
  assert.match(String(failed.msg), /-X HOSTLB-hlb0: .*busy/i);
  const stopped = hostlb.events.find((e) => e.event === 'stopped');
  assert.equal(stopped?.undoFailed, true, 'the last line does not claim a clean stop');
  const journal = JSON.parse(readFileSync(join(hostlb.stateDir, 'hlb0.journal.json'), 'utf8')) as { steps: Array<{ undo: string[] }> };
  assert.deepEqual(journal.steps.map((s) => s.undo.slice(-2)), [['-X', 'HOSTLB-hlb0']], 'only the chain is left to undo');
});

/** Starts hostlb expecting it to refuse; returns its error text. */
async function refusedStart(sandbox: NetnsSandbox, ns: Namespace, dir: string, stateDir: string): Promise<string> {
  const config = { device: 'hlb0', dataplane: 'tun', stateDir, clusters: [{ address: CLUSTER, ports: [{ port: 80, daemons: [{ address: '198.18.2.1:8080' }] }] }] };
  try {
    const hostlb = await HostlbProcess.start(sandbox, ns, config, { dir });
    await hostlb.stop();
  } catch (e) {
    return (e as Error).message;
  }
  assert.fail('hostlb started');
}

/** Devices, rules and routes as the kernel shows them. */
function hostObjects(ns: Namespace): Record<string, unknown> {
  return { links: ns.ipJson<unknown[]>('link').length, rules: ns.ip('rule').trim(), routes: ns.ip('route', 'show', 'table', 'all').trim() };
}

test('a journal with a step hostlb does not write refuses the start, naming the journal and what to do; nothing is run', async (t) => {
  if (!skipUnlessRoot(t, 'network namespaces and a TUN device')) return;
  const sandbox = NetnsSandbox.forTest(t);
  const dir = tempDir(t, 'hlbt-foreign-');
  const stateDir = join(dir, 'state');
  mkdirSync(stateDir, { mode: 0o700 });
  const ns = sandbox.namespace();
  const before = hostObjects(ns);
  const marker = join(dir, 'ran');
  const journal = join(stateDir, 'hlb0.journal.json');
  writeFileSync(journal, JSON.stringify({ version: 1, pid: 2 ** 22 + 1, updatedAt: '', steps: [
    { description: 'bring hlb0 up', apply: ['ip', 'link', 'set', 'dev', 'hlb0', 'up'], undo: ['ip', 'link', 'set', 'dev', 'hlb0', 'down'] },
    { description: 'planted', apply: ['ip', 'link', 'set', 'dev', 'hlb0', 'up'], undo: ['ip', 'netns', 'exec', ns.name, 'touch', marker] },
  ] }));
  const message = await refusedStart(sandbox, ns, dir, stateDir);
  assert.match(message, /exited with 1/);
  assert.ok(message.includes(`the journal ${journal} holds a step hostlb does not write (step 2 "planted"`), message);
  assert.match(message, /inspect it, undo by hand what its steps did, then delete it/);
  assert.doesNotMatch(message, /\n\s+at /, 'no stack trace');
  assert.equal(existsSync(marker), false, 'the planted undo did not run');
  assert.ok(existsSync(journal), 'the journal is left for a person to look at');
  assert.deepEqual(hostObjects(ns), before);
});

test('a corrupt baseline refuses the start naming the file; a stateDir others may write is refused naming the chmod', async (t) => {
  if (!skipUnlessRoot(t, 'network namespaces and a TUN device')) return;
  const sandbox = NetnsSandbox.forTest(t);
  const dir = tempDir(t, 'hlbt-baseline-');
  const stateDir = join(dir, 'state');
  mkdirSync(stateDir, { mode: 0o700 });
  const ns = sandbox.namespace();
  const before = hostObjects(ns);
  // A crashed run's journal (its process is gone) and a baseline cut short.
  writeFileSync(join(stateDir, 'hlb0.journal.json'), JSON.stringify({ version: 1, pid: 2 ** 22 + 1, updatedAt: '', steps: [
    { description: 'bring hlb0 up', apply: ['ip', 'link', 'set', 'dev', 'hlb0', 'up'], undo: ['ip', 'link', 'set', 'dev', 'hlb0', 'down'] },
  ] }));
  const baseline = join(stateDir, 'hlb0.baseline.json');
  writeFileSync(baseline, '{"addresses": [');
  const message = await refusedStart(sandbox, ns, dir, stateDir);
  assert.ok(message.includes(`the baseline ${baseline} of an earlier run cannot be used`), message);
  assert.match(message, /delete it, and the next start undoes that run's journal/);
  assert.doesNotMatch(message, /\n\s+at /, 'no stack trace');
  assert.deepEqual(hostObjects(ns), before);

  chmodSync(stateDir, 0o777);
  const unsafe = await refusedStart(sandbox, ns, dir, stateDir);
  assert.ok(unsafe.includes(`stateDir ${stateDir} is writable by everyone (mode 0777)`), unsafe);
  assert.ok(unsafe.includes(`chmod 700 ${stateDir}`), unsafe);
  assert.deepEqual(hostObjects(ns), before);
});

test('a corrupt table checkpoint is a warning and a fresh table: the crashed run is adopted all the same', async (t) => {
  if (!skipUnlessRoot(t, 'network namespaces and a TUN device')) return;
  const sandbox = NetnsSandbox.forTest(t);
  const dir = tempDir(t, 'hlbt-ckpt-');
  const ns = sandbox.namespace();
  const before = hostObjects(ns);
  const config = { device: 'hlb0', dataplane: 'tun', table: { capacity: 1024 }, clusters: [{ address: CLUSTER, ports: [{ port: 80, daemons: [{ address: '198.18.2.1:8080' }] }] }] };
  const first = await HostlbProcess.start(sandbox, ns, config, { dir });
  await first.kill();
  const checkpoint = join(first.stateDir, 'hlb0.table');
  writeFileSync(checkpoint, Buffer.alloc(4096, 0x5a));
  const second = await HostlbProcess.start(sandbox, ns, config, { dir });
  try {
    const warning = second.events.find((e) => e.event === 'checkpoint_invalid');
    assert.ok(warning, second.describe());
    assert.equal(warning.file, checkpoint);
    assert.match(String(warning.err), /wrong magic number/);
    assert.ok(second.events.some((e) => e.event === 'adopted'), 'the host set-up was adopted');
  } finally {
    assert.equal((await second.stop()).code, 0, second.describe());
  }
  assert.deepEqual(hostObjects(ns), before);
});
