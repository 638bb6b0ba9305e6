// The configuration file: every kind of mistake is reported with file:line,
// the key path and what was expected (and nothing else is accepted); all of a
// file's mistakes at once, in line order, for `hostlb check`; natural mistakes
// (a host name, a loop, a multicast cluster, a daemon the plane cannot reach)
// in words that say what to write; defaults are filled in; durations become
// seconds; `hostlb check` exits accordingly.

import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { stringify } from 'yaml';
import type { HostView } from '../../src/control/config-check.js';
import { checkConfigText, loadConfig, parseConfig, validateConfig } from '../../src/control/config-file.js';
import type { PlaneKind } from '../../src/dataplane/data-plane.js';
import { ConfigError, type ConfigProblem } from '../../src/errors.js';

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

/** A host for the host checks: `auto` runs `auto`, 127.0.0.0/8, ::1 and `local` are its addresses, `files` the files it can read. */
function fakeHost(options: { auto?: PlaneKind; local?: string[]; files?: Record<string, string>; denied?: string[]; root?: boolean } = {}): HostView {
  return {
    autoPlane: () => options.auto ?? 'tun',
    isLocal: (a) => (a.family === 4 && a.bytes[0] === 127) || a.text === '::1' || (options.local ?? []).includes(a.text),
    readFile: (path) => {
      if (options.denied?.includes(path)) throw Object.assign(new Error(`EACCES: permission denied, open '${path}'`), { code: 'EACCES' });
      const text = options.files?.[path];
      if (text === undefined) throw Object.assign(new Error(`ENOENT: no such file or directory, open '${path}'`), { code: 'ENOENT' });
      return text;
    },
    isRoot: () => options.root ?? false,
  };
}

/** A file with one cluster and one port, its daemons listed one per line (from line 6). */
function onePort(cluster: string, daemons: string[], head = '', port = 80): string {
  return `${head}clusters:\n  - address: "${cluster}"\n    ports:\n      - port: ${port}\n        daemons:\n${daemons.map((d) => `          - address: "${d}"\n`).join('')}`;
}

/** The problems `hostlb check` would print, as [line, path, message] (warnings marked in the message). */
function problemsOf(text: string, host = fakeHost()): [number | undefined, string, string][] {
  return checkConfigText(text, host).problems.map((p: ConfigProblem) => [p.line, p.path, `${p.warning ? 'warning: ' : ''}${p.message}`]);
}

