// The `hostlb` command as users and scripts run it: the built CLI as a child
// process against an AdminServer over a real instance (over a MemoryLink:
// test/support/memory-hostlb.ts) in this process. Every
// client command with and without --json, the exit codes (0 done, 1 rejected,
// 2 usage, 3 not running, 4 permission), and --help on every command.

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parse as parseYaml } from 'yaml';
import { EVENT_TYPES } from '../../src/control/cli/commands.js';
import { loadConfig } from '../../src/control/config-file.js';
import { TEST_TOKEN, freePort, startMemoryHostlb, type MemoryHostlb } from '../support/memory-hostlb.js';

/** dist/test/control/ → dist/src/control/cli/main.js */
const MAIN = fileURLToPath(new URL('../../src/control/cli/main.js', import.meta.url));
const isRoot = process.getuid?.() === 0;
const C4 = '198.18.100.1';

interface Run { code: number | null; stdout: string; stderr: string }

// Each run is a Node start (about 0.3 s of CPU): tests run concurrently, children a few at a time.
const MAX_CHILDREN = 4;
let children = 0;
const waiting: (() => void)[] = [];

function acquire(): Promise<void> {
  if (children < MAX_CHILDREN) {
    children++;
    return Promise.resolve();
  }
  return new Promise((resolve) => waiting.push(resolve));
}

/** Hands the slot to the next waiter, or frees it. */
function release(): void {
  const next = waiting.shift();
  if (next) next();
  else children--;
}

/**
 * Runs `hostlb args...` without waiting synchronously (the server it talks to
 * lives in this process). HOSTLB_SOCKET and HOSTLB_TOKEN are cleared unless given.
 */
function hostlb(args: string[], options: { env?: Record<string, string>; asNobody?: boolean } = {}): Promise<Run> {
  const env: Record<string, string | undefined> = { ...process.env, HOSTLB_SOCKET: undefined, HOSTLB_TOKEN: undefined, ...options.env };
  const [command, argv] = options.asNobody
    ? ['setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', process.execPath, MAIN, ...args]]
    : [process.execPath, [MAIN, ...args]];
  return acquire().then(() => new Promise<Run>((resolve, reject) => {
    const child = spawn(command, argv, { env, stdio: ['ignore', 'pipe', 'pipe'], timeout: 20_000 });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => { stdout += c.toString(); });
    child.stderr.on('data', (c: Buffer) => { stderr += c.toString(); });
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  })).finally(release);
}

/** `hostlb --socket <s> args...`, asserting the exit code (with the output in the message). */
async function expectExit(s: MemoryHostlb | string, args: string[], code: number, options: { env?: Record<string, string>; asNobody?: boolean } = {}): Promise<Run> {
  const socket = typeof s === 'string' ? s : s.socket;
  const r = await hostlb(['--socket', socket, ...args], options);
  assert.equal(r.code, code, `hostlb ${args.join(' ')} exited ${r.code}, not ${code}\nstdout: ${r.stdout}\nstderr: ${r.stderr}`);
  return r;
}

async function each<T>(items: T[], fn: (item: T) => Promise<void>): Promise<void> {
  await Promise.all(items.map(fn));
}

async function config(s: MemoryHostlb): Promise<{ clusters: { address: string; ports: { port: number; protocol: string; scheduler: string; daemons: { address: string; weight: number }[] }[] }[] }> {
  const r = await s.call('GET', '/v1/config');
  assert.equal(r.status, 200);
  return r.body as Awaited<ReturnType<typeof config>>;
}

/** The header row of a table: its words, which must include every one of `columns`. */
function assertHeader(line: string, columns: string[]): void {
  for (const c of columns) assert.ok(line.includes(c), `header "${line}" has ${c}`);
}

