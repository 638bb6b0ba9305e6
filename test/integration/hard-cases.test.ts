// Hard cases through a live hostlb, each with real kernels on both ends:
// ping of a cluster address (IPv4 and IPv6); path MTU discovery through a
// router whose hop to the client is 1280 bytes (its "fragmentation needed" /
// "packet too big", sent to the cluster, must reach the daemon translated or
// the download stalls); UDP datagrams larger than the MTU, fragmented by the
// client's kernel on the way in and by the daemon's on the way out; a spoofed
// SYN flood at a 2000-record table while real clients carry on; blind spoofed
// RSTs that must not cut a keep-alive connection. The IPv4
// path MTU case relies on the portless pref-101 rule of src/dataplane/tun/host-plan.ts.

import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import { mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { join } from 'node:path';
import { test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { addLoopbackAddress, splitEndpoint, startNginxDaemons, stopDaemons, tempDir } from '../support/daemons.js';
import { CLIENT_V4, CLIENT_V6, CLUSTER_V4, CLUSTER_V6, clusterTopology, HostlbProcess, nftCounters, nftLoad } from '../support/hostlb-process.js';
import { NetnsSandbox, skipUnlessRoot, type Namespace } from '../support/netns.js';
import { sha256Of, writeRandomFile } from '../support/files.js';

/** Compiled to dist/test/integration/: three levels up is the repo root, where the fixtures stay. */
const FIXTURES = fileURLToPath(new URL('../../../test/integration/fixtures/', import.meta.url));

// ---------------------------------------------------------------------------
// Helpers

/** GET `path` from hostlb's admin API over its unix socket (a file: reachable from any namespace); 30 s bounds a hang. */
function adminGet<T>(hostlb: HostlbProcess, path: string): Promise<T> {
  return new Promise((resolve, reject) => {
    const req = request({ socketPath: join(hostlb.stateDir, 'admin.sock'), path, headers: { accept: 'application/json' }, timeout: 30_000 }, (res) => {
      let body = '';
      res.setEncoding('utf8').on('data', (chunk: string) => (body += chunk));
      res.on('end', () => {
        if (res.statusCode !== 200) reject(new Error(`GET ${path}: HTTP ${res.statusCode}: ${body}`));
        else resolve(JSON.parse(body) as T);
      });
    });
    req.on('timeout', () => req.destroy(new Error(`GET ${path}: no answer in 30 s`)));
    req.on('error', reject);
    req.end();
  });
}

/** Until hostlb logs "admin_listening" (just after "started"); throws after 60 s, a bound for a hostlb that never gets there. */
async function adminListening(hostlb: HostlbProcess): Promise<void> {
  const listening = await Promise.race([
    hostlb.waitForEvent('admin_listening').then(() => true),
    sleep(60_000, undefined, { ref: false }).then(() => false),
  ]);
  assert.ok(listening, `hostlb logged "admin_listening" after "started":\n${hostlb.describe()}`);
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
      // -W: how long ping waits for the last reply; generous, a lost reply still fails the count.
      sandbox.run(client, ['ping', '-c', '3', '-W', '10', CLUSTER_V4], { timeoutMs: 60_000 }),
      sandbox.run(client, ['ping', '-6', '-c', '3', '-W', '10', CLUSTER_V6], { timeoutMs: 60_000 }),
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
  // Measured here: 0.1-0.5 s once the path MTU is known. Without it the
  // download stalls for good, so this bounds a failure, not a run.
  maxTimeS: 120,
};

// A known defect, kept visible as a TODO rather than a red build: the router's
// error is translated and reaches the daemon's kernel, which records the MTU
// on the wrong route. tcp_v4_mtu_reduced() → inet_csk_update_pmtu() →
// ip_rt_update_pmtu() looks the route up again with a flow key built by
// build_sk_flow_key(), which has no ports (net/ipv4/route.c); hostlb's rule
// for daemon replies matches `sport <daemon port>`, so that portless lookup
// misses table 100 and the exception lands on the main table's route to the
// client, while the socket keeps sending 1500-byte segments into hlb0. IPv6
// updates the socket's own route (ip6_rt_update_pmtu) and works. Verified by
// hand: with one more rule `from D ipproto tcp lookup 100` (no sport) the
// same download completes in 0.1 s. Remove the `todo` once hostlb's plan
// covers that lookup.
// IPv4 needed a portless reply rule (pref 101 in src/dataplane/tun/host-plan.ts): the kernel's path MTU re-lookup carries no ports.

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

    /** Downloads the file through `url`; resolves with curl's outcome, asserts nothing yet. */
    const download = async (url: string, name: string): Promise<{ path: string; code: number | null; stdout: string; stderr: string; seconds: number }> => {
      const path = join(dir, name);
      const started = Date.now();
      const run = await sandbox.run(client, [
        'curl', '-sS', '--globoff', '--max-time', String(PMTU.maxTimeS), '-o', path,
        '-w', '%{http_code} %{size_download} %{remote_ip}', url,
      ], { timeoutMs: (PMTU.maxTimeS + 10) * 1000 });
      const seconds = (Date.now() - started) / 1000;
      t.diagnostic(`${name}: curl exit ${run.code} after ${seconds.toFixed(1)} s`);
      return { path, code: run.code, stdout: run.stdout, stderr: run.stderr, seconds };
    };

    /**
     * In order of cause: the router had to send errors (big segments came),
     * they arrived for the cluster, hostlb translated each one to the daemon,
     * the daemon's kernel applied the MTU to the route its replies take, and
     * so the download completed intact.
     */
    const check = async (family: 4 | 6, got: Awaited<ReturnType<typeof download>>, routerSent: number): Promise<void> => {
      const counters = nftCounters(server, 'hlbt');
      const [toCluster, toDaemon] = family === 4
        ? [counters.fragneeded_to_cluster, counters.fragneeded_to_daemon]
        : [counters.toobig_to_cluster, counters.toobig_to_daemon];
      const hostlbCounters = await adminGet<AdminCounters>(running, '/v1/counters');
      const context = `\nserver counters: ${JSON.stringify(counters)}\nhostlb drops: ${JSON.stringify(hostlbCounters.drops)}\ncurl: exit ${got.code} after ${got.seconds} s ${got.stdout} ${got.stderr}`;
      assert.ok(routerSent > 0, `the router had to send ${family === 4 ? '"fragmentation needed"' : '"packet too big"'} (so 1500-byte segments did come): ${routerSent}${context}`);
      assert.ok(toCluster > 0, `the errors reached the server for the cluster address${context}`);
      assert.equal(toDaemon, toCluster, `hostlb translated every one to the daemon's address (seen arriving from hlb0)${context}`);
      assert.equal(hostlbCounters.drops.icmp, 0, `hostlb dropped no ICMP${context}`);
      const daemon = splitEndpoint(family === 4 ? PMTU.daemonV4 : PMTU.daemonV6);
      const clientAddress = family === 4 ? PMTU.clientV4 : PMTU.clientV6;
      // The route the daemon's replies take (its policy rule matches the source port).
      const route = server.exec(['ip', `-${family}`, 'route', 'get', clientAddress, 'from', daemon.address, 'ipproto', 'tcp', 'sport', String(daemon.port)]);
      const cache = server.exec(['ip', `-${family}`, 'route', 'show', 'cache']);
      assert.match(route, new RegExp(`dev hlb0[\\s\\S]*mtu ${PMTU.narrowMtu}`), `the route of the daemon's replies (dev hlb0) learnt MTU ${PMTU.narrowMtu}:\n${route}\nroute cache:\n${cache}${context}`);
      assert.equal(got.code, 0, `curl finished within ${PMTU.maxTimeS} s${context}`);
      assert.equal(got.stdout, `200 ${PMTU.fileBytes} ${family === 4 ? CLUSTER_V4 : CLUSTER_V6}`, 'HTTP 200, the whole file, from the cluster address');
      assert.equal(statSync(got.path).size, PMTU.fileBytes);
      assert.equal(sha256Of(got.path), expected, 'sha256 of what arrived equals the file served');
    };

    await t.test('IPv4: "fragmentation needed" from the router is translated to the daemon and the download completes', async () => {
      const before = snmp(router, 'Icmp', 'OutDestUnreachs');
      const got = await download(`http://${CLUSTER_V4}/files/big.bin`, 'v4.bin');
      await check(4, got, snmp(router, 'Icmp', 'OutDestUnreachs') - before);
    });

    await t.test('IPv6: "packet too big" from the router is translated to the daemon and the download completes', async () => {
      const before = snmp(router, 'snmp6', 'Icmp6OutPktTooBigs');
      const got = await download(`http://[${CLUSTER_V6}]/files/big.bin`, 'v6.bin');
      await check(6, got, snmp(router, 'snmp6', 'Icmp6OutPktTooBigs') - before);
    });

    const exit = await hostlb.stop();
    assert.deepEqual(exit, { code: 0, signal: null }, `hostlb stopped cleanly:\n${hostlb.describe()}`);
  } finally {
    await hostlb?.stop();
    await stopDaemons(daemons);
  }
});

