// Large transfers through the cluster on the TUN plane: a 50 MB file of random
// bytes served by nginx daemons, downloaded with curl through hostlb, must
// arrive byte-identical (sha256): from another namespace over IPv4 and IPv6,
// on a clean link and with random loss each way on the client's side (nftables
// numgen; this kernel has no netem), which makes TCP retransmit through
// hostlb's connection records; and from the daemons' own host. With the TUN
// device's offloads on (the default) the kernel hands hostlb 64 KB GSO
// super-packets, so the test also proves some were read; with them off, none.

import assert from 'node:assert/strict';
import { mkdirSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { addLoopbackAddress, splitEndpoint, startNginxDaemons, stopDaemons, tempDir } from '../support/daemons.js';
import { CLUSTER_V4, CLUSTER_V6, clusterTopology, HostlbProcess, metricValue, nftCounters, nftLoad } from '../support/hostlb-process.js';
import { NetnsSandbox, skipUnlessRoot, type Namespace } from '../support/netns.js';
import { sha256Of, writeRandomFile } from '../support/files.js';

const DAEMONS_V4 = ['198.18.2.1:8080', '198.18.2.2:8080', '198.18.2.3:8080'];
const DAEMONS_V6 = ['[2001:db8:2::1]:8080', '[2001:db8:2::2]:8080', '[2001:db8:2::3]:8080'];
const FILE_BYTES = 50 * 1024 * 1024;
// A bound for a hang, not a speed check: 3% loss on a busy 2-core machine can take a while.
const MAX_TIME_S = 300;
const SUPER_PACKETS = 'hostlb_link_super_packets_total';

/** The loss rules from DESIGN.md at `percent`% each way, with counters to prove they dropped something. */
function lossRules(percent: number): string {
  return `
table inet loss {
  counter dropped_in {}
  counter dropped_out {}
  chain in { type filter hook input priority 0; numgen random mod 100 < ${percent} counter name dropped_in drop; }
  chain out { type filter hook output priority 0; numgen random mod 100 < ${percent} counter name dropped_out drop; }
}
`;
}

interface Case {
  name: string;
  cluster: string;
  /** Percent of packets dropped each way on the client, 0 for a clean link. */
  loss: number;
  /** curl runs on the daemons' own host (the server namespace) instead of the client namespace. */
  local: boolean;
}

// The first is the offloads-off case too.
const CASES: Case[] = [
  { name: 'IPv4, clean link', cluster: CLUSTER_V4, loss: 0, local: false },
  { name: 'IPv4, 1% random loss in and out on the client', cluster: CLUSTER_V4, loss: 1, local: false },
  { name: 'IPv4, 3% random loss in and out on the client', cluster: CLUSTER_V4, loss: 3, local: false },
  { name: 'IPv6, clean link', cluster: CLUSTER_V6, loss: 0, local: false },
  { name: 'IPv6, 1% random loss in and out on the client', cluster: CLUSTER_V6, loss: 1, local: false },
  { name: 'IPv4, a client on the daemons\' own host', cluster: CLUSTER_V4, loss: 0, local: true },
  { name: 'IPv6, a client on the daemons\' own host', cluster: CLUSTER_V6, loss: 0, local: true },
];

function config(extra: Record<string, unknown> = {}): Record<string, unknown> {
  const port = (daemons: string[]): Record<string, unknown> => ({ port: 80, protocol: 'tcp', scheduler: 'rr', daemons: daemons.map((address) => ({ address })) });
  return {
    device: 'hlb0',
    table: { capacity: 65536 },
    ...extra,
    clusters: [
      { address: CLUSTER_V4, ports: [port(DAEMONS_V4)] },
      { address: CLUSTER_V6, ports: [port(DAEMONS_V6)] },
    ],
  };
}

/** The `offloads` field of hostlb's tun_offloads event (logged before "started"). */
function offloadsOf(hostlb: HostlbProcess): unknown {
  return hostlb.events.find((e) => e.event === 'tun_offloads')?.offloads;
}

test('50 MB downloads through the cluster arrive byte-identical over IPv4 and IPv6, with loss, from the same host, with TUN offloads on and off', async (t) => {
  if (!skipUnlessRoot(t, 'network namespaces, a TUN device, nginx daemons and curl')) return;
  const sandbox = NetnsSandbox.forTest(t);
  const dir = tempDir(t);
  const filesDir = join(dir, 'files');
  mkdirSync(filesDir);
  const expected = writeRandomFile(join(filesDir, 'big.bin'), FILE_BYTES);
  const { client, server } = clusterTopology(sandbox);
  for (const d of [...DAEMONS_V4, ...DAEMONS_V6]) addLoopbackAddress(server, splitEndpoint(d).address);
  const daemons = await startNginxDaemons(sandbox, server, dir, [...DAEMONS_V4, ...DAEMONS_V6], { filesDir });
  let downloads = 0;

  /** Downloads the file from `cluster` in `ns` with curl; checks status, size and sha256; returns the seconds taken. */
  const download = async (hostlb: HostlbProcess, ns: Namespace, cluster: string, name: string): Promise<number> => {
    const path = join(dir, name);
    const host = cluster.includes(':') ? `[${cluster}]` : cluster;
    const started = Date.now();
    const run = await sandbox.run(ns, [
      'curl', '-sS', '--globoff', '--max-time', String(MAX_TIME_S), '-o', path,
      '-w', '%{http_code} %{size_download} %{remote_ip}', `http://${host}/files/big.bin`,
    ], { timeoutMs: (MAX_TIME_S + 10) * 1000 });
    const seconds = (Date.now() - started) / 1000;
    downloads += 1;
    assert.equal(run.code, 0, `curl finished within ${MAX_TIME_S} s (took ${seconds} s): ${run.stderr}\nhostlb:\n${hostlb.describe()}`);
    assert.equal(run.stdout, `200 ${FILE_BYTES} ${cluster}`, 'HTTP 200, the whole file, from the cluster address');
    assert.equal(statSync(path).size, FILE_BYTES);
    assert.equal(sha256Of(path), expected, 'sha256 of what arrived equals the file served');
    // Nine copies would hold 450 MB of the temp dir until the test ends.
    rmSync(path);
    return seconds;
  };

  /**
   * A download from the client namespace with `loss`% loss each way on the
   * client (none at 0), or from the server namespace (`local`); returns the
   * diagnostic line.
   */
  const transfer = async (hostlb: HostlbProcess, { cluster, loss, local }: Case, name: string): Promise<string> => {
    if (local || loss === 0) return `${FILE_BYTES / 1e6} MB in ${(await download(hostlb, local ? server : client, cluster, name)).toFixed(1)} s`;
    nftLoad(client, lossRules(loss));
    try {
      const seconds = await download(hostlb, client, cluster, name);
      const dropped = nftCounters(client, 'loss');
      // With offloads a dropped packet may be a whole super-packet, so one way alone drops few: count both.
      assert.ok(dropped.dropped_in + dropped.dropped_out > 0, `the loss rules dropped packets: ${JSON.stringify(dropped)}`);
      return `${FILE_BYTES / 1e6} MB in ${seconds.toFixed(1)} s; dropped ${JSON.stringify(dropped)}`;
    } finally {
      // The next case loads its own rate (or none) into a fresh table, counters at 0.
      client.exec(['nft', 'delete', 'table', 'inet', 'loss']);
    }
  };

  try {
    await t.test('with offloads on (the default)', async (st) => {
      const hostlb = await HostlbProcess.start(sandbox, server, config(), { dir: join(dir, 'offloads-on') });
      try {
        const offloads = offloadsOf(hostlb);
        assert.ok(Array.isArray(offloads) && offloads.includes('tso4'), `the tun_offloads event lists tso4: ${JSON.stringify(offloads)}\n${hostlb.describe()}`);
        st.diagnostic(`offloads: ${JSON.stringify(offloads)}`);
        for (const [i, c] of CASES.entries()) {
          await st.test(c.name, async (tt) => {
            const before = await metricValue(hostlb, SUPER_PACKETS);
            const summary = await transfer(hostlb, c, `on-${i}.bin`);
            const superPackets = (await metricValue(hostlb, SUPER_PACKETS)) - before;
            tt.diagnostic(`${summary}; ${superPackets} super-packets`);
            // TCP over a device with TSO hands it segments of up to 64 KB, loss or not, local or forwarded.
            assert.ok(superPackets > 0, `hostlb read GSO super-packets (${SUPER_PACKETS} grew by ${superPackets})`);
          });
        }
        const exit = await hostlb.stop();
        assert.deepEqual(exit, { code: 0, signal: null }, `hostlb stopped cleanly:\n${hostlb.describe()}`);
      } finally {
        await hostlb.stop();
      }
    });

    await t.test('with offloads off: one packet per read, none a super-packet', async (st) => {
      const hostlb = await HostlbProcess.start(sandbox, server, config({ tun: { offloads: false } }), { dir: join(dir, 'offloads-off') });
      try {
        assert.deepEqual(offloadsOf(hostlb), [], `the tun_offloads event lists none:\n${hostlb.describe()}`);
        st.diagnostic(await transfer(hostlb, CASES[0], 'off.bin'));
        assert.equal(await metricValue(hostlb, SUPER_PACKETS), 0, 'no super-packet was read');
        const exit = await hostlb.stop();
        assert.deepEqual(exit, { code: 0, signal: null }, `hostlb stopped cleanly:\n${hostlb.describe()}`);
      } finally {
        await hostlb.stop();
      }
    });

    // nginx logs a request when its last byte is sent, a moment after curl has it.
    const servedNow = () => daemons.flatMap((d) => d.accessLog().filter((e) => e.uri === '/files/big.bin'));
    for (const deadline = Date.now() + 60_000; servedNow().length < downloads && Date.now() < deadline;) await sleep(50);
    const served = servedNow();
    assert.equal(served.length, downloads, `each of the ${downloads} downloads was served once`);
    assert.ok(served.every((e) => e.status === 200 && e.bytes === FILE_BYTES), `each sent the whole file: ${JSON.stringify(served)}`);
  } finally {
    await stopDaemons(daemons);
  }
});
