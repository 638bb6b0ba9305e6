// The netfilter data plane's host set-up as steps (iptables queue rules, the
// nft table and per-port chains, local cluster routes) and its map state
// (marks to daemons, fallback buckets by weight). Pure: no host is touched.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { HostFacts } from '../../../src/net/host-facts.js';
import { fallbackBuckets } from '../../../src/dataplane/netfilter/fallback-buckets.js';
import { mapScript } from '../../../src/dataplane/netfilter/nft-maps.js';
import { FALLBACK_BUCKETS, planNetfilterSetup, portObjectName, type NetfilterSpec } from '../../../src/dataplane/netfilter/host-plan.js';
import { REJECT_ID } from '../../../src/dataplane/netfilter/marks.js';
import { formatCommand } from '../../../src/net/net-step.js';

const FACTS: HostFacts = {
  addresses: [
    { family: 4, address: '198.18.0.2', dev: 'veth0', scope: 'global' },
    { family: 4, address: '198.18.2.1', dev: 'lo', scope: 'global' },
    { family: 6, address: '2001:db8::2', dev: 'veth0', scope: 'global' },
  ],
  devices: [], rules: [], routes: [], sysctls: {},
};

function spec(overrides: Partial<NetfilterSpec> = {}): NetfilterSpec {
  return {
    device: 'hlb0', routeTable: 100, queue: 4242, markBase: 0x4c420000,
    clusters: [
      { address: '198.18.100.1', ports: [{ port: 80, protocol: 'tcp', daemons: [{ address: '198.18.2.1', port: 8080 }] }, { port: 53, protocol: 'any', daemons: [{ address: '198.18.2.1', port: 53 }] }] },
      { address: '2001:db8::100', ports: [{ port: 80, protocol: 'tcp', daemons: [{ address: '2001:db8::2:1', port: 8080 }] }] },
    ],
    ...overrides,
  };
}

test('plan: nft table first, a chain per cluster port, queue rules per protocol and family, local cluster routes with a source', () => {
  const steps = planNetfilterSetup(spec(), FACTS);
  const text = steps.map((s) => formatCommand(s.apply));
  assert.match(text[0], /add table inet hostlb_hlb0/);
  const chains = steps.filter((s) => s.apply[0] === 'nft' && s.apply[1].includes('add chain inet hostlb_hlb0 c_'));
  assert.equal(chains.length, 3, 'one chain per cluster port');
  const any = chains.find((s) => s.apply[1].includes(portObjectName('198.18.100.1', 'any', 53)))!;
  assert.match(any.apply[1], /198\.18\.100\.1 \. tcp \. 53 : jump/);
  assert.match(any.apply[1], /198\.18\.100\.1 \. udp \. 53 : jump/);
  const v6 = chains.find((s) => s.apply[1].includes('2001_db8__100'))!;
  assert.match(v6.apply[1], /jhash ip6 saddr/);
  assert.match(v6.apply[1], /dnat ip6 to meta mark map @daemons6/);
  const queue = steps.filter((s) => s.apply.includes('NFQUEUE'));
  assert.deepEqual(queue.map((s) => `${s.apply[0]} ${s.apply[s.apply.indexOf('-p') + 1]} ${s.apply[s.apply.indexOf('--dport') + 1]}`), [
    'iptables tcp 80', 'iptables tcp 53', 'iptables udp 53', 'ip6tables tcp 80',
  ]);
  for (const s of queue) {
    assert.ok(s.apply.includes('--queue-bypass'), 'service goes on without hostlb');
    assert.equal(s.apply[s.apply.indexOf('--queue-num') + 1], '4242');
    assert.deepEqual(s.undo.slice(s.undo.indexOf('-D') + 1), s.apply.slice(s.apply.indexOf('-A') + 1), 'undo deletes exactly the rule added');
  }
  const routes = steps.filter((s) => s.apply[0] === 'ip');
  assert.deepEqual(routes.map((s) => s.apply.join(' ')), [
    'ip -4 route add local 198.18.100.1/32 dev lo table local src 198.18.0.2',
    'ip -6 route add local 2001:db8::100/128 dev lo table local src 2001:db8::2',
  ]);
  // Jumps before chains' rules are undone in reverse: the chain is created before anything refers to it.
  const order = steps.map((s) => s.apply.join(' '));
  assert.ok(order.findIndex((s) => s.includes('-N HOSTLB-hlb0')) < order.findIndex((s) => s.includes('-I PREROUTING')));
});