// ---------------------------------------------------------------------------
// 3. Fragments

const UDP = {
  clusterPort: 9000,
  daemonsV4: ['198.18.2.1:7000', '198.18.2.2:7000', '198.18.2.3:7000'],
  daemonsV6: ['[2001:db8:2::1]:7000', '[2001:db8:2::2]:7000', '[2001:db8:2::3]:7000'],
  // 4096 bytes of payload: three fragments at MTU 1500; the reply (a line of
  // JSON and the same bytes) also needs three.
  size: 4096,
  flows: 6,
  datagramsPerFlow: 2,
};

// Non-first fragments seen on the wire: client → cluster arriving at the
// server (before hlb0), and cluster → client arriving at the client. The
// frag-off match loads no conntrack, so nothing reassembles before these
// hooks, and nothing before hostlb either.
const SERVER_FRAGMENT_COUNTERS = `
table inet hlbt {
  counter frags4 {}
  counter frags6 {}
  chain pre {
    type filter hook prerouting priority 0; policy accept;
    iifname != "hlb0" ip daddr ${CLUSTER_V4} ip frag-off & 0x1fff != 0 counter name frags4
    iifname != "hlb0" ip6 daddr ${CLUSTER_V6} frag frag-off != 0 counter name frags6
  }
}
`;

