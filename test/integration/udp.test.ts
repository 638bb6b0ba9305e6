// UDP through a cluster port: three Node echo daemons behind
// 198.18.100.1:9000 (daemons on port 7000, so the port is rewritten too). A
// client in another namespace checks that replies come from the cluster
// address, that one flow (one client port) sticks to one daemon, and that
// flows from different client ports spread over all daemons.

import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test, type TestContext } from 'node:test';
import { addLoopbackAddress, splitEndpoint, startUdpEchoDaemons, stopDaemons, tempDir } from '../support/daemons.js';
import { CLIENT_V4, CLUSTER_V4, clusterTopology, HostlbProcess, nftCounters, nftLoad } from '../support/hostlb-process.js';
import { ALL_DATAPLANES, assertPlaneGone, assertPlaneSetUp, type Dataplane } from '../support/dataplanes.js';
import { NetnsSandbox, skipUnlessRoot } from '../support/netns.js';

const DAEMONS = ['198.18.2.1:7000', '198.18.2.2:7000', '198.18.2.3:7000'];
const CLUSTER_PORT = 9000;
const STICKY_DATAGRAMS = 12;
const STICKY_PORT = 40000;
// Flows spread by a hash on the socket plane: with 40, a daemon left without one is a 1-in-3-million run.
const FLOWS = 40;

// Runs in the client namespace; prints one JSON object. Every wait is bounded
// (10 s per reply: a lost datagram is never answered, a busy machine answers
// late); a missing reply is recorded, not retried.
//  sticky: an unconnected socket on a fixed port sends one datagram at a time
//          and records each reply's text and rinfo (who it came from).
//  flows:  one connect()ed socket per flow, on its own ephemeral port; the
//          kernel hands a connected socket only datagrams from the cluster.
const CLIENT_SCRIPT = `
import dgram from 'node:dgram';
const [cluster, port, stickyPort, stickyCount, flowCount] = process.argv.slice(2).map((v, i) => (i === 0 ? v : Number(v)));
function reply(socket, send) {
  return new Promise((resolve) => {
    const timer = setTimeout(() => { socket.off('message', onMessage); resolve(null); }, 10000);
    const onMessage = (msg, rinfo) => { clearTimeout(timer); resolve({ text: msg.toString(), from: rinfo.address + ':' + rinfo.port }); };
    socket.once('message', onMessage);
    send();
  });
}
const sticky = dgram.createSocket('udp4');
await new Promise((resolve) => sticky.bind(stickyPort, resolve));
const stickyReplies = [];
for (let i = 0; i < stickyCount; i++) stickyReplies.push(await reply(sticky, () => sticky.send('ping ' + i, port, cluster)));
sticky.close();
const flows = [];
for (let i = 0; i < flowCount; i++) {
  const socket = dgram.createSocket('udp4');
  await new Promise((resolve) => socket.bind(0, resolve));
  await new Promise((resolve, reject) => socket.connect(port, cluster, (e) => (e ? reject(e) : resolve())));
  const localPort = socket.address().port;
  flows.push({ localPort, reply: await reply(socket, () => socket.send('hello')) });
  socket.close();
}
console.log(JSON.stringify({ stickyReplies, flows }));
`;

interface Reply {
  text: string;
  from: string;
}

interface ClientReport {
  stickyReplies: Array<Reply | null>;
  flows: Array<{ localPort: number; reply: Reply | null }>;
}

const COUNTERS = `
table inet hlbt {
  counter fromcluster {}
  counter fromdaemons {}
  chain in {
    type filter hook input priority 0; policy accept;
    ip saddr ${CLUSTER_V4} udp sport ${CLUSTER_PORT} counter name fromcluster
    ip saddr 198.18.2.0/24 meta l4proto udp counter name fromdaemons
  }
}
`;