describe('every problem of a file at once, in line order', () => {
  const MANY = [
    /* 1 */ 'device: hlb0',
    /* 2 */ 'table:',
    /* 3 */ '  capacity: lots',
    /* 4 */ 'clusters:',
    /* 5 */ '  - address: 198.18.100.1',
    /* 6 */ '    ports:',
    /* 7 */ '      - port: 80',
    /* 8 */ '        scheduler: fastest',
    /* 9 */ '        daemons:',
    /* 10 */ '          - address: localhost:8080',
    /* 11 */ '          - address: 198.18.2.1:8080',
    /* 12 */ '            wieght: 2',
    /* 13 */ '      - port: 80',
    /* 14 */ '  - address: 239.1.1.1',
    /* 15 */ '    ports:',
    /* 16 */ '      - port: 53',
    /* 17 */ '        protocol: udp',
    /* 18 */ '        advisor: { type: tcp, interval: 3000000 }',
    /* 19 */ '  - address: 198.18.100.1',
    /* 20 */ '    ports:',
    /* 21 */ '      - port: 81',
    /* 22 */ 'colour: red',
  ].join('\n') + '\n';
  const EXPECTED: [number, string, RegExp][] = [
    [3, 'table.capacity', /expected number/],
    [8, 'clusters[0].ports[0].scheduler', /"rr".*"maglev"/],
    [10, 'clusters[0].ports[0].daemons[0].address', /"localhost:8080" names a host: hostlb needs an IP address, e.g\. 127\.0\.0\.1:8080/],
    [12, 'clusters[0].ports[0].daemons[1].wieght', /unknown key "wieght"/],
    // Found although port 0 has a bad scheduler: a problem takes out no more than it must.
    [13, 'clusters[0].ports[1].port', /80\/tcp is already served by clusters\[0\]\.ports\[0\]/],
    [14, 'clusters[1].address', /239\.1\.1\.1 is a multicast address/],
    [18, 'clusters[1].ports[0].advisor.interval', /at most 2147483/],
    [19, 'clusters[2].address', /already clusters\[0\]/],
    [22, 'colour', /unknown key "colour"/],
  ];

  it('hostlb check\'s list: shape, tree, advisor and address problems, each with its line and key path', () => {
    const { config, problems, syntax } = checkConfigText(MANY, fakeHost());
    assert.equal(config, null);
    assert.equal(syntax, false);
    assert.deepEqual(problems.map((p) => [p.line, p.path]), EXPECTED.map(([line, path]) => [line, path]), JSON.stringify(problems, null, 1));
    problems.forEach((p, i) => {
      assert.match(p.message, EXPECTED[i][2]);
      assert.ok(!p.message.includes('\n'), `one line: ${p.message}`);
      assert.equal(p.warning, undefined);
    });
  });

  it('parseConfig throws the first by line, and carries them all', () => {
    const e = parseError(MANY);
    assert.equal(e.path, 'table.capacity');
    assert.equal(e.line, 3);
    assert.match(e.message, /^hostlb\.yaml:3: table\.capacity: /);
    assert.deepEqual(e.problems?.map((p) => p.path), EXPECTED.map(([, path]) => path));
  });

  it('validateConfig (the API) lists them all too; its error is the first found', () => {
    assert.throws(() => validateConfig({ clusters: [{ address: '198.18.100.1', ports: [{ port: 80, schedular: 'rr', daemons: [{ address: 'localhost:8080' }] }, { port: 80 }] }] }), (e: ConfigError) => {
      assert.equal(e.code, 'CONFIG_INVALID');
      assert.equal(e.path, 'clusters[0].ports[0].schedular');
      assert.deepEqual(e.problems?.map((p) => p.path), ['clusters[0].ports[0].schedular', 'clusters[0].ports[0].daemons[0].address', 'clusters[0].ports[1].port']);
      assert.ok(e.problems?.every((p) => p.line === undefined));
      return true;
    });
  });

  it('several unknown keys of one map: each on its own line, the key\'s line even when its value is a block below', () => {
    const text = `${CLUSTERS}        advisr:\n          type: tcp\n        pasive: {}\n`;
    assert.deepEqual(problemsOf(text).map(([line, path]) => [line, path]), [[7, 'clusters[0].ports[0].advisr'], [9, 'clusters[0].ports[0].pasive']]);
  });

  it('all the YAML syntax errors, each with its line, and nothing else', () => {
    const { config, problems, syntax } = checkConfigText('device: a\ndevice: b\nclusters:\n  - address: 198.18.100.1\n    ports: [\n', fakeHost());
    assert.equal(config, null);
    assert.equal(syntax, true);
    assert.ok(problems.length >= 2, JSON.stringify(problems));
    assert.deepEqual(problems.slice(0, 1).map((p) => [p.line, p.path]), [[2, '']]);
    assert.match(problems[0].message, /Map keys must be unique/);
  });

  it('a clean file: no problems, the configuration', () => {
    const { config, problems } = checkConfigText(CLUSTERS, fakeHost());
    assert.deepEqual(problems, []);
    assert.deepEqual(config, parseConfig(CLUSTERS));
    const six = onePort('2001:db8::100', ['[2001:db8::2]:8080', '[::1]:8080'], 'dataplane: netfilter\n');
    assert.deepEqual(checkConfigText(six, fakeHost()).problems, []);
  });
});

