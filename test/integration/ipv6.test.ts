// HTTP through an IPv6 cluster: the IPv4 test's checks for 2001:db8:100::1
// with nginx daemons on [2001:db8:2::1-3]:8080. A remote client and a client
// on the daemons' own host reach every daemon; each daemon sees the client's
// real address and port; no reply reaches a client from a daemon's address.

import assert from 'node:assert/strict';
import { test, type TestContext } from 'node:test';
import { addLoopbackAddress, splitEndpoint, startNginxDaemons, stopDaemons, tempDir, type NginxDaemon } from '../support/daemons.js';
import { CLIENT_V6, CLUSTER_V6, clusterTopology, curlThrough, HostlbProcess, nftCounters, nftLoad, SERVER_V6, type CurlResult } from '../support/hostlb-process.js';
import { assertPlaneGone, assertPlaneSetUp, ALL_DATAPLANES, type Dataplane } from '../support/dataplanes.js';
import { NetnsSandbox, skipUnlessRoot } from '../support/netns.js';

const DAEMONS = ['[2001:db8:2::1]:8080', '[2001:db8:2::2]:8080', '[2001:db8:2::3]:8080'];
const REQUESTS = 30;

// Input counters: what reached a client from the cluster, and anything TCP
// from a daemon's own address (a reply that escaped translation).
const COUNTERS = (clientAddress: string): string => `
table inet hlbt {
  counter fromcluster {}
  counter fromdaemons {}
  counter othertcp {}
  chain in {
    type filter hook input priority 0; policy accept;
    ip6 saddr ${CLUSTER_V6} ip6 daddr ${clientAddress} tcp sport 80 counter name fromcluster
    ip6 saddr 2001:db8:2::/64 meta l4proto tcp counter name fromdaemons
    ip6 saddr != ${CLUSTER_V6} ip6 daddr ${clientAddress} meta l4proto tcp counter name othertcp
  }
}
`;

function servedBy(results: CurlResult[]): Map<string, number> {
  const counts = new Map<string, number>();
  for (const r of results) {
    const name = r.body.split(' ')[0];
    counts.set(name, (counts.get(name) ?? 0) + 1);
  }
  return counts;
}

/** Every access-log line of every daemon from index `from[i]` on, as "addr:port", sorted. */
function loggedClients(daemons: NginxDaemon[], from: number[] = []): string[] {
  return daemons.flatMap((d, i) => d.accessLog().slice(from[i] ?? 0).map((e) => `${e.clientAddress}:${e.clientPort}`)).sort();
}

function checkTransfers(results: CurlResult[], clientAddress: string): void {
  for (const r of results) {
    assert.equal(r.httpCode, 200, `HTTP status of ${JSON.stringify(r)}`);
    assert.equal(r.remoteIp, CLUSTER_V6, 'curl talked to the cluster address');
    assert.equal(r.remotePort, 80);
    assert.equal(r.localIp, clientAddress, 'the client\'s own address');
    // The body is "<daemon> <client as the daemon saw it>" (nginx prints IPv6 without brackets).
    assert.match(r.body, /^d[1-3] /, `a daemon's answer: ${r.body}`);
    assert.equal(r.body.split(' ')[1], `${r.localIp}:${r.localPort}`, 'the daemon saw the client\'s real address and port');
  }
}

async function httpThroughCluster(t: TestContext, dataplane: Dataplane): Promise<void> {
  if (!skipUnlessRoot(t, 'network namespaces, a TUN device or netfilter rules and nginx daemons')) return;
  const sandbox = NetnsSandbox.forTest(t);
  const dir = tempDir(t);
  const { client, server } = clusterTopology(sandbox);
  for (const d of DAEMONS) addLoopbackAddress(server, splitEndpoint(d).address);
  const daemons = await startNginxDaemons(sandbox, server, dir, DAEMONS);
  let hostlb: HostlbProcess | undefined;
  try {
    hostlb = await HostlbProcess.start(sandbox, server, {
      device: 'hlb0',
      dataplane,
      table: { capacity: 65536 },
      clusters: [{ address: CLUSTER_V6, ports: [{ port: 80, protocol: 'tcp', scheduler: 'rr', daemons: DAEMONS.map((address) => ({ address })) }] }],
    }, { dir });
    // The TUN plane's device, or the netfilter plane's nft table and iptables chain.
    assertPlaneSetUp(server, dataplane);
    nftLoad(client, COUNTERS(CLIENT_V6));
    nftLoad(server, COUNTERS(SERVER_V6));
    const urls = Array.from({ length: REQUESTS }, () => `http://[${CLUSTER_V6}]/`);

    await t.test('a client in another namespace', async () => {
      const results = await curlThrough(sandbox, client, urls);
      checkTransfers(results, CLIENT_V6);
      const counts = servedBy(results);
      assert.deepEqual([...counts.keys()].sort(), ['d1', 'd2', 'd3'], `every daemon serves: ${JSON.stringify([...counts])}`);
      assert.deepEqual(loggedClients(daemons), results.map((r) => `${CLIENT_V6}:${r.localPort}`).sort(), 'access logs show exactly the client\'s connections, from its real address');
      const counters = nftCounters(client, 'hlbt');
      assert.ok(counters.fromcluster >= REQUESTS * 3, `client received packets from the cluster: ${JSON.stringify(counters)}`);
      assert.equal(counters.fromdaemons, 0, `no TCP packet reached the client from a daemon address: ${JSON.stringify(counters)}`);
      assert.equal(counters.othertcp, 0, `all TCP the client received came from the cluster: ${JSON.stringify(counters)}`);
    });

    await t.test('a client on the daemons\' own host', async () => {
      const before = daemons.map((d) => d.accessLog().length);
      const results = await curlThrough(sandbox, server, urls);
      checkTransfers(results, SERVER_V6);
      const counts = servedBy(results);
      assert.deepEqual([...counts.keys()].sort(), ['d1', 'd2', 'd3'], `every daemon serves: ${JSON.stringify([...counts])}`);
      assert.deepEqual(loggedClients(daemons, before), results.map((r) => `${SERVER_V6}:${r.localPort}`).sort(), 'access logs show the local client\'s connections');
      const counters = nftCounters(server, 'hlbt');
      assert.ok(counters.fromcluster >= REQUESTS * 3, `the local client received packets from the cluster: ${JSON.stringify(counters)}`);
      assert.equal(counters.fromdaemons, 0, `no TCP packet arrived from a daemon address: ${JSON.stringify(counters)}`);
      assert.equal(counters.othertcp, 0, `all TCP the local client received came from the cluster: ${JSON.stringify(counters)}`);
    });

    const exit = await hostlb.stop();
    assert.deepEqual(exit, { code: 0, signal: null }, `hostlb stopped cleanly:\n${hostlb.describe()}`);
    assertPlaneGone(server);
  } finally {
    await hostlb?.stop();
    await stopDaemons(daemons);
  }
}

for (const dataplane of ALL_DATAPLANES) test(`[${dataplane}] HTTP through [2001:db8:100::1]:80 reaches every nginx daemon with the client's real address, replies only from the cluster`, (t) => httpThroughCluster(t, dataplane));