const CLIENT_FRAGMENT_COUNTERS = `
table inet hlbt {
  counter frags4 {}
  counter frags6 {}
  counter fromdaemons {}
  chain pre {
    type filter hook prerouting priority 0; policy accept;
    ip saddr ${CLUSTER_V4} ip frag-off & 0x1fff != 0 counter name frags4
    ip6 saddr ${CLUSTER_V6} frag frag-off != 0 counter name frags6
    ip saddr 198.18.2.0/24 counter name fromdaemons
    ip6 saddr 2001:db8:2::/64 counter name fromdaemons
  }
}
`;

interface DigestReply {
  from: string;
  replyBytes: number;
  header: { name: string; size: number; sha256: string; client: string } | null;
  echoedIntact: boolean;
}

interface DigestExchange {
  flow: number;
  localPort: number;
  sent: { size: number; sha256: string };
  reply: DigestReply | null;
}

test('UDP datagrams larger than the MTU: the kernels\' fragments reach one daemon intact and the fragmented reply comes back from the cluster', async (t) => {
  if (!skipUnlessRoot(t, 'network namespaces and a TUN device')) return;
  const sandbox = NetnsSandbox.forTest(t);
  const dir = tempDir(t);
  const { client, server } = clusterTopology(sandbox);
  const endpoints = [...UDP.daemonsV4, ...UDP.daemonsV6];
  for (const e of endpoints) addLoopbackAddress(server, splitEndpoint(e).address);
  const daemons = await startDigestDaemons(sandbox, server, endpoints);
  let hostlb: HostlbProcess | undefined;
  try {
    hostlb = await HostlbProcess.start(sandbox, server, {
      device: 'hlb0',
      table: { capacity: 4096 },
      clusters: [
        { address: CLUSTER_V4, ports: [{ port: UDP.clusterPort, protocol: 'udp', scheduler: 'rr', daemons: UDP.daemonsV4.map((address) => ({ address })) }] },
        { address: CLUSTER_V6, ports: [{ port: UDP.clusterPort, protocol: 'udp', scheduler: 'rr', daemons: UDP.daemonsV6.map((address) => ({ address })) }] },
      ],
    }, { dir });
    const running = hostlb;
    nftLoad(server, SERVER_FRAGMENT_COUNTERS);
    nftLoad(client, CLIENT_FRAGMENT_COUNTERS);

    for (const family of [4, 6] as const) {
      await t.test(`IPv${family}: ${UDP.flows} client ports × ${UDP.datagramsPerFlow} datagrams of ${UDP.size} bytes`, async () => {
        const cluster = family === 4 ? CLUSTER_V4 : CLUSTER_V6;
        const clientAddress = family === 4 ? CLIENT_V4 : CLIENT_V6;
        const before = { server: nftCounters(server, 'hlbt'), client: nftCounters(client, 'hlbt') };
        const run = await sandbox.run(client, [process.execPath, join(FIXTURES, 'udp-digest-client.mjs'), cluster, String(UDP.clusterPort), String(UDP.flows), String(UDP.datagramsPerFlow), String(UDP.size)], { timeoutMs: 60_000 });
        assert.equal(run.code, 0, `the UDP client ran: ${run.stderr}`);
        const report = JSON.parse(run.stdout) as DigestExchange[];
        const hostlbCounters = await adminGet<AdminCounters>(running, '/v1/counters');
        const context = `\nclient: ${run.stdout.slice(0, 3000)}\nhostlb drops: ${JSON.stringify(hostlbCounters.drops)}\nhostlb:\n${running.describe()}`;
        assert.equal(report.length, UDP.flows * UDP.datagramsPerFlow);
        const daemonOf = new Map<number, string>();
        for (const x of report) {
          assert.ok(x.reply !== null, `datagram ${x.flow}/${x.localPort} was answered (udp-digest-client.mjs waits 10 s)${context}`);
          const r = x.reply;
          assert.equal(r.from, `${cluster}:${UDP.clusterPort}`, `the reply came from the cluster address and port${context}`);
          assert.ok(r.header !== null, `the reply starts with the daemon's JSON line${context}`);
          assert.equal(r.header.size, UDP.size, `the daemon received all ${UDP.size} bytes${context}`);
          assert.equal(r.header.sha256, x.sent.sha256, `the daemon received exactly the bytes sent${context}`);
          assert.equal(r.header.client, `${clientAddress}:${x.localPort}`, `the daemon saw the client's real address and port${context}`);
          assert.ok(r.echoedIntact, `the ${r.replyBytes}-byte reply came back intact${context}`);
          assert.ok(r.replyBytes > 1500, 'the reply is larger than the MTU');
          const seen = daemonOf.get(x.localPort);
          assert.ok(seen === undefined || seen === r.header.name, `one client port sticks to one daemon: ${seen} then ${r.header.name}`);
          daemonOf.set(x.localPort, r.header.name);
        }
        assert.ok(new Set(daemonOf.values()).size >= 2, `the flows spread over the daemons: ${JSON.stringify([...daemonOf])}`);
        const after = { server: nftCounters(server, 'hlbt'), client: nftCounters(client, 'hlbt') };
        const key = family === 4 ? 'frags4' : 'frags6';
        const datagrams = UDP.flows * UDP.datagramsPerFlow;
        t.diagnostic(`IPv${family}: later fragments client → cluster ${after.server[key] - before.server[key]}, cluster → client ${after.client[key] - before.client[key]} for ${datagrams} datagrams each way`);
        // 4096 + 8 bytes of UDP: two more fragments after the first at MTU 1500, each way.
        assert.ok(after.server[key] - before.server[key] >= 2 * datagrams, `the client's datagrams reached hostlb's side fragmented: ${JSON.stringify(after.server)}`);
        assert.ok(after.client[key] - before.client[key] >= 2 * datagrams, `the replies reached the client fragmented, from the cluster address: ${JSON.stringify(after.client)}`);
        assert.equal(after.client.fromdaemons, 0, 'nothing reached the client from a daemon\'s own address');
        assert.equal(hostlbCounters.drops.fragment, 0, `hostlb dropped no fragment${context}`);
      });
    }

    const exit = await hostlb.stop();
    assert.deepEqual(exit, { code: 0, signal: null }, `hostlb stopped cleanly:\n${hostlb.describe()}`);
  } finally {
    await hostlb?.stop();
    await stopDaemons(daemons);
  }
});