describe('natural mistakes, said in words that tell what to write', () => {
  const cases: { what: string; text: string; host?: HostView; want: [number, string, RegExp][] }[] = [
    {
      what: 'a daemon written with a host name',
      text: onePort('198.18.100.1', ['localhost:8080', 'web1.example.com:80']),
      want: [
        [6, 'clusters[0].ports[0].daemons[0].address', /^"localhost:8080" names a host: hostlb needs an IP address, e\.g\. 127\.0\.0\.1:8080; it does not resolve host names, on purpose/],
        [7, 'clusters[0].ports[0].daemons[1].address', /^"web1\.example\.com:80" names a host: hostlb needs an IP address/],
      ],
    },
    {
      what: 'a cluster written with a host name, or with its port',
      text: `${onePort('localhost', ['127.0.0.2:8080'])}  - address: "198.18.100.1:80"\n    ports:\n      - port: 80\n`,
      want: [
        [2, 'clusters[0].address', /^"localhost" names a host: hostlb needs an IP address, e\.g\. 127\.0\.0\.1; it does not resolve host names/],
        [7, 'clusters[1].address', /^"198\.18\.100\.1:80": a cluster's address is written without its port \(give the ports under ports:\), e\.g\. 198\.18\.100\.1$/],
      ],
    },
    {
      what: 'a daemon port outside 1-65535, or not a number',
      text: onePort('198.18.100.1', ['198.18.2.1:70000', 'localhost:0', '198.18.2.2:http']),
      want: [
        [6, 'clusters[0].ports[0].daemons[0].address', /^"198\.18\.2\.1:70000": the port must be a number 1–65535, not "70000"$/],
        [7, 'clusters[0].ports[0].daemons[1].address', /the port must be a number 1–65535, not "0"/],
        [8, 'clusters[0].ports[0].daemons[2].address', /the port must be a number 1–65535, not "http"/],
      ],
    },
    {
      what: 'an IPv6 daemon without brackets',
      text: onePort('2001:db8::100', ['2001:db8::2:8080']),
      want: [[6, 'clusters[0].ports[0].daemons[0].address', /write an IPv6 daemon in brackets, e\.g\. \[2001:db8::1\]:8080/]],
    },
    {
      what: 'a daemon that is its own cluster (a loop), on a plane that forwards',
      text: onePort('198.18.100.1', ['198.18.2.1:80', '198.18.100.1:80'], 'dataplane: netfilter\n'),
      want: [[8, 'clusters[0].ports[0].daemons[1].address', /^198\.18\.100\.1:80 is the cluster's own address and port: the netfilter plane would send its connections back to the cluster, a loop/]],
    },
    {
      what: 'a loop, IPv6, on tun',
      text: onePort('2001:db8::100', ['[2001:db8::100]:443'], 'dataplane: tun\n', 443),
      want: [[7, 'clusters[0].ports[0].daemons[0].address', /^\[2001:db8::100\]:443 is the cluster's own address and port: the tun plane/]],
    },
    {
      what: 'a loop with dataplane: auto: a warning naming the plane this host runs',
      text: onePort('198.18.100.1', ['198.18.100.1:80']),
      host: fakeHost({ auto: 'netfilter' }),
      want: [[6, 'clusters[0].ports[0].daemons[0].address', /^warning: .*a loop.*\(dataplane: auto runs netfilter on this host\)$/]],
    },
    {
      what: 'supervised daemons that include the cluster\'s own address and port',
      text: 'dataplane: tun\nclusters:\n  - address: 127.0.0.10\n    ports:\n      - port: 80\n        supervise: { command: /usr/bin/node, instances: 3, host: 127.0.0.8, port: 80, user: nobody }\n',
      want: [[6, 'clusters[0].ports[0].supervise.host', /^127\.0\.0\.10:80 is the cluster's own address and port/]],
    },
    {
      what: 'multicast and broadcast clusters',
      text: 'clusters:\n  - address: 239.1.2.3\n    ports: [{ port: 80 }]\n  - address: 255.255.255.255\n    ports: [{ port: 80 }]\n  - address: ff02::1\n    ports: [{ port: 80 }]\n',
      want: [
        [2, 'clusters[0].address', /^239\.1\.2\.3 is a multicast address \(224\.0\.0\.0\/4\): a cluster is one unicast address clients connect to/],
        [4, 'clusters[1].address', /^255\.255\.255\.255 is the broadcast address/],
        [6, 'clusters[2].address', /^ff02::1 is a multicast address \(ff00::\/8\)/],
      ],
    },
    {
      what: 'a wildcard cluster on a plane that needs one address (data-plane.ts planeConfigProblem\'s words)',
      text: 'dataplane: tun\nclusters:\n  - address: 198.18.100.1\n    ports: [{ port: 80 }]\n  - address: "::"\n    ports: [{ port: 80 }]\n  - address: 0.0.0.0\n    ports: [{ port: 80 }]\n',
      want: [
        [5, 'clusters[1].address', /^:: \(any local address\) is served by dataplane: socket only, and this hostlb runs the tun plane/],
        [7, 'clusters[2].address', /^0\.0\.0\.0 \(any local address\) is served by dataplane: socket only/],
      ],
    },
    {
      what: 'a wildcard cluster with dataplane: auto where auto picks netfilter: a warning',
      text: 'clusters:\n  - address: 0.0.0.0\n    ports: [{ port: 80 }]\n',
      host: fakeHost({ auto: 'netfilter' }),
      want: [[2, 'clusters[0].address', /^warning: 0\.0\.0\.0 \(any local address\) .*\(dataplane: auto runs netfilter on this host\)$/]],
    },
    {
      what: 'supervise.host of the other family',
      text: 'clusters:\n  - address: 198.18.100.1\n    ports:\n      - port: 80\n        supervise: { command: /usr/bin/node, instances: 2, host: "::1", port: 8080, user: nobody }\n  - address: 2001:db8::100\n    ports:\n      - port: 80\n        supervise:\n          command: /usr/bin/node\n          instances: 2\n          host: 127.0.0.2\n          port: 8080\n          user: nobody\n',
      want: [
        [5, 'clusters[0].ports[0].supervise.host', /^::1 is IPv6 but cluster 198\.18\.100\.1 is IPv4; supervised daemons must share their cluster's family \(e\.g\. 127\.0\.0\.2\)$/],
        [12, 'clusters[1].ports[0].supervise.host', /^127\.0\.0\.2 is IPv4 but cluster 2001:db8::100 is IPv6/],
      ],
    },
    {
      what: 'supervise.host a name, or a range past the last address',
      text: 'clusters:\n  - address: 198.18.100.1\n    ports:\n      - port: 80\n        supervise: { command: /usr/bin/node, instances: 2, host: localhost, port: 8080, user: nobody }\n      - port: 81\n        supervise: { command: /usr/bin/node, instances: 3, host: 255.255.255.254, port: 8080, user: nobody }\n',
      want: [
        [5, 'clusters[0].ports[0].supervise.host', /^"localhost" names a host: hostlb needs the IP address of the first instance/],
        [7, 'clusters[0].ports[1].supervise.host', /runs past 255\.255\.255\.255/],
      ],
    },
    {
      what: 'daemons not on this host with dataplane: socket (it takes their listening sockets)',
      text: onePort('198.18.100.1', ['198.18.2.1:8080', '127.0.0.9:8080', '192.0.2.7:8080'], 'dataplane: socket\n'),
      host: fakeHost({ local: ['192.0.2.7'] }),
      want: [[7, 'clusters[0].ports[0].daemons[0].address', /^198\.18\.2\.1 is not an address of this host, and the socket plane hands each connection to a daemon's own listening socket on this host/]],
    },
    {
      what: 'daemons not on this host where auto picks socket: a warning',
      text: onePort('::1', ['[2001:db8::2]:8080', '[::1]:8081']),
      host: fakeHost({ auto: 'socket' }),
      want: [[6, 'clusters[0].ports[0].daemons[0].address', /^warning: 2001:db8::2 is not an address of this host.*\(dataplane: auto runs socket on this host\)$/]],
    },
    {
      what: 'admin.tokenFile that does not exist',
      text: `admin:\n  listen: 127.0.0.1:9180\n  tokenFile: /etc/hostlb/no-token\n${CLUSTERS}`,
      want: [[3, 'admin.tokenFile', /^\/etc\/hostlb\/no-token does not exist; write the token \(at least 16 characters\) there, or fix the path$/]],
    },
    {
      what: 'admin.tokenFile root alone may read, checked by a user: a warning',
      text: `admin:\n  listen: 127.0.0.1:9180\n  tokenFile: /etc/hostlb/token\n${CLUSTERS}`,
      host: fakeHost({ denied: ['/etc/hostlb/token'] }),
      want: [[3, 'admin.tokenFile', /^warning: \/etc\/hostlb\/token cannot be read by this user \(EACCES\)/]],
    },
    {
      what: 'admin.tokenFile that root cannot read',
      text: `admin:\n  listen: 127.0.0.1:9180\n  tokenFile: /etc/hostlb/token\n${CLUSTERS}`,
      host: fakeHost({ denied: ['/etc/hostlb/token'], root: true }),
      want: [[3, 'admin.tokenFile', /^\/etc\/hostlb\/token cannot be read: EACCES/]],
    },
    {
      what: 'admin.tokenFile with a token too short',
      text: `admin:\n  listen: 127.0.0.1:9180\n  tokenFile: /etc/hostlb/token\n${CLUSTERS}`,
      host: fakeHost({ files: { '/etc/hostlb/token': 'short\n' } }),
      want: [[3, 'admin.tokenFile', /^\/etc\/hostlb\/token holds a token of 5 characters; a token needs at least 16$/]],
    },
  ];

  for (const c of cases) {
    it(c.what, () => {
      const got = problemsOf(c.text, c.host);
      assert.deepEqual(got.map(([line, path]) => [line, path]), c.want.map(([line, path]) => [line, path]), JSON.stringify(got, null, 1));
      got.forEach(([, , message], i) => assert.match(message, c.want[i][2]));
      const errors = c.want.some(([, , says]) => !says.source.startsWith('^warning'));
      assert.equal(checkConfigText(c.text, c.host ?? fakeHost()).config === null, errors, 'a warning alone leaves the configuration usable');
    });
  }

  it('what is right is not refused: a daemon on the cluster\'s address and port with the socket plane, a wildcard cluster on socket, a readable token file', () => {
    const host = fakeHost({ auto: 'socket', files: { '/etc/hostlb/token': '0123456789abcdef0\n' } });
    assert.deepEqual(problemsOf(onePort('127.0.0.1', ['127.0.0.1:80', '127.0.0.2:80'], 'dataplane: socket\n'), host), []);
    assert.deepEqual(problemsOf(onePort('0.0.0.0', ['127.0.0.2:80']), host), []);
    assert.deepEqual(problemsOf(onePort('0.0.0.0', ['127.0.0.2:80'], 'dataplane: socket\n'), host), []);
    assert.deepEqual(problemsOf(`admin:\n  listen: 127.0.0.1:9180\n  tokenFile: /etc/hostlb/token\n${CLUSTERS}`, host).filter(([, path]) => path.startsWith('admin')), []);
    // Supervised daemons are hostlb's to start on this host: never "not an address of this host".
    assert.deepEqual(problemsOf('dataplane: socket\nclusters:\n  - address: 198.18.100.1\n    ports:\n      - port: 80\n        supervise: { command: /usr/bin/node, instances: 2, host: 198.18.2.1, port: 8080, user: nobody }\n', host), []);
  });

  it('start, reload and the API refuse what is wrong everywhere; what depends on this host is left to hostlb check', () => {
    assert.equal(parseError(onePort('239.1.2.3', [])).path, 'clusters[0].address');
    assert.equal(parseError(onePort('198.18.100.1', ['198.18.100.1:80'], 'dataplane: tun\n')).path, 'clusters[0].ports[0].daemons[0].address');
    assert.match(parseError(onePort('198.18.100.1', ['localhost:8080'])).message, /^hostlb\.yaml:6: clusters\[0\]\.ports\[0\]\.daemons\[0\]\.address: "localhost:8080" names a host/);
    // auto: the plane is chosen at start; a token file is read at start.
    assert.doesNotThrow(() => parseConfig(onePort('198.18.100.1', ['198.18.100.1:80'])));
    assert.doesNotThrow(() => parseConfig(`admin:\n  listen: 127.0.0.1:9180\n  tokenFile: /nonexistent/token\n${onePort('198.18.100.1', ['198.18.2.1:8080'], 'dataplane: socket\n')}`));
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
      // A daemon of this host: where `auto` runs the socket plane, another would get a warning line too.
      writeFileSync(bad, `${CLUSTERS.replace('198.18.2.1:8080', '127.0.0.2:8080')}            wieght: 2\n`);
      const [ok, wrong, missing, none] = await Promise.all([
        check(['--config', good]), check(['-c', bad]), check(['--config', join(dir, 'missing.yaml')]), check([]),
      ]);
      assert.equal(ok.code, 0, ok.stderr);
      assert.deepEqual(JSON.parse(ok.stdout), loadConfig(good));
      assert.equal((JSON.parse(ok.stdout) as { table: { timeouts: { established: number } } }).table.timeouts.established, 900);

      assert.equal(wrong.code, 2);
      assert.equal(wrong.stdout, '');
      assert.equal(wrong.stderr, `${bad}:7: clusters[0].ports[0].daemons[0].wieght: unknown key "wieght"; check the spelling against docs/configuration.md\nhostlb check: 1 problem; nothing was started\n`);

      assert.equal(missing.code, 2);
      assert.match(missing.stderr, /cannot read configuration file .*missing\.yaml/);

      assert.equal(none.code, 2);
      assert.match(none.stderr, /required option '-c, --config <file>' not specified/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('prints admin.token and supervise.env values redacted: its output goes to terminals and logs', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'hostlb-check-'));
    try {
      const file = join(dir, 'secret.yaml');
      const token = 'not-for-the-ci-log-0123456789';
      writeFileSync(file, `admin:\n  listen: 127.0.0.1:9180\n  token: ${token}\n${CLUSTERS}`);
      const run = await check(['-c', file]);
      assert.equal(run.code, 0, run.stderr);
      assert.ok(!run.stdout.includes(token) && !run.stderr.includes(token), 'the token appears nowhere');
      assert.equal((JSON.parse(run.stdout) as { admin: { token: string; listen: string } }).admin.token, '(redacted)');
      assert.equal((JSON.parse(run.stdout) as { admin: { listen: string } }).admin.listen, '127.0.0.1:9180', 'the rest as it is');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('prints every problem of a file as FILE:LINE: key: message, in line order, then how many; exits 2 and prints no configuration', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'hostlb-check-'));
    try {
      const file = join(dir, 'many.yaml');
      writeFileSync(file, [
        'dataplane: tun',
        'clusters:',
        '  - address: 224.0.0.1',
        '    ports:',
        '      - port: 80',
        '        daemons:',
        '          - address: localhost:8080',
        '          - address: 198.18.2.1:70000',
        '  - address: 198.18.100.1',
        '    ports:',
        '      - port: 80',
        '        daemons:',
        '          - address: 198.18.100.1:80',
        '        wieght: 1',
      ].join('\n') + '\n');
      const run = await check(['-c', file]);
      assert.equal(run.code, 2, run.stderr);
      assert.equal(run.stdout, '');
      const lines = run.stderr.trimEnd().split('\n');
      assert.deepEqual(lines.map((l) => /^(.*?:\d+: \S+):/.exec(l)?.[1] ?? l), [
        `${file}:3: clusters[0].address`,
        `${file}:7: clusters[0].ports[0].daemons[0].address`,
        `${file}:8: clusters[0].ports[0].daemons[1].address`,
        `${file}:13: clusters[1].ports[0].daemons[0].address`,
        `${file}:14: clusters[1].ports[0].wieght`,
        'hostlb check: 5 problems; nothing was started',
      ]);
      assert.match(lines[0], /224\.0\.0\.1 is a multicast address/);
      assert.match(lines[1], /needs an IP address, e\.g\. 127\.0\.0\.1:8080/);
      assert.match(lines[2], /the port must be a number 1–65535, not "70000"/);
      assert.match(lines[3], /a loop/);
      assert.match(lines[4], /unknown key "wieght"/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
