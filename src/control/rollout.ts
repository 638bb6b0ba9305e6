// Replacing a supervised program's instances without losing capacity (hostlb
// reload-app, hostlb restart): one extra instance — the surge — is started on
// the next address first and let in once its health check passes; then each
// instance in turn is drained (its keep-alive connections end), stopped,
// started again and waited for, while the surge carries its share; last the
// surge is drained and stopped. At no moment do fewer than the configured
// number of instances take new connections, so even a port of one instance
// reloads without a refused connection.
//
// The surge is a configuration change like any other (instances + 1, then
// back), so the data plane, the host set-up and health follow it the usual
// way. Where the next address cannot be used — not an address of this host, or
// past the last instance allowed — the reload goes on without a surge and the
// answer says why.

import { networkInterfaces } from 'node:os';
import { HostlbError } from '../errors.js';
import { daemonEndpoints } from '../health/supervisor.js';
import { formatEndpoint, isLoopback, parseIp } from '../wire/address.js';
import type { Controlled } from './api/controlled.js';
import type { HostlbConfig } from './config-schema.js';
import { portName, waitFor } from './health-runtime.js';

/** The schema's limit on supervise.instances: the surge must fit under it. */
const MAX_SUPERVISED = 256;

export interface RolloutOptions {
  /** Longest wait, s, for an instance's connections to end before it is stopped anyway (default 30). */
  drainTimeout?: number;
  /** Longest wait, s, for a new instance to pass its health check (default 30). */
  upTimeout?: number;
  /** Start one extra instance first (default true). */
  surge?: boolean;
}

export interface RolloutResult {
  restarted: string[];
  /** The extra instance that carried load during the reload, or null with `surgeSkipped` saying why. */
  surge: string | null;
  surgeSkipped?: string;
}

type Supervised = NonNullable<HostlbConfig['clusters'][number]['ports'][number]['supervise']>;

/** The configuration with the named port's supervise.instances set to `instances`. */
function withInstances(config: HostlbConfig, name: string, instances: number): HostlbConfig {
  return {
    ...config,
    clusters: config.clusters.map((c) => ({
      ...c,
      ports: c.ports.map((p) => (p.supervise && portName(c.address, p) === name ? { ...p, supervise: { ...p.supervise, instances } } : p)),
    })),
  };
}

function superviseOf(config: HostlbConfig, name: string): Supervised | undefined {
  for (const c of config.clusters) for (const p of c.ports) if (p.supervise && portName(c.address, p) === name) return p.supervise;
  return undefined;
}

/** An address a daemon of this host can bind: any loopback address, or one an interface has. */
function bindable(text: string): boolean {
  const address = parseIp(text);
  if (address === null) return false;
  if (address.family === 4 && isLoopback(address)) return true;
  return Object.values(networkInterfaces()).some((list) => list?.some((i) => parseIp(i.address)?.text === address.text));
}

/** Where the surge instance would run, or why there is none. */
export function surgeEndpoint(supervise: Supervised): { daemon: string } | { skipped: string } {
  const n = supervise.instances;
  if (n + 1 > MAX_SUPERVISED) return { skipped: `the port already runs the most instances allowed (${MAX_SUPERVISED})` };
  let next;
  try {
    next = daemonEndpoints({ host: supervise.host, port: supervise.port, instances: n + 1 })[n];
  } catch (e) {
    return { skipped: (e as Error).message };
  }
  if (!bindable(next.address)) return { skipped: `${next.address}, the address after the last instance, is not an address of this host` };
  return { daemon: formatEndpoint({ address: parseIp(next.address)!, port: next.port }) };
}

/**
 * Replaces every instance of supervised port `name` ("198.18.0.1:80/tcp")
 * one by one, with a surge instance when it can. Rejects with NOT_SUPERVISED
 * or RESTART_FAILED (naming the instance that did not come up); the surge is
 * removed again whatever happens.
 */
export async function rollOut(ctl: Controlled, name: string, options: RolloutOptions = {}): Promise<RolloutResult> {
  const supervise = superviseOf(ctl.config, name);
  if (!supervise) throw new HostlbError('NOT_SUPERVISED', `port ${name} does not run its daemons (no supervise section); restart them yourself`);
  const drainMs = (options.drainTimeout ?? 30) * 1000;
  const upMs = (options.upTimeout ?? 30) * 1000;
  const n = supervise.instances;
  const where = options.surge === false ? { skipped: 'not asked for' } : surgeEndpoint(supervise);
  if (!('daemon' in where)) {
    const { restarted } = await ctl.health.rollingRestart(name, { drainTimeout: options.drainTimeout, upTimeout: options.upTimeout });
    return { restarted, surge: null, surgeSkipped: where.skipped };
  }

  const surgeDaemon = (): number | undefined => {
    for (const c of ctl.balancer.tree.clusters) {
      for (const p of c.ports) if (p.name === name) return p.daemons.find((d) => d.name === where.daemon)?.id;
    }
    return undefined;
  };
  ctl.apply(withInstances(ctl.config, name, n + 1), `reload-app ${name}: surge instance ${where.daemon}`);
  try {
    // A surge daemon of an earlier reload may come back with its id, and its drain with it.
    const fresh = surgeDaemon();
    if (fresh !== undefined) {
      ctl.health.monitor.setDraining(fresh, false);
      ctl.health.noteActivity(fresh, 'surge', 'starting');
    }
    const up = await waitFor(() => {
      const id = surgeDaemon();
      return id !== undefined && ctl.health.monitor.isUp(id);
    }, upMs);
    if (!up) throw new HostlbError('RESTART_FAILED', `the surge instance ${where.daemon} did not pass its health check within ${upMs / 1000} s; no instance was replaced`);
    if (fresh !== undefined) ctl.health.noteActivity(fresh, 'surge', 'carrying load while instances are replaced');
    const { restarted } = await ctl.health.rollingRestart(name, { drainTimeout: options.drainTimeout, upTimeout: options.upTimeout, instances: n });
    return { restarted, surge: where.daemon };
  } finally {
    // Its connections end before it goes; the configuration shrinks back to what it was.
    const id = surgeDaemon();
    if (id !== undefined) {
      ctl.health.monitor.setDraining(id, true);
      ctl.health.noteActivity(id, 'surge', 'draining');
      await waitFor(() => ctl.balancer.activeFlows(id) === 0 && ctl.plane.nothingLive(id), drainMs);
      ctl.health.noteActivity(id, 'surge', null);
    }
    const now = superviseOf(ctl.config, name);
    if (now && now.instances === n + 1) ctl.apply(withInstances(ctl.config, name, n), `reload-app ${name}: surge instance ${where.daemon} done`);
  }
}
