// The admin API's contract, over its unix socket (and the TCP listener): every
// endpoint's answer, every error's status, code and field, that a rejected
// change and any GET change nothing, who may connect, and that /metrics is
// valid Prometheus text whose counters match the traffic pushed through a real
// instance over a MemoryLink (test/support/memory-hostlb.ts).

import { validateConfig } from '../../src/control/config-file.js';
import { after, afterEach, before, beforeEach, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { chmodSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { Writable } from 'node:stream';
import { pino } from 'pino';
import { parse as parseYaml } from 'yaml';
import { loadConfig } from '../../src/control/config-file.js';
import type { DataPlane } from '../../src/dataplane/data-plane.js';
import { checkpointPath } from '../../src/dataplane/tun/tun-plane.js';
import { DROP_REASON_NAMES } from '../../src/dispatch/drop-reason.js';
import { ConnectionPage, listingCounters, type ConnectionFilter } from '../../src/dispatch/record-view.js';
import { checkNoNewExec } from '../../src/control/api/exec-guard.js';
import { ApiError } from '../../src/control/api/api-error.js';
import { parseConfig } from '../../src/control/config-file.js';
import {
  TEST_CONFIG, TEST_TOKEN, startMemoryHostlb, type ApiAnswer, type MemoryHostlb,
} from '../support/memory-hostlb.js';

// ---------------------------------------------------------------------------
// Helpers

const enc = encodeURIComponent;
const C4 = '198.18.100.1';
const C6 = '2001:db8::100';

function portPath(cluster: string, port: number, protocol = 'tcp'): string {
  return `/v1/clusters/${enc(cluster)}/ports/${port}/${protocol}`;
}

function daemonPath(cluster: string, port: number, protocol: string, daemon: string): string {
  return `${portPath(cluster, port, protocol)}/daemons/${enc(daemon)}`;
}

interface ErrorBody { error: { code: string; message: string; field?: string } }

/** Asserts an error answer: status, code and (when given) field. Returns the error for more checks. */
function assertError(r: ApiAnswer, status: number, code: string, field?: string): ErrorBody['error'] {
  assert.equal(r.status, status, `expected ${status} ${code}, got ${r.status}: ${r.text}`);
  assert.equal(r.headers['content-type'], 'application/json');
  const e = (r.body as ErrorBody).error;
  assert.equal(e.code, code, r.text);
  assert.equal(typeof e.message, 'string');
  assert.ok(e.message.length > 10, `a message that says what to change: ${e.message}`);
  if (field !== undefined) assert.equal(e.field, field, r.text);
  return e;
}

function assertOk(r: ApiAnswer, status = 200): Record<string, unknown> {
  assert.equal(r.status, status, r.text);
  return r.body as Record<string, unknown>;
}

async function getJson(s: MemoryHostlb, path: string): Promise<Record<string, unknown>> {
  return assertOk(await s.call('GET', path));
}

/** What the health layer shows of each daemon in /v1/clusters, from its advisors' probes, supervisors and manager. */
const HEALTH_FIELDS = ['state', 'effectiveWeight', 'reason', 'advisor', 'responseMs'];

/**
 * Everything a reader can see: config, counters, connections, clusters and
 * status (minus the clock). `omitHealth`: without HEALTH_FIELDS, for a
 * configuration whose advisors probe and whose supervised daemons come and go
 * on their own clock.
 */
async function snapshot(s: MemoryHostlb, omitHealth = false): Promise<unknown> {
  const status = await getJson(s, '/v1/status');
  delete status.uptimeSeconds;
  const clusters = await getJson(s, '/v1/clusters') as { clusters: { ports: { daemons: Record<string, unknown>[] }[] }[] };
  if (omitHealth) {
    for (const c of clusters.clusters) for (const p of c.ports) for (const d of p.daemons) for (const k of HEALTH_FIELDS) delete d[k];
  }
  return {
    config: await getJson(s, '/v1/config'),
    counters: await getJson(s, '/v1/counters'),
    connections: await getJson(s, '/v1/connections?limit=10000'),
    clusters,
    status,
  };
}

interface ConnView { id: number; protocol: string; client: string; cluster: string; daemon: string; state: string }

async function connections(s: MemoryHostlb, query = ''): Promise<{ total: number; offset: number; connections: ConnView[] }> {
  return await getJson(s, `/v1/connections${query}`) as unknown as { total: number; offset: number; connections: ConnView[] };
}

interface DaemonView { address: string; weight: number; state: string; newFlows: number; activeFlows: number; packetsIn: number; packetsOut: number; bytesIn: number; bytesOut: number }
interface PortView { port: number; protocol: string; scheduler: string; drops: Record<string, number>; daemons: DaemonView[] }

async function ports(s: MemoryHostlb): Promise<Map<string, PortView>> {
  const { clusters } = await getJson(s, '/v1/clusters') as { clusters: { address: string; ports: PortView[] }[] };
  const out = new Map<string, PortView>();
  for (const c of clusters) for (const p of c.ports) out.set(`${c.address} ${p.port}/${p.protocol}`, p);
  return out;
}

function runAs(uid: number, script: string, args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile('setpriv', [`--reuid=${uid}`, `--regid=${uid}`, '--clear-groups', process.execPath, '-e', script, ...args], { timeout: 10_000 }, (err, stdout, stderr) => {
      if (err && err.killed) reject(new Error(`timed out: ${stderr}`));
      else resolve(stdout.trim() || stderr.trim());
    });
  });
}

const isRoot = process.getuid?.() === 0;

/** The link's counters as the plane keeps them. */
function linkCounters(s: MemoryHostlb): { read: number | null; written: number | null; refused: number | null } {
  const plane = s.instance.plane;
  return { read: plane.counter('link.read'), written: plane.counter('link.written'), refused: plane.counter('link.refused') };
}

/**
 * The names in a stack's stateDir, less the table checkpoint the TUN plane
 * writes there on its own every table.checkpoint seconds (5 by default).
 */
function stateFiles(s: MemoryHostlb): string[] {
  const checkpoint = basename(checkpointPath(s.instance.config));
  return readdirSync(s.state).filter((name) => name !== checkpoint).sort();
}

// ---------------------------------------------------------------------------
// Reads

