// The front-tier agent: the agent-check line for each state (pure), the
// keepalived exit codes, which port a shared listener's agent-send names, and
// real listeners — one port answered at once, a shared one by name or for its
// weakest port — then a real instance over a MemoryLink: the weight follows the
// daemons' capacity, `port drain` says drain, stopping says maint.

import assert from 'node:assert/strict';
import { connect } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { pino } from 'pino';
import { agentAnswer, healthyPercent, miscCheckExitCode } from '../../src/control/agent/agent-line.js';
import { FrontTierAgent, namedPort, type AgentPort } from '../../src/control/agent/agent-server.js';
import { validateConfig } from '../../src/control/config-file.js';
import { freePort, startMemoryHostlb, TEST_CONFIG, type MemoryHostlb } from '../support/memory-hostlb.js';

const FULL = { configured: [1, 1, 1], effective: [100, 100, 100] };

/** Connects, optionally sends `send`, and reads the one line the agent answers. */
function ask(port: number, send?: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const c = connect(port, '127.0.0.1');
    let text = '';
    c.setEncoding('utf8').on('data', (d: string) => { text += d; }).on('end', () => resolve(text)).on('error', reject);
    if (send !== undefined) c.write(send);
  });
}

describe('agent-check lines', () => {
  it('up with the share of capacity that takes new connections: one of three down is 67%', () => {
    assert.equal(agentAnswer({ capacity: FULL, draining: false, stopping: false }).line, 'up ready 100%');
    const one = agentAnswer({ capacity: { configured: [1, 1, 1], effective: [100, 100, 0] }, draining: false, stopping: false });
    assert.deepEqual(one, { state: 'up', weightPercent: 67, line: 'up ready 67%' });
    assert.equal(healthyPercent({ configured: [2, 1], effective: [120, 0] }), 40, 'weights count: 120 of 300');
    assert.equal(healthyPercent({ configured: [100], effective: [1] }), 1, 'a sliver of capacity is still up');
    assert.equal(healthyPercent({ configured: [1, 1], effective: [300, 300] }), 100, 'never past 100');
  });

  it('drain, maint, down — each a complete line, down last because its description runs to the end', () => {
    assert.equal(agentAnswer({ capacity: FULL, draining: true, stopping: false, maxconn: 500 }).line, 'up drain 100% maxconn:500');
    assert.equal(agentAnswer({ capacity: FULL, draining: true, stopping: true }).line, 'up maint 100%');
    const down = agentAnswer({ capacity: { configured: [1, 1], effective: [0, 0] }, draining: false, stopping: false });
    assert.deepEqual(down, { state: 'down', weightPercent: 0, line: 'ready 0% down#no daemon takes new connections' });
    assert.equal(agentAnswer({ capacity: { configured: [], effective: [] }, draining: false, stopping: false }).state, 'down', 'a port without daemons');
  });

  it('keepalived MISC_CHECK exit codes: 2 + weight when up, 2 (weight 0) when draining, 1 when down or stopping', () => {
    assert.equal(miscCheckExitCode(agentAnswer({ capacity: FULL, draining: false, stopping: false })), 102);
    assert.equal(miscCheckExitCode(agentAnswer({ capacity: FULL, draining: true, stopping: false })), 2);
    assert.equal(miscCheckExitCode(agentAnswer({ capacity: FULL, draining: false, stopping: true })), 1);
    assert.equal(miscCheckExitCode(agentAnswer({ capacity: { configured: [1], effective: [0] }, draining: false, stopping: false })), 1);
  });

  it('agent-send names a port by its full name, port/protocol, or a number only one protocol has', () => {
    const ports: AgentPort[] = [
      { name: '198.18.100.1:80/tcp', port: 80, protocol: 'tcp' },
      { name: '198.18.100.1:53/tcp', port: 53, protocol: 'tcp' },
      { name: '198.18.100.1:53/udp', port: 53, protocol: 'udp' },
    ];
    assert.equal(namedPort(ports, '198.18.100.1:53/udp\n')?.name, '198.18.100.1:53/udp');
    assert.equal(namedPort(ports, '80/tcp')?.name, '198.18.100.1:80/tcp');
    assert.equal(namedPort(ports, '80')?.name, '198.18.100.1:80/tcp');
    assert.equal(namedPort(ports, '53'), undefined, 'two protocols have 53');
    assert.equal(namedPort(ports, 'backend-a'), undefined);
  });
});

