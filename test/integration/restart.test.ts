// Restarts that lose no flow. A 50 MB download through the cluster must
// arrive whole and byte-identical (sha256) from the daemon it started on,
// although hostlb is (1) killed with SIGKILL part-way and started again on the
// same config and stateDir, which adopts the crashed run's device and set-up
// and restores its table checkpoint; or (2) replaced part-way by
// `start --takeover`, the old process handing over and exiting 0 on its own.
// The download holds still at 4 MiB (fixtures/paced-download.mjs) until the
// disruption is done, so it is mid-flow by construction, not by a guess of
// the machine's speed; the new instance's own counters show it carried the
// rest. After each, a SIGTERM of the survivor leaves the namespace exactly as
// before and no journal, baseline or checkpoint in stateDir; and (3) a start
// after such a deliberate stop starts clean instead of adopting.
//
// Three daemons, rr: a warm-up request takes d1, so the download is on d2 and
// only the restored record can keep it there. With checkpoints off (tried), the
// restarted instance drops the flow's packets as `no_record` and the download
// stalls until the client's bound: the test fails.

import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { addLoopbackAddress, splitEndpoint, startNginxDaemons, stopDaemons, tempDir, type NginxDaemon } from '../support/daemons.js';
import { CLUSTER_V4, clusterTopology, curlThrough, HostlbProcess, waitForIpv6Settled, type HostlbEvent } from '../support/hostlb-process.js';
import { NetnsSandbox, skipUnlessRoot, type Namespace } from '../support/netns.js';
import { sha256Of, writeRandomFile } from '../support/files.js';

/** Compiled to dist/test/integration/: three levels up is the repo root, where the fixtures stay. */
const FIXTURES = fileURLToPath(new URL('../../../test/integration/fixtures/', import.meta.url));
const DAEMONS = ['198.18.2.1:8080', '198.18.2.2:8080', '198.18.2.3:8080'];
const DEVICE = 'hlb0';
const FILE_BYTES = 50 * 1024 * 1024;
/** A bound on a download that stalls for good (the failure), not a timing of a good one. */
const MAX_TIME_S = 120;
/**
 * Where the download holds still (fixtures/paced-download.mjs) while hostlb is
 * disrupted: the flow is open with most of the file still to carry, however
 * long the disruption takes on this machine.
 */
const PAUSE_AT_BYTES = 4 * 1024 * 1024;
/** Bound on waiting for a count (bytes arrived, a log line): reached only when something is broken. */
const WAIT_MS = 60_000;

interface Snapshot {
  rules: unknown;
  rules6: unknown;
  routes: unknown;
  routes6: unknown;
  links: unknown;
  sysctls: Record<string, string>;
}

/** As cleanup.test.ts: what hostlb changes in its namespace and must put back. */
function snapshot(ns: Namespace, serverDev: string): Snapshot {
  const sysctls = [
    'net/ipv4/ip_forward',
    'net/ipv4/conf/all/rp_filter',
    'net/ipv4/conf/all/accept_local',
    'net/ipv4/conf/all/route_localnet',
    'net/ipv6/conf/all/forwarding',
    `net/ipv4/conf/${serverDev}/forwarding`,
    `net/ipv6/conf/${serverDev}/forwarding`,
  ];
  return {
    rules: ns.ipJson('-d', 'rule'),
    rules6: ns.ipJson('-d', '-6', 'rule'),
    routes: ns.ipJson('-4', 'route', 'show', 'table', 'all'),
    routes6: ns.ipJson('-6', 'route', 'show', 'table', 'all'),
    links: ns.ipJson('link'),
    sysctls: Object.fromEntries(sysctls.map((p) => [p, ns.readSysctl(p)])),
  };
}

function eventsNamed(hostlb: HostlbProcess, name: string): HostlbEvent[] {
  return hostlb.events.filter((e) => e.event === name);
}

