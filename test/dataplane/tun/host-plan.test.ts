// Golden plans: a HostSpec and facts about a host in, the exact ip/sysctl
// commands (and their undo) out. Pure, no privileges. The last cases use ip's
// real JSON captured in a namespace before and after applying a plan.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { addressesFromJson, routeFromJson, ruleFromJson, type HostFacts } from '../../../src/net/host-facts.js';
import type { HostSpec } from '../../../src/net/host-spec.js';
import { NetError } from '../../../src/net/net-error.js';
import type { NetStep } from '../../../src/net/net-step.js';
import { planTunSetup } from '../../../src/dataplane/tun/host-plan.js';

type Json = Record<string, unknown>;

/** Facts from ip's JSON, the way probe.ts builds them. */
function factsFrom(ipJson: { addr: Json[]; rules4: Json[]; rules6: Json[]; routes4: Json[]; routes6: Json[] }, sysctls: Record<string, string>): HostFacts {
  return {
    ...addressesFromJson(ipJson.addr),
    rules: [...ipJson.rules4.map((r) => ruleFromJson(4, r)), ...ipJson.rules6.map((r) => ruleFromJson(6, r))],
    routes: [...ipJson.routes4.map((r) => routeFromJson(4, r)), ...ipJson.routes6.map((r) => routeFromJson(6, r))],
    sysctls,
  };
}

// A typical host: eth0 with an IPv4 and an IPv6 address, the kernel's default
// rules (`ip -N -d -j rule`), Debian's strict rp_filter, no hlb0 yet.
const HOST_ADDR: Json[] = [
  { ifname: 'lo', flags: ['LOOPBACK', 'UP', 'LOWER_UP'], addr_info: [{ family: 'inet', local: '127.0.0.1', prefixlen: 8, scope: 'host' }, { family: 'inet6', local: '::1', prefixlen: 128, scope: 'host' }] },
  { ifname: 'eth0', flags: ['BROADCAST', 'MULTICAST', 'UP', 'LOWER_UP'], addr_info: [{ family: 'inet', local: '198.18.3.1', prefixlen: 24, scope: 'global' }, { family: 'inet6', local: '2001:db8:3::1', prefixlen: 64, scope: 'global' }, { family: 'inet6', local: 'fe80::1', prefixlen: 64, scope: 'link' }] },
];
const KERNEL_RULES4: Json[] = [
  { priority: 0, src: 'all', table: '255', protocol: '2' },
  { priority: 32766, src: 'all', table: '254', protocol: '2' },
  { priority: 32767, src: 'all', table: '253', protocol: '2' },
];
const KERNEL_RULES6: Json[] = [
  { priority: 0, src: 'all', table: '255', protocol: '2' },
  { priority: 32766, src: 'all', table: '254', protocol: '2' },
];
const HOST_SYSCTLS: Record<string, string> = {
  'net/ipv4/ip_forward': '0',
  'net/ipv6/conf/all/forwarding': '0',
  'net/ipv4/conf/all/rp_filter': '1',
  'net/ipv4/conf/default/rp_filter': '1',
  'net/ipv4/conf/all/accept_local': '0',
  'net/ipv4/conf/default/accept_local': '0',
  'net/ipv4/conf/all/route_localnet': '0',
  'net/ipv4/conf/default/route_localnet': '0',
};
const HOST = factsFrom({ addr: HOST_ADDR, rules4: KERNEL_RULES4, rules6: KERNEL_RULES6, routes4: [], routes6: [] }, HOST_SYSCTLS);

function spec(clusters: HostSpec['clusters']): HostSpec {
  return { device: 'hlb0', routeTable: 100, clusters };
}

/** Each step as "apply  <-  undo", argv joined by spaces: the golden form. */
function lines(steps: NetStep[]): string[] {
  return steps.map((s) => `${s.apply.join(' ')}  <-  ${s.undo.join(' ')}`);
}