describe('agent listeners', () => {
  const capacities = new Map([['a', FULL], ['b', { configured: [1, 1], effective: [100, 0] }]]);
  const agent = new FrontTierAgent((name) => capacities.get(name), pino({ level: 'silent' }));
  let one = 0;
  let shared = 0;
  before(async () => {
    [one, shared] = [await freePort(), await freePort()];
    await agent.sync([
      { address: '127.0.0.1', port: one, ports: [{ name: 'a', port: 80, protocol: 'tcp' }] },
      { address: '127.0.0.1', port: shared, ports: [{ name: 'a', port: 80, protocol: 'tcp' }, { name: 'b', port: 443, protocol: 'tcp', maxconn: 9 }] },
    ]);
  });
  after(() => agent.close());

  it('one port: the line at once, then the connection closes', async () => {
    assert.equal(await ask(one), 'up ready 100%\n');
  });

  it('a shared listener: the port agent-send names; none named: the weakest', async () => {
    assert.equal(await ask(shared, '443/tcp\n'), 'up ready 50% maxconn:9\n');
    assert.equal(await ask(shared, 'a\n'), 'up ready 100%\n');
    assert.equal(await ask(shared), 'up ready 50% maxconn:9\n');
  });

  it('drain and stop change what every listener says; sync closes what is no longer wanted', async () => {
    agent.setDrained('a', true);
    assert.equal(await ask(one), 'up drain 100%\n');
    agent.setDrained('a', false);
    await agent.sync([{ address: '127.0.0.1', port: one, ports: [{ name: 'a', port: 80, protocol: 'tcp' }] }]);
    await assert.rejects(ask(shared), { code: 'ECONNREFUSED' });
    assert.equal(agent.announceStop(), true);
    assert.equal(await ask(one), 'up maint 100%\n');
  });
});

describe('the agent of a running instance', () => {
  let s: MemoryHostlb;
  let port = 0;
  before(async () => {
    port = await freePort();
    const config = TEST_CONFIG.replace('      - port: 80\n        scheduler: rr\n', `      - port: 80\n        scheduler: rr\n        agent:\n          port: ${port}\n          address: 127.0.0.1\n          maxconn: 1000\n`);
    assert.notEqual(config, TEST_CONFIG);
    s = await startMemoryHostlb({ config });
    await s.instance.startAgents();
  });
  after(async () => { await s.close(); });

  it('answers for port 80: full, then half when health holds one of two daemons out; GET …/agent says the same', async () => {
    assert.equal(await ask(port), 'up ready 100% maxconn:1000\n');
    // As health does for a daemon that is down or restarting: its configured weight stays, its effective one is 0.
    const second = [...s.instance.balancer.tree.daemons()].find((d) => d.name === '198.18.2.2:8080')!;
    s.instance.health.monitor.setDraining(second.id, true);
    assert.equal(await ask(port), 'up ready 50% maxconn:1000\n', 'one of a configured 2 takes new connections');
    const r = await s.call('GET', '/v1/clusters/198.18.100.1/ports/80/tcp/agent');
    assert.deepEqual(r.body, { name: '198.18.100.1:80/tcp', listener: `127.0.0.1:${port}`, state: 'up', weightPercent: 50, line: 'up ready 50% maxconn:1000', drained: false });
  });

  it('port drain: the agent says drain while the daemons keep serving; undrain: ready', async () => {
    const drained = await s.call('POST', '/v1/clusters/198.18.100.1/ports/80/tcp/drain');
    assert.equal(drained.status, 200, drained.text);
    assert.equal(await ask(port), 'up drain 50% maxconn:1000\n');
    assert.equal(s.instance.health.monitor.view().find((h) => h.daemon === '198.18.2.1:8080')?.state, 'up', 'the daemons are not drained');
    await s.call('POST', '/v1/clusters/198.18.100.1/ports/80/tcp/undrain');
    assert.equal(await ask(port), 'up ready 50% maxconn:1000\n');
    assert.equal((await s.call('GET', '/v1/clusters/198.18.100.1/ports/81/tcp/agent')).status, 404);
  });

  it('an agent on a cluster port, or on a name, is refused naming the key', () => {
    const base = { clusters: [{ address: '198.18.100.1', ports: [{ port: 80, daemons: [{ address: '198.18.2.1:8080' }], agent: { port: 80 } }] }] };
    assert.throws(() => validateConfig(base), (e: Error & { path?: string }) => e.path === 'clusters[0].ports[0].agent.port' && /a TCP cluster port on 198\.18\.100\.1/.test(e.message));
    const named = { clusters: [{ address: '198.18.100.1', ports: [{ port: 80, daemons: [{ address: '198.18.2.1:8080' }], agent: { port: 9999, address: 'front.example' } }] }] };
    assert.throws(() => validateConfig(named), (e: Error & { path?: string }) => e.path === 'clusters[0].ports[0].agent.address');
  });
});
