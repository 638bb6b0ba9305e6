// The configuration file: every kind of mistake is reported with file:line,
// the key path and what was expected (and nothing else is accepted); defaults
// are filled in; durations become seconds; `hostlb check` exits accordingly.

import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { stringify } from 'yaml';
import { loadConfig, parseConfig, validateConfig } from '../../src/control/config-file.js';
import { ConfigError } from '../../src/errors.js';

const MAIN = fileURLToPath(new URL('../../src/control/cli/main.js', import.meta.url));

/** A valid file's clusters section, to build mistakes around. */
const CLUSTERS = `clusters:
  - address: 198.18.100.1
    ports:
      - port: 80
        daemons:
          - address: 198.18.2.1:8080
`;

function parseError(text: string, file = 'hostlb.yaml'): ConfigError {
  try {
    parseConfig(text, file);
  } catch (e) {
    assert.ok(e instanceof ConfigError, `a ConfigError, not ${String(e)}`);
    return e;
  }
  assert.fail(`accepted:\n${text}`);
}

describe('parseConfig: mistakes name file:line and the key path', () => {
  const cases: { what: string; text: string; code?: string; path: string; line: number; says: RegExp }[] = [
    {
      what: 'unknown key, nested',
      text: `${CLUSTERS}            wieght: 2\n`,
      path: 'clusters[0].ports[0].daemons[0].wieght', line: 7, says: /unknown key "wieght"; check the spelling against docs\/configuration\.md/,
    },
    {
      // Refused here, before hostlb touches the host or switches a running configuration (it used to fail at start, after the set-up).
      what: 'an advisor path the http advisor cannot send',
      text: 'clusters:\n  - address: 198.18.100.1\n    ports:\n      - port: 80\n        advisor: { type: http, path: "/a b" }\n        daemons:\n          - address: 198.18.2.1:8080\n',
      path: 'clusters[0].ports[0].advisor.path', line: 5, says: /no spaces/,
    },
    {
      what: 'an advisor interval no timer can hold',
      text: 'clusters:\n  - address: 198.18.100.1\n    ports:\n      - port: 80\n        advisor: { type: tcp, interval: 3000000 }\n        daemons:\n          - address: 198.18.2.1:8080\n',
      path: 'clusters[0].ports[0].advisor.interval', line: 5, says: /at most 2147483/,
    },
    {
      what: 'a daemon\'s advisor override, merged over its port\'s',
      text: 'clusters:\n  - address: 198.18.100.1\n    ports:\n      - port: 80\n        advisor: { type: http }\n        daemons:\n          - address: 198.18.2.1:8080\n            advisor: { path: "/x y" }\n',
      path: 'clusters[0].ports[0].daemons[0].advisor.path', line: 8, says: /no spaces/,
    },
    {
      what: 'unknown key at the top',
      text: `devise: hlb1\n${CLUSTERS}`,
      path: 'devise', line: 1, says: /unknown key "devise"/,
    },
    {
      what: 'unknown key in a section',
      text: `table:\n  capacity: 1024\n  colour: red\n${CLUSTERS}`,
      path: 'table.colour', line: 3, says: /unknown key "colour"/,
    },
    {
      what: 'wrong type: text for a port',
      text: 'clusters:\n  - address: 198.18.100.1\n    ports:\n      - port: eighty\n',
      path: 'clusters[0].ports[0].port', line: 4, says: /expected number, received string/,
    },
    {
      what: 'wrong type: text for the table capacity',
      text: `table:\n  capacity: lots\n${CLUSTERS}`,
      path: 'table.capacity', line: 2, says: /expected number/,
    },
    {
      what: 'wrong type: a map where a list belongs',
      text: 'clusters:\n  address: 198.18.100.1\n',
      path: 'clusters', line: 2, says: /expected array/,
    },
    {
      what: 'port out of range',
      text: 'clusters:\n  - address: 198.18.100.1\n    ports:\n      - port: 65536\n',
      path: 'clusters[0].ports[0].port', line: 4, says: /65535/,
    },
    {
      what: 'bad cluster address',
      text: 'clusters:\n  - address: 198.18.100.300\n    ports:\n      - port: 80\n',
      path: 'clusters[0].address', line: 2, says: /"198\.18\.100\.300" is not an IPv4 or IPv6 address/,
    },
    {
      what: 'daemon address without a port',
      text: CLUSTERS.replace('198.18.2.1:8080', '198.18.2.1'),
      path: 'clusters[0].ports[0].daemons[0].address', line: 6, says: /is not address:port \(IPv6 as \[2001:db8::1\]:8080\)/,
    },
    {
      what: 'family mismatch',
      text: CLUSTERS.replace('198.18.2.1:8080', '"[2001:db8::1]:8080"'),
      path: 'clusters[0].ports[0].daemons[0].address', line: 6, says: /IPv6 but cluster 198\.18\.100\.1 is IPv4; a daemon must share its cluster's family/,
    },
    {
      what: 'duplicate daemon',
      text: `${CLUSTERS}          - address: 198.18.2.1:8080\n`,
      path: 'clusters[0].ports[0].daemons[1].address', line: 7, says: /198\.18\.2\.1:8080 is already daemons\[0\] of this port/,
    },
    {
      what: 'duplicate port',
      text: `${CLUSTERS}      - port: 80\n`,
      path: 'clusters[0].ports[1].port', line: 7, says: /80\/tcp is already served by clusters\[0\]\.ports\[0\]/,
    },
    {
      what: 'port "any" over a tcp port',
      text: `${CLUSTERS}      - port: 80\n        protocol: any\n`,
      path: 'clusters[0].ports[1].port', line: 7, says: /80\/tcp is already served/,
    },
    {
      what: 'duplicate cluster',
      text: `${CLUSTERS}  - address: 198.18.100.1\n    ports:\n      - port: 81\n`,
      path: 'clusters[1].address', line: 7, says: /already clusters\[0\]/,
    },
    {
      what: 'bad duration',
      text: `table:\n  timeouts:\n    established: 15 minutes\n${CLUSTERS}`,
      path: 'table.timeouts.established', line: 3, says: /expected a duration such as 30s, 15m, 2h or 500ms/,
    },
    {
      what: 'negative duration',
      text: `table:\n  timeouts:\n    udp: -5\n${CLUSTERS}`,
      path: 'table.timeouts.udp', line: 3, says: /./,
    },
    {
      what: 'admin.listen without a token',
      text: `admin:\n  listen: 127.0.0.1:9180\n${CLUSTERS}`,
      path: 'admin.listen', line: 2, says: /a TCP listener needs admin\.token or admin\.tokenFile/,
    },
    {
      what: 'a token too short',
      text: `admin:\n  listen: 127.0.0.1:9180\n  token: short\n${CLUSTERS}`,
      path: 'admin.token', line: 3, says: /at least 16 characters/,
    },
    {
      what: 'bad scheduler',
      text: CLUSTERS.replace('      - port: 80\n', '      - port: 80\n        scheduler: fastest\n'),
      path: 'clusters[0].ports[0].scheduler', line: 5, says: /"rr".*"maglev"/,
    },
    {
      what: 'weight out of range',
      text: `${CLUSTERS}            weight: 10001\n`,
      path: 'clusters[0].ports[0].daemons[0].weight', line: 7, says: /10000/,
    },
    {
      what: 'device name too long',
      text: `device: a-very-long-device-name\n${CLUSTERS}`,
      path: 'device', line: 1, says: /1-15 letters/,
    },
    {
      what: 'no clusters',
      text: 'device: hlb1\n',
      path: 'clusters', line: 1, says: /expected array/,
    },
    {
      what: 'a list, not a map',
      text: '- 1\n- 2\n',
      path: '', line: 1, says: /^hostlb\.yaml:1: Invalid input: expected object, received array$/,
    },
    {
      what: 'a supervise user this host does not have',
      text: 'clusters:\n  - address: 198.18.100.1\n    ports:\n      - port: 80\n        supervise:\n          command: /usr/bin/node\n          instances: 1\n          host: 198.18.2.1\n          port: 8080\n          user: no-such-user-x\n',
      path: 'clusters[0].ports[0].supervise.user', line: 10, says: /"no-such-user-x" is not a user of this host \(\/etc\/passwd\); give an existing name or a numeric uid$/,
    },
    {
      what: 'an exec advisor group this host does not have',
      text: 'clusters:\n  - address: 198.18.100.1\n    ports:\n      - port: 80\n        advisor: { type: exec, command: /bin/true, user: nobody, group: no-such-group-x }\n        daemons:\n          - address: 198.18.2.1:8080\n',
      path: 'clusters[0].ports[0].advisor.group', line: 5, says: /"no-such-group-x" is not a group of this host/,
    },
    {
      what: 'a user on an advisor that runs no command',
      text: 'clusters:\n  - address: 198.18.100.1\n    ports:\n      - port: 80\n        advisor: { type: tcp, user: nobody }\n        daemons:\n          - address: 198.18.2.1:8080\n',
      path: 'clusters[0].ports[0].advisor.user', line: 5, says: /only an exec advisor runs a command; remove user from this tcp advisor/,
    },
    {
      what: 'YAML syntax error',
      text: 'clusters:\n  - address: 198.18.100.1\n    ports: [\n      - port: 80\n',
      code: 'CONFIG_SYNTAX', path: '', line: 4, says: /^hostlb\.yaml:4: /,
    },
    {
      what: 'YAML duplicate key',
      text: `device: a\ndevice: b\n${CLUSTERS}`,
      code: 'CONFIG_SYNTAX', path: '', line: 2, says: /^hostlb\.yaml:2: Map keys must be unique/,
    },
  ];

  for (const c of cases) {
    it(`${c.what}: hostlb.yaml:${c.line}${c.path ? ` ${c.path}` : ''}`, () => {
      const e = parseError(c.text);
      assert.equal(e.code, c.code ?? 'CONFIG_INVALID', e.message);
      assert.equal(e.path, c.path, e.message);
      assert.equal(e.file, 'hostlb.yaml');
      assert.equal(e.line, c.line, e.message);
      assert.ok(e.message.startsWith(`hostlb.yaml:${c.line}: ${c.path ? `${c.path}: ` : ''}`), e.message);
      assert.match(e.message, c.says);
      assert.ok(!e.message.includes('\n'), `one line: ${e.message}`);
    });
  }

  it('user and group: names and numeric ids of this host are accepted as written', () => {
    const config = parseConfig('clusters:\n  - address: 198.18.100.1\n    ports:\n      - port: 80\n        supervise: { command: /usr/bin/node, instances: 1, host: 198.18.2.1, port: 8080, user: nobody, group: 65534 }\n');
    assert.deepEqual([config.clusters[0].ports[0].supervise?.user, config.clusters[0].ports[0].supervise?.group], ['nobody', 65534]);
  });

  it('an empty file names the missing key without a line', () => {
    const e = parseError('');
    assert.equal(e.path, 'clusters');
    assert.equal(e.line, undefined);
    assert.match(e.message, /^hostlb\.yaml: clusters: /);
  });

  it('validateConfig (the API\'s path) names the key without a file', () => {
    assert.throws(() => validateConfig({ clusters: [{ address: '198.18.100.1', ports: [{ port: 80, schedular: 'rr' }] }] }), (e: ConfigError) => {
      assert.equal(e.code, 'CONFIG_INVALID');
      assert.equal(e.path, 'clusters[0].ports[0].schedular');
      assert.match(e.message, /^clusters\[0\]\.ports\[0\]\.schedular: unknown key "schedular"/);
      return true;
    });
  });

  it('loadConfig of a file it cannot read: CONFIG_UNREADABLE naming the file', () => {
    assert.throws(() => loadConfig('/nonexistent/hostlb.yaml'), (e: ConfigError) => {
      assert.equal(e.code, 'CONFIG_UNREADABLE');
      assert.equal(e.file, '/nonexistent/hostlb.yaml');
      assert.match(e.message, /cannot read configuration file \/nonexistent\/hostlb\.yaml/);
      return true;
    });
  });
});