describe('admin API: reads', () => {
  let s: MemoryHostlb;
  before(async () => { s = await startMemoryHostlb({ traffic: true }); });
  after(() => s.close());

  it('GET /v1/status describes the instance, the table and the traffic', async () => {
    const body = await getJson(s, '/v1/status');
    const { expected } = s.traffic;
    assert.equal(typeof body.uptimeSeconds, 'number');
    assert.ok((body.uptimeSeconds as number) >= 0);
    delete body.uptimeSeconds;
    assert.deepEqual(body, {
      version: '0.0.0-test',
      pid: process.pid,
      device: 'hlbtest0',
      dataplane: 'tun',
      configFile: s.file,
      table: { records: 6, capacity: 1024, evictions: 0 },
      clusters: 2,
      daemons: 4,
      activeFlows: 6,
      packets: { in: expected.packetsIn, out: expected.packetsOut },
      drops: 1,
    });
  });

  it('GET /v1/clusters lists every port and daemon with weights and the counters of the traffic pushed', async () => {
    const all = await ports(s);
    assert.deepEqual([...all.keys()], [`${C4} 80/tcp`, `${C4} 53/udp`, `${C6} 443/tcp`]);
    const p80 = all.get(`${C4} 80/tcp`)!;
    assert.equal(p80.scheduler, 'rr');
    assert.deepEqual(p80.drops, { no_record: 1 });
    assert.deepEqual(all.get(`${C4} 53/udp`)!.drops, {});
    assert.equal(all.get(`${C6} 443/tcp`)!.scheduler, 'wlc');
    const daemons = [...all.values()].flatMap((p) => p.daemons);
    assert.deepEqual(daemons.map((d) => d.address), ['198.18.2.1:8080', '198.18.2.2:8080', '198.18.2.3:5353', '[2001:db8:2::1]:8443']);
    for (const d of daemons) {
      const want = s.traffic.expected.daemons.get(d.address)!;
      assert.ok(want, `traffic reached ${d.address}`);
      assert.equal(d.weight, 1);
      assert.equal(d.state, 'up');
      assert.deepEqual(
        { newFlows: d.newFlows, activeFlows: d.activeFlows, packetsIn: d.packetsIn, packetsOut: d.packetsOut, bytesIn: d.bytesIn, bytesOut: d.bytesOut },
        { ...want, activeFlows: want.newFlows },
        d.address,
      );
    }
  });

  it('GET /v1/connections lists every record with its endpoints, state and counters', async () => {
    const r = await connections(s);
    assert.equal(r.total, 6);
    assert.equal(r.offset, 0);
    assert.equal(r.connections.length, 6);
    const byClient = new Map(r.connections.map((c) => [c.client, c]));
    const f = s.flows!;
    assert.deepEqual(
      [...byClient.keys()].sort(),
      ['198.18.0.10:40001', '198.18.0.10:40002', '198.18.0.10:40003', '198.18.0.11:40010', '198.18.0.12:5000', '[2001:db8:1::10]:40020'],
    );
    const first = byClient.get('198.18.0.10:40001') as unknown as Record<string, unknown>;
    assert.equal(first.protocol, 'tcp');
    assert.equal(first.cluster, `${C4}:80`);
    assert.equal(first.daemon, f.established[0].daemon);
    assert.equal(first.state, 'ESTABLISHED');
    // SYN, ACK and one data segment in; SYN-ACK and one data segment out.
    assert.equal(first.packetsIn, 3);
    assert.equal(first.packetsOut, 2);
    for (const k of ['created', 'lastSeen', 'expires', 'bytesIn', 'bytesOut', 'id']) assert.equal(typeof first[k], 'number', k);
    assert.ok((first.expires as number) > (first.lastSeen as number));
    assert.equal(byClient.get('198.18.0.11:40010')!.state, 'SYN_RECV');
    assert.equal(byClient.get('198.18.0.12:5000')!.state, 'UDP');
    assert.equal(byClient.get('198.18.0.12:5000')!.protocol, 'udp');
    assert.equal(byClient.get('[2001:db8:1::10]:40020')!.cluster, `[${C6}]:443`);
    assert.equal(byClient.get('[2001:db8:1::10]:40020')!.daemon, '[2001:db8:2::1]:8443');
  });

  it('GET /v1/connections filters by cluster, port, protocol, daemon, client and state', async () => {
    const f = s.flows!;
    const port80 = [...f.established, f.halfOpen];
    const d1 = f.established[0].daemon;
    const cases: [string, string, number][] = [
      ['cluster', `?cluster=${C4}`, 5],
      ['IPv6 cluster, not canonical', `?cluster=${enc('2001:DB8:0::100')}`, 1],
      ['port', '?port=80', 4],
      ['port 53', '?port=53', 1],
      ['cluster and port', `?cluster=${enc(C6)}&port=443`, 1],
      ['cluster and a port it lacks', `?cluster=${enc(C6)}&port=80`, 0],
      ['protocol udp', '?protocol=udp', 1],
      ['protocol tcp', '?protocol=tcp', 5],
      ['daemon', `?daemon=${enc(d1)}`, port80.filter((x) => x.daemon === d1).length],
      ['IPv6 daemon', `?daemon=${enc('[2001:db8:2::1]:8443')}`, 1],
      ['client', '?client=198.18.0.10', 3],
      ['IPv6 client', `?client=${enc('2001:db8:1::10')}`, 1],
      ['client nobody is', '?client=198.18.0.99', 0],
      ['state', '?state=ESTABLISHED', 4],
      ['state, any case', '?state=established', 4],
      ['state SYN_RECV', '?state=SYN_RECV', 1],
      ['state UDP', '?state=UDP', 1],
      ['state and client', '?state=SYN_RECV&client=198.18.0.10', 0],
    ];
    for (const [what, query, total] of cases) {
      const r = await connections(s, query);
      assert.equal(r.total, total, `${what}: ${query}`);
      assert.equal(r.connections.length, total, `${what}: ${query}`);
    }
    const byState = await connections(s, '?state=ESTABLISHED');
    assert.ok(byState.connections.every((c) => c.state === 'ESTABLISHED'));
    const byDaemon = await connections(s, `?daemon=${enc(d1)}`);
    assert.ok(byDaemon.connections.every((c) => c.daemon === d1));
  });

  it('GET /v1/connections pages with limit and offset; total counts every match', async () => {
    const all = (await connections(s, '?limit=100')).connections.map((c) => c.id);
    assert.equal(all.length, 6);
    const cases: [string, number[]][] = [
      ['?limit=2', all.slice(0, 2)],
      ['?offset=2&limit=2', all.slice(2, 4)],
      ['?offset=4&limit=10', all.slice(4)],
      ['?offset=5', all.slice(5)],
      ['?offset=6', []],
      ['?offset=1000', []],
      ['?limit=0', []],
    ];
    for (const [query, ids] of cases) {
      const r = await connections(s, query);
      assert.equal(r.total, 6, query);
      assert.equal(r.offset, Number(new URLSearchParams(query).get('offset') ?? 0), query);
      assert.deepEqual(r.connections.map((c) => c.id), ids, query);
    }
    const filtered = await connections(s, '?client=198.18.0.10&offset=1&limit=1');
    assert.equal(filtered.total, 3);
    assert.equal(filtered.connections.length, 1);
    assert.equal(filtered.connections[0].client, '198.18.0.10:40002');
  });

  it('GET /v1/connections with a bad query answers 400 naming the field', async () => {
    const cases: [string, string, string][] = [
      ['?state=BOGUS', 'BAD_QUERY', 'state'],
      ['?protocol=icmp', 'BAD_QUERY', 'protocol'],
      ['?limit=abc', 'BAD_QUERY', 'limit'],
      ['?limit=-1', 'BAD_QUERY', 'limit'],
      ['?limit=10001', 'BAD_QUERY', 'limit'],
      ['?limit=1.5', 'BAD_QUERY', 'limit'],
      ['?offset=x', 'BAD_QUERY', 'offset'],
      ['?offset=-3', 'BAD_QUERY', 'offset'],
      ['?port=0', 'BAD_PORT', 'port'],
      ['?port=70000', 'BAD_PORT', 'port'],
      ['?port=http', 'BAD_PORT', 'port'],
      ['?daemon=198.18.2.1', 'BAD_ENDPOINT', 'daemon'],
      ['?client=nobody', 'BAD_ADDRESS', 'client'],
      ['?cluster=198.18.100.300', 'BAD_ADDRESS', 'cluster'],
    ];
    for (const [query, code, field] of cases) {
      const e = assertError(await s.call('GET', `/v1/connections${query}`), 400, code, field);
      const value = decodeURIComponent(query.split('=')[1]);
      assert.ok(e.message.includes(value), `${query}: the message quotes the value: ${e.message}`);
    }
  });

  it('GET /v1/counters gives packets, every drop reason, the link and each daemon', async () => {
    const body = await getJson(s, '/v1/counters') as {
      packets: { in: number; out: number }; drops: Record<string, number>; link: Record<string, number>;
      daemons: Record<string, Record<string, number | boolean>>;
    };
    const { expected } = s.traffic;
    assert.deepEqual(body.packets, { in: expected.packetsIn, out: expected.packetsOut });
    assert.deepEqual(Object.keys(body.drops), DROP_REASON_NAMES.slice(1));
    assert.equal(body.drops.no_record, 1);
    assert.equal(Object.values(body.drops).reduce((a, b) => a + b, 0), expected.dropped);
    assert.deepEqual(body.link, { read: expected.link.read, written: expected.link.written, refused: 0 });
    assert.deepEqual(body.link, linkCounters(s));
    assert.deepEqual(Object.keys(body.daemons), [
      `${C4}:80/tcp 198.18.2.1:8080`, `${C4}:80/tcp 198.18.2.2:8080`, `${C4}:53/udp 198.18.2.3:5353`, `[${C6}]:443/tcp [2001:db8:2::1]:8443`,
    ]);
    for (const [key, counters] of Object.entries(body.daemons)) {
      const want = expected.daemons.get(key.split(' ')[1])!;
      assert.deepEqual(counters, { ...want, activeFlows: want.newFlows, removed: false }, key);
    }
  });

  it('GET /v1/config answers the running configuration as JSON, and as YAML with ?format=yaml', async () => {
    const json = await getJson(s, '/v1/config');
    assert.deepEqual(json, loadConfig(s.file));
    const yaml = await s.call('GET', '/v1/config?format=yaml');
    assert.equal(yaml.status, 200);
    assert.equal(yaml.headers['content-type'], 'application/yaml');
    assert.deepEqual(parseYaml(yaml.text), json);
  });

  it('a GET never changes anything, whatever it asks', async () => {
    const before = await snapshot(s);
    const applied = s.applied.length;
    const link = linkCounters(s);
    const gets = [
      '/v1/status', '/v1/clusters', '/v1/connections', '/v1/connections?state=ESTABLISHED&limit=1&offset=1',
      '/v1/connections?state=BOGUS', '/v1/connections?port=0', '/v1/counters', '/v1/config', '/v1/config?format=yaml',
      '/metrics', '/v1/nothing', '/v1/reload', '/v1/stop', '/v1/config/save', `${portPath(C4, 80)}/daemons`,
    ];
    for (let round = 0; round < 2; round++) {
      for (const path of gets) {
        const r = await s.call('GET', path);
        assert.ok(r.status === 200 || r.status === 400 || r.status === 404 || r.status === 405, `${path}: ${r.status}`);
      }
    }
    // A GET with a body that would be a change as a POST is still only a read.
    await s.call('GET', '/v1/clusters', { address: '198.18.100.9', ports: [{ port: 80 }] });
    assert.equal(s.stops, 0, 'GET /v1/stop does not stop');
    assert.equal(s.applied.length, applied, 'nothing was applied');
    assert.deepEqual(linkCounters(s), link);
    assert.deepEqual(await snapshot(s), before);
  });

  it('an unknown path answers 404 NO_SUCH_ENDPOINT, another method 405 naming the allowed ones', async () => {
    for (const [method, path] of [['GET', '/'], ['GET', '/v1'], ['GET', '/v2/status'], ['POST', '/v1/clusters/198.18.100.1/nothing'], ['GET', '/v1/status/extra']]) {
      const e = assertError(await s.call(method, path), 404, 'NO_SUCH_ENDPOINT');
      assert.ok(e.message.includes(path), e.message);
    }
    const cases: [string, string, string[]][] = [
      ['DELETE', '/v1/status', ['GET']],
      ['POST', '/v1/status', ['GET']],
      ['PUT', '/v1/clusters', ['GET', 'POST']],
      ['GET', '/v1/reload', ['POST']],
      ['PATCH', portPath(C4, 80), ['PUT', 'DELETE']],
      ['POST', '/metrics', ['GET']],
      ['HEAD', '/v1/config/save', ['POST']],
    ];
    for (const [method, path, allowed] of cases) {
      const r = await s.call(method, path);
      assert.equal(r.status, 405, `${method} ${path}`);
      if (method === 'HEAD') continue; // no body to read
      const e = assertError(r, 405, 'METHOD_NOT_ALLOWED');
      for (const m of allowed) assert.ok(e.message.includes(m), `${method} ${path}: ${e.message}`);
    }
  });

  it('the unix socket has mode 0600', () => {
    const st = statSync(s.socket);
    assert.ok(st.isSocket());
    assert.equal(st.mode & 0o777, 0o600);
    assert.equal(st.uid, process.getuid?.());
  });
});

// ---------------------------------------------------------------------------
// Changes that succeed

