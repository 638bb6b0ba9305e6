// The allow-list of journal steps (journal-shape.ts): every step both planners
// write passes, for both data planes and both families, and so do the socket
// plane's bpffs mounts under /run/hostlb/bpf; anything else is
// refused with the reason, and readJournal refuses a journal holding one. Pure
// apart from a temp file.

import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { readJournal } from '../../src/net/apply.js';
import type { HostFacts } from '../../src/net/host-facts.js';
import type { HostSpec } from '../../src/net/host-spec.js';
import { commandShapeProblem, stepShapeProblem } from '../../src/net/journal-shape.js';
import { NetError } from '../../src/net/net-error.js';
import type { NetStep } from '../../src/net/net-step.js';
import { planNetfilterSetup } from '../../src/dataplane/netfilter/host-plan.js';
import { planTunSetup } from '../../src/dataplane/tun/host-plan.js';

const SYSCTLS: Record<string, string> = {
  'net/ipv4/ip_forward': '0', 'net/ipv6/conf/all/forwarding': '0',
  'net/ipv4/conf/all/rp_filter': '1', 'net/ipv4/conf/default/rp_filter': '2',
  'net/ipv4/conf/all/accept_local': '0', 'net/ipv4/conf/default/accept_local': '0',
  'net/ipv4/conf/all/route_localnet': '0', 'net/ipv4/conf/default/route_localnet': '0',
};
const FACTS: HostFacts = {
  addresses: [
    { family: 4, address: '198.18.3.1', dev: 'eth0', scope: 'global' },
    { family: 4, address: '198.18.2.1', dev: 'lo', scope: 'global' },
    { family: 6, address: '2001:db8:3::1', dev: 'eth0', scope: 'global' },
  ],
  devices: [],
  rules: [
    { family: 4, priority: 0, key: '4 0 - - - - - - local', protocol: 'kernel' },
    { family: 6, priority: 0, key: '6 0 - - - - - - local', protocol: 'kernel' },
  ],
  routes: [],
  sysctls: SYSCTLS,
};
const SPEC: HostSpec = {
  device: 'hlb-a.0',
  routeTable: 100,
  clusters: [
    { address: '198.18.0.10', ports: [{ port: 80, protocol: 'tcp', daemons: [{ address: '198.18.1.1', port: 8080 }] }] },
    { address: '198.18.2.1', ports: [{ port: 443, protocol: 'any', daemons: [{ address: '198.18.1.1', port: 8443 }] }] },
    { address: '127.10.0.1', ports: [{ port: 80, protocol: 'tcp', daemons: [{ address: '127.10.1.1', port: 8080 }] }] },
    { address: '2001:db8::10', ports: [{ port: 53, protocol: 'udp', daemons: [{ address: '2001:db8:1::1', port: 5353 }] }] },
  ],
};

test('every step of the TUN plan and of the netfilter plan has a shape hostlb writes', () => {
  // The local rule's key must match what ruleKey builds for it to be moved; the planners decide.
  const tun = planTunSetup(SPEC, FACTS);
  const netfilter = planNetfilterSetup({ ...SPEC, queue: 4242, markBase: 0x4c420000 }, FACTS);
  assert.ok(tun.length > 20 && netfilter.length > 8, `${tun.length} and ${netfilter.length} steps`);
  for (const step of [...tun, ...netfilter]) assert.equal(stepShapeProblem(step), null, JSON.stringify(step));
  // The kinds the brief names are all there.
  const programs = new Set([...tun, ...netfilter].flatMap((s) => [s.apply[0], s.undo[0]]));
  assert.deepEqual([...programs].sort(), ['ip', 'ip6tables', 'iptables', 'nft', 'sysctl']);
});

test('the local rule put back with its protocol, and a test\'s hand-made steps, pass', () => {
  assert.equal(commandShapeProblem(['ip', '-4', 'rule', 'add', 'pref', '0', 'lookup', 'local', 'protocol', 'kernel']), null);
  assert.equal(commandShapeProblem(['ip', 'link', 'set', 'dev', 'lo', 'up']), null);
  assert.equal(commandShapeProblem(['ip', '-4', 'route', 'del', 'local', '198.18.100.1/32', 'dev', 'lo', 'table', 'local']), null);
});

