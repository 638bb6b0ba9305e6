// Host set-up against a real kernel, each case in a fresh network namespace:
// apply then undo leaves rules, routes and sysctls exactly as they were; a
// crashed run is cleaned up at the next start; a failing step rolls back.
// Needs root.

import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test, type TestContext } from 'node:test';
import { fileURLToPath } from 'node:url';
import { TUN_ADDON_PATH } from '../../src/native/addon.js';
import type { HostSpec } from '../../src/net/host-spec.js';
import type { NetStep } from '../../src/net/net-step.js';
import { NetnsSandbox, skipUnlessRoot, type Namespace, type RunResult } from '../support/netns.js';

const CHILD = fileURLToPath(new URL('../support/net-child.js', import.meta.url));

const SPEC: HostSpec = {
  device: 'hlb0',
  routeTable: 100,
  clusters: [
    { address: '198.18.0.10', ports: [{ port: 80, protocol: 'tcp', daemons: [{ address: '198.18.1.1', port: 8080 }, { address: '198.18.1.2', port: 8080 }] }] },
    { address: '198.18.2.1', ports: [{ port: 443, protocol: 'any', daemons: [{ address: '198.18.1.1', port: 8443 }] }] },
    { address: '127.10.0.1', ports: [{ port: 80, protocol: 'tcp', daemons: [{ address: '127.10.1.1', port: 8080 }] }] },
    { address: '2001:db8::10', ports: [{ port: 53, protocol: 'udp', daemons: [{ address: '2001:db8:1::1', port: 5353 }] }] },
  ],
};

/** Everything the plan may touch, as the kernel reports it. */
function snapshot(ns: Namespace): Record<string, unknown> {
  const sysctls: Record<string, string> = {};
  const devices = ns.ipJson<Array<{ ifname: string }>>('link', 'show').map((l) => l.ifname);
  const paths = ['net/ipv4/ip_forward', 'net/ipv6/conf/all/forwarding', 'net/ipv6/conf/default/forwarding'];
  for (const scope of ['all', 'default', ...devices]) {
    for (const key of ['rp_filter', 'accept_local', 'route_localnet', 'forwarding']) paths.push(`net/ipv4/conf/${scope}/${key}`);
    paths.push(`net/ipv6/conf/${scope}/forwarding`);
  }
  for (const path of paths) sysctls[path] = ns.readSysctl(path);
  // A device's first `up` attaches the default qdisc (noop -> pfifo_fast) and
  // `down` keeps it; nothing hostlb changes, so it is left out.
  const withoutQdisc = (links: Array<Record<string, unknown>>) => links.map(({ qdisc: _qdisc, ...rest }) => rest);
  return {
    links: withoutQdisc(ns.ipJson('-d', 'link', 'show')),
    addresses: withoutQdisc(ns.ipJson('addr', 'show')),
    rules4: ns.ipJson('-d', '-4', 'rule', 'show'),
    rules6: ns.ipJson('-d', '-6', 'rule', 'show'),
    routes4: ns.ipJson('-d', '-4', 'route', 'show', 'table', 'all'),
    routes6: ns.ipJson('-d', '-6', 'route', 'show', 'table', 'all'),
    sysctls,
  };
}

/** The namespace a host would look like: a persistent TUN device, host and cluster addresses, strict rp_filter. */
function prepareHost(ns: Namespace, withDevice: boolean): void {
  // Debian's defaults, so the plan has reverse-path filtering to turn off.
  ns.writeSysctl('net/ipv4/conf/all/rp_filter', '1');
  ns.writeSysctl('net/ipv4/conf/default/rp_filter', '1');
  if (withDevice) ns.ip('tuntap', 'add', 'dev', 'hlb0', 'mode', 'tun');
  ns.ip('addr', 'add', '198.18.2.1/32', 'dev', 'lo'); // makes cluster 198.18.2.1 already local
  ns.ip('addr', 'add', '198.18.3.1/32', 'dev', 'lo'); // the host's own address: src for local clients
  ns.ip('-6', 'addr', 'add', '2001:db8:3::1/128', 'dev', 'lo', 'nodad');
}

function parse<T>(result: RunResult, expectFailure = false): T {
  assert.equal(result.timedOut, false, `child timed out; stderr: ${result.stderr}`);
  const line = result.stdout.trim().split('\n').pop() ?? '';
  let out: T & { error?: { code?: string; message?: string } };
  try {
    out = JSON.parse(line) as T & { error?: { code?: string; message?: string } };
  } catch {
    assert.fail(`child printed no JSON (exit ${result.code}); stdout: ${result.stdout}; stderr: ${result.stderr}`);
  }
  if (!expectFailure) {
    assert.equal(out.error, undefined, `child failed: ${JSON.stringify(out.error)}; stderr: ${result.stderr}`);
    assert.equal(result.code, 0, result.stderr);
  }
  return out;
}