describe('admin API: changes', () => {
  let s: MemoryHostlb;
  beforeEach(async () => { s = await startMemoryHostlb({ traffic: true }); });
  afterEach(() => s.close());

  it('POST /v1/clusters adds a cluster (201), canonical address, defaults filled; DELETE removes it', async () => {
    const body = assertOk(await s.call('POST', '/v1/clusters', {
      address: '2001:DB8:0::200', ports: [{ port: 8443, daemons: [{ address: '[2001:db8:3::1]:8443' }] }],
    }), 201);
    assert.deepEqual(body, {
      ok: true,
      change: {
        source: 'api: add cluster 2001:DB8:0::200', routesAdded: 0, routesRemoved: 0,
        daemonsAdded: ['[2001:db8::200]:8443/tcp [2001:db8:3::1]:8443'], daemonsRemoved: [],
      },
    });
    const config = await getJson(s, '/v1/config') as { clusters: unknown[] };
    // Every default filled in, as the schema fills it for a file.
    const withDefaults = validateConfig({ clusters: [{ address: '2001:db8::200', ports: [{ port: 8443, daemons: [{ address: '[2001:db8:3::1]:8443' }] }] }] });
    assert.deepEqual(config.clusters[2], withDefaults.clusters[0]);
    assert.deepEqual((config.clusters[2] as { ports: { scheduler: string; daemons: unknown[] }[] }).ports[0].daemons, [{ address: '[2001:db8:3::1]:8443', weight: 1 }]);
    assert.equal((await getJson(s, '/v1/status')).clusters, 3);
    // New flows reach it.
    const flow = await s.traffic.tcpFlow({ client: '2001:db8:1::20', clientPort: 41000, cluster: '2001:db8::200', port: 8443 });
    assert.equal(flow.daemon, '[2001:db8:3::1]:8443');

    const removed = assertOk(await s.call('DELETE', `/v1/clusters/${enc('2001:db8::200')}`));
    assert.deepEqual((removed.change as { daemonsRemoved: string[] }).daemonsRemoved, ['[2001:db8::200]:8443/tcp [2001:db8:3::1]:8443']);
    assert.equal(((await getJson(s, '/v1/config')).clusters as unknown[]).length, 2);
    // The flow of the removed cluster's daemon is kept until it ends, and its daemon still counts.
    assert.equal((await connections(s, `?cluster=${enc('2001:db8::200')}`)).total, 1);
    const counters = await getJson(s, '/v1/counters') as { daemons: Record<string, { removed: boolean; activeFlows: number }> };
    assert.deepEqual(counters.daemons['[2001:db8::200]:8443/tcp [2001:db8:3::1]:8443'].removed, true);
    assert.deepEqual(s.applied, ['api: add cluster 2001:DB8:0::200', 'api: remove cluster 2001:db8::200']);
  });

  it('DELETE /v1/clusters/:address refuses to remove the last cluster (409 LAST_CLUSTER)', async () => {
    assertOk(await s.call('DELETE', `/v1/clusters/${enc(C6)}`));
    const before = await getJson(s, '/v1/config');
    assertError(await s.call('DELETE', `/v1/clusters/${C4}`), 409, 'LAST_CLUSTER', 'cluster');
    assert.deepEqual(await getJson(s, '/v1/config'), before);
  });

  it('POST .../ports adds a port (201); PUT changes its scheduler; DELETE removes it', async () => {
    const added = assertOk(await s.call('POST', `/v1/clusters/${C4}/ports`, {
      port: 8080, protocol: 'any', scheduler: 'maglev', daemons: [{ address: '198.18.2.7:8080', weight: 2 }],
    }), 201);
    assert.deepEqual((added.change as { daemonsAdded: string[] }).daemonsAdded, [`${C4}:8080/any 198.18.2.7:8080`]);
    let all = await ports(s);
    assert.equal(all.get(`${C4} 8080/any`)!.scheduler, 'maglev');
    assert.deepEqual(all.get(`${C4} 8080/any`)!.daemons.map((d) => [d.address, d.weight]), [['198.18.2.7:8080', 2]]);
    // `any` serves UDP too.
    assert.equal((await s.traffic.udpFlow({ client: '198.18.0.20', clientPort: 6000, cluster: C4, port: 8080 })).daemon, '198.18.2.7:8080');

    assertOk(await s.call('PUT', portPath(C4, 8080, 'any'), { scheduler: 'wrr' }));
    all = await ports(s);
    assert.equal(all.get(`${C4} 8080/any`)!.scheduler, 'wrr');
    assertOk(await s.call('PUT', portPath(C4, 80), { scheduler: 'sh' }));
    assert.equal((await ports(s)).get(`${C4} 80/tcp`)!.scheduler, 'sh');
    // Existing flows keep their daemon.
    assert.equal((await connections(s, '?port=80')).total, 4);

    assertOk(await s.call('DELETE', portPath(C4, 8080, 'any')));
    assert.equal((await ports(s)).has(`${C4} 8080/any`), false);
    const config = await getJson(s, '/v1/config') as { clusters: { ports: { port: number; scheduler: string }[] }[] };
    assert.deepEqual(config.clusters[0].ports.map((p) => [p.port, p.scheduler]), [[80, 'sh'], [53, 'wlc']]);
  });

  it('POST .../daemons adds a daemon (201); PUT sets its weight; quiesce makes it 0; DELETE removes it', async () => {
    const d = '198.18.2.9:8080';
    const added = assertOk(await s.call('POST', `${portPath(C4, 80)}/daemons`, { address: d, weight: 3 }), 201);
    assert.deepEqual(added.change, {
      source: `api: add daemon ${d}`, routesAdded: 0, routesRemoved: 0, daemonsAdded: [`${C4}:80/tcp ${d}`], daemonsRemoved: [],
    });
    const weightOf = async (): Promise<[number, string] | undefined> => {
      const x = (await ports(s)).get(`${C4} 80/tcp`)!.daemons.find((y) => y.address === d);
      return x ? [x.weight, x.state] : undefined;
    };
    assert.deepEqual(await weightOf(), [3, 'up']);
    assertOk(await s.call('PUT', daemonPath(C4, 80, 'tcp', d), { weight: 5 }));
    assert.deepEqual(await weightOf(), [5, 'up']);
    assertOk(await s.call('POST', `${daemonPath(C4, 80, 'tcp', d)}/quiesce`));
    assert.deepEqual(await weightOf(), [0, 'quiesced']);
    assertOk(await s.call('DELETE', daemonPath(C4, 80, 'tcp', d)));
    assert.equal(await weightOf(), undefined);
    assert.deepEqual(s.applied, [`api: add daemon ${d}`, `api: set daemon ${d}`, `api: quiesce daemon ${d}`, `api: remove daemon ${d}`]);
  });

  it('a quiesced daemon keeps its flows and gets no new ones; a removed one keeps its flows until they end', async () => {
    const busy = s.flows!.established[0].daemon;
    const other = busy === '198.18.2.1:8080' ? '198.18.2.2:8080' : '198.18.2.1:8080';
    const held = (await connections(s, `?daemon=${enc(busy)}`)).total;
    assert.ok(held > 0);
    assertOk(await s.call('POST', `${daemonPath(C4, 80, 'tcp', busy)}/quiesce`));
    for (let i = 0; i < 4; i++) assert.equal((await s.traffic.tcpFlow({ client: '198.18.0.30', clientPort: 42000 + i, cluster: C4, port: 80 })).daemon, other);
    assert.equal((await connections(s, `?daemon=${enc(busy)}`)).total, held);
    await s.flows!.established[0].data(10); // still forwarded

    assertOk(await s.call('DELETE', daemonPath(C4, 53, 'udp', '198.18.2.3:5353')));
    assert.deepEqual((await ports(s)).get(`${C4} 53/udp`)!.daemons, []);
    assert.equal((await connections(s, '?daemon=198.18.2.3:5353')).total, 1);
    await s.flows!.udp.data(10); // the removed daemon's flow still goes both ways
  });
});

// ---------------------------------------------------------------------------
// Changes that are rejected