const IPV4_BASE = [
  'sysctl net/ipv4/ip_forward 1  <-  sysctl net/ipv4/ip_forward 0',
  // rp_filter is max(all, device): the one host-wide key; accept_local only on hlb0.
  'sysctl net/ipv4/conf/all/rp_filter 0  <-  sysctl net/ipv4/conf/all/rp_filter 1',
  'sysctl net/ipv4/conf/hlb0/rp_filter 0  <-  sysctl net/ipv4/conf/hlb0/rp_filter 1',
  'sysctl net/ipv4/conf/hlb0/accept_local 1  <-  sysctl net/ipv4/conf/hlb0/accept_local 0',
];
const LINK_UP = 'ip link set dev hlb0 up  <-  ip link set dev hlb0 down';
const IPV4_TABLE = [
  'ip -4 route add blackhole default metric 4000000000 table 100  <-  ip -4 route del blackhole default metric 4000000000 table 100',
  'ip -4 route add default dev hlb0 table 100  <-  ip -4 route del default dev hlb0 table 100',
];
const IPV4_LOCAL_MOVE = [
  'ip -4 rule add pref 32765 lookup local  <-  ip -4 rule del pref 32765 lookup local',
  'ip -4 rule del pref 0 lookup local  <-  ip -4 rule add pref 0 lookup local protocol kernel',
];

test('an IPv4 cluster: sysctls, device up, table 100, cluster route with src, reply rules, local moved', () => {
  const steps = planTunSetup(
    spec([{ address: '198.18.0.10', ports: [{ port: 80, protocol: 'tcp', daemons: [{ address: '198.18.1.1', port: 8080 }, { address: '198.18.1.2', port: 8081 }] }] }]),
    HOST,
  );
  assert.deepEqual(lines(steps), [
    ...IPV4_BASE,
    LINK_UP,
    ...IPV4_TABLE,
    'ip -4 route add 198.18.0.10/32 dev hlb0 src 198.18.3.1  <-  ip -4 route del 198.18.0.10/32 dev hlb0',
    'ip -4 rule add pref 100 from 198.18.1.1 iif lo ipproto tcp sport 8080 lookup 100  <-  ip -4 rule del pref 100 from 198.18.1.1 iif lo ipproto tcp sport 8080 lookup 100',
    'ip -4 rule add pref 100 from 198.18.1.2 iif lo ipproto tcp sport 8081 lookup 100  <-  ip -4 rule del pref 100 from 198.18.1.2 iif lo ipproto tcp sport 8081 lookup 100',
    'ip -4 rule add pref 101 from 198.18.1.1 iif lo ipproto tcp lookup 100  <-  ip -4 rule del pref 101 from 198.18.1.1 iif lo ipproto tcp lookup 100',
    'ip -4 rule add pref 101 from 198.18.1.2 iif lo ipproto tcp lookup 100  <-  ip -4 rule del pref 101 from 198.18.1.2 iif lo ipproto tcp lookup 100',
    'ip -4 rule add pref 101 from 198.18.1.1 iif lo ipproto icmp lookup 100  <-  ip -4 rule del pref 101 from 198.18.1.1 iif lo ipproto icmp lookup 100',
    'ip -4 rule add pref 101 from 198.18.1.2 iif lo ipproto icmp lookup 100  <-  ip -4 rule del pref 101 from 198.18.1.2 iif lo ipproto icmp lookup 100',
    ...IPV4_LOCAL_MOVE,
  ]);
  assert.ok(steps.every((s) => s.description.length > 0));
});

test('an IPv6 cluster: IPv6 forwarding only, -6 routes and rules, no IPv4 changes', () => {
  const steps = planTunSetup(
    spec([{ address: '2001:DB8:0::10', ports: [{ port: 443, protocol: 'tcp', daemons: [{ address: '2001:db8:1:0::1', port: 8443 }] }] }]),
    HOST,
  );
  assert.deepEqual(lines(steps), [
    'sysctl net/ipv6/conf/all/forwarding 1  <-  sysctl net/ipv6/conf/all/forwarding 0',
    LINK_UP,
    'ip -6 route add blackhole default metric 4000000000 table 100  <-  ip -6 route del blackhole default metric 4000000000 table 100',
    'ip -6 route add default dev hlb0 table 100  <-  ip -6 route del default dev hlb0 table 100',
    'ip -6 route add 2001:db8::10/128 dev hlb0 src 2001:db8:3::1  <-  ip -6 route del 2001:db8::10/128 dev hlb0',
    'ip -6 rule add pref 100 from 2001:db8:1::1 iif lo ipproto tcp sport 8443 lookup 100  <-  ip -6 rule del pref 100 from 2001:db8:1::1 iif lo ipproto tcp sport 8443 lookup 100',
    'ip -6 rule add pref 101 from 2001:db8:1::1 iif lo ipproto ipv6-icmp lookup 100  <-  ip -6 rule del pref 101 from 2001:db8:1::1 iif lo ipproto ipv6-icmp lookup 100',
    'ip -6 rule add pref 32765 lookup local  <-  ip -6 rule del pref 32765 lookup local',
    'ip -6 rule del pref 0 lookup local  <-  ip -6 rule add pref 0 lookup local protocol kernel',
  ]);
});

