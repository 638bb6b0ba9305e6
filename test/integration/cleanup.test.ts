// hostlb leaves the host as it found it. In a server namespace: snapshot
// policy rules, routes, links and the sysctls hostlb may change; start hostlb
// (IPv4, IPv6 and loopback-range clusters, so every kind of change happens);
// see that they changed; stop it by SIGTERM, then SIGINT: each time the
// snapshot must be identical to before. Then the crash case: kill -9 leaves
// the persistent device and the journal (intended: replies stay blackholed
// rather than leak), the next start cleans them up and starts, and its stop
// restores the snapshot; or `hostlb cleanup` removes them without a start.

import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { addLoopbackAddress, splitEndpoint, startNginxDaemons, stopDaemons, tempDir } from '../support/daemons.js';
import { CLUSTER_V4, CLUSTER_V6, clusterTopology, curlThrough, HOSTLB_MAIN, HostlbProcess, waitForIpv6Settled } from '../support/hostlb-process.js';
import { NetnsSandbox, skipUnlessRoot, type Namespace } from '../support/netns.js';

const V4_DAEMONS = ['198.18.2.1:8080', '198.18.2.2:8080'];
const V6_DAEMON = '[2001:db8:2::1]:8080';
const LOOPBACK_CLUSTER = '127.10.0.1';
const LOOPBACK_DAEMON = '127.10.1.1:8080';
const DEVICE = 'hlb0';

interface Snapshot {
  rules: unknown;
  rules6: unknown;
  routes: unknown;
  routes6: unknown;
  links: unknown;
  sysctls: Record<string, string>;
}

function sysctlPaths(serverDev: string): string[] {
  return [
    'net/ipv4/ip_forward',
    'net/ipv4/conf/all/rp_filter',
    'net/ipv4/conf/all/accept_local',
    'net/ipv4/conf/all/route_localnet',
    'net/ipv6/conf/all/forwarding',
    // Writing ip_forward (or IPv6 all/forwarding) rewrites every device's flag too.
    `net/ipv4/conf/${serverDev}/forwarding`,
    `net/ipv6/conf/${serverDev}/forwarding`,
  ];
}

function snapshot(ns: Namespace, serverDev: string): Snapshot {
  return {
    // -d adds each rule's protocol: the restored `local` rule must be the kernel's again.
    rules: ns.ipJson('-d', 'rule'),
    rules6: ns.ipJson('-d', '-6', 'rule'),
    routes: ns.ipJson('-4', 'route', 'show', 'table', 'all'),
    routes6: ns.ipJson('-6', 'route', 'show', 'table', 'all'),
    links: ns.ipJson('link'),
    sysctls: { ...Object.fromEntries(sysctlPaths(serverDev).map((p) => [p, ns.readSysctl(p)])), ...deviceSysctls(ns) },
  };
}

/** hostlb's device's own settings, while it exists. */
function deviceSysctls(ns: Namespace): Record<string, string> {
  const out: Record<string, string> = {};
  for (const key of ['rp_filter', 'accept_local', 'route_localnet']) {
    const path = `net/ipv4/conf/${DEVICE}/${key}`;
    try {
      out[path] = ns.readSysctl(path);
    } catch {
      // No device (before start, after stop).
    }
  }
  return out;
}

function linkNames(s: Snapshot): string[] {
  return (s.links as Array<{ ifname: string }>).map((l) => l.ifname);
}