describe('admin API: rejected changes answer a stable code and field and change nothing', () => {
  let s: MemoryHostlb;
  before(async () => { s = await startMemoryHostlb({ traffic: true }); });
  after(() => s.close());

  const P80 = portPath(C4, 80);
  const cases: { what: string; method: string; path: string; body?: unknown; status: number; code: string; field?: string }[] = [
    { what: 'unknown cluster', method: 'DELETE', path: '/v1/clusters/198.18.9.9', status: 404, code: 'CLUSTER_NOT_FOUND', field: 'cluster' },
    { what: 'port on unknown cluster', method: 'POST', path: '/v1/clusters/198.18.9.9/ports', body: { port: 81 }, status: 404, code: 'CLUSTER_NOT_FOUND', field: 'cluster' },
    { what: 'cluster not an address', method: 'DELETE', path: '/v1/clusters/not-an-address', status: 400, code: 'BAD_ADDRESS', field: 'cluster' },
    { what: 'unknown port', method: 'PUT', path: portPath(C4, 81), body: { scheduler: 'rr' }, status: 404, code: 'PORT_NOT_FOUND', field: 'port' },
    { what: 'port under another protocol', method: 'DELETE', path: portPath(C4, 80, 'udp'), status: 404, code: 'PORT_NOT_FOUND', field: 'port' },
    { what: 'bad protocol', method: 'DELETE', path: portPath(C4, 80, 'sctp'), status: 400, code: 'BAD_PROTOCOL', field: 'protocol' },
    { what: 'bad port', method: 'DELETE', path: portPath(C4, 70000), status: 400, code: 'BAD_PORT', field: 'port' },
    { what: 'unknown daemon (set)', method: 'PUT', path: daemonPath(C4, 80, 'tcp', '198.18.2.9:8080'), body: { weight: 2 }, status: 404, code: 'DAEMON_NOT_FOUND', field: 'daemon' },
    { what: 'unknown daemon (quiesce)', method: 'POST', path: `${daemonPath(C4, 80, 'tcp', '198.18.2.9:8080')}/quiesce`, status: 404, code: 'DAEMON_NOT_FOUND', field: 'daemon' },
    { what: 'unknown daemon (remove)', method: 'DELETE', path: daemonPath(C4, 80, 'tcp', '198.18.2.3:5353'), status: 404, code: 'DAEMON_NOT_FOUND', field: 'daemon' },
    { what: 'daemon not address:port', method: 'DELETE', path: daemonPath(C4, 80, 'tcp', '198.18.2.1'), status: 400, code: 'BAD_ENDPOINT', field: 'daemon' },
    { what: 'duplicate cluster', method: 'POST', path: '/v1/clusters', body: { address: C4, ports: [{ port: 81 }] }, status: 409, code: 'CLUSTER_EXISTS', field: 'address' },
    { what: 'duplicate cluster, other spelling', method: 'POST', path: '/v1/clusters', body: { address: '2001:DB8:0:0::100', ports: [{ port: 81 }] }, status: 409, code: 'CLUSTER_EXISTS', field: 'address' },
    { what: 'cluster without address', method: 'POST', path: '/v1/clusters', body: { ports: [{ port: 81 }] }, status: 400, code: 'BAD_ADDRESS', field: 'address' },
    { what: 'cluster without ports', method: 'POST', path: '/v1/clusters', body: { address: '198.18.100.9' }, status: 400, code: 'CONFIG_INVALID', field: 'clusters[2].ports' },
    { what: 'duplicate daemon', method: 'POST', path: `${P80}/daemons`, body: { address: '198.18.2.1:8080' }, status: 409, code: 'DAEMON_EXISTS', field: 'address' },
    { what: 'daemon without address', method: 'POST', path: `${P80}/daemons`, body: { weight: 2 }, status: 400, code: 'BAD_ENDPOINT', field: 'address' },
    { what: 'daemon of the other family', method: 'POST', path: `${P80}/daemons`, body: { address: '[2001:db8:2::9]:8080' }, status: 400, code: 'CONFIG_INVALID', field: 'clusters[0].ports[0].daemons[2].address' },
    { what: 'duplicate port', method: 'POST', path: `/v1/clusters/${C4}/ports`, body: { port: 80 }, status: 400, code: 'CONFIG_INVALID', field: 'clusters[0].ports[2].port' },
    { what: 'port any over a udp port', method: 'POST', path: `/v1/clusters/${C4}/ports`, body: { port: 53, protocol: 'any' }, status: 400, code: 'CONFIG_INVALID', field: 'clusters[0].ports[2].port' },
    { what: 'port out of range', method: 'POST', path: `/v1/clusters/${C4}/ports`, body: { port: 0 }, status: 400, code: 'CONFIG_INVALID', field: 'clusters[0].ports[2].port' },
    { what: 'negative weight', method: 'PUT', path: daemonPath(C4, 80, 'tcp', '198.18.2.1:8080'), body: { weight: -1 }, status: 400, code: 'CONFIG_INVALID', field: 'clusters[0].ports[0].daemons[0].weight' },
    { what: 'fractional weight', method: 'PUT', path: daemonPath(C4, 80, 'tcp', '198.18.2.2:8080'), body: { weight: 1.5 }, status: 400, code: 'CONFIG_INVALID', field: 'clusters[0].ports[0].daemons[1].weight' },
    { what: 'weight as text', method: 'PUT', path: daemonPath(C4, 80, 'tcp', '198.18.2.1:8080'), body: { weight: 'heavy' }, status: 400, code: 'CONFIG_INVALID', field: 'clusters[0].ports[0].daemons[0].weight' },
    { what: 'weight too large', method: 'POST', path: `${P80}/daemons`, body: { address: '198.18.2.9:8080', weight: 10001 }, status: 400, code: 'CONFIG_INVALID', field: 'clusters[0].ports[0].daemons[2].weight' },
    { what: 'no weight to set', method: 'PUT', path: daemonPath(C4, 80, 'tcp', '198.18.2.1:8080'), body: {}, status: 400, code: 'NOTHING_TO_CHANGE', field: 'weight' },
    { what: 'bad scheduler', method: 'PUT', path: P80, body: { scheduler: 'fastest' }, status: 400, code: 'CONFIG_INVALID', field: 'clusters[0].ports[0].scheduler' },
    // Used to pass the schema and fail in the health layer after the dispatcher had switched (500, half-changed).
    { what: 'an http advisor path with a space in a new port', method: 'POST', path: `/v1/clusters/${C4}/ports`, body: { port: 81, advisor: { type: 'http', path: '/a b' } }, status: 400, code: 'CONFIG_INVALID', field: 'clusters[0].ports[2].advisor.path' },
    { what: 'bad scheduler in a new cluster', method: 'POST', path: '/v1/clusters', body: { address: '198.18.100.9', ports: [{ port: 80, scheduler: 'fastest' }] }, status: 400, code: 'CONFIG_INVALID', field: 'clusters[2].ports[0].scheduler' },
    { what: 'no scheduler to set', method: 'PUT', path: P80, body: {}, status: 400, code: 'NOTHING_TO_CHANGE', field: 'scheduler' },
    { what: 'unknown key in a new cluster', method: 'POST', path: '/v1/clusters', body: { address: '198.18.100.9', ports: [{ port: 80 }], colour: 'red' }, status: 400, code: 'CONFIG_INVALID', field: 'clusters[2].colour' },
    { what: 'unknown key in a new port', method: 'POST', path: `/v1/clusters/${C4}/ports`, body: { port: 81, schedular: 'rr' }, status: 400, code: 'CONFIG_INVALID', field: 'clusters[0].ports[2].schedular' },
    { what: 'unknown key in a new daemon', method: 'POST', path: `${P80}/daemons`, body: { address: '198.18.2.9:8080', wieght: 2 }, status: 400, code: 'UNKNOWN_KEY', field: 'wieght' },
    { what: 'unknown key beside a weight', method: 'PUT', path: daemonPath(C4, 80, 'tcp', '198.18.2.1:8080'), body: { weight: 2, scheduler: 'rr' }, status: 400, code: 'UNKNOWN_KEY', field: 'scheduler' },
    { what: 'unknown key beside a scheduler', method: 'PUT', path: P80, body: { scheduler: 'rr', daemons: [] }, status: 400, code: 'UNKNOWN_KEY', field: 'daemons' },
    { what: 'last port of a cluster', method: 'DELETE', path: portPath(C6, 443), status: 409, code: 'LAST_PORT', field: 'port' },
    { what: 'a path segment that is not percent-encoding', method: 'DELETE', path: '/v1/clusters/%ZZ', status: 400, code: 'BAD_PATH' },
    { what: 'body not JSON', method: 'POST', path: '/v1/clusters', body: '{"address": ', status: 400, code: 'BAD_JSON' },
    { what: 'body a JSON array', method: 'POST', path: `${P80}/daemons`, body: '[{"address": "198.18.2.9:8080"}]', status: 400, code: 'BAD_JSON' },
    { what: 'body a JSON string', method: 'PUT', path: P80, body: '"rr"', status: 400, code: 'BAD_JSON' },
  ];

  for (const c of cases) {
    it(`${c.what}: ${c.method} ${c.path} → ${c.status} ${c.code}`, async () => {
      const before = await snapshot(s);
      const applied = s.applied.length;
      assertError(await s.call(c.method, c.path, c.body), c.status, c.code, c.field);
      assert.equal(s.applied.length, applied, 'nothing was applied');
      assert.deepEqual(await snapshot(s), before);
    });
  }

  it('after all of them the configuration is still the file', async () => {
    assert.deepEqual(await getJson(s, '/v1/config'), loadConfig(s.file));
    assert.deepEqual(s.applied, []);
  });

  it('a body over 1 MiB is refused (413 BODY_TOO_LARGE) or cut off, and changes nothing', async () => {
    const before = await snapshot(s);
    const huge = JSON.stringify({ address: '198.18.100.9', ports: [{ port: 80 }], pad: 'x'.repeat(1 << 20) });
    try {
      assertError(await s.call('POST', '/v1/clusters', huge), 413, 'BODY_TOO_LARGE');
    } catch (e) {
      // The server may close the connection before the client has written everything.
      if (!['EPIPE', 'ECONNRESET'].includes((e as NodeJS.ErrnoException).code ?? '')) throw e;
    }
    assert.deepEqual(await snapshot(s), before);
  });
});

// ---------------------------------------------------------------------------
// config save, reload, stop