describe('parseConfig: defaults and durations', () => {
  /** A port's health defaults: no advisor, the manager on, passive signals on, reject when all are down, keep a down daemon's flows. */
  const PORT_HEALTH_DEFAULTS = {
    manager: { enabled: true, interval: 2, proportions: { active: 0.5, new: 0.5, response: 0, passive: 0 }, smoothing: 0.5, slowStart: 10, minFactor: 0.1, maxFactor: 10 },
    passive: { enabled: true, grace: 1, threshold: 3, holdDown: 5 },
    whenAllDown: 'reject',
    downFlows: 'keep',
  };

  it('fills every default', () => {
    const config = parseConfig(CLUSTERS);
    // Key by key, so a key added later does not break this test; a default changed does.
    const { device, dataplane, stateDir, routeTable, table, seed, admin, clusters } = config;
    assert.deepEqual({ device, dataplane, stateDir, routeTable, table, seed, admin, clusters }, {
      device: 'hlb0',
      dataplane: 'auto',
      stateDir: '/run/hostlb',
      routeTable: 100,
      table: {
        capacity: 1 << 20,
        timeouts: { established: 900, synRecv: 60, finWait: 120, closeWait: 60, lastAck: 30, timeWait: 120, close: 10, udp: 300 },
        checkpoint: 5,
      },
      seed: 0x686c62,
      admin: {},
      clusters: [{ address: '198.18.100.1', ports: [{ ...PORT_HEALTH_DEFAULTS, port: 80, protocol: 'tcp', scheduler: 'wlc', daemons: [{ address: '198.18.2.1:8080', weight: 1 }] }] }],
    });
    for (const [key, value] of Object.entries(config)) assert.notEqual(value, undefined, `${key} has a default`);
    const bare = parseConfig('clusters:\n  - address: 2001:db8::100\n    ports:\n      - port: 443\n');
    assert.deepEqual(bare.clusters[0].ports[0], { ...PORT_HEALTH_DEFAULTS, port: 443, protocol: 'tcp', scheduler: 'wlc', daemons: [] });
  });

  it('turns durations into seconds: "15m" is 900', () => {
    const cases: [string, number][] = [
      ['15m', 900], ['900s', 900], ['2h', 7200], ['500ms', 0.5], ['1.5m', 90], ['30s', 30], ['45', 45], ['0', 0], ['0.25', 0.25],
    ];
    for (const [text, seconds] of cases) {
      const config = parseConfig(`table:\n  timeouts:\n    established: ${text}\n${CLUSTERS}`);
      assert.equal(config.table.timeouts.established, seconds, text);
      assert.equal(config.table.timeouts.udp, 300, 'the others keep their defaults');
    }
    for (const bad of ['15 m', '15min', '1d', 'm', '-5s', '"15"']) {
      assert.equal(parseError(`table:\n  timeouts:\n    established: ${bad}\n${CLUSTERS}`).path, 'table.timeouts.established', bad);
    }
  });

  it('a parsed configuration written back as YAML parses to the same thing (what config save relies on)', () => {
    const config = parseConfig(`table:\n  timeouts:\n    established: 15m\n    udp: 500ms\nadmin:\n  listen: "[::1]:9180"\n  token: 0123456789abcdef0\n${CLUSTERS}`);
    assert.deepEqual(parseConfig(stringify(config)), config);
  });
});

