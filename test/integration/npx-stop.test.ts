// Stopping a hostlb that npm runs. `npx hostlb start` is three processes:
// npm exec (node) → sh -c → hostlb (node); a SIGTERM to npm ends npm and the
// shell but never reaches hostlb. hostlb notices its parent is gone and stops
// cleanly: it exits, its journal is gone and the host is as before. The real
// npx, in a test namespace, over the repository's own package. Needs root.

import assert from 'node:assert/strict';
import { readFileSync, existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { stringify } from 'yaml';
import { addLoopbackAddress, tempDir } from '../support/daemons.js';
import { NetnsSandbox, skipUnlessRoot, type Namespace } from '../support/netns.js';

/** dist/test/integration/ → the repository root (package.json names the hostlb bin). */
const REPO = fileURLToPath(new URL('../../../', import.meta.url));
const WAIT_MS = 30_000;

function hostObjects(ns: Namespace): Record<string, unknown> {
  return { links: ns.ip('-br', 'link').trim(), rules: ns.ip('rule').trim(), rules6: ns.ip('-6', 'rule').trim(), routes: ns.ip('route', 'show', 'table', 'all').trim() };
}

/** Alive and not a zombie. */
function running(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2)[0] !== 'Z';
  } catch {
    return false;
  }
}

/** Resolves once `test()` is true; rejects with `what` after WAIT_MS (a hang is a failure, not a timing claim). */
async function until(what: string, check: () => boolean): Promise<void> {
  const deadline = Date.now() + WAIT_MS;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`gave up waiting: ${what}`);
    await sleep(50);
  }
}

test('SIGTERM to `npx hostlb start` ends hostlb cleanly: it exits, its journal is gone, the host is undone', async (t) => {
  if (!skipUnlessRoot(t, 'a network namespace and a TUN device, started through npx')) return;
  const sandbox = NetnsSandbox.forTest(t);
  const dir = tempDir(t, 'hlbt-npx-');
  const ns = sandbox.namespace();
  addLoopbackAddress(ns, '198.18.2.1');
  const before = hostObjects(ns);
  const stateDir = join(dir, 'state');
  const config = join(dir, 'hostlb.yaml');
  writeFileSync(config, stringify({
    device: 'hlb0', dataplane: 'tun', stateDir, admin: { socket: join(dir, 'admin.sock') }, table: { capacity: 1024 },
    clusters: [{ address: '198.18.100.1', ports: [{ port: 80, daemons: [{ address: '198.18.2.1:8080' }] }] }],
  }));

  // `ip netns exec` execs npx, so the child's PID is npm's: the process a user (or a service manager) would signal.
  // npx links the repository into its cache as a `file:` package; without ignore-scripts that link runs the
  // package's install scripts in the repository itself (node-gyp rebuild, tsc) in the middle of the suite —
  // and a rebuild cut short by this test's bound left the addon missing for every test after it (seen in CI).
  const npx = sandbox.spawn(ns, ['npx', '--yes', 'hostlb', 'start', '--config', config], {
    cwd: REPO, env: { ...process.env, npm_config_update_notifier: 'false', npm_config_ignore_scripts: 'true' },
  });
  let stderr = '';
  const events: Array<Record<string, unknown>> = [];
  npx.stderr?.setEncoding('utf8').on('data', (chunk: string) => {
    stderr += chunk;
    for (const line of chunk.split('\n')) {
      try {
        events.push(JSON.parse(line) as Record<string, unknown>);
      } catch {
        // npm's own output, or a line cut across chunks (only "started" and "stopped" matter).
      }
    }
  });
  const npxExited = new Promise((resolve) => npx.once('exit', resolve));
  const eventNamed = (name: string): Record<string, unknown> | undefined => events.find((e) => e.event === name);
  await until(`hostlb logs "started"; stderr so far:\n${stderr}`, () => eventNamed('started') !== undefined);
  const hostlbPid = eventNamed('started')!.pid as number;
  assert.notEqual(hostlbPid, npx.pid, 'hostlb runs in a process of its own under npm');
  const journal = join(stateDir, 'hlb0.journal.json');
  assert.ok(existsSync(journal), 'the host is set up');
  assert.notDeepEqual(hostObjects(ns), before);

  process.kill(npx.pid!, 'SIGTERM');
  await npxExited;
  await until(`hostlb ${hostlbPid} exits after npm went; stderr:\n${stderr}`, () => !running(hostlbPid));
  const stopped = eventNamed('stopped');
  assert.ok(stopped, `hostlb logged "stopped"; stderr:\n${stderr}`);
  assert.equal(stopped.undoFailed, false);
  assert.ok((stopped.undone as number) > 0, 'it undid its steps');
  assert.match(String(eventNamed('stopping')?.why), /npm process that ran hostlb exited/);
  assert.equal(existsSync(journal), false, 'no journal left to block the next start');
  assert.deepEqual(hostObjects(ns), before, 'the host is as it was');
});