describe('admin API: config save and reload', () => {
  let s: MemoryHostlb;
  beforeEach(async () => { s = await startMemoryHostlb({ traffic: true }); });
  afterEach(() => s.close());

  it('POST /v1/config/save writes the running configuration (mode 0600) as a file loadConfig accepts', async () => {
    assertOk(await s.call('POST', `${portPath(C4, 80)}/daemons`, { address: '198.18.2.9:8080', weight: 7 }), 201);
    const target = join(s.state, 'saved.yaml');
    assert.deepEqual(assertOk(await s.call('POST', '/v1/config/save', { path: target })), { ok: true, path: target });
    assert.equal(statSync(target).mode & 0o777, 0o600);
    assert.match(readFileSync(target, 'utf8'), /^# saved by hostlb \d{4}-\d\d-\d\dT/);
    const running = await getJson(s, '/v1/config');
    assert.deepEqual(loadConfig(target), running);
    assert.ok(JSON.stringify(loadConfig(target)).includes('198.18.2.9:8080'));

    // Without a path: to the file it was started with, which a reload then reads back unchanged.
    assert.deepEqual(assertOk(await s.call('POST', '/v1/config/save')), { ok: true, path: s.file });
    assert.deepEqual(loadConfig(s.file), running);
    assertOk(await s.call('POST', '/v1/reload'));
    assert.deepEqual(await getJson(s, '/v1/config'), running);
  });

  it('POST /v1/config/save needs an absolute path, and a path when there is no file', async () => {
    assertError(await s.call('POST', '/v1/config/save', { path: 'relative.yaml' }), 400, 'BAD_PATH', 'path');
    const bare = await startMemoryHostlb({ withFile: false });
    try {
      assertError(await bare.call('POST', '/v1/config/save'), 400, 'NO_PATH', 'path');
      const target = join(bare.state, 'out.yaml');
      assertOk(await bare.call('POST', '/v1/config/save', { path: target }));
      assert.deepEqual(loadConfig(target), loadConfig(bare.file));
    } finally {
      await bare.close();
    }
  });

  it('POST /v1/reload applies a good file and says what changed', async () => {
    writeFileSync(s.file, s.yaml.replace('          - address: 198.18.2.2:8080\n', '          - address: 198.18.2.2:8080\n          - address: 198.18.2.4:8080\n            weight: 4\n'));
    const body = assertOk(await s.call('POST', '/v1/reload'));
    assert.deepEqual(body, {
      ok: true,
      change: { source: `reload ${s.file}`, routesAdded: 0, routesRemoved: 0, daemonsAdded: [`${C4}:80/tcp 198.18.2.4:8080`], daemonsRemoved: [] },
    });
    assert.deepEqual(await getJson(s, '/v1/config'), loadConfig(s.file));
    assert.deepEqual((await ports(s)).get(`${C4} 80/tcp`)!.daemons.map((d) => [d.address, d.weight]), [['198.18.2.1:8080', 1], ['198.18.2.2:8080', 1], ['198.18.2.4:8080', 4]]);
    // Flows survive a reload.
    assert.equal((await connections(s)).total, 6);
  });

  it('POST /v1/reload of a file with an error answers 400 naming file, line and key; the running config is unchanged', async () => {
    const before = await snapshot(s);
    const lines = s.yaml.split('\n');
    const at = lines.indexOf('        scheduler: rr');
    lines.splice(at + 1, 0, '        schedular: wlc');
    writeFileSync(s.file, lines.join('\n'));
    const e = assertError(await s.call('POST', '/v1/reload'), 400, 'CONFIG_INVALID', 'clusters[0].ports[0].schedular');
    assert.ok(e.message.includes(`${s.file}:${at + 2}:`), e.message);
    assert.ok(e.message.includes('clusters[0].ports[0].schedular'), e.message);
    assert.ok(e.message.includes('unknown key'), e.message);

    writeFileSync(s.file, s.yaml.replace('          - address: 198.18.2.2:8080', '          - address: 198.18.2.1:8080'));
    const dup = assertError(await s.call('POST', '/v1/reload'), 400, 'CONFIG_INVALID', 'clusters[0].ports[0].daemons[1].address');
    assert.ok(dup.message.includes(`${s.file}:${s.yaml.split('\n').indexOf('          - address: 198.18.2.2:8080') + 1}:`), dup.message);

    writeFileSync(s.file, s.yaml.replace('    ports:\n      - port: 80', '    ports:\n      - port: [80'));
    const syntax = assertError(await s.call('POST', '/v1/reload'), 400, 'CONFIG_SYNTAX');
    assert.match(syntax.message, new RegExp(`^${s.file.replace(/[.]/g, '\\.')}:\\d+: `));

    rmSync(s.file);
    assertError(await s.call('POST', '/v1/reload'), 400, 'CONFIG_UNREADABLE');

    assert.deepEqual(s.applied, []);
    assert.deepEqual(await snapshot(s), before);
  });

  it('POST /v1/reload of a file that changes device or table.capacity answers 409 CONFIG_NEEDS_RESTART and changes nothing', async () => {
    const before = await snapshot(s);
    writeFileSync(s.file, s.yaml.replace('device: hlbtest0', 'device: hlbtest1'));
    const e = assertError(await s.call('POST', '/v1/reload'), 409, 'CONFIG_NEEDS_RESTART', 'device');
    assert.ok(e.message.includes('hlbtest1') && e.message.includes('restart'), e.message);
    writeFileSync(s.file, s.yaml.replace('capacity: 1024', 'capacity: 2048'));
    assertError(await s.call('POST', '/v1/reload'), 409, 'CONFIG_NEEDS_RESTART', 'table.capacity');
    writeFileSync(s.file, `${s.yaml}admin:\n  socket: /run/other.sock\n`);
    assertError(await s.call('POST', '/v1/reload'), 409, 'CONFIG_NEEDS_RESTART', 'admin');
    assert.deepEqual(s.applied, []);
    assert.deepEqual(await snapshot(s), before);
  });

  it('POST /v1/reload without a config file answers 409 NO_CONFIG_FILE', async () => {
    const bare = await startMemoryHostlb({ withFile: false });
    try {
      const before = await snapshot(bare);
      assertError(await bare.call('POST', '/v1/reload'), 409, 'NO_CONFIG_FILE');
      assert.deepEqual(await snapshot(bare), before);
    } finally {
      await bare.close();
    }
  });
});

// ---------------------------------------------------------------------------
// Programs come only from the configuration file

/**
 * TEST_CONFIG plus what makes hostlb run programs: an exec advisor on 80/tcp,
 * a supervised 8080/tcp with an env, and an admin token. The instance runs
 * them: the advisor probes with /bin/true every 2 s, the supervisor starts
 * /bin/true (again, as it exits) and probes its daemons, so what /v1/clusters
 * shows of their health moves on its own (snapshot(s, true) leaves it out).
 */
const SECRET_TOKEN = 'admin-token-never-shown-0123456789';
const SECRET_ENV = 'env-value-never-shown-42';
const EXEC_CONFIG = TEST_CONFIG
  .replace('        scheduler: rr\n', '        scheduler: rr\n        advisor:\n          type: exec\n          command: /bin/true\n          args: [probe]\n')
  .replace('      - port: 53\n', [
    '      - port: 8080',
    '        supervise:',
    '          command: /bin/true',
    '          instances: 2',
    '          host: 198.18.3.1',
    '          port: 8080',
    '          user: nobody',
    '          env:',
    `            API_KEY: ${SECRET_ENV}`,
    '      - port: 53',
    '',
  ].join('\n'))
  .replace('clusters:\n', `admin:\n  token: ${SECRET_TOKEN}\nclusters:\n`);

describe('admin API: programs (supervise, exec advisors) come only from the configuration file', () => {
  let s: MemoryHostlb;
  before(async () => { s = await startMemoryHostlb({ config: EXEC_CONFIG }); });
  after(() => s.close());

  const SUPERVISE = { command: '/bin/sh', args: ['-c', 'id > /tmp/pwned'], instances: 1, host: '198.18.3.9', port: 9000, user: 'root' };
  const FROM_FILE = { command: '/bin/true', instances: 2, host: '198.18.3.1', port: 8080, user: 'nobody', env: { API_KEY: SECRET_ENV } };
  const P = `/v1/clusters/${C4}/ports`;
  const cases: { what: string; path: string; body: unknown; field: string }[] = [
    { what: 'a new cluster with a supervised port', path: '/v1/clusters', body: { address: '198.18.100.9', ports: [{ port: 80, supervise: SUPERVISE }] }, field: 'clusters[2].ports[0].supervise' },
    { what: 'a new port with supervise', path: P, body: { port: 9000, supervise: SUPERVISE }, field: 'clusters[0].ports[3].supervise' },
    { what: 'the file\'s supervise block copied to a new port (more programs)', path: P, body: { port: 9001, supervise: FROM_FILE }, field: 'clusters[0].ports[3].supervise' },
    { what: 'a new port with an exec advisor', path: P, body: { port: 9002, advisor: { type: 'exec', command: '/bin/sh', args: ['-c', 'id'] }, daemons: [{ address: '198.18.2.7:9002' }] }, field: 'clusters[0].ports[3].advisor' },
    { what: 'a tcp advisor naming a command (an override could make it exec)', path: P, body: { port: 9003, advisor: { type: 'tcp', command: '/bin/sh' } }, field: 'clusters[0].ports[3].advisor' },
    { what: 'a daemon whose advisor override runs a program', path: P, body: { port: 9004, daemons: [{ address: '198.18.2.7:9004', advisor: { type: 'exec', command: '/bin/sh' } }] }, field: 'clusters[0].ports[3].daemons[0].advisor' },
  ];
  for (const c of cases) {
    it(`${c.what}: 403 API_EXEC_FORBIDDEN naming the key; nothing changes`, async () => {
      const before = await snapshot(s, true);
      const applied = s.applied.length;
      const running = s.instance.config;
      const e = assertError(await s.call('POST', c.path, c.body), 403, 'API_EXEC_FORBIDDEN', c.field);
      assert.ok(e.message.startsWith(`${c.field}: `), e.message);
      assert.match(e.message, /configuration file and reload/);
      assert.equal(s.applied.length, applied, 'nothing was applied');
      assert.equal(s.instance.config, running, 'the running configuration is the same object');
      assert.deepEqual(await snapshot(s, true), before);
    });
  }

  it('changes that keep the file\'s programs as they are still work: scheduler, weights, daemons, ports without programs', async () => {
    assertOk(await s.call('PUT', portPath(C4, 8080), { scheduler: 'maglev' }));
    assertOk(await s.call('PUT', daemonPath(C4, 80, 'tcp', '198.18.2.1:8080'), { weight: 4 }));
    assertOk(await s.call('POST', `${portPath(C4, 80)}/daemons`, { address: '198.18.2.9:8080', weight: 2 }), 201);
    assertOk(await s.call('POST', `${daemonPath(C4, 80, 'tcp', '198.18.2.9:8080')}/quiesce`));
    assertOk(await s.call('DELETE', daemonPath(C4, 80, 'tcp', '198.18.2.9:8080')));
    assertOk(await s.call('POST', P, { port: 9100, advisor: { type: 'http', path: '/health' }, daemons: [{ address: '198.18.2.7:9100', advisor: { timeout: 0.5 } }] }), 201);
    assertOk(await s.call('POST', '/v1/clusters', { address: '198.18.100.9', ports: [{ port: 80, daemons: [{ address: '198.18.4.1:80' }] }] }), 201);
    const config = s.instance.config;
    const p80 = config.clusters[0].ports[0];
    assert.equal(p80.daemons[0].weight, 4);
    assert.deepEqual(p80.advisor?.args, ['probe'], 'the exec advisor is still the file\'s');
    assert.equal(config.clusters[0].ports[1].scheduler, 'maglev');
    assert.deepEqual(config.clusters[0].ports[1].supervise?.env, { API_KEY: SECRET_ENV });
    // Taking a program away is allowed: it runs fewer programs.
    assertOk(await s.call('DELETE', portPath(C4, 8080)));
    assert.equal(s.instance.config.clusters[0].ports.some((p) => p.supervise), false);
  });

  it('a reload may add programs: the file is where they belong', async () => {
    writeFileSync(s.file, s.yaml.replace('          port: 8080\n', '          port: 8080\n          args: [--verbose]\n'));
    assertOk(await s.call('POST', '/v1/reload'));
    assert.deepEqual(s.instance.config.clusters[0].ports[1].supervise?.args, ['--verbose']);
  });
});

describe('exec guard: a whole new configuration (what a PUT of the config would carry) against the running one', () => {
  const running = parseConfig(EXEC_CONFIG);
  const refused = (edit: (c: ReturnType<typeof parseConfig>) => void): string | undefined => {
    const next = structuredClone(running);
    edit(next);
    try {
      checkNoNewExec(running, next);
      return undefined;
    } catch (e) {
      assert.ok(e instanceof ApiError && e.status === 403 && e.code === 'API_EXEC_FORBIDDEN', String(e));
      return e.field;
    }
  };
  type Raw = Record<string, unknown>;

  it('passes what keeps every program as the file has it, wherever the port moved in the list', () => {
    assert.equal(refused(() => {}), undefined);
    assert.equal(refused((c) => { c.clusters[0].ports[0].daemons[0].weight = 7; }), undefined);
    assert.equal(refused((c) => { c.clusters[0].ports[1].scheduler = 'rr'; }), undefined);
    assert.equal(refused((c) => { c.clusters[0].ports.reverse(); }), undefined);
    assert.equal(refused((c) => { c.clusters[0].ports[1].supervise = undefined; }), undefined, 'fewer programs pass');
    // The same block written short (defaults left out) is the same block once validated.
    const short = EXEC_CONFIG.replace('          instances: 2\n', '          instances: 2\n          args: []\n          stopTimeout: 10s\n');
    assert.notEqual(short, EXEC_CONFIG);
    assert.doesNotThrow(() => checkNoNewExec(running, parseConfig(short)));
  });

  it('refuses any change to a supervise block, keys it does not know yet included, and to an exec advisor or an override of one', () => {
    assert.equal(refused((c) => { c.clusters[0].ports[1].supervise!.instances = 3; }), 'clusters[0].ports[1].supervise');
    assert.equal(refused((c) => { c.clusters[0].ports[1].supervise!.env.LD_PRELOAD = '/tmp/x.so'; }), 'clusters[0].ports[1].supervise');
    assert.equal(refused((c) => { (c.clusters[0].ports[1].supervise as unknown as Raw).user = 'root'; }), 'clusters[0].ports[1].supervise');
    assert.equal(refused((c) => { c.clusters[0].ports[0].advisor!.command = '/bin/sh'; }), 'clusters[0].ports[0].advisor');
    assert.equal(refused((c) => { c.clusters[0].ports[0].advisor!.interval = 0.01; }), 'clusters[0].ports[0].advisor');
    assert.equal(refused((c) => { c.clusters[0].ports[0].daemons[1].advisor = { interval: 0.01 }; }), 'clusters[0].ports[0].daemons[1].advisor');
    assert.equal(refused((c) => { c.clusters[1].ports[0].advisor = { type: 'exec', command: '/bin/true', interval: 2, timeout: 1, rise: 2, fall: 3 }; }), 'clusters[1].ports[0].advisor');
    // A supervised port moved to another cluster address is a new place: more programs.
    assert.equal(refused((c) => { c.clusters[1].ports.push(c.clusters[0].ports.splice(1, 1)[0]); }), 'clusters[1].ports[1].supervise');
  });
});

// ---------------------------------------------------------------------------
// Secrets and where a save may write

describe('admin API: the token and supervise.env stay in the file', () => {
  let s: MemoryHostlb;
  beforeEach(async () => { s = await startMemoryHostlb({ config: EXEC_CONFIG }); });
  afterEach(() => s.close());

  it('GET /v1/config redacts admin.token and the values of supervise.env, as JSON and as YAML', async () => {
    const json = await s.call('GET', '/v1/config');
    const yaml = await s.call('GET', '/v1/config?format=yaml');
    for (const r of [json, yaml]) {
      assert.equal(r.status, 200);
      assert.ok(!r.text.includes(SECRET_TOKEN), 'no token in the answer');
      assert.ok(!r.text.includes(SECRET_ENV), 'no env value in the answer');
    }
    const shown = json.body as { admin: { token: string }; clusters: { ports: { supervise?: { env: Record<string, string> } }[] }[] };
    assert.equal(shown.admin.token, '(redacted)');
    assert.deepEqual(shown.clusters[0].ports[1].supervise?.env, { API_KEY: '(redacted)' }, 'names stay, values go');
    assert.deepEqual(parseYaml(yaml.text), shown);
    // The running configuration itself still has them.
    assert.equal(s.instance.config.admin.token, SECRET_TOKEN);
  });

  it('a save to the running file keeps the token and env as the file has them; a save elsewhere holds neither', async () => {
    assertOk(await s.call('PUT', daemonPath(C4, 80, 'tcp', '198.18.2.2:8080'), { weight: 3 }));
    assertOk(await s.call('POST', '/v1/config/save'));
    assert.deepEqual(loadConfig(s.file), s.instance.config, 'the file has the change, and the token and env it had');
    assert.ok(readFileSync(s.file, 'utf8').includes(SECRET_TOKEN));

    const other = join(s.state, 'copy.yaml');
    assertOk(await s.call('POST', '/v1/config/save', { path: other }));
    const text = readFileSync(other, 'utf8');
    assert.ok(!text.includes(SECRET_TOKEN), 'no token copied into another file');
    assert.ok(!text.includes(SECRET_ENV), 'no env copied into another file');
    const copy = loadConfig(other);
    assert.equal(copy.admin.token, undefined);
    assert.deepEqual(copy.clusters[0].ports[1].supervise?.env, {});
    assert.equal(copy.clusters[0].ports[0].daemons[1].weight, 3);
  });
});

describe('admin API: config save writes only its own files, never through a link', () => {
  let s: MemoryHostlb;
  let outside: string;
  beforeEach(async () => {
    s = await startMemoryHostlb();
    outside = mkdtempSync(join(tmpdir(), 'hostlb-outside-'));
  });
  afterEach(async () => {
    await s.close();
    rmSync(outside, { recursive: true, force: true });
  });

  it('a path outside the running file and stateDir: 403 SAVE_PATH_FORBIDDEN, nothing written', async () => {
    mkdirSync(join(s.state, 'sub'));
    symlinkSync(outside, join(s.state, 'escape'));
    for (const path of [
      join(outside, 'hostlb.yaml'),
      join(s.dir, 'beside-the-file.yaml'),
      `${s.state}/sub/../../${outside.split('/').pop()}/dotdot.yaml`,
      join(s.state, 'escape', 'through-a-dir-link.yaml'),
      `${s.state}-sibling/x.yaml`,
    ]) {
      const e = assertError(await s.call('POST', '/v1/config/save', { path }), 403, 'SAVE_PATH_FORBIDDEN', 'path');
      assert.ok(e.message.includes(path) && e.message.includes(s.state), e.message);
    }
    assert.deepEqual(readdirSync(outside), [], 'nothing written outside');
    assert.deepEqual(readdirSync(s.dir).sort(), ['admin.sock', 'hostlb.yaml']);
  });

  it('a target that is a symbolic link: 409 SAVE_TARGET_SYMLINK; neither the link nor what it points at changes', async () => {
    const victim = join(outside, 'victim');
    writeFileSync(victim, 'precious\n');
    const link = join(s.state, 'link.yaml');
    symlinkSync(victim, link);
    assertError(await s.call('POST', '/v1/config/save', { path: link }), 409, 'SAVE_TARGET_SYMLINK', 'path');
    assert.equal(readFileSync(victim, 'utf8'), 'precious\n');
    assert.ok(lstatSync(link).isSymbolicLink());
    // The running file itself replaced by a link: refused the same way.
    const fileText = readFileSync(s.file, 'utf8');
    rmSync(s.file);
    writeFileSync(join(outside, 'real.yaml'), fileText);
    symlinkSync(join(outside, 'real.yaml'), s.file);
    assertError(await s.call('POST', '/v1/config/save'), 409, 'SAVE_TARGET_SYMLINK', 'path');
    assert.equal(readFileSync(join(outside, 'real.yaml'), 'utf8'), fileText);
    assert.deepEqual(stateFiles(s), ['link.yaml'], 'no temporary file left behind');
  });

  it('the saved file is mode 0600 even over a file that was 0644, and no temporary file is left', async () => {
    const target = join(s.state, 'saved.yaml');
    writeFileSync(target, 'old: true\n', { mode: 0o644 });
    chmodSync(target, 0o644);
    assertOk(await s.call('POST', '/v1/config/save', { path: target }));
    assert.equal(statSync(target).mode & 0o777, 0o600);
    assert.deepEqual(loadConfig(target), s.instance.config);
    assertOk(await s.call('POST', '/v1/config/save'));
    assert.equal(statSync(s.file).mode & 0o777, 0o600);
    assert.deepEqual(stateFiles(s), ['saved.yaml']);
    assert.deepEqual(readdirSync(s.dir).sort(), ['admin.sock', 'hostlb.yaml']);
  });
});

// ---------------------------------------------------------------------------
// Limits

/** Opens an event stream on a raw connection; resolves once the answer's head has arrived, with the text so far. */
function openStream(socketPath: string): Promise<{ socket: Socket; head: string }> {
  return new Promise((resolve, reject) => {
    const socket = connect(socketPath);
    let text = '';
    const onData = (c: Buffer): void => {
      text += c.toString('latin1');
      if (text.includes('\r\n\r\n')) {
        socket.off('data', onData);
        resolve({ socket, head: text });
      }
    };
    socket.on('data', onData);
    socket.once('error', reject);
    socket.write('GET /v1/events HTTP/1.1\r\nHost: hostlb\r\nAccept: text/event-stream\r\n\r\n');
  });
}

/** Turns of the event loop until `done()` (a condition, not a time: the test's own timeout bounds it). */
async function until(done: () => boolean): Promise<void> {
  while (!done()) await new Promise((resolve) => setTimeout(resolve, 5));
}

describe('admin API: limits on clients', () => {
  it('both listeners cap connections and the time to send a request', async () => {
    const s = await startMemoryHostlb({ tcp: true });
    try {
      assert.equal(s.admin.listeners.length, 2);
      for (const l of s.admin.listeners) {
        assert.ok(l.maxConnections > 0 && l.maxConnections <= 1024, `maxConnections ${l.maxConnections}`);
        assert.ok(l.headersTimeout > 0 && l.headersTimeout <= 30_000, `headersTimeout ${l.headersTimeout}`);
        assert.ok(l.requestTimeout > 0 && l.requestTimeout <= 60_000, `requestTimeout ${l.requestTimeout}`);
      }
    } finally {
      await s.close();
    }
  });

  it('a connection over maxConnections is closed unanswered; a half-sent request is cut off; then it answers again', async () => {
    const s = await startMemoryHostlb({ limits: { maxConnections: 2, headersTimeoutMs: 300, requestTimeoutMs: 300, checkIntervalMs: 50 } });
    try {
      const closed = (c: Socket): Promise<string> => new Promise((resolve) => {
        let text = '';
        c.on('data', (b: Buffer) => { text += b.toString(); });
        c.on('error', () => {});
        c.on('close', () => resolve(text));
      });
      const held = [connect(s.socket), connect(s.socket)];
      const heldClosed = held.map(closed);
      for (const c of held) c.write('GET /v1/status HTTP/1.1\r\nHost: hostlb\r\n'); // never finished
      await Promise.all(held.map((c) => new Promise((resolve) => (c.connecting ? c.once('connect', resolve) : resolve(undefined)))));
      const count = (): Promise<number> => new Promise((resolve, reject) => s.admin.listeners[0].getConnections((err, n) => (err ? reject(err) : resolve(n))));
      while (await count() < 2) await new Promise((resolve) => setTimeout(resolve, 5));
      const third = connect(s.socket);
      third.write('GET /v1/status HTTP/1.1\r\nHost: hostlb\r\n\r\n');
      assert.equal(await closed(third), '', 'the connection over the cap got no answer');
      // The half-sent requests are cut off (408) rather than held for ever.
      for (const text of await Promise.all(heldClosed)) assert.ok(text === '' || text.startsWith('HTTP/1.1 408'), text);
      assertOk(await s.call('GET', '/v1/status'));
    } finally {
      await s.close();
    }
  });

  it('event-stream clients over the cap get 503 TOO_MANY_EVENT_CLIENTS as JSON; a freed place is taken again', async () => {
    const s = await startMemoryHostlb({ limits: { maxEventClients: 2 } });
    const open: Socket[] = [];
    try {
      for (let i = 0; i < 2; i++) {
        const { socket, head } = await openStream(s.socket);
        open.push(socket);
        assert.match(head, /^HTTP\/1\.1 200 /);
        assert.match(head, /content-type: text\/event-stream/i);
      }
      assert.equal(s.admin.eventStreams.clients, 2);
      const r = await apiStream(s);
      const e = assertError(r, 503, 'TOO_MANY_EVENT_CLIENTS');
      assert.match(e.message, /2 clients/);
      assert.equal(s.admin.eventStreams.refused, 1);
      open.shift()!.destroy();
      await until(() => s.admin.eventStreams.clients === 1);
      const again = await openStream(s.socket);
      open.push(again.socket);
      assert.match(again.head, /^HTTP\/1\.1 200 /);
      assert.equal(s.admin.eventStreams.clients, 2);
    } finally {
      for (const c of open) c.destroy();
      await s.close();
    }
  });

  it('a client that does not read its event stream is dropped once its unsent bytes pass the limit; others keep theirs', async () => {
    const LIMIT = 64 * 1024;
    const s = await startMemoryHostlb({ limits: { maxEventBuffer: LIMIT } });
    try {
      const slow = await openStream(s.socket);
      slow.socket.pause(); // reads nothing more: the kernel's buffers fill, then hostlb's
      const fast = await openStream(s.socket);
      let fastBytes = 0;
      fast.socket.on('data', (c: Buffer) => { fastBytes += c.length; });
      const events = s.instance.health.events;
      const reason = 'x'.repeat(1000);
      let sent = 0;
      let sentBytes = 0;
      // Until the slow client is dropped; 256 MB of events at most (a server that buffers without bound fails here).
      for (let round = 0; round < 16_384 && s.admin.eventStreams.dropped === 0; round++) {
        for (let i = 0; i < 16; i++) {
          const e = events.emitEvent({ type: 'weight_changed', port: `${C4}:80/tcp`, daemon: '198.18.2.1:8080', reason });
          sentBytes += Buffer.byteLength(`id: ${e.id}\nevent: ${e.type}\ndata: ${JSON.stringify(e)}\n\n`);
          sent++;
        }
        await new Promise((resolve) => setImmediate(resolve));
      }
      assert.equal(s.admin.eventStreams.dropped, 1, 'the slow client was dropped');
      const oneEvent = sentBytes / sent;
      assert.ok(s.admin.eventStreams.maxBuffered <= LIMIT + 2 * oneEvent, `at most the limit waited for one client: ${s.admin.eventStreams.maxBuffered}`);
      await until(() => s.admin.eventStreams.clients === 1);
      // The reader kept up and got every event.
      await until(() => fastBytes >= sentBytes);
      assert.equal(s.admin.eventStreams.clients, 1);
      fast.socket.destroy();
      slow.socket.destroy();
    } finally {
      await s.close();
    }
  });

  it('an error on a listener (EMFILE on accept) is logged, and both listeners still answer', async () => {
    const lines: string[] = [];
    const logger = pino({ level: 'error' }, new Writable({ write(chunk: Buffer, _e, done) { lines.push(chunk.toString()); done(); } }));
    const s = await startMemoryHostlb({ tcp: true, logger });
    try {
      for (const l of s.admin.listeners) {
        l.emit('error', Object.assign(new Error('accept EMFILE'), { code: 'EMFILE', errno: -24, syscall: 'accept' }));
      }
      await until(() => lines.length === 2);
      for (const line of lines) {
        const entry = JSON.parse(line) as { code: string; event: string };
        assert.equal(entry.code, 'EMFILE');
        assert.equal(entry.event, 'admin_listener_error');
      }
      assertOk(await s.call('GET', '/v1/status'));
      assertOk(await s.callTcp('GET', '/v1/status', undefined, TEST_TOKEN));
    } finally {
      await s.close();
    }
  });
});

/** GET /v1/events with Accept: text/event-stream, read to the end (for an answer that is not a stream). */
function apiStream(s: MemoryHostlb): Promise<ApiAnswer> {
  return new Promise((resolve, reject) => {
    const c = connect(s.socket);
    let text = '';
    c.on('data', (b: Buffer) => { text += b.toString(); });
    c.on('error', reject);
    c.on('end', () => {
      const [head, body] = text.split('\r\n\r\n');
      const status = Number(/^HTTP\/1\.1 (\d+)/.exec(head)?.[1]);
      const headers = Object.fromEntries(head.split('\r\n').slice(1).map((l) => [l.slice(0, l.indexOf(':')).toLowerCase(), l.slice(l.indexOf(':') + 1).trim()]));
      resolve({ status, headers, text: body, body: JSON.parse(body) as unknown });
    });
    c.write('GET /v1/events HTTP/1.1\r\nHost: hostlb\r\nAccept: text/event-stream\r\nConnection: close\r\n\r\n');
  });
}

// ---------------------------------------------------------------------------
// Connection listing cost

describe('admin API: GET /v1/connections builds only the records of the page', () => {
  let s: MemoryHostlb;
  before(async () => {
    s = await startMemoryHostlb({ traffic: true });
    for (let i = 0; i < 200; i++) await s.traffic.tcpFlow({ client: '198.18.0.50', clientPort: 30000 + i, cluster: C4, port: 80 });
  });
  after(() => s.close());

  const cases: [string, number, number, number][] = [
    // query, total, records answered, at most records built
    ['?limit=2', 206, 2, 2],
    ['?offset=150&limit=2', 206, 2, 2],
    ['?offset=205&limit=10', 206, 1, 1],
    ['?limit=0', 206, 0, 0],
    ['?client=198.18.0.50&limit=3', 200, 3, 3],
    [`?cluster=${C4}&port=80&state=ESTABLISHED&protocol=tcp&limit=1`, 203, 1, 1],
    ['?client=198.18.0.99', 0, 0, 0],
  ];
  for (const [query, total, answered, built] of cases) {
    it(`${query}: total ${total}, ${answered} answered, at most ${built} built`, async () => {
      const before = listingCounters.built;
      const r = await connections(s, query);
      const cost = listingCounters.built - before;
      assert.equal(r.total, total);
      assert.equal(r.connections.length, answered);
      assert.ok(cost <= built, `${cost} records built for ${query}`);
      assert.equal(cost, answered);
    });
  }
});

describe('admin API: GET /v1/connections on the netfilter plane hands it the filter', () => {
  // What NetfilterPlane.connections(filter) does with a conntrack dump (root-only; covered by the
  // integration tests): offer each entry to a ConnectionPage's admit(), build only what it admits.
  // The API sees this plane instead of the instance's TUN plane.
  const ENTRIES = 500;
  let built = 0;
  const netfilterConnections = (filter: ConnectionFilter): ConnectionPage => {
    const page = new ConnectionPage(filter);
    for (let i = 0; i < ENTRIES; i++) {
      const v6 = i % 5 === 0;
      const cluster = v6 ? new Uint8Array([0x20, 0x01, 0x0d, 0xb8, ...new Array<number>(10).fill(0), 0x01, 0x00]) : new Uint8Array([198, 18, 100, 1, ...new Array<number>(12).fill(0)]);
      const client = v6 ? new Uint8Array([0x20, 0x01, 0x0d, 0xb8, 0, 1, ...new Array<number>(9).fill(0), i % 250]) : new Uint8Array([198, 18, 0, i % 250, ...new Array<number>(12).fill(0)]);
      const state = i % 2 === 0 ? 'ESTABLISHED' : 'TIME_WAIT';
      const daemon = i % 3 === 0 ? '198.18.2.1:8080' : '198.18.2.2:8080';
      if (!page.admit(6, state, daemon, v6 ? 6 : 4, cluster, v6 ? 443 : 80, client)) continue;
      built++;
      page.connections.push({
        id: i, protocol: 'tcp', client: v6 ? `[2001:db8:1::${(i % 250).toString(16)}]:${1000 + i}` : `198.18.0.${i % 250}:${1000 + i}`,
        cluster: v6 ? '[2001:db8::100]:443' : '198.18.100.1:80', daemon, state, reset: false,
        created: 0, lastSeen: 0, expires: 0, packetsIn: 0, bytesIn: 0, packetsOut: 0, bytesOut: 0,
      });
    }
    return page;
  };
  /** The instance's plane with its connections() replaced. */
  const asNetfilter = (real: DataPlane): DataPlane => new Proxy(real, {
    get: (target, key, receiver) => (key === 'connections' ? netfilterConnections : Reflect.get(target, key, receiver) as unknown),
  });
  let s: MemoryHostlb;
  before(async () => { s = await startMemoryHostlb({ plane: asNetfilter }); });
  after(() => s.close());

  const cases: [string, number, number][] = [
    // query, total, answered (= built)
    ['?limit=2', 500, 2],
    ['?offset=498&limit=5', 500, 2],
    ['?state=ESTABLISHED&limit=3', 250, 3],
    [`?cluster=${enc(C6)}&limit=1000`, 100, 100],
    ['?cluster=198.18.100.1&port=80&client=198.18.0.7', 2, 2],
    ['?daemon=198.18.2.1:8080&state=time_wait&limit=1', 83, 1],
    ['?port=443&client=198.18.0.5', 0, 0],
  ];
  for (const [query, total, answered] of cases) {
    it(`${query}: total ${total}, ${answered} built`, async () => {
      built = 0;
      const r = await connections(s, query);
      assert.equal(r.total, total);
      assert.equal(r.connections.length, answered);
      assert.equal(built, answered, `records built for ${query}`);
    });
  }
});

describe('admin API: stop', () => {
  it('POST /v1/stop answers 202, then calls onStopRequested once, after the answer', async () => {
    let stopped!: () => void;
    const stopCalled = new Promise<void>((resolve) => { stopped = resolve; });
    // What hostlb does on stop: close the listeners, cutting open connections. The
    // answer must already be out, or the client would see a reset instead of 202.
    const s: MemoryHostlb = await startMemoryHostlb({ onStopRequested: () => { s.admin.close(); stopped(); } });
    try {
      assertOk(await s.call('POST', '/v1/reload'));
      assertOk(await s.call('GET', '/v1/status'));
      assert.equal(s.stops, 0, 'only /v1/stop stops');
      const r = await s.call('POST', '/v1/stop');
      assert.deepEqual(assertOk(r, 202), { ok: true, stopping: true });
      await stopCalled;
      assert.equal(s.stops, 1);
    } finally {
      await s.close();
    }
  });
});

// ---------------------------------------------------------------------------
// Metrics

interface Sample { name: string; labels: Record<string, string>; value: number }

/** The Prometheus text format (0.0.4), strictly enough to catch a malformed line. */
function parsePrometheus(text: string): { help: Map<string, string>; type: Map<string, string>; samples: Sample[] } {
  const help = new Map<string, string>();
  const type = new Map<string, string>();
  const samples: Sample[] = [];
  const NAME = '[a-zA-Z_:][a-zA-Z0-9_:]*';
  for (const line of text.split('\n')) {
    if (line.trim() === '') continue;
    let m = new RegExp(`^# (HELP|TYPE) (${NAME}) (.*)$`).exec(line);
    if (m) {
      const target = m[1] === 'HELP' ? help : type;
      assert.ok(!target.has(m[2]), `${m[1]} of ${m[2]} given twice`);
      if (m[1] === 'TYPE') assert.match(m[3], /^(counter|gauge|histogram|summary|untyped)$/, line);
      target.set(m[2], m[3]);
      continue;
    }
    assert.ok(!line.startsWith('#') || /^# /.test(line), line);
    if (line.startsWith('#')) continue;
    m = new RegExp(`^(${NAME})(?:\\{(.*)\\})? (\\S+)(?: -?\\d+)?$`).exec(line);
    assert.ok(m, `not a sample line: ${line}`);
    const labels: Record<string, string> = {};
    if (m[2]) {
      const rest = m[2].replace(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)",?/g, (_all, k: string, v: string) => {
        assert.ok(!(k in labels), `label ${k} twice: ${line}`);
        labels[k] = v.replace(/\\(.)/g, (_x, c: string) => (c === 'n' ? '\n' : c));
        return '';
      });
      assert.equal(rest, '', `bad labels: ${line}`);
    }
    // Prometheus reads values with Go's ParseFloat, which ignores case (prom-client writes "Nan").
    const isNan = /^nan$/i.test(m[3]);
    const value = m[3] === '+Inf' ? Infinity : m[3] === '-Inf' ? -Infinity : isNan ? NaN : Number(m[3]);
    assert.ok(isNan || (!Number.isNaN(value) && /^[-+]?(\d|\.\d|Inf)/.test(m[3])), `bad value: ${line}`);
    samples.push({ name: m[1], labels, value });
  }
  return { help, type, samples };
}