test('a loopback-range cluster: route_localnet, table-100 route with src 127.0.0.1, `to C` rule at 99', () => {
  const steps = planTunSetup(
    spec([{ address: '127.10.0.1', ports: [{ port: 80, protocol: 'tcp', daemons: [{ address: '127.10.1.1', port: 8080 }] }] }]),
    HOST,
  );
  assert.deepEqual(lines(steps), [
    ...IPV4_BASE,
    'sysctl net/ipv4/conf/hlb0/route_localnet 1  <-  sysctl net/ipv4/conf/hlb0/route_localnet 0',
    LINK_UP,
    ...IPV4_TABLE,
    'ip -4 route add 127.10.0.1/32 dev hlb0 src 127.0.0.1 table 100  <-  ip -4 route del 127.10.0.1/32 dev hlb0 table 100',
    'ip -4 rule add pref 99 to 127.10.0.1 lookup 100  <-  ip -4 rule del pref 99 to 127.10.0.1 lookup 100',
    'ip -4 rule add pref 100 from 127.10.1.1 iif lo ipproto tcp sport 8080 lookup 100  <-  ip -4 rule del pref 100 from 127.10.1.1 iif lo ipproto tcp sport 8080 lookup 100',
    'ip -4 rule add pref 101 from 127.10.1.1 iif lo ipproto tcp lookup 100  <-  ip -4 rule del pref 101 from 127.10.1.1 iif lo ipproto tcp lookup 100',
    'ip -4 rule add pref 101 from 127.10.1.1 iif lo ipproto icmp lookup 100  <-  ip -4 rule del pref 101 from 127.10.1.1 iif lo ipproto icmp lookup 100',
    ...IPV4_LOCAL_MOVE,
  ]);
});

test('an already-local cluster: no route, a `to C ipproto dport` rule per port before local', () => {
  const steps = planTunSetup(
    spec([{ address: '198.18.3.1', ports: [{ port: 443, protocol: 'tcp', daemons: [{ address: '198.18.1.1', port: 8443 }] }] }]),
    HOST,
  );
  assert.deepEqual(lines(steps), [
    ...IPV4_BASE,
    LINK_UP,
    ...IPV4_TABLE,
    'ip -4 rule add pref 100 to 198.18.3.1 ipproto tcp dport 443 lookup 100  <-  ip -4 rule del pref 100 to 198.18.3.1 ipproto tcp dport 443 lookup 100',
    'ip -4 rule add pref 100 from 198.18.1.1 iif lo ipproto tcp sport 8443 lookup 100  <-  ip -4 rule del pref 100 from 198.18.1.1 iif lo ipproto tcp sport 8443 lookup 100',
    'ip -4 rule add pref 101 from 198.18.1.1 iif lo ipproto tcp lookup 100  <-  ip -4 rule del pref 101 from 198.18.1.1 iif lo ipproto tcp lookup 100',
    'ip -4 rule add pref 101 from 198.18.1.1 iif lo ipproto icmp lookup 100  <-  ip -4 rule del pref 101 from 198.18.1.1 iif lo ipproto icmp lookup 100',
    ...IPV4_LOCAL_MOVE,
  ]);
});

test('the `any` protocol gives tcp and udp rules, for daemons and for a local cluster', () => {
  const steps = planTunSetup(
    spec([{ address: '198.18.3.1', ports: [{ port: 53, protocol: 'any', daemons: [{ address: '198.18.1.1', port: 5353 }] }] }]),
    HOST,
  );
  const rules = lines(steps).filter((l) => /^ip -4 rule add pref 10[01] /.test(l));
  assert.deepEqual(rules.map((l) => l.split('  <-  ')[0]), [
    'ip -4 rule add pref 100 to 198.18.3.1 ipproto tcp dport 53 lookup 100',
    'ip -4 rule add pref 100 to 198.18.3.1 ipproto udp dport 53 lookup 100',
    'ip -4 rule add pref 100 from 198.18.1.1 iif lo ipproto tcp sport 5353 lookup 100',
    'ip -4 rule add pref 100 from 198.18.1.1 iif lo ipproto udp sport 5353 lookup 100',
    'ip -4 rule add pref 101 from 198.18.1.1 iif lo ipproto tcp lookup 100',
    'ip -4 rule add pref 101 from 198.18.1.1 iif lo ipproto udp lookup 100',
    'ip -4 rule add pref 101 from 198.18.1.1 iif lo ipproto icmp lookup 100',
  ]);
});