describe('hostlb check --config', () => {
  function check(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
    return new Promise((resolve, reject) => {
      const child = spawn(process.execPath, [MAIN, 'check', ...args], { stdio: ['ignore', 'pipe', 'pipe'], timeout: 20_000 });
      let stdout = '';
      let stderr = '';
      child.stdout.on('data', (c: Buffer) => { stdout += c.toString(); });
      child.stderr.on('data', (c: Buffer) => { stderr += c.toString(); });
      child.on('error', reject);
      child.on('close', (code) => resolve({ code, stdout, stderr }));
    });
  }

  it('exits 0 and prints the configuration with defaults; 2 for a mistake, a missing file or no --config', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'hostlb-check-'));
    try {
      const good = join(dir, 'good.yaml');
      const bad = join(dir, 'bad.yaml');
      writeFileSync(good, `table:\n  timeouts:\n    established: 15m\n${CLUSTERS}`);
      writeFileSync(bad, `${CLUSTERS}            wieght: 2\n`);
      const [ok, wrong, missing, none] = await Promise.all([
        check(['--config', good]), check(['-c', bad]), check(['--config', join(dir, 'missing.yaml')]), check([]),
      ]);
      assert.equal(ok.code, 0, ok.stderr);
      assert.deepEqual(JSON.parse(ok.stdout), loadConfig(good));
      assert.equal((JSON.parse(ok.stdout) as { table: { timeouts: { established: number } } }).table.timeouts.established, 900);

      assert.equal(wrong.code, 2);
      assert.equal(wrong.stdout, '');
      assert.equal(wrong.stderr, `hostlb: ${bad}:7: clusters[0].ports[0].daemons[0].wieght: unknown key "wieght"; check the spelling against docs/configuration.md\n`);

      assert.equal(missing.code, 2);
      assert.match(missing.stderr, /cannot read configuration file .*missing\.yaml/);

      assert.equal(none.code, 2);
      assert.match(none.stderr, /required option '-c, --config <file>' not specified/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