/** The metric family a sample belongs to (histogram and summary samples carry a suffix). */
function familyOf(name: string, type: Map<string, string>): string | undefined {
  if (type.has(name)) return name;
  const m = /^(.*)_(bucket|sum|count)$/.exec(name);
  if (m && (type.get(m[1]) === 'histogram' || type.get(m[1]) === 'summary')) return m[1];
  return undefined;
}

describe('admin API: /metrics', () => {
  let s: MemoryHostlb;
  before(async () => { s = await startMemoryHostlb({ traffic: true }); });
  after(() => s.close());

  async function scrape(): Promise<ReturnType<typeof parsePrometheus>> {
    const r = await s.call('GET', '/metrics');
    assert.equal(r.status, 200);
    assert.match(String(r.headers['content-type']), /^text\/plain; version=0\.0\.4/);
    return parsePrometheus(r.text);
  }

  function value(samples: Sample[], name: string, labels: Record<string, string>): number | undefined {
    const found = samples.filter((x) => x.name === name && Object.entries(labels).every(([k, v]) => x.labels[k] === v));
    assert.ok(found.length <= 1, `${name} ${JSON.stringify(labels)} matches ${found.length} samples`);
    return found[0]?.value;
  }

  it('parses as Prometheus text: every sample has a TYPE and HELP, counters end in _total, names start with hostlb_', async () => {
    const { help, type, samples } = await scrape();
    assert.ok(samples.length > 50);
    const series = new Set<string>();
    for (const x of samples) {
      assert.ok(x.name.startsWith('hostlb_'), x.name);
      const family = familyOf(x.name, type);
      assert.ok(family, `${x.name} has a TYPE line`);
      assert.ok(help.has(family), `${family} has a HELP line`);
      const key = `${x.name}${JSON.stringify(Object.entries(x.labels).sort())}`;
      assert.ok(!series.has(key), `one sample per series: ${key}`);
      series.add(key);
      if (type.get(family) === 'counter') assert.ok(x.value >= 0, `${x.name} is not negative`);
    }
    for (const [name, t] of type) {
      assert.ok(name.startsWith('hostlb_'), name);
      if (t === 'counter') assert.ok(name.endsWith('_total'), `counter ${name} ends in _total`);
      // hostlb's own metrics: _total means counter (prom-client's process gauges are its business).
      if (!name.startsWith('hostlb_process_') && !name.startsWith('hostlb_nodejs_') && name.endsWith('_total')) assert.equal(t, 'counter', name);
    }
    for (const name of [
      'hostlb_daemon_active_flows', 'hostlb_daemon_new_flows_total', 'hostlb_daemon_packets_total', 'hostlb_daemon_bytes_total',
      'hostlb_daemon_weight', 'hostlb_port_scheduler_decisions_total', 'hostlb_port_drops_total', 'hostlb_drops_total',
      'hostlb_table_records', 'hostlb_table_capacity', 'hostlb_table_evictions_total', 'hostlb_link_packets_total',
    ]) assert.ok(type.has(name), `${name} is exported`);
  });

  it('its counters match the packets pushed through the instance: new flows and packets per daemon', async () => {
    const { samples } = await scrape();
    const ports: Record<string, { cluster: string; port: string; protocol: string }> = {
      '198.18.2.1:8080': { cluster: C4, port: '80', protocol: 'tcp' },
      '198.18.2.2:8080': { cluster: C4, port: '80', protocol: 'tcp' },
      '198.18.2.3:5353': { cluster: C4, port: '53', protocol: 'udp' },
      '[2001:db8:2::1]:8443': { cluster: C6, port: '443', protocol: 'tcp' },
    };
    assert.equal(s.traffic.expected.daemons.size, 4);
    for (const [daemon, want] of s.traffic.expected.daemons) {
      const labels = { ...ports[daemon], daemon };
      assert.equal(value(samples, 'hostlb_daemon_new_flows_total', labels), want.newFlows, daemon);
      assert.equal(value(samples, 'hostlb_daemon_active_flows', labels), want.newFlows, daemon);
      assert.equal(value(samples, 'hostlb_daemon_packets_total', { ...labels, direction: 'in' }), want.packetsIn, daemon);
      assert.equal(value(samples, 'hostlb_daemon_packets_total', { ...labels, direction: 'out' }), want.packetsOut, daemon);
      assert.equal(value(samples, 'hostlb_daemon_bytes_total', { ...labels, direction: 'in' }), want.bytesIn, daemon);
      assert.equal(value(samples, 'hostlb_daemon_bytes_total', { ...labels, direction: 'out' }), want.bytesOut, daemon);
      assert.equal(value(samples, 'hostlb_daemon_weight', labels), 1, daemon);
    }
    assert.equal(value(samples, 'hostlb_port_scheduler_decisions_total', { cluster: C4, port: '80', protocol: 'tcp', scheduler: 'rr', result: 'daemon' }), 4);
    assert.equal(value(samples, 'hostlb_port_scheduler_decisions_total', { cluster: C4, port: '80', protocol: 'tcp', scheduler: 'rr', result: 'none' }), 0);
    assert.equal(value(samples, 'hostlb_port_drops_total', { cluster: C4, port: '80', protocol: 'tcp', reason: 'no_record' }), 1);
    assert.equal(value(samples, 'hostlb_drops_total', { reason: 'no_record' }), 1);
    assert.equal(samples.filter((x) => x.name === 'hostlb_drops_total').reduce((a, x) => a + x.value, 0), s.traffic.expected.dropped);
    assert.equal(value(samples, 'hostlb_table_records', {}), 6);
    assert.equal(value(samples, 'hostlb_table_capacity', {}), 1024);
    assert.equal(value(samples, 'hostlb_table_evictions_total', {}), 0);
    assert.equal(value(samples, 'hostlb_link_packets_total', { direction: 'read' }), s.traffic.expected.link.read);
    assert.equal(value(samples, 'hostlb_link_packets_total', { direction: 'written' }), s.traffic.expected.link.written);

    // More traffic shows in the next scrape: counters only go up.
    await s.flows!.v6.data(50);
    await s.traffic.tcpFlow({ client: '2001:db8:1::11', clientPort: 40500, cluster: C6, port: 443 });
    const next = (await scrape()).samples;
    const v6 = { cluster: C6, port: '443', protocol: 'tcp', daemon: '[2001:db8:2::1]:8443' };
    assert.equal(value(next, 'hostlb_daemon_new_flows_total', v6), 2);
    assert.equal(value(next, 'hostlb_daemon_packets_total', { ...v6, direction: 'in' }), s.traffic.expected.daemons.get(v6.daemon)!.packetsIn);
    assert.equal(value(next, 'hostlb_daemon_packets_total', { ...v6, direction: 'out' }), s.traffic.expected.daemons.get(v6.daemon)!.packetsOut);
  });

  it('a removed daemon that still holds flows keeps being reported, without a weight', async () => {
    assertOk(await s.call('DELETE', daemonPath(C4, 53, 'udp', '198.18.2.3:5353')));
    const { samples } = await scrape();
    const labels = { cluster: C4, port: '53', protocol: 'udp', daemon: '198.18.2.3:5353' };
    assert.equal(value(samples, 'hostlb_daemon_active_flows', labels), 1);
    assert.equal(value(samples, 'hostlb_daemon_new_flows_total', labels), 1);
    assert.equal(value(samples, 'hostlb_daemon_weight', labels), undefined);
  });

  it('a daemon removed while it holds a flow and added back reports that flow', async () => {
    const other = await startMemoryHostlb({ traffic: true });
    try {
      const d = '198.18.2.3:5353';
      assertOk(await other.call('DELETE', daemonPath(C4, 53, 'udp', d)));
      assertOk(await other.call('POST', `${portPath(C4, 53, 'udp')}/daemons`, { address: d }), 201);
      const { samples } = parsePrometheus((await other.call('GET', '/metrics')).text);
      assert.equal(value(samples, 'hostlb_daemon_active_flows', { cluster: C4, port: '53', protocol: 'udp', daemon: d }), 1);
      const counters = await getJson(other, '/v1/counters') as { daemons: Record<string, { activeFlows: number }> };
      assert.equal(counters.daemons[`${C4}:53/udp ${d}`].activeFlows, 1);
    } finally {
      await other.close();
    }
  });
});