test('a daemon serving several ports or clusters gets each rule once', () => {
  const daemons = [{ address: '198.18.1.1', port: 8080 }];
  const steps = planTunSetup(
    spec([
      { address: '198.18.0.10', ports: [{ port: 80, protocol: 'tcp', daemons }, { port: 8080, protocol: 'tcp', daemons }] },
      { address: '198.18.0.11', ports: [{ port: 80, protocol: 'any', daemons }] },
    ]),
    HOST,
  );
  const replyRules = lines(steps).filter((l) => l.includes('from 198.18.1.1')).map((l) => l.split('  <-  ')[0]);
  assert.deepEqual(replyRules, [
    'ip -4 rule add pref 100 from 198.18.1.1 iif lo ipproto tcp sport 8080 lookup 100',
    'ip -4 rule add pref 100 from 198.18.1.1 iif lo ipproto udp sport 8080 lookup 100',
    'ip -4 rule add pref 101 from 198.18.1.1 iif lo ipproto tcp lookup 100',
    'ip -4 rule add pref 101 from 198.18.1.1 iif lo ipproto udp lookup 100',
    'ip -4 rule add pref 101 from 198.18.1.1 iif lo ipproto icmp lookup 100',
  ]);
});

test('a routeTable other than 100 is used everywhere', () => {
  const steps = planTunSetup(
    { device: 'lb7', routeTable: 4242, clusters: [{ address: '127.10.0.1', ports: [{ port: 80, protocol: 'tcp', daemons: [{ address: '127.10.1.1', port: 80 }] }] }] },
    HOST,
  );
  const ipLines = lines(steps).filter((l) => l.startsWith('ip -4 r'));
  assert.ok(ipLines.slice(0, -2).every((l) => l.includes('4242')), ipLines.join('\n'));
  assert.ok(lines(steps).includes('ip link set dev lb7 up  <-  ip link set dev lb7 down'));
});

test('the source for local clients avoids cluster and daemon addresses and prefers devices other than lo', () => {
  const facts = factsFrom(
    {
      addr: [
        { ifname: 'lo', flags: ['UP'], addr_info: [{ family: 'inet', local: '198.18.1.1', scope: 'global' }, { family: 'inet', local: '198.18.9.9', scope: 'global' }] },
        { ifname: 'eth0', flags: ['UP'], addr_info: [{ family: 'inet', local: '198.18.1.2', scope: 'global' }, { family: 'inet', local: '198.18.3.7', scope: 'global' }] },
        { ifname: 'hlb0', flags: ['UP'], addr_info: [{ family: 'inet', local: '198.18.3.8', scope: 'global' }] },
      ],
      rules4: KERNEL_RULES4,
      rules6: KERNEL_RULES6,
      routes4: [],
      routes6: [],
    },
    HOST_SYSCTLS,
  );
  const cluster = (daemon: string) => spec([{ address: '198.18.0.10', ports: [{ port: 80, protocol: 'tcp', daemons: [{ address: daemon, port: 80 }] }] }]);
  const route = (steps: NetStep[]) => lines(steps).find((l) => l.startsWith('ip -4 route add 198.18.0.10/32'))?.split('  <-  ')[0];
  assert.equal(route(planTunSetup(cluster('198.18.1.2'), facts)), 'ip -4 route add 198.18.0.10/32 dev hlb0 src 198.18.3.7');
  // No IPv4 address of the host qualifies: leave the choice to the kernel.
  const bare = factsFrom({ addr: [HOST_ADDR[0]], rules4: KERNEL_RULES4, rules6: KERNEL_RULES6, routes4: [], routes6: [] }, HOST_SYSCTLS);
  assert.equal(route(planTunSetup(cluster('198.18.1.2'), bare)), 'ip -4 route add 198.18.0.10/32 dev hlb0');
});