test('plan: an address the host owns gets no route; loopback-range clusters neither', () => {
  const steps = planNetfilterSetup(spec({ clusters: [
    { address: '198.18.0.2', ports: [{ port: 80, protocol: 'tcp', daemons: [{ address: '198.18.2.1', port: 8080 }] }] },
    { address: '127.10.0.1', ports: [{ port: 80, protocol: 'tcp', daemons: [{ address: '127.10.1.1', port: 8080 }] }] },
  ] }), FACTS);
  assert.equal(steps.filter((s) => s.apply[0] === 'ip').length, 0);
});

test('plan: a queue number or mark out of range is refused naming the key', () => {
  assert.throws(() => planNetfilterSetup(spec({ queue: 70000 }), FACTS), /netfilter\.queue/);
  assert.throws(() => planNetfilterSetup(spec({ markBase: 0x4c420001 }), FACTS), /netfilter\.mark/);
});

test('fallback buckets follow the weights, go to no daemon with weight 0, and reject when none is left', () => {
  const buckets = fallbackBuckets([{ id: 1, weight: 1 }, { id: 2, weight: 1 }, { id: 3, weight: 2 }], 4096);
  const count = (id: number): number => buckets.filter((b) => b === id).length;
  assert.ok(Math.abs(count(1) / 4096 - 0.25) < 0.04, `daemon 1 share ${count(1)}`);
  assert.ok(Math.abs(count(3) / 4096 - 0.5) < 0.04, `daemon 3 share ${count(3)}`);
  assert.equal(buckets.length, 4096);
  assert.ok(fallbackBuckets([{ id: 1, weight: 0 }, { id: 2, weight: 3 }]).every((b) => b === 2));
  assert.ok(fallbackBuckets([]).every((b) => b === REJECT_ID));
  // Taking one daemon out moves only its buckets.
  const before = fallbackBuckets([{ id: 1, weight: 1 }, { id: 2, weight: 1 }, { id: 3, weight: 1 }]);
  const after = fallbackBuckets([{ id: 1, weight: 1 }, { id: 2, weight: 1 }]);
  for (let b = 0; b < FALLBACK_BUCKETS; b++) if (before[b] !== 3) assert.equal(after[b], before[b], `bucket ${b} stayed`);
});

test('map script: flushes and refills every map in one transaction', () => {
  const script = mapScript('hostlb_hlb0', 0x4c420000, [
    { id: 1, family: 4, address: '198.18.2.1', port: 8080 },
    { id: 2, family: 6, address: '2001:db8::2:1', port: 8080 },
  ], [{ address: '198.18.100.1', protocol: 'tcp', port: 80, buckets: fallbackBuckets([{ id: 1, weight: 1 }]) }]);
  assert.match(script, /flush map inet hostlb_hlb0 daemons4\nadd element inet hostlb_hlb0 daemons4 \{ 0x4c420001 : 198\.18\.2\.1 \. 8080 \}/);
  assert.match(script, /add element inet hostlb_hlb0 daemons6 \{ 0x4c420002 : 2001:db8::2:1 \. 8080 \}/);
  const fb = /add element inet hostlb_hlb0 c_198_18_100_1_tcp_80 \{ (.*) \}/.exec(script);
  assert.ok(fb);
  assert.equal(fb[1].split(', ').length, FALLBACK_BUCKETS);
  assert.ok(fb[1].split(', ').every((e) => e.endsWith(': 0x4c420001')));
});