describe('hostlb CLI', { concurrency: true }, () => {
  // ---------------------------------------------------------------------------
  // Reads

  describe('hostlb CLI: status, conns, config show', { concurrency: true }, () => {
    let s: MemoryHostlb;
    before(async () => { s = await startMemoryHostlb({ traffic: true }); });
    after(() => s.close());

    it('status prints a summary and a table with headers; --json the API answer', async () => {
      const r = await expectExit(s, ['status'], 0);
      assert.equal(r.stderr, '');
      const lines = r.stdout.trimEnd().split('\n');
      assert.match(lines[0], /^hostlb 0\.0\.0-test \(pid \d+\), up \d+ s, data plane tun on hlbtest0$/);
      assert.match(lines[1], /^table 6\/1024 records; 6 active flows; packets in \d+, out \d+; drops 1$/);
      assertHeader(lines[3], ['CLUSTER', 'PORT', 'SCHEDULER', 'DAEMON', 'WEIGHT', 'EFFECTIVE', 'STATE', 'ACTIVE', 'NEW', 'PKTS IN', 'PKTS OUT', 'WHY']);
      const rows = lines.slice(4);
      assert.equal(rows.length, 4);
      // EFFECTIVE is weight × factor × ramp, on the configured scale (TEST_CONFIG turns the manager and slow start off).
      assert.match(rows[0], /^198\.18\.100\.1 +80\/tcp +rr +198\.18\.2\.1:8080 +1 +1 +up +2 +2 /);
      assert.match(rows[3], /^2001:db8::100 +443\/tcp +wlc +\[2001:db8:2::1\]:8443 +1 +1 +up +1 +1 /);

      for (const args of [['status', '--json']]) {
        const j = await expectExit(s, args, 0);
        const body = JSON.parse(j.stdout) as { version: string; activeFlows: number; clusters: { address: string }[] };
        assert.equal(body.version, '0.0.0-test');
        assert.equal(body.activeFlows, 6);
        assert.deepEqual(body.clusters.map((c) => c.address), [C4, '2001:db8::100']);
      }
    });

    it('conns prints a table with headers and a range; filters and paging reach the API', async () => {
      const r = await expectExit(s, ['conns'], 0);
      const lines = r.stdout.trimEnd().split('\n');
      assertHeader(lines[0], ['PROTO', 'CLIENT', 'CLUSTER', 'DAEMON', 'STATE', 'PKTS IN', 'PKTS OUT', 'BYTES IN', 'BYTES OUT', 'AGE']);
      assert.equal(lines.length, 1 + 6 + 1);
      assert.equal(lines.at(-1), '1-6 of 6');
      assert.ok(lines.some((l) => /^udp +198\.18\.0\.12:5000 +198\.18\.100\.1:53 +198\.18\.2\.3:5353 +UDP /.test(l)), r.stdout);

      const paged = await expectExit(s, ['conns', '--limit', '2', '--offset', '1'], 0);
      assert.equal(paged.stdout.trimEnd().split('\n').at(-1), '2-3 of 6');
      const none = await expectExit(s, ['conns', '--client', '198.18.0.99'], 0);
      assert.equal(none.stdout.trimEnd().split('\n').at(-1), 'no connections');

      const j = JSON.parse((await expectExit(s, ['conns', '--json', '--state', 'established', '--cluster', C4, '--port', '80'], 0)).stdout) as { total: number; connections: { state: string }[] };
      assert.equal(j.total, 3);
      assert.ok(j.connections.every((c) => c.state === 'ESTABLISHED'));
      const d = s.flows!.udp.daemon;
      const byDaemon = JSON.parse((await expectExit(s, ['conns', '--json', '--daemon', d, '--client', '198.18.0.12'], 0)).stdout) as { total: number };
      assert.equal(byDaemon.total, 1);
    });

    it('conns --port takes a protocol (53/udp) and --protocol filters on tcp or udp; both, disagreeing, is a usage error', async () => {
      // The standard traffic: five TCP flows (port 80 and, IPv6, 443) and one UDP flow to port 53.
      const total = async (args: string[]): Promise<number> => (JSON.parse((await expectExit(s, ['conns', '--json', ...args], 0)).stdout) as { total: number }).total;
      const cases: [string[], number][] = [
        [['--port', '53/udp'], 1],
        [['--port', '53'], 1],
        [['--port', '53/any'], 1],
        [['--port', '53/tcp'], 0],
        [['--port', '80', '--protocol', 'udp'], 0],
        [['--port', '80/tcp', '--protocol', 'tcp'], 4],
        [['--protocol', 'tcp'], 5],
        [['--protocol', 'udp'], 1],
      ];
      const totals = await Promise.all(cases.map(([args]) => total(args)));
      assert.deepEqual(totals, cases.map(([, n]) => n), cases.map(([args]) => args.join(' ')).join('; '));
      const table = await expectExit(s, ['conns', '--port', '53/udp'], 0);
      assert.match(table.stdout, /^udp +198\.18\.0\.12:5000 +198\.18\.100\.1:53 /m);
      assert.equal(table.stdout.trimEnd().split('\n').at(-1), '1-1 of 1');
      const clash = await expectExit(s, ['conns', '--port', '53/udp', '--protocol', 'tcp'], 2);
      assert.match(clash.stderr, /--port 53\/udp and --protocol tcp disagree/);
      assert.match((await expectExit(s, ['conns', '--protocol', 'sctp'], 1)).stderr, /protocol must be tcp or udp, got "sctp" \(BAD_QUERY\)/);
    });

    it('events --help names every event type the health layer emits; events prints them', async () => {
      const help = await hostlb(['events', '--help']);
      assert.equal(help.code, 0);
      const text = help.stdout.replace(/\s+/g, ' ');
      for (const type of EVENT_TYPES) assert.ok(text.includes(type), `events --help names ${type}:\n${help.stdout}`);
      // The types the earlier help left out.
      assert.ok(EVENT_TYPES.includes('daemon_started') && EVENT_TYPES.includes('daemon_exited'));
      const r = await expectExit(s, ['events'], 0);
      assert.match(r.stdout, /daemon_up +198\.18\.100\.1:80\/tcp +198\.18\.2\.1:8080 +\(added\)/);
    });

    it('config show prints YAML; --json prints JSON; both are the running configuration', async () => {
      const running = await config(s);
      const yaml = await expectExit(s, ['config', 'show'], 0);
      assert.deepEqual(parseYaml(yaml.stdout), running);
      const json = await expectExit(s, ['config', 'show', '--json'], 0);
      assert.deepEqual(JSON.parse(json.stdout), running);
    });
  });

  describe('hostlb CLI: effective weights, drain --wait', { concurrency: false }, () => {
    let s: MemoryHostlb;
    before(async () => { s = await startMemoryHostlb({ traffic: true }); });
    after(() => s.close());

    it('status and health show the effective weight on the configured weight\'s scale; the API keeps it ×100', async () => {
      await expectExit(s, ['daemon', 'set', C4, '80', '198.18.2.2:8080', '--weight', '3'], 0);
      const status = await expectExit(s, ['status'], 0);
      assert.match(status.stdout, /^198\.18\.100\.1 +80\/tcp +rr +198\.18\.2\.2:8080 +3 +3 +up /m);
      const health = await expectExit(s, ['health'], 0);
      assert.match(health.stdout, /^198\.18\.100\.1:80\/tcp +198\.18\.2\.2:8080 +up +none +- +3 +3 +1 +1 /m);
      const api = await s.call('GET', '/v1/health');
      const d = (api.body as { daemons: { daemon: string; effectiveWeight: number }[] }).daemons.find((x) => x.daemon === '198.18.2.2:8080');
      assert.equal(d?.effectiveWeight, 300);
    });

    it('drain --wait finds the daemon by its parsed addresses, however they are written; an unknown daemon is an error, not "drained"', async () => {
      // [2001:db8:2::1]:8443 holds one established flow: spelt another way it is still found, so --wait waits.
      const held = await expectExit(s, ['daemon', 'drain', '2001:db8:0::100', '443', '[2001:db8:2:0::0:1]:8443', '--wait', '--timeout', '1'], 1);
      assert.match(held.stderr, /still holds 1 active flows after 1 s \(DRAIN_TIMEOUT\)/);
      // A daemon without flows drains at once.
      await expectExit(s, ['daemon', 'add', '2001:db8::100', '443', '[2001:db8:2::2]:8443'], 0);
      const idle = await expectExit(s, ['daemon', 'drain', '2001:db8::0:100', '443/tcp', '[2001:db8:2:0::2]:8443', '--wait'], 0);
      assert.equal(idle.stdout, 'daemon [2001:db8:2:0::2]:8443 drained\n');
      const none = await expectExit(s, ['daemon', 'drain', C4, '80', '198.18.9.9:1', '--wait'], 1);
      assert.match(none.stderr, /DAEMON_NOT_FOUND/);
      assert.equal(none.stdout, '');
      // The same endpoint behind the same port number of another cluster is another daemon: its flows are not these.
      await expectExit(s, ['cluster', 'add', '198.18.100.2', '--port', '80', '--daemon', '198.18.2.1:8080'], 0);
      const other = JSON.parse((await expectExit(s, ['--json', 'daemon', 'drain', '198.18.100.2', '80', '198.18.2.1:8080'], 0)).stdout) as { activeFlows: number };
      assert.equal(other.activeFlows, 0);
      const otherWait = await expectExit(s, ['daemon', 'drain', '198.18.100.2', '80', '198.18.2.1:8080', '--wait', '--timeout', '1'], 0);
      assert.equal(otherWait.stdout, 'daemon 198.18.2.1:8080 drained\n');
    });
  });

  describe('hostlb CLI: port drain, port undrain, agent-status', { concurrency: false }, () => {
    let s: MemoryHostlb;
    before(async () => { s = await startMemoryHostlb(); });
    after(() => s.close());

    it('agent-status prints the agent line; --exit-code says it as keepalived reads it; drain and undrain change it', async () => {
      assert.equal((await expectExit(s, ['agent-status', C4, '80'], 0)).stdout, 'up ready 100%\n');
      assert.equal((await expectExit(s, ['agent-status', C4, '80', '--exit-code'], 102)).stdout, 'up ready 100%\n');
      assert.equal((await expectExit(s, ['port', 'drain', C4, '80'], 0)).stdout, `port 80 of ${C4} drained: its agent says "up drain 100%"\n`);
      assert.equal((await expectExit(s, ['agent-status', C4, '80/tcp', '--exit-code'], 2)).stdout, 'up drain 100%\n');
      const back = JSON.parse((await expectExit(s, ['--json', 'port', 'undrain', C4, '80'], 0)).stdout) as { line: string; drained: boolean };
      assert.deepEqual([back.line, back.drained], ['up ready 100%', false]);
      // Any failure reads as down (1) with --exit-code: keepalived would take 3 for "up, weight 1".
      assert.match((await expectExit(s, ['agent-status', C4, '81', '--exit-code'], 1)).stderr, /PORT_NOT_FOUND/);
      await expectExit(join(s.dir, 'missing.sock'), ['agent-status', C4, '80', '--exit-code'], 1);
      await expectExit(join(s.dir, 'missing.sock'), ['agent-status', C4, '80'], 3);
    });
  });

  // ---------------------------------------------------------------------------
  // Changes, with and without --json

  interface Step {
    args: string[];
    /** Run without --json only: it checks argument parsing, which --json does not change. */
    plainOnly?: boolean;
    /** The line printed without --json. */
    says: string;
    check(s: MemoryHostlb): Promise<void>;
  }

  // The keys these commands set; health and manager keys keep their defaults and are not compared.
  const core = (p: { port: number; protocol: string; scheduler: string; daemons: { address: string; weight: number }[] } | undefined) =>
    p && { port: p.port, protocol: p.protocol, scheduler: p.scheduler, daemons: p.daemons.map((d) => ({ address: d.address, weight: d.weight })) };
  const portOf = async (s: MemoryHostlb, cluster: string, port: number, protocol = 'tcp'): Promise<{ scheduler: string; daemons: { address: string; weight: number }[] } | undefined> =>
    core((await config(s)).clusters.find((c) => c.address === cluster)?.ports.find((p) => p.port === port && p.protocol === protocol));

  const STEPS: Step[] = [
    {
      args: ['cluster', 'add', '198.18.100.2', '--port', '8080/udp', '--scheduler', 'rr', '--daemon', '198.18.3.1:80', '--daemon', '198.18.3.2:80'],
      says: 'cluster 198.18.100.2 added',
      check: async (s) => assert.deepEqual({ ...(await config(s)).clusters[2], ports: (await config(s)).clusters[2].ports.map(core) }, {
        address: '198.18.100.2',
        ports: [{ port: 8080, protocol: 'udp', scheduler: 'rr', daemons: [{ address: '198.18.3.1:80', weight: 1 }, { address: '198.18.3.2:80', weight: 1 }] }],
      }),
    },
    {
      args: ['port', 'add', C4, '8080', '--scheduler', 'maglev', '--daemon', '198.18.2.7:8080'],
      says: `port 8080 added to ${C4}`,
      check: async (s) => assert.deepEqual(await portOf(s, C4, 8080), { port: 8080, protocol: 'tcp', scheduler: 'maglev', daemons: [{ address: '198.18.2.7:8080', weight: 1 }] }),
    },
    {
      args: ['port', 'set', C4, '8080', '--scheduler', 'wrr'],
      says: `port 8080 of ${C4} now uses wrr`,
      check: async (s) => assert.equal((await portOf(s, C4, 8080))?.scheduler, 'wrr'),
    },
    {
      args: ['daemon', 'add', C4, '8080', '198.18.2.8:8080', '--weight', '3'],
      says: `daemon 198.18.2.8:8080 added to ${C4} 8080`,
      check: async (s) => assert.deepEqual((await portOf(s, C4, 8080))?.daemons[1], { address: '198.18.2.8:8080', weight: 3 }),
    },
    {
      args: ['daemon', 'set', C4, '8080', '198.18.2.8:8080', '--weight', '5'],
      says: 'daemon 198.18.2.8:8080 weight 5',
      check: async (s) => assert.equal((await portOf(s, C4, 8080))?.daemons[1].weight, 5),
    },
    {
      args: ['daemon', 'quiesce', C4, '8080', '198.18.2.8:8080'],
      says: 'daemon 198.18.2.8:8080 quiesced',
      check: async (s) => assert.equal((await portOf(s, C4, 8080))?.daemons[1].weight, 0),
    },
    {
      args: ['daemon', 'remove', C4, '8080', '198.18.2.8:8080'],
      says: 'daemon 198.18.2.8:8080 removed',
      check: async (s) => assert.deepEqual((await portOf(s, C4, 8080))?.daemons.map((d) => d.address), ['198.18.2.7:8080']),
    },
    {
      args: ['daemon', 'add', C4, '53/udp', '198.18.2.4:5353'],
      plainOnly: true,
      says: `daemon 198.18.2.4:5353 added to ${C4} 53/udp`,
      check: async (s) => assert.equal((await portOf(s, C4, 53, 'udp'))?.daemons.length, 2),
    },
    {
      args: ['daemon', 'add', '2001:db8::100', '443', '[2001:db8:2::2]:8443'],
      plainOnly: true,
      says: 'daemon [2001:db8:2::2]:8443 added to 2001:db8::100 443',
      check: async (s) => assert.equal((await portOf(s, '2001:db8::100', 443))?.daemons[1].address, '[2001:db8:2::2]:8443'),
    },
    {
      args: ['port', 'remove', C4, '8080'],
      says: `port 8080 removed from ${C4}`,
      check: async (s) => assert.equal(await portOf(s, C4, 8080), undefined),
    },
    {
      args: ['cluster', 'remove', '198.18.100.2'],
      says: 'cluster 198.18.100.2 removed',
      check: async (s) => assert.equal((await config(s)).clusters.length, 2),
    },
    {
      // The file still has what the test started with: the two daemons added above go.
      args: ['reload'],
      says: 'configuration reloaded',
      check: async (s) => assert.deepEqual(await config(s), loadConfig(s.file)),
    },
  ];

  for (const json of [false, true]) {
    // Steps build on each other: one at a time (subtests would inherit the parent's concurrency).
    describe(`hostlb CLI: every change command${json ? ' with --json' : ''}`, { concurrency: false }, () => {
      // Its stateDir (s.state) is its own: config save may write there (and to the running file), nowhere else.
      let s: MemoryHostlb;
      before(async () => { s = await startMemoryHostlb({ traffic: true }); });
      after(() => s.close());

      it('cluster, port and daemon commands, then reload, each exit 0 and change what they say', async () => {
        for (const step of STEPS.filter((x) => !(json && x.plainOnly))) {
          const r = await expectExit(s, json ? ['--json', ...step.args] : step.args, 0);
          assert.equal(r.stderr, '');
          if (json) {
            const body = JSON.parse(r.stdout) as { ok: boolean; change: { source: string; routesAdded: number } };
            assert.equal(body.ok, true, step.args.join(' '));
            assert.equal(typeof body.change.source, 'string');
            assert.equal(body.change.routesAdded, 0);
          } else {
            assert.equal(r.stdout, `${step.says}\n`);
          }
          await step.check(s);
        }
      });

      it('config save writes the running configuration to PATH, or to its file', async () => {
        // A change made since start, so the saved file differs from the one hostlb started with.
        if (json) assert.equal((await s.call('PUT', `/v1/clusters/${C4}/ports/80/tcp/daemons/198.18.2.1%3A8080`, { weight: 9 })).status, 200);
        else await expectExit(s, ['daemon', 'set', C4, '80', '198.18.2.1:8080', '--weight', '9'], 0);
        const target = join(s.state, 'saved.yaml');
        const r = await expectExit(s, [...(json ? ['--json'] : []), 'config', 'save', target], 0);
        if (json) assert.deepEqual(JSON.parse(r.stdout), { ok: true, path: target });
        else assert.equal(r.stdout, `configuration saved to ${target}\n`);
        const running = await config(s);
        assert.deepEqual(loadConfig(target), running);
        assert.equal(running.clusters[0].ports[0].daemons[0].weight, 9);
        const again = await expectExit(s, [...(json ? ['--json'] : []), 'config', 'save'], 0);
        assert.ok(again.stdout.includes(s.file), again.stdout);
        assert.deepEqual(loadConfig(s.file), running);
      });

      it('stop asks hostlb to stop', async () => {
        assert.equal(s.stops, 0);
        const r = await expectExit(s, [...(json ? ['--json'] : []), 'stop'], 0);
        if (json) assert.deepEqual(JSON.parse(r.stdout), { ok: true, stopping: true });
        else assert.equal(r.stdout, 'hostlb is stopping\n');
        // Called on the turn after the answer was written, long before the child could read it and exit:
        // a few turns of the event loop at most (counted, not timed).
        for (let turn = 0; turn < 1000 && s.stops === 0; turn++) await new Promise((resolve) => setImmediate(resolve));
        assert.equal(s.stops, 1);
      });
    });
  }

  // ---------------------------------------------------------------------------
  // Exit codes

  describe('hostlb CLI: exit codes', { concurrency: true }, () => {
    let s: MemoryHostlb;
    before(async () => { s = await startMemoryHostlb({ traffic: true, tcp: true }); });
    after(() => s.close());

    it('1: a rejected change prints the message and code on stderr (and the error as JSON with --json); nothing changes', async () => {
      const before = await config(s);
      const cases: [string[], RegExp][] = [
        [['daemon', 'remove', C4, '80', '198.18.9.9:1'], /^hostlb: port 80\/tcp has no daemon 198\.18\.9\.9:1 \(DAEMON_NOT_FOUND\)\n$/],
        [['port', 'set', C4, '80', '--scheduler', 'fastest'], /clusters\[0\]\.ports\[0\]\.scheduler.*\(CONFIG_INVALID\)/],
        [['port', 'remove', '2001:db8::100', '443'], /only port.*\(LAST_PORT\)/],
        [['daemon', 'set', C4, '80/sctp', '198.18.2.1:8080', '--weight', '2'], /expected tcp, udp or any.*\(BAD_PROTOCOL\)/],
        [['conns', '--state', 'bogus'], /state must be one of.*\(BAD_QUERY\)/],
        [['config', 'save', 'relative.yaml'], /path must be absolute.*\(BAD_PATH\)/],
      ];
      // Refused as not this client's to do: exit 4, like a missing permission.
      const outside = await expectExit(s, ['config', 'save', join(s.dir, 'elsewhere.yaml')], 4);
      assert.match(outside.stderr, /only to the running configuration file .* or a file under stateDir.*\(SAVE_PATH_FORBIDDEN\)/);
      await each(cases, async ([args, message]) => {
        const r = await expectExit(s, args, 1);
        assert.match(r.stderr, message);
        assert.equal(r.stdout, '');
      });
      const j = await expectExit(s, ['--json', 'daemon', 'remove', C4, '80', '198.18.9.9:1'], 1);
      assert.deepEqual((JSON.parse(j.stdout) as { error: unknown }).error, { code: 'DAEMON_NOT_FOUND', message: 'port 80/tcp has no daemon 198.18.9.9:1', field: 'daemon' });
      assert.match(j.stderr, /DAEMON_NOT_FOUND/);
      assert.deepEqual(await config(s), before);
    });

    it('1: a reload of a bad file names file, line and key; the running configuration stays', async () => {
      const other = await startMemoryHostlb();
      try {
        const before = await config(other);
        writeFileSync(other.file, other.yaml.replace('capacity: 1024', 'capacity: 1024\n  colour: red'));
        const r = await expectExit(other, ['reload'], 1);
        const line = other.yaml.split('\n').indexOf('  capacity: 1024') + 2;
        assert.match(r.stderr, new RegExp(`${other.file.replace(/\./g, '\\.')}:${line}: table\\.colour: unknown key "colour"`));
        assert.deepEqual(await config(other), before);
      } finally {
        await other.close();
      }
      const bare = await startMemoryHostlb({ withFile: false });
      try {
        assert.match((await expectExit(bare, ['reload'], 1)).stderr, /without --config.*\(NO_CONFIG_FILE\)/);
      } finally {
        await bare.close();
      }
    });

    it('2: a usage error (missing argument or option, bad number, unknown command) changes nothing', async () => {
      const before = await config(s);
      const cases: [string[], RegExp][] = [
        [['daemon', 'add', C4, '80'], /missing required argument 'address'/],
        [['port', 'set', C4, '80'], /required option '--scheduler <name>' not specified/],
        [['daemon', 'set', C4, '80', '198.18.2.1:8080', '--weight', 'abc'], /--weight must be a whole number, got "abc"/],
        [['frobnicate'], /unknown command 'frobnicate'/],
        [['status', '--bogus'], /unknown option '--bogus'/],
      ];
      await each(cases, async ([args, message]) => {
        const r = await expectExit(s, args, 2);
        assert.match(r.stderr, message);
      });
      assert.deepEqual(await config(s), before);
    });

    it('3: nothing listens on the socket or URL: a sentence saying hostlb is not running', async () => {
      const file = join(s.dir, 'not-a-socket');
      writeFileSync(file, '');
      const port = await freePort();
      const runs = await Promise.all([
        expectExit(join(s.dir, 'missing.sock'), ['status'], 3),
        expectExit(file, ['--json', 'cluster', 'remove', '198.18.100.2'], 3),
        expectExit(s, ['--url', `http://127.0.0.1:${port}`, '--token', TEST_TOKEN, 'status'], 3),
      ]);
      for (const r of runs) {
        assert.match(r.stderr, /^hostlb: hostlb is not running \(nothing answers on .+\): start it with `hostlb start --config FILE`/);
      }
      assert.ok(runs[0].stderr.includes(join(s.dir, 'missing.sock')));
    });

    it('4: the TCP listener without the right token; 0 with it (--token or $HOSTLB_TOKEN)', async () => {
      const url = `http://127.0.0.1:${s.tcpPort}`;
      const wrongEnv = 'wrong-env-token-0123456789abcdef';
      const [none, wrong, given, fromEnv, wrongFromEnv] = await Promise.all([
        expectExit(s, ['--url', url, 'status'], 4),
        expectExit(s, ['--url', url, '--token', 'wrong-token-0123456789abcdef', 'daemon', 'quiesce', C4, '80', '198.18.2.1:8080'], 4),
        expectExit(s, ['--url', url, '--token', TEST_TOKEN, '--json', 'status'], 0),
        expectExit(s, ['--url', url, 'config', 'show', '--json'], 0, { env: { HOSTLB_TOKEN: TEST_TOKEN } }),
        expectExit(s, ['--url', url, 'status'], 4, { env: { HOSTLB_TOKEN: wrongEnv } }),
      ]);
      assert.match(wrongFromEnv.stderr, /UNAUTHORIZED/);
      assert.ok(!wrongFromEnv.stderr.includes(wrongEnv) && !wrongFromEnv.stdout.includes(wrongEnv), 'the refused token is not echoed');
      assert.match(none.stderr, /Authorization: Bearer <token>.*\(UNAUTHORIZED\)/);
      assert.match(wrong.stderr, /UNAUTHORIZED/);
      assert.equal((JSON.parse(given.stdout) as { daemons: number }).daemons, 4);
      assert.deepEqual(JSON.parse(fromEnv.stdout), await config(s));
      assert.equal((await portOf(s, C4, 80))?.daemons[0].weight, 1, 'the unauthorised quiesce changed nothing');
    });

    it('4: a user other than root on the admin socket gets "permission denied"', { skip: isRoot ? false : 'needs root: runs the CLI as nobody (uid 65534)' }, async () => {
      const before = await config(s);
      const r = await expectExit(s, ['daemon', 'quiesce', C4, '80', '198.18.2.1:8080'], 4, { asNobody: true });
      assert.match(r.stderr, /^hostlb: permission denied on .*admin\.sock: the admin socket belongs to root; run this command with sudo/);
      assert.deepEqual(await config(s), before);
    });
  });

  // ---------------------------------------------------------------------------
  // --help

  describe('hostlb CLI: --help', () => {
    /** Every command with the long options (or subcommands) its help must mention; nothing else may be listed. */
    const COMMANDS: [string[], string[], string[]][] = [
      [[], ['--socket', '--url', '--token', '--json', '--version', '--help'], ['start', 'check', 'demo', 'run', 'startup', 'dashboard', 'top', 'cleanup', 'status', 'cluster', 'port', 'daemon', 'restart', 'reload-app', 'health', 'events', 'logs', 'conns', 'reload', 'stop', 'config', 'agent-status']],
      [['start'], ['--config', '--takeover', '--help'], []],
      [['startup'], ['--config', '--name', '--unit', '--print', '--help'], []],
      [['run'], ['--instances', '--port', '--address', '--protocol', '--scheduler', '--health', '--user', '--env', '--name', '--listen-fds', '--dataplane', '--stop-timeout', '--state-dir', '--agent', '--save', '--help'], []],
      [['check'], ['--config', '--help'], []],
      [['dashboard'], ['--port', '--host', '--help'], []],
      [['cleanup'], ['--device', '--state-dir', '--help'], []],
      [['top'], ['--iterations', '--plain', '--help'], []],
      [['demo'], ['--help'], []],
      [['status'], ['--help'], []],
      [['cluster'], ['--help'], ['add', 'remove']],
      [['cluster', 'add'], ['--port', '--scheduler', '--daemon', '--help'], []],
      [['cluster', 'remove'], ['--help'], []],
      [['port'], ['--help'], ['add', 'set', 'remove', 'drain', 'undrain']],
      [['port', 'drain'], ['--help'], []],
      [['port', 'undrain'], ['--help'], []],
      [['agent-status'], ['--exit-code', '--help'], []],
      [['port', 'add'], ['--scheduler', '--daemon', '--help'], []],
      [['port', 'set'], ['--scheduler', '--help'], []],
      [['port', 'remove'], ['--help'], []],
      [['daemon'], ['--help'], ['add', 'set', 'quiesce', 'remove', 'drain']],
      [['daemon', 'drain'], ['--wait', '--timeout', '--help'], []],
      [['restart'], ['--drain-timeout', '--up-timeout', '--no-surge', '--help'], []],
      [['health'], ['--help'], []],
      [['events'], ['--follow', '--help'], []],
      [['daemon', 'add'], ['--weight', '--help'], []],
      [['daemon', 'set'], ['--weight', '--help'], []],
      [['daemon', 'quiesce'], ['--help'], []],
      [['daemon', 'remove'], ['--help'], []],
      [['reload-app'], ['--drain-timeout', '--up-timeout', '--no-surge', '--help'], []],
      [['logs'], ['--lines', '--follow', '--help'], []],
      [['conns'], ['--cluster', '--port', '--protocol', '--daemon', '--client', '--state', '--limit', '--offset', '--help'], []],
      [['reload'], ['--help'], []],
      [['stop'], ['--help'], []],
      [['config'], ['--help'], ['show', 'save']],
      [['config', 'show'], ['--help'], []],
      [['config', 'save'], ['--help'], []],
    ];

    it('never shows $HOSTLB_TOKEN: not in any --help, a usage error\'s help, nor a refused request\'s message', async () => {
      const secret = 'env-token-never-printed-0123456789';
      const env = { HOSTLB_TOKEN: secret };
      const runs = await Promise.all([
        ...COMMANDS.map(([path]) => hostlb([...path, '--help'], { env })),
        hostlb(['frobnicate'], { env }),
        hostlb(['status', '--bogus'], { env }),
        hostlb(['--url', 'http://127.0.0.1:1', 'status'], { env }),
      ]);
      const top = runs[0];
      assert.equal(top.code, 0);
      assert.match(top.stdout, /--token <token> +bearer token for --url \(env: HOSTLB_TOKEN\)/, 'the help says where the token may come from');
      for (const r of runs) {
        assert.ok(!r.stdout.includes(secret) && !r.stderr.includes(secret), `the token was printed:\n${r.stdout}${r.stderr}`);
      }
    });

    it('every command exits 0 and mentions each of its options and subcommands', async () => {
      await each(COMMANDS, async ([path, options, subcommands]) => {
        const r = await hostlb([...path, '--help']);
        const what = `hostlb ${path.join(' ')} --help`;
        assert.equal(r.code, 0, `${what}: ${r.stderr}`);
        assert.ok(r.stdout.startsWith(`Usage: hostlb${path.length ? ` ${path.join(' ')}` : ''}`), `${what}: ${r.stdout}`);
        const section = (name: string): string[] => {
          const m = new RegExp(`\\n${name}:\\n((?:  .*\\n|\\s{3,}.*\\n)*)`).exec(r.stdout);
          return m ? m[1].split('\n').filter((l) => /^ {2}\S/.test(l)).map((l) => l.trim()) : [];
        };
        const listed = section('Options').map((l) => /--[a-z-]+/.exec(l)?.[0]);
        assert.deepEqual(listed.sort(), [...options].sort(), `${what} lists exactly its options:\n${r.stdout}`);
        const commands = section('Commands').map((l) => l.split(/\s/)[0]).filter((c) => c !== 'help');
        assert.deepEqual(commands.sort(), [...subcommands].sort(), `${what} lists exactly its subcommands:\n${r.stdout}`);
        if (path.length === 0) {
          for (const code of ['0 done', '1 rejected', '2 usage', '3 hostlb not running', '4 permission denied', '5 hostlb failed']) {
            assert.ok(r.stdout.replace(/\s+/g, ' ').includes(code), `the top-level help states exit code ${code}`);
          }
        }
      });
    });
  });
});