test('a bpffs mount on a directory of its own under /run/hostlb/bpf, and its umount, pass', () => {
  for (const name of ['socket', 'hlb0.v6', 'a_b-c', '...', 'x'.repeat(64)]) {
    const dir = `/run/hostlb/bpf/${name}`;
    const step = { description: `mount a bpffs for ${name}`, apply: ['bpffs', 'mount', dir], undo: ['bpffs', 'umount', dir] };
    assert.equal(stepShapeProblem(step), null, dir);
  }
});

const REFUSED: Array<[string, unknown[], RegExp]> = [
  ['another program', ['sh', '-c', 'rm -rf /'], /"sh" is not a program hostlb runs/],
  ['ip netns exec', ['ip', 'netns', 'exec', 'x', 'sh'], /not an ip rule\/route add\/del or link set/],
  ['ip address del', ['ip', '-4', 'address', 'del', '198.18.0.1/24', 'dev', 'eth0'], /"address" is not an ip object/],
  ['a rule option hostlb never writes', ['ip', '-4', 'rule', 'add', 'pref', '5', 'fwmark', '1', 'lookup', '100'], /"fwmark" is not an argument/],
  ['a rule without lookup', ['ip', '-4', 'rule', 'del', 'pref', '0'], /without lookup/],
  ['a route through a gateway', ['ip', '-4', 'route', 'add', 'default', 'via', '198.18.0.1'], /"via" is not an argument/],
  ['a device name with a slash', ['ip', 'link', 'set', 'dev', '../x', 'down'], /not a device name/],
  ['a sysctl hostlb never writes', ['sysctl', 'kernel/core_pattern', '|/tmp/x'], /not a sysctl hostlb writes/],
  ['a sysctl path escaping /proc/sys', ['sysctl', 'net/ipv4/conf/../../../kernel/x/rp_filter', '1'], /not a sysctl hostlb writes/],
  ['a sysctl value that is not a number', ['sysctl', 'net/ipv4/ip_forward', '1 2'], /not a sysctl value/],
  ['nft flushing the ruleset', ['nft', 'flush ruleset'], /not one hostlb writes/],
  ['nft on a table of someone else', ['nft', 'delete table inet filter'], /not one hostlb writes/],
  ['a second nft statement after a semicolon', ['nft', 'add rule inet hostlb_x prerouting accept; flush ruleset'], /not one hostlb writes/],
  ['an nft line hidden after a good one', ['nft', 'delete table inet hostlb_x\nflush ruleset'], /"flush ruleset" is not one/],
  ['iptables outside mangle', ['iptables', '-w', '5', '-t', 'filter', '-F'], /not "-w 5 -t mangle"/],
  ['iptables flushing a built-in chain', ['iptables', '-w', '5', '-t', 'mangle', '-F', 'PREROUTING'], /is not an iptables change/],
  ['iptables jumping elsewhere', ['iptables', '-w', '5', '-t', 'mangle', '-I', 'PREROUTING', '-j', 'DROP'], /does not jump to a hostlb chain/],
  ['iptables dropping in a hostlb chain', ['iptables', '-w', '5', '-t', 'mangle', '-A', 'HOSTLB-hlb0', '-j', 'DROP'], /not the queue rule/],
  ['not strings', ['ip', 4], /not a list of strings/],
  ['a bpffs elsewhere', ['bpffs', 'mount', '/sys/fs/bpf'], /"\/sys\/fs\/bpf" is not a bpffs directory hostlb mounts \(\/run\/hostlb\/bpf\/<name>\)/],
  ['a bpffs on the bpf root itself', ['bpffs', 'mount', '/run/hostlb/bpf'], /not a bpffs directory hostlb mounts/],
  ['a bpffs with an empty name', ['bpffs', 'umount', '/run/hostlb/bpf/'], /not a bpffs directory hostlb mounts/],
  ['a bpffs on a sibling of the root', ['bpffs', 'mount', '/run/hostlb/bpfx/a'], /not a bpffs directory hostlb mounts/],
  ['a bpffs on ..', ['bpffs', 'umount', '/run/hostlb/bpf/..'], /not a bpffs directory hostlb mounts/],
  ['a bpffs on .', ['bpffs', 'umount', '/run/hostlb/bpf/.'], /not a bpffs directory hostlb mounts/],
  ['a bpffs path climbing out', ['bpffs', 'umount', '/run/hostlb/bpf/../../../sys/fs/bpf'], /not a bpffs directory hostlb mounts/],
  ['a bpffs two levels down', ['bpffs', 'mount', '/run/hostlb/bpf/a/b'], /not a bpffs directory hostlb mounts/],
  ['a bpffs with a trailing slash', ['bpffs', 'mount', '/run/hostlb/bpf/a/'], /not a bpffs directory hostlb mounts/],
  ['a bpffs with a trailing newline', ['bpffs', 'mount', '/run/hostlb/bpf/a\n'], /not a bpffs directory hostlb mounts/],
  ['a bpffs name of 65 characters', ['bpffs', 'mount', `/run/hostlb/bpf/${'x'.repeat(65)}`], /not a bpffs directory hostlb mounts/],
  ['a bpffs name with a space', ['bpffs', 'mount', '/run/hostlb/bpf/a b'], /not a bpffs directory hostlb mounts/],
  ['a relative bpffs directory', ['bpffs', 'mount', 'run/hostlb/bpf/a'], /not a bpffs directory hostlb mounts/],
  ['a bpffs mount with options', ['bpffs', 'mount', '/run/hostlb/bpf/a', '-o', 'remount'], /bpffs takes a verb and a directory/],
  ['a bpffs mount without a directory', ['bpffs', 'mount'], /bpffs takes a verb and a directory/],
  ['a bpffs remount', ['bpffs', 'remount', '/run/hostlb/bpf/a'], /"bpffs remount" is not a bpffs change hostlb makes/],
  ['a bpffs unmount spelled otherwise', ['bpffs', 'unmount', '/run/hostlb/bpf/a'], /"bpffs unmount" is not a bpffs change/],
  ['a bpffs verb in capitals', ['bpffs', 'MOUNT', '/run/hostlb/bpf/a'], /"bpffs MOUNT" is not a bpffs change/],
  ['mount(8) itself', ['mount', '-t', 'bpf', 'bpf', '/run/hostlb/bpf/a'], /"mount" is not a program hostlb runs/],
  ['umount(8) itself', ['umount', '/run/hostlb/bpf/a'], /"umount" is not a program hostlb runs/],
];

