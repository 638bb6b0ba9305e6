// A large transfer through the cluster: a 50 MB file of random bytes served by
// nginx daemons, downloaded with curl from another namespace through hostlb,
// must arrive byte-identical (sha256), first on a clean link and then with 1%
// random loss each way on the client's side (nftables numgen; this kernel has
// no netem), which makes TCP retransmit through hostlb's connection records.

import assert from 'node:assert/strict';
import { mkdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { addLoopbackAddress, splitEndpoint, startNginxDaemons, stopDaemons, tempDir } from '../support/daemons.js';
import { CLUSTER_V4, clusterTopology, HostlbProcess, nftCounters, nftLoad } from '../support/hostlb-process.js';
import { NetnsSandbox, skipUnlessRoot, type Namespace } from '../support/netns.js';
import { sha256Of, writeRandomFile } from '../support/files.js';

const DAEMONS = ['198.18.2.1:8080', '198.18.2.2:8080', '198.18.2.3:8080'];
const FILE_BYTES = 50 * 1024 * 1024;
const MAX_TIME_S = 120;

// The loss rules from DESIGN.md, with counters to prove they dropped something.
const LOSS = `
table inet loss {
  counter dropped_in {}
  counter dropped_out {}
  chain in { type filter hook input priority 0; numgen random mod 100 < 1 counter name dropped_in drop; }
  chain out { type filter hook output priority 0; numgen random mod 100 < 1 counter name dropped_out drop; }
}
`;

test('a 50 MB download through the cluster arrives byte-identical, also with 1% loss each way', async (t) => {
  if (!skipUnlessRoot(t, 'network namespaces, a TUN device, nginx daemons and curl')) return;
  const sandbox = NetnsSandbox.forTest(t);
  const dir = tempDir(t);
  const filesDir = join(dir, 'files');
  mkdirSync(filesDir);
  const expected = writeRandomFile(join(filesDir, 'big.bin'), FILE_BYTES);
  const { client, server } = clusterTopology(sandbox);
  for (const d of DAEMONS) addLoopbackAddress(server, splitEndpoint(d).address);
  const daemons = await startNginxDaemons(sandbox, server, dir, DAEMONS, { filesDir });
  let hostlb: HostlbProcess | undefined;
  try {
    hostlb = await HostlbProcess.start(sandbox, server, {
      device: 'hlb0',
      table: { capacity: 65536 },
      clusters: [{ address: CLUSTER_V4, ports: [{ port: 80, protocol: 'tcp', scheduler: 'rr', daemons: DAEMONS.map((address) => ({ address })) }] }],
    }, { dir });
    const running = hostlb;

    const download = async (ns: Namespace, name: string): Promise<{ path: string; seconds: number }> => {
      const path = join(dir, name);
      const started = Date.now();
      const run = await sandbox.run(ns, [
        'curl', '-sS', '--max-time', String(MAX_TIME_S), '-o', path,
        '-w', '%{http_code} %{size_download} %{remote_ip}', `http://${CLUSTER_V4}/files/big.bin`,
      ], { timeoutMs: (MAX_TIME_S + 10) * 1000 });
      const seconds = (Date.now() - started) / 1000;
      assert.equal(run.code, 0, `curl finished within ${MAX_TIME_S} s (took ${seconds} s): ${run.stderr}\nhostlb:\n${running.describe()}`);
      assert.equal(run.stdout, `200 ${FILE_BYTES} ${CLUSTER_V4}`, 'HTTP 200, the whole file, from the cluster address');
      assert.equal(statSync(path).size, FILE_BYTES);
      return { path, seconds };
    };

    await t.test('on a clean link', async (st) => {
      const { path, seconds } = await download(client, 'clean.bin');
      st.diagnostic(`${FILE_BYTES / 1e6} MB in ${seconds.toFixed(1)} s`);
      assert.equal(sha256Of(path), expected, 'sha256 of what arrived equals the file served');
    });

    await t.test('with 1% random loss in and out on the client', async (st) => {
      nftLoad(client, LOSS);
      const { path, seconds } = await download(client, 'lossy.bin');
      const dropped = nftCounters(client, 'loss');
      st.diagnostic(`${FILE_BYTES / 1e6} MB in ${seconds.toFixed(1)} s; dropped ${JSON.stringify(dropped)}`);
      assert.ok(dropped.dropped_in > 0, `the loss rules dropped incoming packets: ${JSON.stringify(dropped)}`);
      assert.equal(sha256Of(path), expected, 'sha256 of what arrived equals the file served');
    });

    // nginx logs a request when its last byte is sent, a moment after curl has it.
    const servedNow = () => daemons.flatMap((d) => d.accessLog().filter((e) => e.uri === '/files/big.bin'));
    for (const deadline = Date.now() + 60_000; servedNow().length < 2 && Date.now() < deadline;) await sleep(50);
    const served = servedNow();
    assert.equal(served.length, 2, 'two downloads were served');
    assert.ok(served.every((e) => e.status === 200 && e.bytes === FILE_BYTES), `each sent the whole file: ${JSON.stringify(served)}`);

    const exit = await hostlb.stop();
    assert.deepEqual(exit, { code: 0, signal: null }, `hostlb stopped cleanly:\n${hostlb.describe()}`);
  } finally {
    await hostlb?.stop();
    await stopDaemons(daemons);
  }
});
