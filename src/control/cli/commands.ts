// The CLI commands that talk to a running hostlb through its admin API.
// Each prints a table (or `--json`, the API's answer) and exits with a code
// from client.ts: 0 done, 1 rejected, 3 not running, 4 permission, 5 error.

import type { Command } from 'commander';
import type { DaemonEventType } from '../../health/events.js';
import { formatEndpoint, parseEndpoint, parseIp } from '../../wire/address.js';
import { miscCheckExitCode, type AgentState } from '../agent/agent-line.js';
import { defaultName } from '../run-config.js';
import { call, ClientError, EXIT, type ClientOptions } from './client.js';
import { formatClusters, formatConnections, formatStatus, formatWeight, table } from './format.js';

interface Global extends ClientOptions { json?: boolean }

/**
 * Every event type the health layer emits, with the words `events --help`
 * uses. `satisfies Record<DaemonEventType, ...>` makes the build fail when
 * health/events.ts gains a type this list lacks (or loses one it has).
 */
const EVENT_WORDS = {
  daemon_up: 'up',
  daemon_down: 'down',
  daemon_drained: 'drained',
  daemon_restarted: 'restarted',
  weight_changed: 'weight changed',
  daemon_started: 'started',
  daemon_exited: 'exited',
} as const satisfies Record<DaemonEventType, string>;

export const EVENT_TYPES = Object.keys(EVENT_WORDS) as DaemonEventType[];

/** "8080" or "8080/udp" → [8080, 'udp'] (tcp by default). */
export function splitPort(text: string): [string, string] {
  const [port, protocol = 'tcp'] = text.split('/');
  return [port, protocol];
}

const enc = encodeURIComponent;

function portPath(cluster: string, port: string): string {
  const [p, proto] = splitPort(port);
  return `/v1/clusters/${enc(cluster)}/ports/${enc(p)}/${enc(proto)}`;
}

async function run(cmd: Command, action: (g: Global) => Promise<void>): Promise<void> {
  const g = cmd.optsWithGlobals() as Global;
  try {
    await action(g);
  } catch (e) {
    if (e instanceof ClientError) {
      if (g.json) process.stdout.write(`${JSON.stringify(e.body ?? { error: { code: e.code, message: e.message } }, null, 1)}\n`);
      process.stderr.write(`hostlb: ${e.message}${e.code && !e.message.includes(e.code) ? ` (${e.code})` : ''}\n`);
      process.exit(e.exitCode);
    }
    throw e;
  }
}

function out(g: Global, value: unknown, human: () => string): void {
  process.stdout.write(g.json ? `${JSON.stringify(value, null, 1)}\n` : `${human()}\n`);
}

function changed(g: Global, result: unknown, what: string): void {
  const change = (result as { change?: { routesAdded: number; routesRemoved: number } }).change;
  out(g, result, () => `${what}${change && (change.routesAdded || change.routesRemoved) ? ` (host routes/rules: +${change.routesAdded} -${change.routesRemoved})` : ''}`);
}

/** POST …/restart's answer (control/rollout.ts RolloutResult). */
interface Rollout { restarted: string[]; surge: string | null; surgeSkipped?: string }

function surgeLine(r: Rollout): string {
  return r.surge !== null ? `surge instance ${r.surge} carried the load meanwhile and is stopped again` : `no surge instance (${r.surgeSkipped ?? 'none'}): one instance short during each restart`;
}

function numberOption(text: string, name: string): number {
  if (!/^\d+$/.test(text)) {
    process.stderr.write(`hostlb: ${name} must be a whole number, got "${text}"\n`);
    process.exit(EXIT.usage);
  }
  return Number(text);
}

/** GET …/agent's answer (and that of a port's drain and undrain). */
interface AgentView { name: string; listener: string | null; state: AgentState; weightPercent: number; line: string; drained: boolean }

/**
 * The protocol `conns` filters on: `--protocol`, or the one `--port 53/udp`
 * names (`/any` names both: no filter). Both, disagreeing, is a usage error.
 * hostlb checks the value itself (BAD_QUERY).
 */