/** Starts fixtures/udp-digest-daemon.mjs once per endpoint in `ns` (d1, d2, ...); resolves once every one is bound. */
async function startDigestDaemons(sandbox: NetnsSandbox, ns: Namespace, endpoints: string[]): Promise<Array<{ name: string; endpoint: string; child: ChildProcess; output: () => string }>> {
  const daemons = endpoints.map((endpoint, i) => {
    const name = `d${(i % 3) + 1}`;
    const { address, port } = splitEndpoint(endpoint);
    const child = sandbox.spawn(ns, [process.execPath, join(FIXTURES, 'udp-digest-daemon.mjs'), name, address, String(port)], { stdio: ['pipe', 'pipe', 'pipe'] });
    let text = '';
    child.stdout?.setEncoding('utf8').on('data', (chunk: string) => (text += chunk));
    child.stderr?.setEncoding('utf8').on('data', (chunk: string) => (text += chunk));
    return { name, endpoint, child, output: () => text };
  });
  // Six Node processes start at once: on a busy machine that takes seconds; this bounds only a daemon that never binds.
  const deadline = Date.now() + 60_000;
  for (const d of daemons) {
    while (!d.output().includes('ready')) {
      if (d.child.exitCode !== null || Date.now() > deadline) {
        await stopDaemons(daemons);
        throw new Error(`UDP digest daemon ${d.name} (${d.endpoint}) not ready: ${d.output()}`);
      }
      await sleep(20);
    }
  }
  return daemons;
}

// ---------------------------------------------------------------------------
// 4. SYN flood

const FLOOD = {
  capacity: 2000,
  daemons: ['198.18.2.1:8080', '198.18.2.2:8080', '198.18.2.3:8080'],
  // Ten times the table per flood, spoofed from 198.19.0.0/16 (inside
  // 198.18.0.0/15): the server routes those back to the client namespace,
  // which blackholes them. The first flood goes on past this many until the
  // test's own clients are done with it.
  syns: 20_000,
  pps: 5_000,
  // A safety net for the fixture, far beyond any run: nothing is timed by it.
  maxSeconds: 300,
  spoofPrefix: '198.19',
  // Never-confirmed records leave the table this long after their last packet,
  // so that after each flood the table empties and the next starts where the
  // first did. 8 s × even 250 SYNs a second is still the whole table.
  timeouts: { synRecv: '8s', finWait: '2s', closeWait: '2s', lastAck: '2s', timeWait: '2s', close: '2s' },
  keepAliveIntervalMs: 200,
  keepAliveMinRequests: 5,
  // Requests the keep-alive connection must carry while the table is full.
  keepAliveWhileFull: 5,
  newConnections: 20,
  // Flood 1 with the clients, then identical floods 2..4 of `syns` each.
  floods: 4,
  // Memory after a full collection may grow from after flood 2 to after
  // flood 4 by no more than it grew from after flood 1 to after flood 2, plus
  // this many bytes per SYN of those two floods. Measured here over seven runs
  // (some under load), with nothing leaking: live JavaScript memory (heap
  // used + external: objects and the Buffers they hold) moved by at most
  // 300 kB from flood 2 to flood 4, RSS (which also sees the native addon
  // and malloc) grew by at most about 500 kB. A leak of a record's worth per SYN
  // (a JavaScript object is 50-200 bytes) fails either bound. Neither
  // depends on how fast this machine is or on when V8 collects.
  leakBytesPerSyn: { live: 32, rss: 64 },
  // Bounds on waiting for something the test needs to happen (the table to
  // fill or empty, a connection to be up): reached only when hostlb is broken.
  waitMs: 90_000,
};