/** Asserts every part of the snapshot differs from `before` the way a running hostlb makes it. */
function assertChanged(before: Snapshot, during: Snapshot): void {
  for (const key of ['rules', 'rules6', 'routes', 'routes6', 'links'] as const) {
    assert.notDeepEqual(during[key], before[key], `hostlb changed ${key}`);
  }
  assert.ok(linkNames(during).includes(DEVICE), `${DEVICE} exists while hostlb runs`);
  const needed: Record<string, string> = {
    'net/ipv4/ip_forward': '1',
    'net/ipv6/conf/all/forwarding': '1',
    // rp_filter is max(all, device): 0 on both. The rest on its own device only.
    'net/ipv4/conf/all/rp_filter': '0',
    [`net/ipv4/conf/${DEVICE}/rp_filter`]: '0',
    [`net/ipv4/conf/${DEVICE}/accept_local`]: '1',
    [`net/ipv4/conf/${DEVICE}/route_localnet`]: '1',
  };
  for (const [path, value] of Object.entries(needed)) {
    if (path in before.sysctls) assert.notEqual(before.sysctls[path], value, `${path} starts out different`);
  }
  assert.deepEqual(pick(during.sysctls, Object.keys(needed)), needed, 'hostlb set the sysctls it needs');
  const all = ['net/ipv4/conf/all/accept_local', 'net/ipv4/conf/all/route_localnet'];
  assert.deepEqual(pick(during.sysctls, all), pick(before.sysctls, all), 'hostlb leaves the `all` settings of every interface alone');
  for (const [path, value] of Object.entries(during.sysctls)) {
    if (path.endsWith('/forwarding')) assert.equal(value, '1', `${path} follows the global forwarding switch`);
  }
}

function pick(values: Record<string, string>, keys: string[]): Record<string, string> {
  return Object.fromEntries(keys.map((k) => [k, values[k]]));
}

