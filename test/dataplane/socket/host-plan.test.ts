// The socket data plane's host set-up as steps: the bpffs for its pins, local
// cluster routes, and for UDP ports the nft table that gives daemons' replies
// the cluster's address and port. Pure: no host is touched.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { planSocketSetup, replyTableName } from '../../../src/dataplane/socket/host-plan.js';
import type { HostFacts } from '../../../src/net/host-facts.js';
import type { HostSpec } from '../../../src/net/host-spec.js';
import { stepShapeProblem } from '../../../src/net/journal-shape.js';

const FACTS: HostFacts = {
  addresses: [{ family: 4, address: '198.18.0.2', dev: 'veth0', scope: 'global' }],
  devices: [], rules: [], routes: [], sysctls: {},
};
const PINS = '/run/hostlb/bpf/4026531840-hlb0';

function spec(ports: HostSpec['clusters'][number]['ports'], address = '198.18.100.1'): HostSpec {
  return { device: 'hlb0', routeTable: 100, clusters: [{ address, ports }] };
}

test('socket plan: bpffs first, then the local cluster route; no nft table without a UDP port', () => {
  const steps = planSocketSetup(spec([{ port: 80, protocol: 'tcp', daemons: [{ address: '198.18.2.1', port: 8080 }] }]), FACTS, PINS);
  assert.deepEqual(steps.map((s) => s.apply[0]), ['bpffs', 'ip']);
  assert.deepEqual(steps[0].apply, ['bpffs', 'mount', PINS]);
  assert.ok(!steps.some((s) => s.apply[0] === 'nft'));
});

test('socket plan: a UDP port gets the reply table, then one step per daemon mapping its address and port to the cluster\'s', () => {
  const steps = planSocketSetup(spec([
    { port: 9000, protocol: 'udp', daemons: [{ address: '198.18.2.1', port: 7000 }, { address: '198.18.2.2', port: 7000 }] },
    { port: 80, protocol: 'tcp', daemons: [{ address: '198.18.2.1', port: 8080 }] },
  ]), FACTS, PINS);
  const nft = steps.filter((s) => s.apply[0] === 'nft');
  assert.equal(nft.length, 3, 'the table and one step per UDP daemon');
  const table = replyTableName('hlb0');
  assert.match(nft[0].apply[1], new RegExp(`add chain inet ${table} replies \\{ type route hook output priority mangle; policy accept; \\}`));
  assert.deepEqual(nft[0].undo, ['nft', `delete table inet ${table}`]);
  assert.match(nft[1].apply[1], /udp sport set 9000 ip saddr set 198\.18\.100\.1/);
  assert.match(nft[1].apply[1], /add element inet hostlb_sock_hlb0 udp4 \{ 198\.18\.2\.1 \. 7000 : goto r_198_18_2_1_7000 \}/);
  assert.match(nft[2].undo[1], /delete element inet hostlb_sock_hlb0 udp4 \{ 198\.18\.2\.2 \. 7000 \}\ndelete chain inet hostlb_sock_hlb0 r_198_18_2_2_7000/);
  // The journal takes back only steps of shapes hostlb writes: these must be among them.
  for (const step of steps) assert.equal(stepShapeProblem(step), null, JSON.stringify(step));
});

test('socket plan: IPv6 daemons rewrite ip6 saddr; a cluster written as a port alone gets no reply rewrite', () => {
  const v6 = planSocketSetup(spec([{ port: 53, protocol: 'udp', daemons: [{ address: '2001:db8:2::1', port: 5353 }] }], '2001:db8::100'), FACTS, PINS);
  assert.match(v6.find((s) => s.apply[0] === 'nft' && s.apply[1].includes('goto'))!.apply[1], /udp sport set 53 ip6 saddr set 2001:db8::100\n.*udp6 \{ 2001:db8:2::1 \. 5353 : goto/);
  const wildcard = planSocketSetup(spec([{ port: 53, protocol: 'udp', daemons: [{ address: '198.18.2.1', port: 5353 }] }], '0.0.0.0'), FACTS, PINS);
  assert.ok(!wildcard.some((s) => s.apply[0] === 'nft'));
});