test('an existing device starts from its own sysctls; one that is up needs no `up` step', () => {
  const facts: HostFacts = {
    ...HOST,
    devices: [...HOST.devices, { name: 'hlb0', up: true }],
    sysctls: { ...HOST_SYSCTLS, 'net/ipv4/conf/hlb0/rp_filter': '1', 'net/ipv4/conf/hlb0/accept_local': '1' },
  };
  const steps = lines(planTunSetup(spec([{ address: '198.18.0.10', ports: [{ port: 80, protocol: 'tcp', daemons: [] }] }]), facts));
  assert.ok(steps.includes('sysctl net/ipv4/conf/hlb0/rp_filter 0  <-  sysctl net/ipv4/conf/hlb0/rp_filter 1'));
  assert.ok(!steps.some((l) => l.includes('hlb0/accept_local')), 'already 1');
  assert.ok(!steps.includes(LINK_UP));
});

// ---- real ip output, captured in a namespace (see apply.test.ts for the same spec live) ----

const CAPTURED_SPEC = spec([
  { address: '198.18.0.10', ports: [{ port: 80, protocol: 'tcp', daemons: [{ address: '198.18.1.1', port: 8080 }] }] },
  { address: '198.18.2.1', ports: [{ port: 443, protocol: 'any', daemons: [{ address: '198.18.1.1', port: 8443 }] }] },
  { address: '127.10.0.1', ports: [{ port: 80, protocol: 'tcp', daemons: [{ address: '127.10.1.1', port: 8080 }] }] },
  { address: '2001:db8::10', ports: [{ port: 53, protocol: 'udp', daemons: [{ address: '2001:db8:1::1', port: 5353 }] }] },
]);

// `ip -j addr show` (trimmed to the fields probe reads): 198.18.2.1 (a cluster) and 198.18.3.1 on lo, hlb0 down.
const CAPTURED_ADDR = (hlb0Flags: string[]): Json[] => [
  { ifname: 'lo', flags: ['LOOPBACK', 'UP', 'LOWER_UP'], addr_info: [
    { family: 'inet', local: '127.0.0.1', prefixlen: 8, scope: 'host', label: 'lo' },
    { family: 'inet', local: '198.18.2.1', prefixlen: 32, scope: 'global', label: 'lo' },
    { family: 'inet', local: '198.18.3.1', prefixlen: 32, scope: 'global', label: 'lo' },
    { family: 'inet6', local: '2001:db8:3::1', prefixlen: 128, scope: 'global', nodad: true },
    { family: 'inet6', local: '::1', prefixlen: 128, scope: 'host' },
  ] },
  { ifname: 'hlb0', flags: hlb0Flags, addr_info: [] },
];

const CAPTURED_BEFORE = factsFrom(
  {
    addr: CAPTURED_ADDR(['POINTOPOINT', 'MULTICAST', 'NOARP']),
    rules4: KERNEL_RULES4,
    rules6: KERNEL_RULES6,
    routes4: [
      { type: '2', dst: '127.0.0.0/8', dev: 'lo', table: '255', protocol: '2', scope: '254', prefsrc: '127.0.0.1', flags: [] },
      { type: '2', dst: '127.0.0.1', dev: 'lo', table: '255', protocol: '2', scope: '254', prefsrc: '127.0.0.1', flags: [] },
      { type: '3', dst: '127.255.255.255', dev: 'lo', table: '255', protocol: '2', scope: '253', prefsrc: '127.0.0.1', flags: [] },
      { type: '2', dst: '198.18.2.1', dev: 'lo', table: '255', protocol: '2', scope: '254', prefsrc: '198.18.2.1', flags: [] },
      { type: '2', dst: '198.18.3.1', dev: 'lo', table: '255', protocol: '2', scope: '254', prefsrc: '198.18.3.1', flags: [] },
    ],
    routes6: [
      { dst: '2001:db8:3::1', dev: 'lo', protocol: '2', metric: 256, flags: [], pref: 'medium' },
      { type: '2', dst: '::1', dev: 'lo', table: '255', protocol: '2', metric: 0, flags: [], pref: 'medium' },
      { type: '2', dst: '2001:db8:3::1', dev: 'lo', table: '255', protocol: '2', metric: 0, flags: [], pref: 'medium' },
    ],
  },
  { ...HOST_SYSCTLS, 'net/ipv4/conf/hlb0/rp_filter': '1', 'net/ipv4/conf/hlb0/accept_local': '0', 'net/ipv4/conf/hlb0/route_localnet': '0' },
);

