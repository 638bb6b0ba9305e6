// The secrets a configuration may hold — admin.token and each supervise.env —
// and the two rules for them: a reader of the API never sees them, and a
// saved file holds them only as that file already did.

import { parseIp } from '../../wire/address.js';
import type { HostlbConfig } from '../config-schema.js';

export const REDACTED = '(redacted)';
/** supervise.env names whose values hostlb itself sets and shows (`hostlb run`'s program name): no secret. */
const PUBLIC_ENV: ReadonlySet<string> = new Set(['HOSTLB_NAME']);

/**
 * A copy of `config` for GET /v1/config: admin.token and every value of a
 * supervise.env replaced by "(redacted)" (env names stay: they say what is
 * set, not what it is), but HOSTLB_NAME's. The input is not changed.
 */
export function redactSecrets(config: HostlbConfig): HostlbConfig {
  const out = structuredClone(config);
  if (out.admin.token !== undefined) out.admin.token = REDACTED;
  for (const c of out.clusters) {
    for (const p of c.ports) {
      if (p.supervise?.env) p.supervise.env = Object.fromEntries(Object.entries(p.supervise.env).map(([k, v]) => [k, PUBLIC_ENV.has(k) ? v : REDACTED]));
    }
  }
  return out;
}

function portSite(cluster: unknown, port: unknown): string | null {
  if (typeof cluster !== 'object' || cluster === null || typeof port !== 'object' || port === null) return null;
  const address = parseIp(String((cluster as { address?: unknown }).address ?? ''))?.text;
  const p = port as { port?: unknown; protocol?: unknown };
  return address ? `${address} ${String(p.port)}/${typeof p.protocol === 'string' ? p.protocol : 'tcp'}` : null;
}

/**
 * A copy of `config` to write over a file whose current contents parse to
 * `existing` (raw YAML, unvalidated; null when there is no such file or it
 * does not parse): admin.token and each port's supervise.env are taken from
 * `existing` — the token dropped when it had none, an env emptied when its
 * port (same cluster, port and protocol) had none — so a save never copies a
 * secret into a file that did not hold it.
 */
export function secretsAsInFile(config: HostlbConfig, existing: unknown): HostlbConfig {
  const out = structuredClone(config);
  const file = (typeof existing === 'object' && existing !== null ? existing : {}) as { admin?: unknown; clusters?: unknown };
  const fileToken = typeof file.admin === 'object' && file.admin !== null ? (file.admin as { token?: unknown }).token : undefined;
  if (typeof fileToken === 'string') out.admin.token = fileToken;
  else delete out.admin.token;
  const fileEnv = new Map<string, Record<string, string>>();
  for (const c of Array.isArray(file.clusters) ? file.clusters as unknown[] : []) {
    const ports = typeof c === 'object' && c !== null ? (c as { ports?: unknown }).ports : undefined;
    for (const p of Array.isArray(ports) ? ports as unknown[] : []) {
      const site = portSite(c, p);
      const env = (p as { supervise?: { env?: unknown } }).supervise?.env;
      if (site && typeof env === 'object' && env !== null && !Array.isArray(env)) {
        fileEnv.set(site, Object.fromEntries(Object.entries(env).filter(([, v]) => typeof v === 'string')) as Record<string, string>);
      }
    }
  }
  for (const c of out.clusters) {
    for (const p of c.ports) {
      if (p.supervise) p.supervise.env = fileEnv.get(portSite(c, p) ?? '') ?? {};
    }
  }
  return out;
}