interface KeepAliveResult {
  at: number;
  ms: number;
  status: number | null;
  localPort: number | null;
  body?: string;
  error?: string;
}

interface FloodRun {
  sent: number;
  startMs: number;
  endMs: number;
  endedBy: 'count' | 'stop-file' | 'deadline';
}

/** process.memoryUsage() of a process after a full collection (fixtures/heap-after-gc.mjs), bytes. */
interface MemoryAfterGc {
  rss: number;
  heapTotal: number;
  heapUsed: number;
  external: number;
  arrayBuffers: number;
}

/** What a leak in JavaScript would grow: live heap objects, and memory outside the heap that they own (Buffers). */
function liveBytes(m: MemoryAfterGc): number {
  return m.heapUsed + m.external;
}

/** Polls `read` every `everyMs` until `pred` holds; returns that value, or throws after `timeoutMs` with the last one. */
async function waitUntil<T>(what: string, read: () => Promise<T> | T, pred: (v: T) => boolean, timeoutMs: number, everyMs = 100): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await read();
    if (pred(v)) return v;
    if (Date.now() > deadline) throw new Error(`${what}: not so after ${timeoutMs} ms; last ${JSON.stringify(v)}`);
    await sleep(everyMs);
  }
}

/** The keep-alive client's results so far (fixtures/keepalive-client.mjs with a control dir). */
function keepAliveSoFar(controlDir: string): KeepAliveResult[] {
  let text = '';
  try {
    text = readFileSync(join(controlDir, 'keepalive.jsonl'), 'utf8');
  } catch {
    return [];
  }
  // The last line may be half written.
  return text.split('\n').filter((l) => l.endsWith('}')).map((l) => JSON.parse(l) as KeepAliveResult);
}

