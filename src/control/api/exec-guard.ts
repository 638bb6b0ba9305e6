// Which parts of a configuration make hostlb run a program, and the rule that
// the admin API may not add or change them: programs come only from the
// configuration file (reload re-reads it). Weights, daemons and schedulers
// stay the API's to change; config-schema.ts owns the keys themselves.

import { isDeepStrictEqual } from 'node:util';
import { parseEndpoint, formatEndpoint, parseIp } from '../../wire/address.js';
import type { HostlbConfig } from '../config-schema.js';
import { ApiError } from './api-error.js';

/**
 * One part of a configuration that can spawn a process, by where it lives
 * (cluster, port, daemon: stable across edits that add or remove others) and
 * by its key path in that configuration (for the message).
 */
interface ExecPart {
  site: string;
  path: string;
  value: unknown;
}

/**
 * An advisor (or a daemon's advisor override) runs a program when it is of
 * type exec or names a command or arguments: an override may turn a port's
 * advisor into exec, or give an exec advisor another command.
 */
function advisorRuns(advisor: unknown): boolean {
  if (typeof advisor !== 'object' || advisor === null) return false;
  const a = advisor as { type?: unknown; command?: unknown; args?: unknown };
  return a.type === 'exec' || a.command !== undefined || a.args !== undefined;
}

function canonicalCluster(text: string): string {
  return parseIp(text)?.text ?? text;
}

function canonicalDaemon(text: string): string {
  const e = parseEndpoint(text);
  return e ? formatEndpoint(e) : text;
}

/**
 * Every part of `config` that makes hostlb run a program: a port's whole
 * `supervise` block (whatever keys it has or will have: command, args, env,
 * cwd, user, ...), every advisor that runs one (see advisorRuns), and every
 * daemon's override of such an advisor.
 */
export function execParts(config: HostlbConfig): ExecPart[] {
  const parts: ExecPart[] = [];
  config.clusters.forEach((c, ci) => {
    c.ports.forEach((p, pi) => {
      const site = `${canonicalCluster(c.address)} ${p.port}/${p.protocol}`;
      const at = `clusters[${ci}].ports[${pi}]`;
      if (p.supervise !== undefined) parts.push({ site: `${site} supervise`, path: `${at}.supervise`, value: p.supervise });
      if (advisorRuns(p.advisor)) parts.push({ site: `${site} advisor`, path: `${at}.advisor`, value: p.advisor });
      (p.daemons ?? []).forEach((d, di) => {
        // An override of an advisor that runs a program changes how that program runs (its interval, its timeout).
        if (advisorRuns(d.advisor) || (d.advisor !== undefined && advisorRuns(p.advisor))) parts.push({ site: `${site} ${canonicalDaemon(d.address)} advisor`, path: `${at}.daemons[${di}].advisor`, value: d.advisor });
      });
    });
  });
  return parts;
}

/**
 * Throws 403 API_EXEC_FORBIDDEN, naming the key path in `next`, when `next`
 * (a change asked through the API, already validated) has a part that runs a
 * program which `running` does not have, unchanged, at the same place. A part
 * kept as it is (a weight changed on a supervised port's cluster, a daemon
 * added beside an exec advisor) passes; removing one passes too.
 */
export function checkNoNewExec(running: HostlbConfig, next: HostlbConfig): void {
  const have = new Map(execParts(running).map((p) => [p.site, p.value]));
  for (const part of execParts(next)) {
    if (have.has(part.site) && isDeepStrictEqual(have.get(part.site), part.value)) continue;
    throw new ApiError(
      403,
      'API_EXEC_FORBIDDEN',
      `${part.path}: hostlb runs programs (supervise, exec advisors) only from its configuration file, never through the admin API; put it in the configuration file and reload (hostlb reload)`,
      part.path,
    );
  }
}