test('hostlb undoes every host change on SIGTERM and SIGINT, and cleans up after kill -9 at the next start or with hostlb cleanup', async (t) => {
  if (!skipUnlessRoot(t, 'network namespaces and a TUN device')) return;
  const sandbox = NetnsSandbox.forTest(t);
  const dir = tempDir(t);
  const { client, server, serverDev } = clusterTopology(sandbox);
  for (const d of [...V4_DAEMONS, V6_DAEMON, LOOPBACK_DAEMON]) addLoopbackAddress(server, splitEndpoint(d).address);
  // A value hostlb must change (to 0) and then put back.
  server.writeSysctl('net/ipv4/conf/all/rp_filter', '2');
  const daemons = await startNginxDaemons(sandbox, server, dir, V4_DAEMONS);
  const config = {
    device: DEVICE,
    table: { capacity: 4096 },
    clusters: [
      { address: CLUSTER_V4, ports: [{ port: 80, protocol: 'tcp', scheduler: 'rr', daemons: V4_DAEMONS.map((address) => ({ address })) }] },
      { address: CLUSTER_V6, ports: [{ port: 80, protocol: 'tcp', scheduler: 'rr', daemons: [{ address: V6_DAEMON }] }] },
      { address: LOOPBACK_CLUSTER, ports: [{ port: 80, protocol: 'any', scheduler: 'rr', daemons: [{ address: LOOPBACK_DAEMON }] }] },
    ],
  };
  const stateDir = join(dir, 'state');
  const journal = join(stateDir, `${DEVICE}.journal.json`);
  await waitForIpv6Settled(server, serverDev);
  const before = snapshot(server, serverDev);
  assert.ok(!linkNames(before).includes(DEVICE));

  /** One request through the cluster from the client namespace: the instance really forwards. */
  const forwards = async (hostlb: HostlbProcess): Promise<void> => {
    const [r] = await curlThrough(sandbox, client, [`http://${CLUSTER_V4}/`]);
    assert.equal(r.httpCode, 200, `a request went through hostlb:\n${hostlb.describe()}`);
    assert.match(r.body, /^d[12] 198\.18\.0\.1:/);
  };
  let hostlb: HostlbProcess | undefined;
  try {
    for (const signal of ['SIGTERM', 'SIGINT'] as const) {
      await t.test(`${signal}: the host is exactly as before`, async () => {
        hostlb = await HostlbProcess.start(sandbox, server, config, { dir });
        assertChanged(before, snapshot(server, serverDev));
        assert.ok(existsSync(journal), 'hostlb journals its changes');
        await forwards(hostlb);
        const exit = await hostlb.stop(signal);
        assert.deepEqual(exit, { code: 0, signal: null }, `hostlb exited 0 on ${signal}:\n${hostlb.describe()}`);
        assert.ok(hostlb.events.some((e) => e.event === 'stopped'), `hostlb logged "stopped":\n${hostlb.describe()}`);
        assert.deepEqual(snapshot(server, serverDev), before, `after ${signal} the server namespace is as before`);
        assert.ok(!existsSync(journal), 'the journal is gone');
      });
    }

    await t.test('SIGTERM the moment "started" is logged: the host is exactly as before (5 times)', async () => {
      // "started" tells a supervisor the instance runs; a stop right then must
      // still undo everything, not meet a process without its signal handlers.
      for (let i = 0; i < 5; i++) {
        hostlb = await HostlbProcess.start(sandbox, server, config, { dir });
        const exit = await hostlb.stop('SIGTERM');
        assert.deepEqual(exit, { code: 0, signal: null }, `round ${i}: hostlb handled SIGTERM and exited 0:\n${hostlb.describe()}`);
        assert.deepEqual(snapshot(server, serverDev), before, `round ${i}: the server namespace is as before`);
        assert.ok(!existsSync(journal), `round ${i}: the journal is gone`);
      }
    });

    await t.test('kill -9, start again, stop: the host is exactly as before', async () => {
      const crashed = await HostlbProcess.start(sandbox, server, config, { dir });
      hostlb = crashed;
      const running = snapshot(server, serverDev);
      assert.equal((await crashed.kill()).signal, 'SIGKILL');
      // Intended: the persistent device, its routes and rules, and the journal stay.
      const left = snapshot(server, serverDev);
      assert.ok(linkNames(left).includes(DEVICE), `the persistent ${DEVICE} outlives kill -9`);
      assert.deepEqual(left.rules, running.rules, 'the rules stay');
      assert.ok(existsSync(journal), 'the journal stays for the next start');

      hostlb = await HostlbProcess.start(sandbox, server, config, { dir });
      // The crashed run's journal, device and baseline are adopted (its flows live on), not torn down.
      const adopted = hostlb.events.find((e) => e.event === 'adopted');
      assert.ok(adopted !== undefined && (adopted.steps as number) > 0, `the second start adopted the first's set-up:\n${hostlb.describe()}`);
      const during = snapshot(server, serverDev);
      assertChanged(before, during);
      assert.deepEqual(during.rules, running.rules, 'the same rules as the first run (nothing doubled or lost)');
      assert.deepEqual(during.rules6, running.rules6);
      assert.deepEqual(during.sysctls, running.sysctls);
      await forwards(hostlb);
      const exit = await hostlb.stop('SIGTERM');
      assert.deepEqual(exit, { code: 0, signal: null }, `hostlb exited 0:\n${hostlb.describe()}`);
      assert.deepEqual(snapshot(server, serverDev), before, 'after the restarted instance stops the server namespace is as before');
      assert.ok(!existsSync(journal), 'the journal is gone');
    });

    await t.test('kill -9, then hostlb cleanup without a start: the host is exactly as before; refused while a hostlb runs', async () => {
      const cleanup = (): ReturnType<typeof sandbox.run> => sandbox.run(server, [process.execPath, HOSTLB_MAIN, 'cleanup', '--device', DEVICE, '--state-dir', stateDir]);
      const crashed = await HostlbProcess.start(sandbox, server, config, { dir });
      hostlb = crashed;
      const refused = await cleanup();
      assert.equal(refused.code, 1, `refused while hostlb runs: ${refused.stdout}${refused.stderr}`);
      assert.match(refused.stderr, /device hlb0 is in use/);
      await forwards(crashed);
      assert.equal((await crashed.kill()).signal, 'SIGKILL');
      assert.ok(linkNames(snapshot(server, serverDev)).includes(DEVICE) && existsSync(journal), 'kill -9 left the device and the journal');
      const r = await cleanup();
      assert.equal(r.code, 0, `hostlb cleanup: ${r.stdout}${r.stderr}`);
      assert.match(r.stdout, /^hostlb cleanup: \d+ changes undone, TUN device hlb0 deleted; the host is as it was before that run$/m);
      assert.deepEqual(snapshot(server, serverDev), before, 'after hostlb cleanup the server namespace is as before');
      assert.ok(!existsSync(journal), 'the journal is gone');
      const again = await cleanup();
      assert.equal(again.code, 0, again.stderr);
      assert.match(again.stdout, /nothing was left for device hlb0/);
    });
  } finally {
    await hostlb?.stop();
    await stopDaemons(daemons);
  }
});