test('a spoofed SYN flood at a 2000-record table: the established connection and new clients carry on, the table stays bounded and empties, memory does not grow flood after flood', async (t) => {
  if (!skipUnlessRoot(t, 'network namespaces, a TUN device, raw sockets, nginx and curl')) return;
  const sandbox = NetnsSandbox.forTest(t);
  const dir = tempDir(t);
  const { client, server } = clusterTopology(sandbox);
  server.ip('route', 'add', `${FLOOD.spoofPrefix}.0.0/16`, 'via', CLIENT_V4);
  client.ip('route', 'add', 'blackhole', `${FLOOD.spoofPrefix}.0.0/16`);
  // One retransmitted SYN-ACK instead of five (over 63 s) per spoofed SYN: the
  // records the daemons' kernels keep refreshing end seconds after a flood.
  server.writeSysctl('net/ipv4/tcp_synack_retries', '1');
  for (const d of FLOOD.daemons) addLoopbackAddress(server, splitEndpoint(d).address);
  const daemons = await startNginxDaemons(sandbox, server, dir, FLOOD.daemons);
  let hostlb: HostlbProcess | undefined;
  try {
    hostlb = await HostlbProcess.start(sandbox, server, {
      device: 'hlb0',
      table: { capacity: FLOOD.capacity, timeouts: FLOOD.timeouts },
      clusters: [{ address: CLUSTER_V4, ports: [tcpPort(FLOOD.daemons)] }],
    }, { dir });
    const running = hostlb;
    await adminListening(running);
    const url = `http://${CLUSTER_V4}/`;
    const status = (): Promise<AdminStatus> => adminGet<AdminStatus>(running, '/v1/status');
    const curlOnce = async (): Promise<{ at: number; ok: boolean; out: string }> => {
      const at = Date.now();
      const r = await sandbox.run(client, ['curl', '-sS', '--max-time', '10', '--connect-timeout', '8', '-w', ' %{http_code} %{remote_ip}', url], { timeoutMs: 20_000 });
      return { at, ok: r.code === 0 && / 200 198\.18\.100\.1$/.test(r.stdout.trim()), out: `${r.stdout.trim()} ${r.stderr.trim()}`.trim() };
    };
    const floodArgs = (stopFile?: string): string[] => [
      'python3', join(FIXTURES, 'syn-flood.py'), CLUSTER_V4, '80', FLOOD.spoofPrefix, String(FLOOD.syns), String(FLOOD.pps), String(FLOOD.maxSeconds), ...(stopFile ? [stopFile] : []),
    ];
    const runFlood = (stopFile?: string): Promise<FloodRun> => sandbox.run(client, floodArgs(stopFile), { timeoutMs: (FLOOD.maxSeconds + 30) * 1000 }).then((r) => {
      if (r.code !== 0) throw new Error(`the flood fixture failed (${r.code ?? r.signal}): ${r.stderr}`);
      return JSON.parse(r.stdout) as FloodRun;
    });
    /** Until every record of the flood has expired: the table back at its idle baseline. */
    const empty = (what: string): Promise<AdminStatus> => waitUntil(`${what}: the table back to 0 records, 0 active flows`, status, (s) => s.table.records === 0 && s.activeFlows === 0, FLOOD.waitMs, 250);

    // The inspector (opened by SIGUSR1, on the server namespace's loopback)
    // lets the test ask hostlb for a full collection before reading memory.
    const pid = (await status()).pid;
    process.kill(pid, 'SIGUSR1');
    const inspector = await waitUntil('hostlb\'s inspector open', () => /Debugger listening on (ws:\/\/\S+)/.exec(running.stderr)?.[1], (u) => u !== undefined, FLOOD.waitMs);
    const memory = async (): Promise<MemoryAfterGc> => {
      // WebSocket is a global from Node 22; Node 20 has it behind a flag.
      const flags = Number(process.versions.node.split('.')[0]) < 22 ? ['--experimental-websocket', '--no-warnings'] : [];
      const r = await sandbox.run(server, [process.execPath, ...flags, join(FIXTURES, 'heap-after-gc.mjs'), inspector!], { timeoutMs: 60_000 });
      assert.equal(r.code, 0, `heap-after-gc.mjs: ${r.stdout} ${r.stderr}`);
      return JSON.parse(r.stdout) as MemoryAfterGc;
    };

    // Warm up (JIT, buffers); the idle table is the baseline every flood must return to.
    for (let i = 0; i < 10; i++) assert.ok((await curlOnce()).ok, 'a request before the flood');
    const idle = await empty('after the warm-up');

    // Flood 1, with clients: the keep-alive connection is up before it starts;
    // the new connections start once the table is full; the flood lasts until
    // both clients are done.
    const control = join(dir, 'flood-control');
    mkdirSync(control);
    const keepAlive = sandbox.run(client, [process.execPath, join(FIXTURES, 'keepalive-client.mjs'), url, String(FLOOD.keepAliveIntervalMs), String(FLOOD.keepAliveMinRequests), control], { timeoutMs: FLOOD.maxSeconds * 1000 });
    await waitUntil('the keep-alive connection answered its first request', () => keepAliveSoFar(control), (r) => r.length > 0, FLOOD.waitMs);
    const floodStop = join(dir, 'flood-stop');
    const flood1 = runFlood(floodStop);
    const seen: AdminStatus['table'][] = [];
    let watching = true;
    const watch = (async () => {
      while (watching) {
        seen.push((await status()).table);
        await sleep(250);
      }
    })();
    const full = await waitUntil('the table full of the flood\'s records', status, (s) => s.table.records === FLOOD.capacity, FLOOD.waitMs, 50);
    const fullAt = Date.now();
    const fresh: Array<{ at: number; ok: boolean; out: string }> = [];
    for (let i = 0; i < FLOOD.newConnections; i++) fresh.push(await curlOnce());
    const afterFresh = await status();
    await waitUntil(`${FLOOD.keepAliveWhileFull} keep-alive requests since the table was full`, () => keepAliveSoFar(control), (r) => r.filter((x) => x.at >= fullAt).length >= FLOOD.keepAliveWhileFull, FLOOD.waitMs);
    writeFileSync(join(control, 'stop'), '');
    const keepAliveRun = await keepAlive;
    const beforeStop = await status();
    writeFileSync(floodStop, '');
    const sent1 = await flood1;
    watching = false;
    await watch;
    const counters1 = await adminGet<AdminCounters>(hostlb, '/v1/counters');
    const after1 = await empty('after flood 1');
    const memoryAfter: MemoryAfterGc[] = [await memory()];
    const floods: FloodRun[] = [sent1];

    // Floods 2..4: the same number of SYNs each, nothing else.
    for (let n = 2; n <= FLOOD.floods; n++) {
      floods.push(await runFlood());
      await empty(`after flood ${n}`);
      memoryAfter.push(await memory());
    }
    const counters = await adminGet<AdminCounters>(hostlb, '/v1/counters');
    const status1 = await status();

    const keepAliveResults = JSON.parse(keepAliveRun.stdout || '[]') as KeepAliveResult[];
    const newFlows = (c: AdminCounters): number => Object.values(c.daemons).reduce((a, d) => a + d.newFlows, 0);
    const mb = (bytes: number): string => (bytes / 1048576).toFixed(2);
    const memoryText = memoryAfter.map((m, i) => `after flood ${i + 1}: live ${mb(liveBytes(m))} MB (heap ${mb(m.heapUsed)} of ${mb(m.heapTotal)}, external ${mb(m.external)}), RSS ${mb(m.rss)} MB`).join('; ');
    const context = `\nfloods: ${JSON.stringify(floods)}\ntable full at ${fullAt}: ${JSON.stringify(full.table)}; after the new connections ${JSON.stringify(afterFresh.table)}; before the stop ${JSON.stringify(beforeStop.table)}\ntable during flood 1: ${JSON.stringify(seen)}\nidle ${JSON.stringify(idle.table)}, after flood 1 ${JSON.stringify(after1.table)}, at the end ${JSON.stringify(status1)}\ncounters after flood 1: ${JSON.stringify(counters1)}\nmemory ${memoryText}`;
    t.diagnostic(`flood 1: ${sent1.sent} SYNs in ${((sent1.endMs - sent1.startMs) / 1000).toFixed(1)} s (ended by ${sent1.endedBy}); floods 2..${FLOOD.floods}: ${floods.slice(1).map((f) => `${f.sent} in ${((f.endMs - f.startMs) / 1000).toFixed(1)} s`).join(', ')}; daemons' new flows ${newFlows(counters)}; evictions ${status1.table.evictions}; keep-alive requests while full ${keepAliveResults.filter((r) => r.at >= fullAt).length}; memory ${memoryText}`);

    await t.test('the flood reached hostlb and filled its table; every SYN that reached it was admitted, by evicting never-confirmed records', () => {
      assert.equal(sent1.endedBy, 'stop-file', `flood 1 lasted until the test stopped it${context}`);
      assert.ok(sent1.sent >= FLOOD.syns, `flood 1 sent at least ${FLOOD.syns} SYNs${context}`);
      assert.ok(newFlows(counters1) > FLOOD.capacity, `more of flood 1's SYNs became flows than the table holds: ${newFlows(counters1)}${context}`);
      assert.equal(counters1.drops.table_full, 0, `no SYN refused for a full table: never-confirmed records make room${context}`);
      assert.ok(afterFresh.table.evictions > full.table.evictions, `the table was evicting while the new connections were made (${full.table.evictions} → ${afterFresh.table.evictions})${context}`);
    });

    await t.test(`the keep-alive connection opened before the flood answered every request (every ${FLOOD.keepAliveIntervalMs} ms), ${FLOOD.keepAliveWhileFull} or more of them while the table was full`, () => {
      assert.equal(keepAliveRun.code, 0, `the keep-alive client ran: ${keepAliveRun.stderr}`);
      const failed = keepAliveResults.filter((r) => r.status !== 200);
      assert.deepEqual(failed, [], `every request answered 200${context}`);
      assert.equal(new Set(keepAliveResults.map((r) => r.localPort)).size, 1, `all over one connection: ports ${[...new Set(keepAliveResults.map((r) => r.localPort))].join(', ')}`);
      assert.ok(keepAliveResults[0].at < sent1.startMs, `its first request came before the flood${context}`);
      assert.ok(keepAliveResults.filter((r) => r.at >= fullAt && r.at <= sent1.endMs).length >= FLOOD.keepAliveWhileFull, `at least ${FLOOD.keepAliveWhileFull} of its requests while the table was full${context}`);
    });

    await t.test(`all ${FLOOD.newConnections} new connections made while the flood filled the table succeeded`, () => {
      const failed = fresh.filter((f) => !f.ok);
      assert.deepEqual(failed, [], `every new connection got 200 from the cluster${context}`);
      assert.ok(fresh.every((f) => f.at >= fullAt && f.at <= sent1.endMs), `they started after the table was full and before the flood ended${context}`);
    });

    await t.test(`the table stays within capacity, empties after every flood, and memory does not grow from flood ${FLOOD.floods - 2} to flood ${FLOOD.floods}`, () => {
      assert.equal(status1.table.capacity, FLOOD.capacity);
      assert.ok(seen.every((s) => s.records <= FLOOD.capacity), `records ≤ capacity throughout${context}`);
      assert.ok(floods.slice(1).every((f) => f.endedBy === 'count' && f.sent === FLOOD.syns), `floods 2..${FLOOD.floods} sent ${FLOOD.syns} SYNs each${context}`);
      assert.ok(status1.table.evictions > 0, `never-confirmed records were evicted to admit new SYNs${context}`);
      // Reaching here means the table emptied after every flood (empty() throws otherwise).
      for (const [what, read, perSyn] of [['live memory', liveBytes, FLOOD.leakBytesPerSyn.live], ['RSS', (m: MemoryAfterGc) => m.rss, FLOOD.leakBytesPerSyn.rss]] as const) {
        const [m1, m2, , m4] = memoryAfter.map(read);
        const allowed = Math.max(0, m2 - m1) + perSyn * FLOOD.syns * 2;
        assert.ok(m4 - m2 <= allowed, `${what} after a full collection grew by ${m4 - m2} bytes from flood 2 to flood 4; allowed ${allowed}: what it grew from flood 1 to 2 (${m2 - m1}) plus ${perSyn} bytes per SYN${context}`);
      }
    });

    const exit = await hostlb.stop();
    assert.deepEqual(exit, { code: 0, signal: null }, `hostlb stopped cleanly:\n${hostlb.describe()}`);
  } finally {
    await hostlb?.stop();
    await stopDaemons(daemons);
  }
});