function setUp(t: TestContext): { sandbox: NetnsSandbox; ns: Namespace; journal: string } | null {
  if (!skipUnlessRoot(t, 'changes rules, routes and sysctls inside a network namespace')) return null;
  const sandbox = NetnsSandbox.forTest(t);
  const ns = sandbox.namespace();
  // A fresh directory per test: /run/hostlb is shared by every namespace.
  const dir = mkdtempSync(join(tmpdir(), 'hlbt-journal-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return { sandbox, ns, journal: join(dir, 'run', 'hlb0.journal.json') };
}

function ruleLines(ns: Namespace, family: 4 | 6): string[] {
  return ns.ip(`-${family}`, 'rule', 'show').trim().split('\n').map((l) => l.replace(/\s+/g, ' ').trim());
}

test('apply sets up the recipe; a second plan is empty; undo restores rules, routes and sysctls exactly', async (t) => {
  const ctx = setUp(t);
  if (ctx === null) return;
  const { sandbox, ns, journal } = ctx;
  prepareHost(ns, true);
  const before = snapshot(ns);

  const applied = parse<{ applied: number }>(await sandbox.run(ns, [process.execPath, CHILD, 'apply', JSON.stringify(SPEC), journal]));
  assert.ok(applied.applied > 20, `applied ${applied.applied} steps`);

  // The journal holds every step, in a directory only root can enter.
  const recorded = JSON.parse(readFileSync(journal, 'utf8')) as { steps: NetStep[] };
  assert.equal(recorded.steps.length, applied.applied);
  assert.equal(statSync(join(journal, '..')).mode & 0o777, 0o700);

  // Spot checks of the recipe, as ip prints it.
  const rules4 = ruleLines(ns, 4);
  assert.ok(rules4.includes('99: from all to 127.10.0.1 lookup 100'), rules4.join('\n'));
  assert.ok(rules4.includes('100: from 198.18.1.1 iif lo ipproto tcp sport 8080 lookup 100'));
  assert.ok(rules4.includes('100: from all to 198.18.2.1 ipproto udp dport 443 lookup 100'), 'any = tcp and udp');
  assert.ok(rules4.includes('32765: from all lookup local'));
  assert.ok(!rules4.includes('0: from all lookup local'), 'local moved away from priority 0');
  assert.ok(ruleLines(ns, 6).includes('100: from 2001:db8:1::1 iif lo ipproto udp sport 5353 lookup 100'));
  const table100 = ns.ip('-4', 'route', 'show', 'table', '100');
  assert.match(table100, /^default dev hlb0/m);
  assert.match(table100, /^blackhole default metric 4000000000/m);
  assert.match(table100, /^127\.10\.0\.1 dev hlb0 scope link src 127\.0\.0\.1/m);
  assert.match(ns.ip('-4', 'route', 'show', 'table', 'main'), /^198\.18\.0\.10 dev hlb0 scope link src 198\.18\.3\.1/m);
  assert.match(ns.ip('-6', 'route', 'show', 'table', '100'), /^default dev hlb0/m);
  assert.equal(ns.readSysctl('net/ipv4/ip_forward'), '1');
  assert.equal(ns.readSysctl('net/ipv4/conf/all/rp_filter'), '0');
  assert.equal(ns.readSysctl('net/ipv4/conf/hlb0/route_localnet'), '1');
  assert.equal(ns.readSysctl('net/ipv6/conf/all/forwarding'), '1');

  // Idempotent on a real host: everything is present, so nothing is planned.
  const again = parse<{ steps: NetStep[] }>(await sandbox.run(ns, [process.execPath, CHILD, 'plan', JSON.stringify(SPEC)]));
  assert.deepEqual(again.steps, []);

  const undone = parse<{ undone: number }>(await sandbox.run(ns, [process.execPath, CHILD, 'undo', journal]));
  assert.equal(undone.undone, applied.applied);
  assert.equal(existsSync(journal), false, 'undo deletes the journal');
  assert.deepEqual(snapshot(ns), before);
});

test('after a crash, cleanupLeftovers undoes the journal and deletes the persistent device', async (t) => {
  const ctx = setUp(t);
  if (ctx === null) return;
  const { sandbox, ns, journal } = ctx;
  prepareHost(ns, false);
  const before = snapshot(ns);

  const crashed = await sandbox.run(ns, [process.execPath, CHILD, 'crash', JSON.stringify(SPEC), journal]);
  assert.equal(crashed.signal, 'SIGKILL', `the child should die by SIGKILL; stdout: ${crashed.stdout}; stderr: ${crashed.stderr}`);
  assert.ok(existsSync(journal), 'the crashed run left its journal');
  assert.notDeepEqual(snapshot(ns), before, 'the crashed run left its changes');
  assert.ok(ruleLines(ns, 4).includes('32765: from all lookup local'));

  const report = parse<{ undone: number; deviceRemoved: boolean }>(await sandbox.run(ns, [process.execPath, CHILD, 'cleanup', 'hlb0', journal]));
  const recordedSteps = report.undone;
  assert.ok(recordedSteps > 20);
  assert.equal(report.deviceRemoved, true);
  assert.equal(existsSync(journal), false);
  assert.deepEqual(snapshot(ns), before);

  // Nothing left: a second cleanup finds nothing to do.
  assert.deepEqual(parse(await sandbox.run(ns, [process.execPath, CHILD, 'cleanup', 'hlb0', journal])), { undone: 0, deviceRemoved: false });
});

test('a failing step rolls back the steps before it and names the step and ip\'s stderr', async (t) => {
  const ctx = setUp(t);
  if (ctx === null) return;
  const { sandbox, ns, journal } = ctx;
  const before = snapshot(ns);
  const steps: NetStep[] = [
    { description: 'accept local sources (all)', apply: ['sysctl', 'net/ipv4/conf/all/accept_local', '1'], undo: ['sysctl', 'net/ipv4/conf/all/accept_local', '0'] },
    { description: 'send replies to table 100', apply: ['ip', '-4', 'rule', 'add', 'pref', '100', 'from', '198.18.1.1', 'lookup', '100'], undo: ['ip', '-4', 'rule', 'del', 'pref', '100', 'from', '198.18.1.1', 'lookup', '100'] },
    { description: 'route cluster 198.18.0.10 into hlbx9', apply: ['ip', '-4', 'route', 'add', '198.18.0.10/32', 'dev', 'hlbx9'], undo: ['ip', '-4', 'route', 'del', '198.18.0.10/32', 'dev', 'hlbx9'] },
    { description: 'never reached', apply: ['ip', 'link', 'set', 'dev', 'lo', 'down'], undo: ['ip', 'link', 'set', 'dev', 'lo', 'up'] },
  ];
  const result = await sandbox.run(ns, [process.execPath, CHILD, 'apply-steps', JSON.stringify(steps), journal]);
  const out = parse<{ error: { code: string; message: string } }>(result, true);
  assert.equal(result.code, 1);
  assert.equal(out.error.code, 'NET_STEP_FAILED');
  assert.match(out.error.message, /^could not route cluster 198\.18\.0\.10 into hlbx9: ip -4 route add 198\.18\.0\.10\/32 dev hlbx9 failed: Cannot find device "hlbx9"/);
  assert.match(out.error.message, /the 2 step\(s\) applied before it were undone/);
  assert.equal(existsSync(journal), false, 'nothing left to undo, so no journal');
  assert.deepEqual(snapshot(ns), before);
});

test('checkNetAdmin: null as root, one sentence without CAP_NET_ADMIN', async (t) => {
  if (!skipUnlessRoot(t, 'drops CAP_NET_ADMIN from a root child process')) return;
  const sandbox = NetnsSandbox.forTest(t);
  const ns = sandbox.namespace();
  assert.deepEqual(parse(await sandbox.run(ns, [process.execPath, CHILD, 'privileges'])), { message: null });
  const dropped = ['setpriv', '--inh-caps=-net_admin', '--bounding-set=-net_admin', process.execPath, CHILD, 'privileges'];
  const out = parse<{ message: string }>(await sandbox.run(ns, dropped));
  assert.equal(out.message, 'hostlb needs CAP_NET_ADMIN to set up its data plane (iptables and nftables rules, or a TUN device and routes): run it as root (sudo) or grant the capability.');
});

test('the applied recipe steers a loopback-range cluster\'s SYN and a daemon\'s SYN-ACK into the device', async (t) => {
  const ctx = setUp(t);
  if (ctx === null) return;
  const { sandbox, ns, journal } = ctx;
  if (!existsSync(TUN_ADDON_PATH)) assert.fail(`the TUN addon is not built (${TUN_ADDON_PATH}): run npm install`);
  const before = snapshot(ns);
  const live: HostSpec = {
    device: 'hlb0',
    routeTable: 100,
    clusters: [{ address: '127.10.0.1', ports: [{ port: 80, protocol: 'tcp', daemons: [{ address: '127.10.1.1', port: 8080 }] }] }],
  };
  const out = parse<{ seen: string[] }>(await sandbox.run(ns, [process.execPath, CHILD, 'live', JSON.stringify(live), journal]));
  assert.equal(out.seen.length, 2, out.seen.join('\n'));
  // A local client's SYN to the cluster: into the device, from 127.0.0.1 (the route's src).
  assert.match(out.seen[0], /^127\.0\.0\.1:\d+ -> 127\.10\.0\.1:80 SYN$/);
  // The daemon's reply to a local client: the policy rule sends it into the device, not to the client.
  assert.equal(out.seen[1], '127.10.1.1:8080 -> 127.0.0.1:40000 SYN-ACK');
  assert.deepEqual(snapshot(ns), before, 'the child undid everything (the device went with its fd)');
});