// `ip -N -d -j -4|-6 rule show` and `ip -N -j -4|-6 route show table all` after applying CAPTURED_SPEC.
const CAPTURED_AFTER = factsFrom(
  {
    addr: CAPTURED_ADDR(['NO-CARRIER', 'POINTOPOINT', 'MULTICAST', 'NOARP', 'UP']),
    rules4: [
      { priority: 99, src: 'all', dst: '127.10.0.1', table: '100', protocol: '0' },
      { priority: 100, src: 'all', dst: '198.18.2.1', ipproto: 'ipproto-6', dport: 443, table: '100', protocol: '0' },
      { priority: 100, src: 'all', dst: '198.18.2.1', ipproto: 'ipproto-17', dport: 443, table: '100', protocol: '0' },
      { priority: 100, src: '198.18.1.1', iif: 'lo', ipproto: 'ipproto-6', sport: 8080, table: '100', protocol: '0' },
      { priority: 100, src: '198.18.1.1', iif: 'lo', ipproto: 'ipproto-6', sport: 8443, table: '100', protocol: '0' },
      { priority: 100, src: '198.18.1.1', iif: 'lo', ipproto: 'ipproto-17', sport: 8443, table: '100', protocol: '0' },
      { priority: 100, src: '127.10.1.1', iif: 'lo', ipproto: 'ipproto-6', sport: 8080, table: '100', protocol: '0' },
      { priority: 101, src: '198.18.1.1', iif: 'lo', ipproto: 'ipproto-6', table: '100', protocol: '0' },
      { priority: 101, src: '198.18.1.1', iif: 'lo', ipproto: 'ipproto-17', table: '100', protocol: '0' },
      { priority: 101, src: '127.10.1.1', iif: 'lo', ipproto: 'ipproto-6', table: '100', protocol: '0' },
      { priority: 101, src: '198.18.1.1', iif: 'lo', ipproto: 'ipproto-1', table: '100', protocol: '0' },
      { priority: 101, src: '127.10.1.1', iif: 'lo', ipproto: 'ipproto-1', table: '100', protocol: '0' },
      { priority: 32765, src: 'all', table: '255', protocol: '0' },
      { priority: 32766, src: 'all', table: '254', protocol: '2' },
      { priority: 32767, src: 'all', table: '253', protocol: '2' },
    ],
    rules6: [
      { priority: 100, src: '2001:db8:1::1', iif: 'lo', ipproto: 'ipproto-17', sport: 5353, table: '100', protocol: '0' },
      { priority: 101, src: '2001:db8:1::1', iif: 'lo', ipproto: 'ipproto-58', table: '100', protocol: '0' },
      { priority: 32765, src: 'all', table: '255', protocol: '0' },
      { priority: 32766, src: 'all', table: '254', protocol: '2' },
    ],
    routes4: [
      { dst: 'default', dev: 'hlb0', table: '100', scope: '253', flags: ['linkdown'] },
      { type: '6', dst: 'default', table: '100', metric: 4000000000, flags: [] },
      { dst: '127.10.0.1', dev: 'hlb0', table: '100', scope: '253', prefsrc: '127.0.0.1', flags: ['linkdown'] },
      { dst: '198.18.0.10', dev: 'hlb0', scope: '253', prefsrc: '198.18.3.1', flags: ['linkdown'] },
      { type: '2', dst: '127.0.0.0/8', dev: 'lo', table: '255', protocol: '2', scope: '254', prefsrc: '127.0.0.1', flags: [] },
    ],
    routes6: [
      { dst: 'default', dev: 'hlb0', table: '100', metric: 1024, flags: ['linkdown'], pref: 'medium' },
      { type: '6', dst: 'default', dev: 'lo', table: '100', metric: 4000000000, flags: [], pref: 'medium' },
      { dst: '2001:db8::10', dev: 'hlb0', prefsrc: '2001:db8:3::1', metric: 1024, flags: ['linkdown'], pref: 'medium' },
    ],
  },
  {
    ...HOST_SYSCTLS,
    'net/ipv4/ip_forward': '1',
    'net/ipv6/conf/all/forwarding': '1',
    'net/ipv4/conf/all/rp_filter': '0',
    'net/ipv4/conf/all/accept_local': '1',
    'net/ipv4/conf/all/route_localnet': '1',
    'net/ipv4/conf/hlb0/rp_filter': '0',
    'net/ipv4/conf/hlb0/accept_local': '1',
    'net/ipv4/conf/hlb0/route_localnet': '1',
  },
);