function connsProtocol(port: string | undefined, protocol: string | undefined): string | undefined {
  const [, fromPort] = port?.split('/') ?? [];
  const named = fromPort === 'any' ? undefined : fromPort;
  if (named !== undefined && protocol !== undefined && named !== protocol) {
    process.stderr.write(`hostlb: --port ${port} and --protocol ${protocol} disagree; give one protocol\n`);
    process.exit(EXIT.usage);
  }
  return protocol ?? named;
}

/** "cluster:port/protocol daemon" with every address canonical, as /v1/counters names a daemon; null when a part does not parse. */
function canonicalDaemonKey(key: string): string | null {
  const [portName, daemonName] = key.split(' ');
  const slash = portName?.lastIndexOf('/') ?? -1;
  const port = slash < 0 ? null : parseEndpoint(portName.slice(0, slash));
  const daemon = daemonName === undefined ? null : parseEndpoint(daemonName);
  return port && daemon ? `${formatEndpoint(port)}/${portName.slice(slash + 1)} ${formatEndpoint(daemon)}` : null;
}

/** The /v1/counters key of the daemon the user named (cluster, port argument, address:port), canonical. */
function daemonKey(cluster: string, portText: string, address: string): string | null {
  const ip = parseIp(cluster);
  const [port, protocol] = splitPort(portText);
  const daemon = parseEndpoint(address);
  // hostlb accepted the drain, so these parse; null would match nothing (DAEMON_NOT_FOUND).
  if (!ip || !daemon || !/^\d+$/.test(port)) return null;
  return `${formatEndpoint({ address: ip, port: Number(port) })}/${protocol} ${formatEndpoint(daemon)}`;
}