// ---------------------------------------------------------------------------
// Who may connect

describe('admin API: TCP listener with a bearer token', () => {
  let s: MemoryHostlb;
  before(async () => { s = await startMemoryHostlb({ tcp: true, traffic: true }); });
  after(() => s.close());

  it('without the token, or with a wrong one, every request answers 401 UNAUTHORIZED and changes nothing', async () => {
    const before = await snapshot(s);
    const requests: [string, string, unknown?][] = [
      ['GET', '/v1/status'], ['GET', '/v1/config'], ['GET', '/metrics'], ['GET', '/v1/nothing'],
      ['POST', '/v1/clusters', { address: '198.18.100.9', ports: [{ port: 80 }] }],
      ['DELETE', `/v1/clusters/${enc(C6)}`], ['POST', '/v1/reload'], ['POST', '/v1/stop'],
      ['POST', '/v1/config/save', { path: join(s.dir, 'stolen.yaml') }],
    ];
    for (const token of [undefined, 'wrong-token-0123456789abcdef', `${TEST_TOKEN}x`, TEST_TOKEN.slice(0, -1), '']) {
      for (const [method, path, body] of requests) {
        const r = await s.callTcp(method, path, body, token);
        assertError(r, 401, 'UNAUTHORIZED');
        assert.equal(r.headers['www-authenticate'], 'Bearer');
      }
    }
    assert.equal(s.stops, 0);
    assert.deepEqual(s.applied, []);
    assert.throws(() => statSync(join(s.dir, 'stolen.yaml')), /ENOENT/);
    assert.deepEqual(await snapshot(s), before);
  });

  it('with the token it answers as the unix socket does', async () => {
    const viaTcp = await s.callTcp('GET', '/v1/config', undefined, TEST_TOKEN);
    assert.equal(viaTcp.status, 200);
    assert.deepEqual(viaTcp.body, await getJson(s, '/v1/config'));
    const metrics = await s.callTcp('GET', '/metrics', undefined, TEST_TOKEN);
    assert.equal(metrics.status, 200);
    assert.ok(metrics.text.includes('hostlb_daemon_new_flows_total'));
    assertOk(await s.callTcp('POST', '/v1/clusters', { address: '198.18.100.9', ports: [{ port: 80 }] }, TEST_TOKEN), 201);
    assert.equal(((await getJson(s, '/v1/config')).clusters as unknown[]).length, 3);
    assertError(await s.callTcp('GET', '/v1/nothing', undefined, TEST_TOKEN), 404, 'NO_SUCH_ENDPOINT');
  });
});

describe('admin API: the unix socket admits only its owner', () => {
  let s: MemoryHostlb;
  before(async () => { s = await startMemoryHostlb(); });
  after(() => s.close());

  const CONNECT = `const s = require('net').connect(process.argv[1]);
s.on('connect', () => { console.log('CONNECTED'); s.destroy(); });
s.on('error', (e) => console.log(e.code));`;

  it('a user other than root (nobody) gets EACCES', { skip: isRoot ? false : 'needs root: runs a child as nobody (uid 65534)' }, async () => {
    assert.equal(await runAs(65534, CONNECT, [s.socket]), 'EACCES');
    // The test can fail: with the socket opened up, the same child connects, so the
    // directory is not what kept it out.
    chmodSync(s.socket, 0o666);
    try {
      assert.equal(await runAs(65534, CONNECT, [s.socket]), 'CONNECTED');
    } finally {
      chmodSync(s.socket, 0o600);
    }
    assert.equal(await runAs(65534, CONNECT, [s.socket]), 'EACCES');
  });
});