test('captured host, before: the whole recipe for IPv4, IPv6, loopback-range and local clusters', () => {
  const steps = lines(planTunSetup(CAPTURED_SPEC, CAPTURED_BEFORE));
  assert.equal(steps.length, 32);
  assert.deepEqual(steps.map((l) => l.split('  <-  ')[0]), [
    'sysctl net/ipv4/ip_forward 1',
    // Nothing on `all` but forwarding and rp_filter (max(all, device)): the other keys only on hostlb's device.
    'sysctl net/ipv4/conf/all/rp_filter 0',
    'sysctl net/ipv4/conf/hlb0/rp_filter 0',
    'sysctl net/ipv4/conf/hlb0/accept_local 1',
    'sysctl net/ipv4/conf/hlb0/route_localnet 1',
    'sysctl net/ipv6/conf/all/forwarding 1',
    'ip link set dev hlb0 up',
    'ip -4 route add blackhole default metric 4000000000 table 100',
    'ip -4 route add default dev hlb0 table 100',
    'ip -6 route add blackhole default metric 4000000000 table 100',
    'ip -6 route add default dev hlb0 table 100',
    'ip -4 route add 198.18.0.10/32 dev hlb0 src 198.18.3.1',
    'ip -4 route add 127.10.0.1/32 dev hlb0 src 127.0.0.1 table 100',
    'ip -6 route add 2001:db8::10/128 dev hlb0 src 2001:db8:3::1',
    'ip -4 rule add pref 100 to 198.18.2.1 ipproto tcp dport 443 lookup 100',
    'ip -4 rule add pref 100 to 198.18.2.1 ipproto udp dport 443 lookup 100',
    'ip -4 rule add pref 99 to 127.10.0.1 lookup 100',
    'ip -4 rule add pref 100 from 198.18.1.1 iif lo ipproto tcp sport 8080 lookup 100',
    'ip -4 rule add pref 100 from 198.18.1.1 iif lo ipproto tcp sport 8443 lookup 100',
    'ip -4 rule add pref 100 from 198.18.1.1 iif lo ipproto udp sport 8443 lookup 100',
    'ip -4 rule add pref 100 from 127.10.1.1 iif lo ipproto tcp sport 8080 lookup 100',
    'ip -6 rule add pref 100 from 2001:db8:1::1 iif lo ipproto udp sport 5353 lookup 100',
    'ip -4 rule add pref 101 from 198.18.1.1 iif lo ipproto tcp lookup 100',
    'ip -4 rule add pref 101 from 198.18.1.1 iif lo ipproto udp lookup 100',
    'ip -4 rule add pref 101 from 127.10.1.1 iif lo ipproto tcp lookup 100',
    'ip -4 rule add pref 101 from 198.18.1.1 iif lo ipproto icmp lookup 100',
    'ip -4 rule add pref 101 from 127.10.1.1 iif lo ipproto icmp lookup 100',
    'ip -6 rule add pref 101 from 2001:db8:1::1 iif lo ipproto ipv6-icmp lookup 100',
    'ip -4 rule add pref 32765 lookup local',
    'ip -4 rule del pref 0 lookup local',
    'ip -6 rule add pref 32765 lookup local',
    'ip -6 rule del pref 0 lookup local',
  ]);
});

test('captured host, after: everything is present, so the plan is empty (idempotent)', () => {
  assert.deepEqual(planTunSetup(CAPTURED_SPEC, CAPTURED_AFTER), []);
});

test('partly present: only the missing steps are planned, and only they would be undone', () => {
  const facts: HostFacts = {
    ...CAPTURED_AFTER,
    // Someone deleted one reply rule and the IPv4 blackhole, and set rp_filter back.
    rules: CAPTURED_AFTER.rules.filter((r) => !r.key.includes('from 198.18.1.1/32 to all ipproto 17 sport 8443')),
    routes: CAPTURED_AFTER.routes.filter((r) => !(r.family === 4 && r.key.includes('type 6'))),
    sysctls: { ...CAPTURED_AFTER.sysctls, 'net/ipv4/conf/all/rp_filter': '2' },
  };
  assert.deepEqual(lines(planTunSetup(CAPTURED_SPEC, facts)), [
    'sysctl net/ipv4/conf/all/rp_filter 0  <-  sysctl net/ipv4/conf/all/rp_filter 2',
    'ip -4 route add blackhole default metric 4000000000 table 100  <-  ip -4 route del blackhole default metric 4000000000 table 100',
    'ip -4 rule add pref 100 from 198.18.1.1 iif lo ipproto udp sport 8443 lookup 100  <-  ip -4 rule del pref 100 from 198.18.1.1 iif lo ipproto udp sport 8443 lookup 100',
  ]);
});