async function udpThroughCluster(t: TestContext, dataplane: Dataplane): Promise<void> {
  if (!skipUnlessRoot(t, 'network namespaces and a TUN device or netfilter rules')) return;
  const sandbox = NetnsSandbox.forTest(t);
  const dir = tempDir(t);
  const { client, server } = clusterTopology(sandbox);
  for (const d of DAEMONS) addLoopbackAddress(server, splitEndpoint(d).address);
  const daemons = await startUdpEchoDaemons(sandbox, server, dir, DAEMONS);
  let hostlb: HostlbProcess | undefined;
  try {
    hostlb = await HostlbProcess.start(sandbox, server, {
      device: 'hlb0',
      dataplane,
      table: { capacity: 65536 },
      clusters: [{ address: CLUSTER_V4, ports: [{ port: CLUSTER_PORT, protocol: 'udp', scheduler: 'rr', daemons: DAEMONS.map((address) => ({ address })) }] }],
    }, { dir });
    // The TUN plane's device, the netfilter plane's nft table and iptables chain, or the socket plane's bpffs and reply table.
    assertPlaneSetUp(server, dataplane, 'hlb0', { udp: true });
    nftLoad(client, COUNTERS);
    const script = join(dir, 'udp-client.mjs');
    writeFileSync(script, CLIENT_SCRIPT);
    const run = await sandbox.run(client, [process.execPath, script, CLUSTER_V4, String(CLUSTER_PORT), String(STICKY_PORT), String(STICKY_DATAGRAMS), String(FLOWS)], { timeoutMs: 600_000 });
    assert.equal(run.code, 0, `the UDP client ran: ${run.stderr}`);
    const report = JSON.parse(run.stdout) as ClientReport;
    const context = `\nclient: ${run.stdout}\nhostlb:\n${hostlb.describe()}`;

    await t.test(`one flow (client port ${STICKY_PORT}) sticks to one daemon across ${STICKY_DATAGRAMS} datagrams`, () => {
      assert.equal(report.stickyReplies.filter((r) => r === null).length, 0, `every datagram was answered${context}`);
      for (const r of report.stickyReplies) {
        assert.equal(r!.from, `${CLUSTER_V4}:${CLUSTER_PORT}`, `the reply came from the cluster address and port${context}`);
        assert.equal(r!.text.split(' ')[1], `${CLIENT_V4}:${STICKY_PORT}`, `the daemon saw the client's real address and port${context}`);
      }
      const names = new Set(report.stickyReplies.map((r) => r!.text.split(' ')[0]));
      assert.equal(names.size, 1, `one daemon answered the whole flow: ${[...names].join(', ')}`);
    });

    await t.test(`${FLOWS} flows from different client ports spread over all daemons`, () => {
      assert.equal(new Set(report.flows.map((f) => f.localPort)).size, FLOWS, 'each flow had its own port');
      const missing = report.flows.filter((f) => f.reply === null);
      assert.equal(missing.length, 0, `a connected socket got every reply, so each came from the cluster${context}`);
      const counts = new Map<string, number>();
      for (const f of report.flows) {
        assert.equal(f.reply!.from, `${CLUSTER_V4}:${CLUSTER_PORT}`, 'the reply came from the cluster address and port');
        const [name, seen] = f.reply!.text.split(' ');
        assert.equal(seen, `${CLIENT_V4}:${f.localPort}`, 'the daemon saw the client\'s real address and port');
        counts.set(name, (counts.get(name) ?? 0) + 1);
      }
      assert.deepEqual([...counts.keys()].sort(), daemons.map((d) => d.name), `every daemon got flows: ${JSON.stringify([...counts])}`);
    });

    await t.test('no UDP reached the client from a daemon\'s own address', () => {
      const counters = nftCounters(client, 'hlbt');
      assert.equal(counters.fromcluster, STICKY_DATAGRAMS + FLOWS, `every reply came from the cluster: ${JSON.stringify(counters)}`);
      assert.equal(counters.fromdaemons, 0, `none from a daemon address: ${JSON.stringify(counters)}`);
    });

    const exit = await hostlb.stop();
    assert.deepEqual(exit, { code: 0, signal: null }, `hostlb stopped cleanly:\n${hostlb.describe()}`);
    assertPlaneGone(server);
  } finally {
    await hostlb?.stop();
    await stopDaemons(daemons);
  }
}

for (const dataplane of ALL_DATAPLANES) test(`[${dataplane}] UDP through 198.18.100.1:9000: replies from the cluster, a flow sticks to a daemon, flows spread`, (t) => udpThroughCluster(t, dataplane));