test('a download through the cluster survives kill -9 + restart and a takeover; a deliberate stop still undoes everything', async (t) => {
  if (!skipUnlessRoot(t, 'network namespaces, a TUN device, nginx daemons and curl')) return;
  const sandbox = NetnsSandbox.forTest(t);
  const dir = tempDir(t);
  const filesDir = join(dir, 'files');
  mkdirSync(filesDir);
  const expected = writeRandomFile(join(filesDir, 'big.bin'), FILE_BYTES);
  const { client, server, serverDev } = clusterTopology(sandbox);
  for (const d of DAEMONS) addLoopbackAddress(server, splitEndpoint(d).address);
  // A value hostlb must change (to 0) and then put back.
  server.writeSysctl('net/ipv4/conf/all/rp_filter', '2');
  const daemons = await startNginxDaemons(sandbox, server, dir, DAEMONS, { filesDir });
  const config = {
    device: DEVICE,
    table: { capacity: 4096, checkpoint: '1s' },
    clusters: [{ address: CLUSTER_V4, ports: [{ port: 80, protocol: 'tcp', scheduler: 'rr', daemons: DAEMONS.map((address) => ({ address })) }] }],
  };
  const stateDir = join(dir, 'state');
  const stateFiles = [`${DEVICE}.journal.json`, `${DEVICE}.baseline.json`, `${DEVICE}.table`];
  await waitForIpv6Settled(server, serverDev);
  const before = snapshot(server, serverDev);
  const started: HostlbProcess[] = [];
  const start = async (args: string[] = []): Promise<HostlbProcess> => {
    const hostlb = await HostlbProcess.start(sandbox, server, config, { dir, args });
    started.push(hostlb);
    return hostlb;
  };

  /** The running instance's counters over its admin socket, for failure messages. */
  const counters = async (): Promise<string> => {
    const run = await sandbox.run(server, ['curl', '-sS', '--max-time', '30', '--unix-socket', join(stateDir, 'admin.sock'), 'http://hostlb/v1/counters'], { timeoutMs: 40_000 });
    return run.code === 0 ? run.stdout : `(no counters: curl exited ${run.code ?? run.signal}: ${run.stderr.trim()})`;
  };
  const evidence = async (processes: HostlbProcess[]): Promise<string> =>
    `${processes.map((h, i) => `--- hostlb #${i + 1} (pid ${h.pid}, ${h.running ? 'running' : 'exited'}):\n${h.describe()}`).join('\n')}\n--- counters: ${await counters()}`;

  /** Requests of big.bin each daemon logged (nginx logs once the last byte is sent). */
  const served = (): Array<{ daemon: string; status: number; bytes: number }> =>
    daemons.flatMap((d: NginxDaemon) => d.accessLog().filter((e) => e.uri === '/files/big.bin').map((e) => ({ daemon: d.name, status: e.status, bytes: e.bytes })));

  /** Until `count` table checkpoints (each renamed over the last: a new inode) were written after `since` (ms). */
  const checkpointsSince = async (since: number, count: number): Promise<void> => {
    const path = join(stateDir, `${DEVICE}.table`);
    const inodes = new Set<number>();
    for (const deadline = Date.now() + WAIT_MS; inodes.size < count && Date.now() < deadline;) {
      const st = existsSync(path) ? statSync(path) : null;
      if (st !== null && st.mtimeMs > since) inodes.add(st.ino);
      await sleep(50);
    }
    assert.equal(inodes.size, count, `${count} table checkpoints written since the download held still (${path})`);
  };

  /** Packets the running instance translated from d2 to the client (the download's data after a disruption). */
  const d2PacketsOut = async (): Promise<number> => {
    const text = await counters();
    try {
      const body = JSON.parse(text) as { daemons: Record<string, { packetsOut: number }> };
      return Object.entries(body.daemons).filter(([k]) => k.endsWith(` ${DAEMONS[1]}`)).reduce((a, [, v]) => a + v.packetsOut, 0);
    } catch {
      assert.fail(`no counters from the running hostlb: ${text}`);
    }
  };

  /**
   * One request to "/" (rr: d1), then the download (d2), which holds still
   * once PAUSE_AT_BYTES have arrived; `disrupt` runs then, with the flow open
   * and most of the file to go, and calls `resume` when the download is to
   * read on (after it returns at the latest). Asserts that the instance
   * running afterwards carried the rest (counted in its own counters), HTTP
   * 200, the whole file, its sha256 and that d2 alone served it once.
   */
  const downloadThrough = async (name: string, disrupt: (resume: () => void) => Promise<HostlbProcess[]>): Promise<void> => {
    const [warm] = await curlThrough(sandbox, client, [`http://${CLUSTER_V4}/`]);
    assert.match(warm.body, /^d1 /, 'the warm-up request takes d1, so the download goes to d2');
    const servedBefore = served().length;
    const path = join(dir, name);
    const control = join(dir, `${name}.control`);
    mkdirSync(control);
    const began = Date.now();
    let finished = false;
    const download = sandbox.run(client, [process.execPath, join(FIXTURES, 'paced-download.mjs'), `http://${CLUSTER_V4}/files/big.bin`, path, String(PAUSE_AT_BYTES), control], { timeoutMs: MAX_TIME_S * 1000 })
      .finally(() => (finished = true));
    for (const deadline = Date.now() + WAIT_MS; !finished && !existsSync(join(control, 'paused')) && Date.now() < deadline;) await sleep(50);
    const at = existsSync(join(control, 'paused')) ? Number(readFileSync(join(control, 'paused'), 'utf8')) : 0;
    assert.ok(!finished && at >= PAUSE_AT_BYTES && at < FILE_BYTES, `the download holds still part-way when hostlb is disrupted (${at} of ${FILE_BYTES} bytes, finished ${finished})`);
    const resume = (): void => writeFileSync(join(control, 'resume'), '');
    const processes = await disrupt(resume);
    resume();
    const run = await download;
    // What the instance now running translated from d2: the rest of the download, less what sat in the client's receive buffer.
    const carried = await d2PacketsOut();
    const seconds = (Date.now() - began) / 1000;
    t.diagnostic(`${name}: ${at} bytes before the disruption; ${FILE_BYTES / 1048576} MiB in ${seconds.toFixed(1)} s; the instance after it translated ${carried} packets from d2`);
    const got = run.code === 0 ? JSON.parse(run.stdout) as { status: number | null; bytes: number; sha256?: string; error?: string } : null;
    if (got === null || got.status !== 200 || got.bytes !== FILE_BYTES) {
      assert.fail(`the download ended ${run.code ?? run.signal} after ${seconds} s with ${run.stdout.trim()} (want status 200, ${FILE_BYTES} bytes): ${run.stderr.trim()}\n${await evidence(processes)}`);
    }
    assert.equal(got.sha256, expected, 'sha256 of what arrived equals the file served');
    assert.equal(sha256Of(path), expected, 'and so does the file written');
    // The rest of the file is over (FILE_BYTES − at) / 1448-byte segments; a quarter of that proves the flow crossed the new instance.
    assert.ok(carried >= (FILE_BYTES - at) / 1448 / 4, `the instance running after the disruption carried the download on: ${carried} packets from d2 for ${FILE_BYTES - at} bytes\n${await evidence(processes)}`);
    // nginx logs a request once its last byte is sent: the line may come a moment after the client is done.
    for (const deadline = Date.now() + WAIT_MS; served().length <= servedBefore && Date.now() < deadline;) await sleep(50);
    assert.deepEqual(served().slice(servedBefore), [{ daemon: 'd2', status: 200, bytes: FILE_BYTES }], 'd2 alone served the download, once, whole');
  };

  /** SIGTERM: exit 0, the namespace exactly as before, no state left for a next start to adopt. */
  const stopDeliberately = async (hostlb: HostlbProcess): Promise<void> => {
    const exit = await hostlb.stop('SIGTERM');
    assert.deepEqual(exit, { code: 0, signal: null }, `hostlb exited 0 on SIGTERM:\n${hostlb.describe()}`);
    assert.deepEqual(snapshot(server, serverDev), before, 'after SIGTERM the server namespace is as before');
    const left = existsSync(stateDir) ? readdirSync(stateDir) : [];
    assert.deepEqual(left.filter((f) => stateFiles.includes(f)), [], `no journal, baseline or checkpoint stays in stateDir (it holds ${JSON.stringify(left)})`);
  };

  /** The restarted instance adopted the previous run's set-up and restored at least one record. */
  const assertAdopted = (hostlb: HostlbProcess): void => {
    const adopted = eventsNamed(hostlb, 'adopted');
    assert.equal(adopted.length, 1, `the new hostlb logged "adopted":\n${hostlb.describe()}`);
    assert.ok((adopted[0].steps as number) > 0, `it adopted the previous run's journalled steps: ${JSON.stringify(adopted[0])}`);
    const restored = eventsNamed(hostlb, 'table_restored');
    assert.equal(restored.length, 1, `the new hostlb logged "table_restored":\n${hostlb.describe()}`);
    assert.ok((restored[0].restored as number) >= 1, `at least the download's record was restored: ${JSON.stringify(restored[0])}`);
  };

  try {
    await t.test('kill -9 mid-download, start again: adopted, table restored, the download completes byte-identical', async () => {
      const first = await start();
      const running = snapshot(server, serverDev);
      let second: HostlbProcess | undefined;
      await downloadThrough('after-kill.bin', async (resume) => {
        // A crash loses what no checkpoint holds yet (one a second here): kill once two have been
        // written since the download held still, so the flow is in the file by construction.
        await checkpointsSince(Date.now(), 2);
        const exit = await first.kill();
        assert.equal(exit.signal, 'SIGKILL');
        // The client reads on while no hostlb runs: its window updates and the daemon's data meet the dead device.
        resume();
        await sleep(500);
        second = await start();
        return [first, second];
      });
      assert.ok(second !== undefined);
      assertAdopted(second);
      const during = snapshot(server, serverDev);
      assert.deepEqual([during.rules, during.rules6, during.sysctls], [running.rules, running.rules6, running.sysctls], 'the same rules and sysctls as the first run (nothing doubled or lost)');
      const [after] = await curlThrough(sandbox, client, [`http://${CLUSTER_V4}/`]);
      assert.equal(after.httpCode, 200, 'new connections go through the restarted instance');
      await stopDeliberately(second);
    });

    await t.test('start --takeover mid-download: the old one hands over and exits 0, the download completes byte-identical', async () => {
      const first = await start();
      let second: HostlbProcess | undefined;
      await downloadThrough('after-takeover.bin', async () => {
        second = await start(['--takeover']);
        return [first, second];
      });
      assert.ok(second !== undefined);
      const exit = await first.stop('SIGTERM'); // Only waits: it has exited already (asserted next).
      assert.equal(eventsNamed(first, 'handed_over').length, 1, `the first hostlb logged "handed_over":\n${first.describe()}`);
      assert.equal(eventsNamed(first, 'stopped').length, 0, `the first hostlb did not undo its set-up:\n${first.describe()}`);
      assert.deepEqual(exit, { code: 0, signal: null }, `the first hostlb exited 0 by itself:\n${first.describe()}`);
      assert.equal(eventsNamed(second, 'taking_over').length, 1, `the second asked the first to hand over:\n${second.describe()}`);
      assertAdopted(second);
      await stopDeliberately(second);
    });

    await t.test('a start after a deliberate stop starts clean', async () => {
      const hostlb = await start();
      assert.deepEqual([...eventsNamed(hostlb, 'adopted'), ...eventsNamed(hostlb, 'table_restored')], [], `nothing adopted or restored:\n${hostlb.describe()}`);
      const [r] = await curlThrough(sandbox, client, [`http://${CLUSTER_V4}/`]);
      assert.match(r.body, /^d1 /, 'a fresh instance: rr starts at d1');
      await stopDeliberately(hostlb);
    });
  } finally {
    for (const hostlb of started) await hostlb.stop();
    await stopDaemons(daemons);
  }
});