test('a rule with a selector hostlb never writes does not count as hostlb\'s', () => {
  const facts: HostFacts = {
    ...CAPTURED_AFTER,
    rules: [
      ...CAPTURED_AFTER.rules.filter((r) => !r.key.includes('from 127.10.1.1/32')),
      ruleFromJson(4, { priority: 100, src: '127.10.1.1', ipproto: 'ipproto-6', sport: 8080, iif: 'eth0', table: '100' }),
    ],
  };
  assert.deepEqual(lines(planTunSetup(CAPTURED_SPEC, facts)).map((l) => l.split('  <-  ')[0]), [
    'ip -4 rule add pref 100 from 127.10.1.1 iif lo ipproto tcp sport 8080 lookup 100',
    'ip -4 rule add pref 101 from 127.10.1.1 iif lo ipproto tcp lookup 100',
    'ip -4 rule add pref 101 from 127.10.1.1 iif lo ipproto icmp lookup 100',
  ]);
});

// ---- what cannot be planned ----

function rejects(clusters: HostSpec['clusters'], code: string, message: RegExp, extra: Partial<HostSpec> = {}, facts: HostFacts = HOST): void {
  assert.throws(() => planTunSetup({ ...spec(clusters), ...extra }, facts), (error: unknown) => {
    assert.ok(error instanceof NetError, String(error));
    assert.equal(error.code, code);
    assert.match(error.message, message);
    return true;
  });
}

const OK_PORT = [{ port: 80, protocol: 'tcp' as const, daemons: [{ address: '198.18.1.1', port: 8080 }] }];

test('invalid specs are refused with NET_SPEC_INVALID naming the key', () => {
  rejects([{ address: '198.18.0.300', ports: OK_PORT }], 'NET_SPEC_INVALID', /^clusters\[0\]\.address: "198\.18\.0\.300" is not an IPv4 or IPv6 address/);
  rejects([{ address: '2001:db8::10', ports: OK_PORT }], 'NET_SPEC_INVALID', /^clusters\[0\]\.ports\[0\]\.daemons\[0\]\.address: 198\.18\.1\.1 is IPv4 but its cluster is IPv6/);
  rejects([{ address: '::1', ports: [] }], 'NET_SPEC_INVALID', /^clusters\[0\]\.address: ::1 cannot be used/);
  rejects([{ address: '224.0.0.5', ports: [] }], 'NET_SPEC_INVALID', /not a unicast address/);
  rejects([{ address: '198.18.0.10', ports: [{ port: 0, protocol: 'tcp', daemons: [] }] }], 'NET_SPEC_INVALID', /^clusters\[0\]\.ports\[0\]\.port: 0 is not a port/);
  rejects([{ address: '198.18.0.10', ports: [{ port: 80, protocol: 'sctp' as 'tcp', daemons: [] }] }], 'NET_SPEC_INVALID', /^clusters\[0\]\.ports\[0\]\.protocol/);
  rejects([{ address: '198.18.0.10', ports: OK_PORT }], 'NET_SPEC_INVALID', /^routeTable: 254 cannot be used/, { routeTable: 254 });
  rejects([{ address: '198.18.0.10', ports: OK_PORT }], 'NET_SPEC_INVALID', /^device: device name "hlb-far-too-long" is 16 bytes long/, { device: 'hlb-far-too-long' });
});

test('an IPv6 cluster on a host without IPv6 is refused with NET_FACTS_INCOMPLETE', () => {
  const noIpv6: HostFacts = { ...HOST, sysctls: Object.fromEntries(Object.entries(HOST_SYSCTLS).filter(([k]) => !k.includes('ipv6'))) };
  rejects([{ address: '2001:db8::10', ports: [] }], 'NET_FACTS_INCOMPLETE', /net\/ipv6\/conf\/all\/forwarding does not exist.*enable IPv6/, {}, noIpv6);
});
