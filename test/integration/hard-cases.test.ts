// Hard cases through a live hostlb, each with real kernels on both ends:
// ping of a cluster address (IPv4 and IPv6); path MTU discovery through a
// router whose hop to the client is 1280 bytes (its "fragmentation needed" /
// "packet too big", sent to the cluster, must reach the daemon translated or
// the download stalls); UDP datagrams larger than the MTU, fragmented by the
// client's kernel on the way in and by the daemon's on the way out; a spoofed
// SYN flood at a 2000-record table while real clients carry on.

import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { closeSync, mkdirSync, openSync, readFileSync, readdirSync, statSync, writeSync } from 'node:fs';
import { request } from 'node:http';
import { join } from 'node:path';
import { test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { addLoopbackAddress, splitEndpoint, startNginxDaemons, stopDaemons, tempDir } from '../support/daemons.js';
import { CLIENT_V4, CLUSTER_V4, CLUSTER_V6, clusterTopology, HostlbProcess, nftCounters, nftLoad, SERVER_V4 } from '../support/hostlb-process.js';
import { NetnsSandbox, skipUnlessRoot, type Namespace } from '../support/netns.js';

/** Compiled to dist/test/integration/: three levels up is the repo root, where the fixtures stay. */
const FIXTURES = fileURLToPath(new URL('../../../test/integration/fixtures/', import.meta.url));

// ---------------------------------------------------------------------------
// Helpers

/** GET `path` from hostlb's admin API over its unix socket (a file: reachable from any namespace). */
function adminGet<T>(hostlb: HostlbProcess, path: string): Promise<T> {
  return new Promise((resolve, reject) => {
    const req = request({ socketPath: join(hostlb.stateDir, 'admin.sock'), path, headers: { accept: 'application/json' }, timeout: 5_000 }, (res) => {
      let body = '';
      res.setEncoding('utf8').on('data', (chunk: string) => (body += chunk));
      res.on('end', () => {
        if (res.statusCode !== 200) reject(new Error(`GET ${path}: HTTP ${res.statusCode}: ${body}`));
        else resolve(JSON.parse(body) as T);
      });
    });
    req.on('timeout', () => req.destroy(new Error(`GET ${path}: no answer in 5 s`)));
    req.on('error', reject);
    req.end();
  });
}

interface AdminStatus {
  pid: number;
  table: { records: number; capacity: number; evictions: number };
  activeFlows: number;
}

interface AdminCounters {
  drops: Record<string, number>;
  daemons: Record<string, { newFlows: number; activeFlows: number; packetsIn: number; packetsOut: number }>;
}

/** Resident set size of `pid` in kB (VmRSS of /proc/<pid>/status). */
function rssKb(pid: number): number {
  const m = /^VmRSS:\s+(\d+) kB$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  assert.ok(m, `VmRSS of ${pid}`);
  return Number(m[1]);
}

/** One counter of /proc/net/snmp ("Icmp", "OutDestUnreachs") or /proc/net/snmp6 ("Icmp6OutPktTooBigs") inside `ns`. */
function snmp(ns: Namespace, group: string, name: string): number {
  if (group === 'snmp6') {
    const m = new RegExp(`^${name}\\s+(\\d+)$`, 'm').exec(ns.exec(['cat', '/proc/net/snmp6']));
    assert.ok(m, `${name} in /proc/net/snmp6 of ${ns.name}`);
    return Number(m[1]);
  }
  const lines = ns.exec(['cat', '/proc/net/snmp']).split('\n').filter((l) => l.startsWith(`${group}:`));
  const names = lines[0].split(/\s+/);
  const values = lines[1].split(/\s+/);
  const i = names.indexOf(name);
  assert.ok(i > 0, `${group}:${name} in /proc/net/snmp of ${ns.name}`);
  return Number(values[i]);
}

/** Writes `bytes` random bytes to `path`; returns their sha256 (hex). */
function writeRandomFile(path: string, bytes: number): string {
  const hash = createHash('sha256');
  const fd = openSync(path, 'w', 0o644);
  try {
    for (let written = 0; written < bytes; ) {
      const piece = randomBytes(Math.min(1 << 20, bytes - written));
      hash.update(piece);
      writeSync(fd, piece);
      written += piece.length;
    }
  } finally {
    closeSync(fd);
  }
  return hash.digest('hex');
}

function sha256Of(path: string): string {
  return createHash('sha256').update(readFileSync(path)).digest('hex');
}

function tcpPort(daemons: string[]): Record<string, unknown> {
  return { port: 80, protocol: 'tcp', scheduler: 'rr', daemons: daemons.map((address) => ({ address })) };
}

// ---------------------------------------------------------------------------
// 1. Echo

const ECHO_COUNTERS = `
table inet hlbt {
  counter echo4 {}
  counter echo6 {}
  counter otherecho {}
  chain in {
    type filter hook input priority 0; policy accept;
    ip saddr ${CLUSTER_V4} icmp type echo-reply counter name echo4
    ip6 saddr ${CLUSTER_V6} icmpv6 type echo-reply counter name echo6
    ip saddr != ${CLUSTER_V4} icmp type echo-reply counter name otherecho
    ip6 saddr != ${CLUSTER_V6} icmpv6 type echo-reply counter name otherecho
  }
}
`;

test('ping of a cluster address is answered from that address, IPv4 and IPv6', async (t) => {
  if (!skipUnlessRoot(t, 'network namespaces, a TUN device and ping')) return;
  const sandbox = NetnsSandbox.forTest(t);
  const dir = tempDir(t);
  const { client, server } = clusterTopology(sandbox);
  addLoopbackAddress(server, '198.18.2.1');
  addLoopbackAddress(server, '2001:db8:2::1');
  let hostlb: HostlbProcess | undefined;
  try {
    hostlb = await HostlbProcess.start(sandbox, server, {
      device: 'hlb0',
      table: { capacity: 4096 },
      clusters: [
        { address: CLUSTER_V4, ports: [tcpPort(['198.18.2.1:8080'])] },
        { address: CLUSTER_V6, ports: [tcpPort(['[2001:db8:2::1]:8080'])] },
      ],
    }, { dir });
    nftLoad(client, ECHO_COUNTERS);
    const [v4, v6] = await Promise.all([
      sandbox.run(client, ['ping', '-c', '3', '-W', '2', CLUSTER_V4], { timeoutMs: 15_000 }),
      sandbox.run(client, ['ping', '-6', '-c', '3', '-W', '2', CLUSTER_V6], { timeoutMs: 15_000 }),
    ]);
    const context = `\nping:\n${v4.stdout}${v4.stderr}\nping -6:\n${v6.stdout}${v6.stderr}\nhostlb:\n${hostlb.describe()}`;
    assert.match(v4.stdout, /3 packets transmitted, 3 received/, `three IPv4 echo replies${context}`);
    assert.match(v6.stdout, /3 packets transmitted, 3 received/, `three IPv6 echo replies${context}`);
    assert.equal(v4.code, 0);
    assert.equal(v6.code, 0);
    const counters = nftCounters(client, 'hlbt');
    assert.deepEqual(counters, { echo4: 3, echo6: 3, otherecho: 0 }, `the client received the replies from the cluster addresses, none from elsewhere${context}`);
    const exit = await hostlb.stop();
    assert.deepEqual(exit, { code: 0, signal: null }, `hostlb stopped cleanly:\n${hostlb.describe()}`);
  } finally {
    await hostlb?.stop();
  }
});

// ---------------------------------------------------------------------------
// 2. Path MTU discovery

// client (MTU 1500) ── 198.18.1.0/24, 2001:db8:1::/64 ── (MTU 1280) router ── 198.18.0.0/24, 2001:db8::/64 ── server (hostlb, nginx)
const PMTU = {
  clientV4: '198.18.1.1', routerClientV4: '198.18.1.2',
  clientV6: '2001:db8:1::1', routerClientV6: '2001:db8:1::2',
  routerServerV4: '198.18.0.1', serverV4: '198.18.0.2',
  routerServerV6: '2001:db8::1', serverV6: '2001:db8::2',
  daemonV4: '198.18.2.1:8080', daemonV6: '[2001:db8:2::1]:8080',
  narrowMtu: 1280,
  fileBytes: 8 * 1024 * 1024,
  maxTimeS: 30,
};

// In the server namespace: errors from the router arriving for the cluster
// (before hostlb) and arriving at a daemon's address from hlb0 (after it).
const PMTU_COUNTERS = `
table inet hlbt {
  counter fragneeded_to_cluster {}
  counter fragneeded_to_daemon {}
  counter toobig_to_cluster {}
  counter toobig_to_daemon {}
  chain pre {
    type filter hook prerouting priority 0; policy accept;
    iifname != "hlb0" ip daddr ${CLUSTER_V4} icmp type destination-unreachable icmp code frag-needed counter name fragneeded_to_cluster
    iifname != "hlb0" ip6 daddr ${CLUSTER_V6} icmpv6 type packet-too-big counter name toobig_to_cluster
  }
  chain in {
    type filter hook input priority 0; policy accept;
    iifname "hlb0" ip daddr 198.18.2.0/24 icmp type destination-unreachable icmp code frag-needed counter name fragneeded_to_daemon
    iifname "hlb0" ip6 daddr 2001:db8:2::/64 icmpv6 type packet-too-big counter name toobig_to_daemon
  }
}
`;

test('path MTU discovery through hostlb: a router\'s "fragmentation needed" / "packet too big" reaches the daemon and the download completes', async (t) => {
  if (!skipUnlessRoot(t, 'network namespaces, a TUN device, nginx and curl')) return;
  const sandbox = NetnsSandbox.forTest(t);
  const dir = tempDir(t);
  const filesDir = join(dir, 'files');
  mkdirSync(filesDir);
  const expected = writeRandomFile(join(filesDir, 'big.bin'), PMTU.fileBytes);

  const client = sandbox.namespace();
  const router = sandbox.namespace();
  const server = sandbox.namespace();
  const clientLink = sandbox.veth(client, router, { a: [`${PMTU.clientV4}/24`, `${PMTU.clientV6}/64`], b: [`${PMTU.routerClientV4}/24`, `${PMTU.routerClientV6}/64`] });
  sandbox.veth(router, server, { a: [`${PMTU.routerServerV4}/24`, `${PMTU.routerServerV6}/64`], b: [`${PMTU.serverV4}/24`, `${PMTU.serverV6}/64`] });
  // Only the router's side of the client link is narrow: the client's own
  // interface stays at 1500, so it advertises MSS 1460 (1440 over IPv6) and
  // nothing but path MTU discovery can make the daemon send smaller segments.
  router.ip('link', 'set', 'dev', clientLink.b.dev, 'mtu', String(PMTU.narrowMtu));
  router.writeSysctl('net/ipv4/ip_forward', '1');
  router.writeSysctl('net/ipv6/conf/all/forwarding', '1');
  client.ip('route', 'add', 'default', 'via', PMTU.routerClientV4);
  client.ip('-6', 'route', 'add', 'default', 'via', PMTU.routerClientV6);
  router.ip('route', 'add', `${CLUSTER_V4}/32`, 'via', PMTU.serverV4);
  router.ip('-6', 'route', 'add', `${CLUSTER_V6}/128`, 'via', PMTU.serverV6);
  server.ip('route', 'add', 'default', 'via', PMTU.routerServerV4);
  server.ip('-6', 'route', 'add', 'default', 'via', PMTU.routerServerV6);
  // No path MTU probing on the daemon's side: only ICMP may lower its segment size.
  assert.equal(server.readSysctl('net/ipv4/tcp_mtu_probing'), '0');

  const endpoints = [PMTU.daemonV4, PMTU.daemonV6];
  for (const e of endpoints) addLoopbackAddress(server, splitEndpoint(e).address);
  const daemons = await startNginxDaemons(sandbox, server, dir, endpoints, { filesDir });
  let hostlb: HostlbProcess | undefined;
  try {
    hostlb = await HostlbProcess.start(sandbox, server, {
      device: 'hlb0',
      table: { capacity: 4096 },
      clusters: [
        { address: CLUSTER_V4, ports: [tcpPort([PMTU.daemonV4])] },
        { address: CLUSTER_V6, ports: [tcpPort([PMTU.daemonV6])] },
      ],
    }, { dir });
    const running = hostlb;
    nftLoad(server, PMTU_COUNTERS);

    const download = async (url: string, name: string, cluster: string): Promise<void> => {
      const path = join(dir, name);
      const started = Date.now();
      const run = await sandbox.run(client, [
        'curl', '-sS', '--globoff', '--max-time', String(PMTU.maxTimeS), '-o', path,
        '-w', '%{http_code} %{size_download} %{remote_ip}', url,
      ], { timeoutMs: (PMTU.maxTimeS + 10) * 1000 });
      const seconds = (Date.now() - started) / 1000;
      const context = `\nserver counters: ${JSON.stringify(nftCounters(server, 'hlbt'))}\nhostlb counters: ${JSON.stringify((await adminGet<AdminCounters>(running, '/v1/counters')).drops)}`;
      assert.equal(run.code, 0, `curl finished within ${PMTU.maxTimeS} s (took ${seconds} s): ${run.stderr}${context}`);
      assert.equal(run.stdout, `200 ${PMTU.fileBytes} ${cluster}`, 'HTTP 200, the whole file, from the cluster address');
      assert.equal(statSync(path).size, PMTU.fileBytes);
      assert.equal(sha256Of(path), expected, 'sha256 of what arrived equals the file served');
      t.diagnostic(`${name}: ${PMTU.fileBytes / 1e6} MB in ${seconds.toFixed(1)} s`);
    };

    await t.test('IPv4: "fragmentation needed" from the router is translated to the daemon', async () => {
      const routerBefore = snmp(router, 'Icmp', 'OutDestUnreachs');
      await download(`http://${CLUSTER_V4}/files/big.bin`, 'v4.bin', CLUSTER_V4);
      const sent = snmp(router, 'Icmp', 'OutDestUnreachs') - routerBefore;
      const counters = nftCounters(server, 'hlbt');
      assert.ok(sent > 0, `the router had to send "fragmentation needed" (so 1500-byte segments did come): ${sent}`);
      assert.ok(counters.fragneeded_to_cluster > 0, `they reached the server for the cluster address: ${JSON.stringify(counters)}`);
      assert.equal(counters.fragneeded_to_daemon, counters.fragneeded_to_cluster, `every one reached the daemon's address from hlb0, translated: ${JSON.stringify(counters)}`);
      // The daemon's kernel now holds the narrower path MTU towards the client.
      const route = server.exec(['ip', 'route', 'get', PMTU.clientV4, 'from', splitEndpoint(PMTU.daemonV4).address, 'ipproto', 'tcp', 'sport', '8080']);
      assert.match(route, new RegExp(`dev hlb0.*\\n.*mtu ${PMTU.narrowMtu}`), `the daemon's route to the client has learnt MTU ${PMTU.narrowMtu}: ${route}`);
    });

    await t.test('IPv6: "packet too big" from the router is translated to the daemon', async () => {
      const routerBefore = snmp(router, 'snmp6', 'Icmp6OutPktTooBigs');
      await download(`http://[${CLUSTER_V6}]/files/big.bin`, 'v6.bin', CLUSTER_V6);
      const sent = snmp(router, 'snmp6', 'Icmp6OutPktTooBigs') - routerBefore;
      const counters = nftCounters(server, 'hlbt');
      assert.ok(sent > 0, `the router had to send "packet too big": ${sent}`);
      assert.ok(counters.toobig_to_cluster > 0, `they reached the server for the cluster address: ${JSON.stringify(counters)}`);
      assert.equal(counters.toobig_to_daemon, counters.toobig_to_cluster, `every one reached the daemon's address from hlb0, translated: ${JSON.stringify(counters)}`);
      const route = server.exec(['ip', '-6', 'route', 'get', PMTU.clientV6, 'from', splitEndpoint(PMTU.daemonV6).address, 'ipproto', 'tcp', 'sport', '8080']);
      assert.match(route, new RegExp(`dev hlb0.*mtu ${PMTU.narrowMtu}`, 's'), `the daemon's route to the client has learnt MTU ${PMTU.narrowMtu}: ${route}`);
    });

    const drops = (await adminGet<AdminCounters>(hostlb, '/v1/counters')).drops;
    assert.equal(drops.icmp, 0, `hostlb dropped no ICMP: ${JSON.stringify(drops)}`);
    const exit = await hostlb.stop();
    assert.deepEqual(exit, { code: 0, signal: null }, `hostlb stopped cleanly:\n${hostlb.describe()}`);
  } finally {
    await hostlb?.stop();
    await stopDaemons(daemons);
  }
});