// ---------------------------------------------------------------------------
// 5. Blind spoofed RSTs

const SPOOF_RST = {
  daemons: ['198.18.2.1:8080'],
  keepAliveIntervalMs: 200,
  keepAliveMinRequests: 5,
  // Requests the connection must carry after the last RST before the client stops.
  requestsAfter: 3,
  rsts: 200,
  pps: 200,
  // A safety net for the fixture (learning the sequence number and sending), not a timing of the test.
  maxSeconds: 120,
  // Bound on waiting for the connection to come up or carry its requests: reached only when something is broken.
  waitMs: 90_000,
};

test('blind spoofed RSTs with an established connection\'s 4-tuple and wrong sequence numbers are dropped; the connection carries on', async (t) => {
  if (!skipUnlessRoot(t, 'network namespaces, a TUN device, raw sockets and nginx')) return;
  const sandbox = NetnsSandbox.forTest(t);
  const dir = tempDir(t);
  const { client, server } = clusterTopology(sandbox);
  for (const d of SPOOF_RST.daemons) addLoopbackAddress(server, splitEndpoint(d).address);
  const daemons = await startNginxDaemons(sandbox, server, dir, SPOOF_RST.daemons);
  let hostlb: HostlbProcess | undefined;
  try {
    hostlb = await HostlbProcess.start(sandbox, server, {
      device: 'hlb0',
      table: { capacity: 4096 },
      clusters: [{ address: CLUSTER_V4, ports: [tcpPort(SPOOF_RST.daemons)] }],
    }, { dir });
    const url = `http://${CLUSTER_V4}/`;
    // The admin socket comes up just after "started".
    await adminListening(hostlb);
    const before = (await adminGet<AdminCounters>(hostlb, '/v1/counters')).drops.rst_out_of_window ?? 0;

    // The client goes on until the test has seen what it needs, not for a guessed number of requests.
    const control = join(dir, 'rst-control');
    mkdirSync(control);
    const keepAlive = sandbox.run(client, [process.execPath, join(FIXTURES, 'keepalive-client.mjs'), url, String(SPOOF_RST.keepAliveIntervalMs), String(SPOOF_RST.keepAliveMinRequests), control], { timeoutMs: (SPOOF_RST.maxSeconds + 60) * 1000 });
    // The keep-alive connection's source port, from its first answered request.
    const first = await waitUntil('the keep-alive connection answered its first request', () => keepAliveSoFar(control), (r) => r.length > 0, SPOOF_RST.waitMs);
    const localPort = first[0].localPort;
    assert.ok(localPort !== null, `the keep-alive connection is established: ${JSON.stringify(first)}`);
    const spoof = await sandbox.run(client, ['python3', join(FIXTURES, 'spoof-rst.py'), CLIENT_V4, String(localPort), CLUSTER_V4, '80', String(SPOOF_RST.rsts), String(SPOOF_RST.pps), String(SPOOF_RST.maxSeconds)], { timeoutMs: (SPOOF_RST.maxSeconds + 30) * 1000 });
    const endMs = spoof.code === 0 ? (JSON.parse(spoof.stdout) as { endMs: number }).endMs : 0;
    await waitUntil(`${SPOOF_RST.requestsAfter} keep-alive requests after the last RST`, () => keepAliveSoFar(control), (r) => r.filter((x) => x.at > endMs).length >= SPOOF_RST.requestsAfter, SPOOF_RST.waitMs);
    writeFileSync(join(control, 'stop'), '');
    const keepAliveRun = await keepAlive;
    const counters = await adminGet<AdminCounters>(hostlb, '/v1/counters');
    const dropped = (counters.drops.rst_out_of_window ?? 0) - before;

    assert.equal(spoof.code, 0, `the RST fixture ran: ${spoof.stderr}`);
    const sent = JSON.parse(spoof.stdout) as { sent: number; seqLearnt: boolean; startMs: number; endMs: number };
    assert.equal(keepAliveRun.code, 0, `the keep-alive client ran: ${keepAliveRun.stderr}`);
    const results = JSON.parse(keepAliveRun.stdout) as KeepAliveResult[];
    const context = `\nspoof: ${spoof.stdout.trim()}\ncounters: ${JSON.stringify(counters)}\nkeep-alive: ${keepAliveRun.stdout.slice(0, 3000)}\nhostlb:\n${hostlb.describe()}`;
    t.diagnostic(`${sent.sent} spoofed RSTs at ${CLIENT_V4}:${localPort} in ${((sent.endMs - sent.startMs) / 1000).toFixed(1)} s; rst_out_of_window +${dropped}; keep-alive requests after the first RST ${results.filter((r) => r.at >= sent.startMs).length}`);

    assert.equal(sent.sent, SPOOF_RST.rsts, `all RSTs sent${context}`);
    assert.ok(sent.seqLearnt, `the fixture saw the connection's own sequence number, so every RST is ≥ 2^30 from it${context}`);
    assert.deepEqual(results.filter((r) => r.status !== 200), [], `every keep-alive request answered 200${context}`);
    assert.deepEqual([...new Set(results.map((r) => r.localPort))], [localPort], `all over the connection the RSTs aimed at, never reconnected${context}`);
    assert.ok(results.filter((r) => r.at > sent.endMs).length >= SPOOF_RST.requestsAfter, `the connection carried requests after the last RST${context}`);
    assert.ok(dropped >= SPOOF_RST.rsts, `hostlb dropped every out-of-window RST as rst_out_of_window: +${dropped}${context}`);

    const exit = await hostlb.stop();
    assert.deepEqual(exit, { code: 0, signal: null }, `hostlb stopped cleanly:\n${hostlb.describe()}`);
  } finally {
    await hostlb?.stop();
    await stopDaemons(daemons);
  }
});
