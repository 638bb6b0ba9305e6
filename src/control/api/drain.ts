// Draining a daemon and letting it back in (POST …/daemons/D/drain and
// …/undrain; hostlb daemon drain, and the d and u keys of the live views).
// A daemon of the configuration is drained by setting its weight to 0 — the
// change is in the running configuration, so `config save` keeps it — and let
// back in with the weight it had before (remembered by this hostlb; 1 when it
// was drained by an earlier one, or the weight given). A daemon hostlb runs
// itself (a supervised port) has no weight in the file: it is held out by the
// health monitor instead, as a rolling restart does, and released the same way.

import type { Daemon } from '../../dispatch/config-tree.js';
import { setDaemon, type PortRef } from '../config-edit.js';
import { validateConfig } from '../config-file.js';
import { parseIp } from '../../wire/address.js';
import { notFound } from './api-error.js';
import type { Controlled } from './controlled.js';

/** Weights before a drain, per running instance, by "<port> <daemon>". */
const weightsBefore = new WeakMap<Controlled, Map<string, number>>();

function runningDaemon(ctl: Controlled, ref: PortRef, name: string): Daemon | undefined {
  return ctl.balancer.tree.daemonsById.find((x) => x !== undefined && !x.retired && x.name === name && x.clusterPort.cluster.address.text === ref.cluster
    && x.clusterPort.port === ref.port && x.clusterPort.protocol === ref.protocol);
}

function supervised(ctl: Controlled, ref: PortRef): boolean {
  return ctl.config.clusters.some((c) => parseIp(c.address)?.text === ref.cluster
    && c.ports.some((p) => p.supervise !== undefined && p.port === ref.port && p.protocol === ref.protocol));
}

function apply(ctl: Controlled, ref: PortRef, name: string, weight: number, source: string): unknown {
  return ctl.apply(validateConfig(setDaemon(ctl.config, ref, name, { weight })), source);
}

/** Drains daemon `name` (canonical address:port) of port `ref`; returns the change made (null for a supervised daemon) and its active flows. */
export function drainDaemon(ctl: Controlled, ref: PortRef, name: string): { change: unknown; activeFlows: number } {
  const daemon = runningDaemon(ctl, ref, name);
  let change: unknown = null;
  if (supervised(ctl, ref)) {
    if (!daemon) throw notFound('DAEMON_NOT_FOUND', `port ${ref.cluster} ${ref.port}/${ref.protocol} runs no daemon ${name}`, 'daemon');
    ctl.health.monitor.setDraining(daemon.id, true);
  } else {
    const before = daemon?.weight;
    change = apply(ctl, ref, name, 0, `api: drain daemon ${name}`);
    if (before !== undefined && before > 0) {
      const kept = weightsBefore.get(ctl) ?? new Map<string, number>();
      kept.set(`${ref.cluster} ${ref.port}/${ref.protocol} ${name}`, before);
      weightsBefore.set(ctl, kept);
    }
  }
  if (daemon) ctl.health.watchDrain(daemon.id);
  return { change, activeFlows: daemon ? ctl.balancer.activeFlows(daemon.id) : 0 };
}

/** Lets daemon `name` take new connections again: the weight it had before its drain, `weight` when given, else 1. */
export function undrainDaemon(ctl: Controlled, ref: PortRef, name: string, weight?: number): { change: unknown; weight: number | null } {
  const daemon = runningDaemon(ctl, ref, name);
  if (supervised(ctl, ref)) {
    if (!daemon) throw notFound('DAEMON_NOT_FOUND', `port ${ref.cluster} ${ref.port}/${ref.protocol} runs no daemon ${name}`, 'daemon');
    ctl.health.monitor.setDraining(daemon.id, false);
    ctl.health.noteActivity(daemon.id, 'drain', null);
    return { change: null, weight: null };
  }
  const key = `${ref.cluster} ${ref.port}/${ref.protocol} ${name}`;
  const back = weight ?? weightsBefore.get(ctl)?.get(key) ?? 1;
  const change = apply(ctl, ref, name, back, `api: undrain daemon ${name}`);
  weightsBefore.get(ctl)?.delete(key);
  if (daemon) ctl.health.noteActivity(daemon.id, 'drain', null);
  return { change, weight: back };
}