export function addClientCommands(program: Command): void {
  program.command('status')
    .description('show the running hostlb: table use, clusters, ports, daemons with weights and flow counts')
    .action(async (_o, cmd: Command) => run(cmd, async (g) => {
      const status = await call(g, 'GET', '/v1/status') as Record<string, unknown>;
      const { clusters } = await call(g, 'GET', '/v1/clusters') as { clusters: Parameters<typeof formatClusters>[0] };
      out(g, { ...status, clusters }, () => formatStatus(status, clusters));
    }));

  const cluster = program.command('cluster').description('add or remove a cluster address');
  cluster.command('add <address>')
    .description('add a cluster with one port, e.g. hostlb cluster add 198.18.100.2 --port 80 --daemon 198.18.2.1:8080')
    .requiredOption('--port <port>', 'cluster port, optionally with protocol: 80 or 53/udp')
    .option('--scheduler <name>', 'rr | wrr | lc | wlc | random | p2c | sh | maglev', 'wlc')
    .option('--daemon <address...>', 'daemon address:port (repeat for several)', [])
    .action(async (address: string, o: { port: string; scheduler: string; daemon: string[] }, cmd: Command) => run(cmd, async (g) => {
      const [port, protocol] = splitPort(o.port);
      const r = await call(g, 'POST', '/v1/clusters', { address, ports: [{ port: numberOption(port, '--port'), protocol, scheduler: o.scheduler, daemons: o.daemon.map((d) => ({ address: d })) }] });
      changed(g, r, `cluster ${address} added`);
    }));
  cluster.command('remove <address>')
    .description('remove a cluster (its flows to removed daemons are kept until they end)')
    .action(async (address: string, _o, cmd: Command) => run(cmd, async (g) => {
      changed(g, await call(g, 'DELETE', `/v1/clusters/${enc(address)}`), `cluster ${address} removed`);
    }));

  const port = program.command('port').description('add, change or remove a cluster port');
  port.command('add <cluster> <port>')
    .description('add a port (80, or 53/udp, or 443/any) to a cluster')
    .option('--scheduler <name>', 'rr | wrr | lc | wlc | random | p2c | sh | maglev', 'wlc')
    .option('--daemon <address...>', 'daemon address:port (repeat for several)', [])
    .action(async (clusterAddr: string, portText: string, o: { scheduler: string; daemon: string[] }, cmd: Command) => run(cmd, async (g) => {
      const [p, protocol] = splitPort(portText);
      const r = await call(g, 'POST', `/v1/clusters/${enc(clusterAddr)}/ports`, { port: numberOption(p, 'port'), protocol, scheduler: o.scheduler, daemons: o.daemon.map((d) => ({ address: d })) });
      changed(g, r, `port ${portText} added to ${clusterAddr}`);
    }));
  port.command('set <cluster> <port>')
    .description('change a port\'s scheduler (existing flows keep their daemon)')
    .requiredOption('--scheduler <name>', 'rr | wrr | lc | wlc | random | p2c | sh | maglev')
    .action(async (clusterAddr: string, portText: string, o: { scheduler: string }, cmd: Command) => run(cmd, async (g) => {
      changed(g, await call(g, 'PUT', portPath(clusterAddr, portText), { scheduler: o.scheduler }), `port ${portText} of ${clusterAddr} now uses ${o.scheduler}`);
    }));
  port.command('remove <cluster> <port>')
    .description('remove a port from a cluster')
    .action(async (clusterAddr: string, portText: string, _o, cmd: Command) => run(cmd, async (g) => {
      changed(g, await call(g, 'DELETE', portPath(clusterAddr, portText)), `port ${portText} removed from ${clusterAddr}`);
    }));
  for (const [verb, what] of [['drain', 'tell the front tier to send this port nothing new (its agent answers drain); its daemons keep serving what still arrives'], ['undrain', 'tell the front tier to send this port new connections again']] as const) {
    port.command(`${verb} <cluster> <port>`)
      .description(`${what} (docs/scale-out.md)`)
      .action(async (clusterAddr: string, portText: string, _o, cmd: Command) => run(cmd, async (g) => {
        const r = await call(g, 'POST', `${portPath(clusterAddr, portText)}/${verb}`) as AgentView;
        out(g, r, () => `port ${portText} of ${clusterAddr} ${verb}ed: its agent says "${r.line}"`);
      }));
  }

  program.command('agent-status <cluster> <port>')
    .description('the line a front tier\'s agent-check hears about this port now (docs/scale-out.md)')
    .option('--exit-code', 'also say it as the exit status keepalived\'s MISC_CHECK reads: 2 + weight % when ready, 2 when drained, 1 when down or stopping (and on any error)')
    .action(async (clusterAddr: string, portText: string, o: { exitCode?: boolean }, cmd: Command) => {
      if (!o.exitCode) return run(cmd, async (g) => {
        const r = await call(g, 'GET', `${portPath(clusterAddr, portText)}/agent`) as AgentView;
        out(g, r, () => r.line);
      });
      // keepalived reads any status but 0 and 1 as a weight: an error must read as down (1), never as "weight 1".
      const g = cmd.optsWithGlobals() as Global;
      try {
        const r = await call(g, 'GET', `${portPath(clusterAddr, portText)}/agent`) as AgentView;
        out(g, r, () => r.line);
        process.exitCode = miscCheckExitCode(r);
      } catch (e) {
        if (!(e instanceof ClientError)) throw e;
        if (g.json) process.stdout.write(`${JSON.stringify(e.body ?? { error: { code: e.code, message: e.message } }, null, 1)}\n`);
        process.stderr.write(`hostlb: ${e.message}${e.code && !e.message.includes(e.code) ? ` (${e.code})` : ''}\n`);
        process.exitCode = 1;
      }
    });

  const daemon = program.command('daemon').description('add, change, quiesce or remove a daemon');
  daemon.command('add <cluster> <port> <address>')
    .description('add a daemon (address:port) to a cluster port')
    .option('--weight <n>', 'share of new flows (0 = quiesced)', '1')
    .action(async (c: string, p: string, address: string, o: { weight: string }, cmd: Command) => run(cmd, async (g) => {
      changed(g, await call(g, 'POST', `${portPath(c, p)}/daemons`, { address, weight: numberOption(o.weight, '--weight') }), `daemon ${address} added to ${c} ${p}`);
    }));
  daemon.command('set <cluster> <port> <address>')
    .description('change a daemon\'s weight')
    .requiredOption('--weight <n>', 'share of new flows (0 = quiesced)')
    .action(async (c: string, p: string, address: string, o: { weight: string }, cmd: Command) => run(cmd, async (g) => {
      changed(g, await call(g, 'PUT', `${portPath(c, p)}/daemons/${enc(address)}`, { weight: numberOption(o.weight, '--weight') }), `daemon ${address} weight ${o.weight}`);
    }));
  daemon.command('quiesce <cluster> <port> <address>')
    .description('give a daemon weight 0: no new flows, existing ones continue')
    .action(async (c: string, p: string, address: string, _o, cmd: Command) => run(cmd, async (g) => {
      changed(g, await call(g, 'POST', `${portPath(c, p)}/daemons/${enc(address)}/quiesce`), `daemon ${address} quiesced`);
    }));
  daemon.command('remove <cluster> <port> <address>')
    .description('remove a daemon (its existing flows are kept until they end)')
    .action(async (c: string, p: string, address: string, _o, cmd: Command) => run(cmd, async (g) => {
      changed(g, await call(g, 'DELETE', `${portPath(c, p)}/daemons/${enc(address)}`), `daemon ${address} removed`);
    }));

  daemon.command('drain <cluster> <port> <address>')
    .description('quiesce a daemon (weight 0: no new flows); with --wait, return once it holds no active flows')
    .option('--wait', 'wait until its active flows have ended')
    .option('--timeout <seconds>', 'give up waiting after this long (exit 1)', '60')
    .action(async (c: string, p: string, address: string, o: { wait?: boolean; timeout: string }, cmd: Command) => run(cmd, async (g) => {
      const timeout = o.wait ? numberOption(o.timeout, '--timeout') : 0;
      const r = await call(g, 'POST', `${portPath(c, p)}/daemons/${enc(address)}/drain`) as { activeFlows: number };
      if (!o.wait) return changed(g, r, `daemon ${address} draining (${r.activeFlows} active flows)`);
      // hostlb found the daemon (else the drain was refused): from here on it is
      // looked up by its parsed endpoints, never by the text typed, so
      // [2001:db8::0:1]:80 is the daemon hostlb calls [2001:db8::1]:80.
      const key = daemonKey(c, p, address);
      const deadline = Date.now() + timeout * 1000;
      for (let seen = false; ; seen = true) {
        const { daemons } = await call(g, 'GET', '/v1/counters') as { daemons: Record<string, { activeFlows: number }> };
        const found = Object.entries(daemons).find(([k]) => key !== null && canonicalDaemonKey(k) === key);
        // Counters outlive a removed daemon while it holds flows: gone after it was seen means removed and ended.
        if (found === undefined && !seen) throw new ClientError('DAEMON_NOT_FOUND', `hostlb has no daemon ${address} on ${c} ${p}; list them with hostlb status`, EXIT.rejected);
        const active = found?.[1].activeFlows ?? 0;
        if (active === 0) return out(g, { ok: true, daemon: address, activeFlows: 0 }, () => `daemon ${address} drained`);
        if (Date.now() >= deadline) throw new ClientError('DRAIN_TIMEOUT', `daemon ${address} still holds ${active} active flows after ${o.timeout} s`, EXIT.rejected);
        await new Promise((resolve) => setTimeout(resolve, 500));
      }
    }));

  program.command('restart <cluster> <port>')
    .description('rolling restart of a port\'s supervised daemons: a surge instance first, then each in turn drained, stopped, started, waited for, slow-started')
    .option('--drain-timeout <seconds>', 'longest wait for a daemon\'s flows to end before it is stopped anyway', '30')
    .option('--up-timeout <seconds>', 'longest wait for a restarted daemon to come back up', '30')
    .option('--no-surge', 'do not start an extra instance first (the port then runs one instance short during each restart)')
    .action(async (c: string, p: string, o: { drainTimeout: string; upTimeout: string; surge: boolean }, cmd: Command) => run(cmd, async (g) => {
      const drainTimeout = numberOption(o.drainTimeout, '--drain-timeout');
      const upTimeout = numberOption(o.upTimeout, '--up-timeout');
      const r = await call(g, 'POST', `${portPath(c, p)}/restart`, { drainTimeout, upTimeout, surge: o.surge }, 1000 * (30 + 2 * 257 * (drainTimeout + upTimeout))) as Rollout;
      out(g, r, () => `restarted ${r.restarted.length} daemon(s): ${r.restarted.join(', ')}\n${surgeLine(r)}`);
    }));

  program.command('health')
    .description('each daemon\'s health: state and why, advisor, response time, configured and effective weight')
    .action(async (_o, cmd: Command) => run(cmd, async (g) => {
      const r = await call(g, 'GET', '/v1/health') as { daemons: Array<Record<string, unknown>> };
      out(g, r, () => table([
        ['PORT', 'DAEMON', 'STATE', 'ADVISOR', 'RESPONSE', 'WEIGHT', 'EFFECTIVE', 'FACTOR', 'RAMP', 'WHY'],
        ...r.daemons.map((d) => [String(d.port), String(d.daemon), String(d.state), String(d.advisor), d.responseMs === null ? '-' : `${String(d.responseMs)} ms`, String(d.configuredWeight), formatWeight(Number(d.effectiveWeight)), String(d.factor), String(d.ramp), String(d.reason)]),
      ]));
    }));

  program.command('reload-app [name]')
    .description('replace the supervised program\'s instances one by one with fresh processes (a rolling restart); NAME picks the program when there are several')
    .option('--drain-timeout <seconds>', 'longest wait for an instance\'s connections to end', '30')
    .option('--up-timeout <seconds>', 'longest wait for a new instance to pass its health check', '30')
    .option('--no-surge', 'do not start an extra instance first (the program then runs one instance short during each replacement)')
    .action(async (name: string | undefined, o: { drainTimeout: string; upTimeout: string; surge: boolean }, cmd: Command) => run(cmd, async (g) => {
      const config = await call(g, 'GET', '/v1/config') as { clusters: Array<{ address: string; ports: Array<{ port: number; protocol: string; supervise?: { command: string; args: string[]; env: Record<string, string> } }> }> };
      const supervised = config.clusters.flatMap((c) => c.ports.filter((p) => p.supervise !== undefined).map((p) => ({
        cluster: c.address, port: `${p.port}/${p.protocol}`, name: p.supervise!.env.HOSTLB_NAME ?? defaultName(p.supervise!.command, p.supervise!.args),
      })));
      const chosen = name === undefined ? supervised : supervised.filter((s) => s.name === name);
      if (chosen.length !== 1) {
        const known = supervised.map((s) => `${s.name} (${s.cluster} ${s.port})`).join(', ') || 'none';
        throw new ClientError('NOT_SUPERVISED', chosen.length === 0 ? `no supervised program${name === undefined ? '' : ` named ${name}`} runs here; supervised: ${known}` : `several supervised programs run here: name one of ${known}`, EXIT.rejected);
      }
      const [target] = chosen;
      const drainTimeout = Number(o.drainTimeout);
      const upTimeout = Number(o.upTimeout);
      const r = await call(g, 'POST', `${portPath(target.cluster, target.port)}/restart`, { drainTimeout, upTimeout, surge: o.surge }, 1000 * (30 + 2 * 257 * (drainTimeout + upTimeout))) as Rollout;
      out(g, r, () => `${target.name}: replaced ${r.restarted.length} instance(s): ${r.restarted.join(', ')}\n${surgeLine(r)}`);
    }));

  program.command('events')
    .description(`daemon events, oldest first: ${EVENT_TYPES.join(', ')}; --follow keeps printing new ones`)
    .option('--follow', 'keep printing events as they happen (Ctrl-C to stop)')
    .action(async (o: { follow?: boolean }, cmd: Command) => run(cmd, async (g) => {
      let last = 0;
      for (;;) {
        const r = await call(g, 'GET', `/v1/events?since=${last}`) as { events: Array<{ id: number; at: string; type: string; port: string; daemon: string; reason?: string; weight?: number; previousWeight?: number }> };
        for (const e of r.events) {
          last = e.id;
          process.stdout.write(g.json ? `${JSON.stringify(e)}\n` : `${e.at}  ${e.type.padEnd(16)} ${e.port}  ${e.daemon}${e.reason ? `  (${e.reason})` : ''}${e.weight !== undefined ? `  effective weight ${formatWeight(e.weight)}${e.previousWeight !== undefined ? ` (was ${formatWeight(e.previousWeight)})` : ''}` : ''}\n`);
        }
        if (!o.follow) return;
        await new Promise((r) => setTimeout(r, 1000));
      }
    }));

  program.command('logs')
    .description('what supervised daemons printed, each line with its instance; --follow keeps printing new ones')
    .argument('[instance]', 'only this instance: its index, its address:port, or the program\'s name')
    .option('--lines <n>', 'how many recent lines to show first', '100')
    .option('--follow', 'keep printing lines as they come (Ctrl-C to stop)')
    .action(async (instance: string | undefined, o: { lines: string; follow?: boolean }, cmd: Command) => run(cmd, async (g) => {
      let last = 0;
      let lines = o.lines;
      for (;;) {
        const q = new URLSearchParams({ since: String(last), lines });
        if (instance !== undefined) q.set('instance', instance);
        const r = await call(g, 'GET', `/v1/logs?${q}`) as { lines: Array<{ id: number; name: string; index: number; daemon: string; stream: string; text: string }> };
        for (const l of r.lines) {
          last = l.id;
          process.stdout.write(g.json ? `${JSON.stringify(l)}\n` : `${l.name}.${l.index} ${l.daemon}${l.stream === 'stderr' ? ' !' : ''} | ${l.text}\n`);
        }
        if (!o.follow) return;
        lines = '100000';
        await new Promise((resolve) => setTimeout(resolve, 500));
      }
    }));

  program.command('conns')
    .description('list connection records')
    .option('--cluster <address>', 'only this cluster address')
    .option('--port <port>', 'only this cluster port: 80, or with a protocol, 53/udp')
    .option('--protocol <protocol>', 'only tcp or only udp flows')
    .option('--daemon <address>', 'only this daemon (address:port)')
    .option('--client <address>', 'only this client address')
    .option('--state <state>', 'only this state (ESTABLISHED, TIME_WAIT, UDP, ...)')
    .option('--limit <n>', 'at most this many', '50')
    .option('--offset <n>', 'skip this many', '0')
    .action(async (o: Record<string, string | undefined>, cmd: Command) => run(cmd, async (g) => {
      const q = new URLSearchParams();
      for (const k of ['cluster', 'daemon', 'client', 'state', 'limit', 'offset']) if (o[k] !== undefined) q.set(k, o[k]!);
      const protocol = connsProtocol(o.port, o.protocol);
      if (o.port !== undefined) q.set('port', o.port.split('/')[0]);
      if (protocol !== undefined) q.set('protocol', protocol);
      const r = await call(g, 'GET', `/v1/connections?${q}`) as { total: number; offset: number; connections: Parameters<typeof formatConnections>[2] };
      out(g, r, () => formatConnections(r.total, r.offset, r.connections));
    }));

  program.command('reload')
    .description('re-read the configuration file and apply it (rejected whole if anything is wrong)')
    .action(async (_o, cmd: Command) => run(cmd, async (g) => {
      changed(g, await call(g, 'POST', '/v1/reload'), 'configuration reloaded');
    }));

  program.command('stop')
    .description('stop the running hostlb; it undoes every change to the host')
    .action(async (_o, cmd: Command) => run(cmd, async (g) => {
      out(g, await call(g, 'POST', '/v1/stop'), () => 'hostlb is stopping');
    }));

  const config = program.command('config').description('show or save the running configuration');
  config.command('show')
    .description('print the running configuration (YAML, or JSON with --json)')
    .action(async (_o, cmd: Command) => run(cmd, async (g) => {
      if (g.json) out(g, await call(g, 'GET', '/v1/config'), () => '');
      else process.stdout.write(String(await call(g, 'GET', '/v1/config?format=yaml')));
    }));
  config.command('save [path]')
    .description('write the running configuration to its file (or to PATH)')
    .action(async (path: string | undefined, _o, cmd: Command) => run(cmd, async (g) => {
      const r = await call(g, 'POST', '/v1/config/save', path ? { path } : {}) as { path: string };
      out(g, r, () => `configuration saved to ${r.path}`);
    }));
}