for (const [what, command, reason] of REFUSED) {
  test(`refused: ${what}`, () => {
    const problem = commandShapeProblem(command);
    assert.ok(problem !== null, `${JSON.stringify(command)} passed`);
    assert.match(problem, reason);
    // As the undo of an otherwise fine step, too.
    const step = { description: 'x', apply: ['ip', 'link', 'set', 'dev', 'hlb0', 'up'], undo: command };
    assert.match(stepShapeProblem(step) ?? '', /^undo: /);
  });
}

test('readJournal refuses a journal with a foreign step, naming the file, the step and what to do', (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'hlbt-shape-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const path = join(dir, 'hlb0.journal.json');
  const good: NetStep = { description: 'bring hlb0 up', apply: ['ip', 'link', 'set', 'dev', 'hlb0', 'up'], undo: ['ip', 'link', 'set', 'dev', 'hlb0', 'down'] };
  const bad = { description: 'sneaky', apply: good.apply, undo: ['sh', '-c', 'touch /tmp/owned'] };
  writeFileSync(path, JSON.stringify({ version: 1, pid: 999999, updatedAt: '', steps: [good, bad] }));
  assert.throws(() => readJournal(path), (e: unknown) => {
    assert.ok(e instanceof NetError);
    assert.equal(e.code, 'NET_JOURNAL_FOREIGN');
    assert.ok(e.message.includes(path), e.message);
    assert.match(e.message, /step 2 "sneaky": undo: "sh" is not a program hostlb runs/);
    assert.match(e.message, /inspect it, undo by hand what its steps did, then delete it/);
    return true;
  });
  writeFileSync(path, JSON.stringify({ version: 1, pid: -1, updatedAt: '', steps: [good] }));
  assert.throws(() => readJournal(path), { code: 'NET_JOURNAL_INVALID', message: /-1 is not a process id/ });
  writeFileSync(path, JSON.stringify({ version: 1, pid: 999999, updatedAt: '', steps: [good] }));
  assert.deepEqual(readJournal(path)?.steps, [good]);
});
