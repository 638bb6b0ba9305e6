// Reading the configuration file: YAML in, a validated HostlbConfig out, or a
// ConfigError that names the file, the line, the key and what was expected.
// Nothing is set up until a whole file has passed.

import { readFileSync } from 'node:fs';
import { LineCounter, parseDocument, isNode } from 'yaml';
import { ConfigError, HostlbError } from '../errors.js';
import { validate as validateTree } from '../dispatch/config-tree.js';
import { advisorSpec } from '../health/advisors/advisor.js';
import { resolveRunAs } from '../health/run-as.js';
import { configSchema, type HostlbConfig } from './config-schema.js';

/** Formats a key path the way messages show it: clusters[0].ports[1].scheduler. */
export function formatPath(path: readonly PropertyKey[]): string {
  let out = '';
  for (const p of path) out += typeof p === 'number' ? `[${p}]` : out ? `.${String(p)}` : String(p);
  return out;
}

/** Parses "clusters[0].ports[1].daemons[2].address" back into a key path. */
function parsePath(path: string): (string | number)[] {
  const keys: (string | number)[] = [];
  for (const m of path.matchAll(/([^.[\]]+)|\[(\d+)\]/g)) keys.push(m[2] !== undefined ? Number(m[2]) : m[1]);
  return keys;
}

/**
 * Validates a configuration given as a plain object (from the admin API).
 * Throws ConfigError whose `path` names the key.
 */
export function validateConfig(raw: unknown): HostlbConfig {
  const result = configSchema.safeParse(raw);
  if (!result.success) {
    const issue = result.error.issues[0];
    const path = issue.path.map((p) => (typeof p === 'number' ? p : String(p)));
    if (issue.code === 'unrecognized_keys') {
      throw new ConfigError(formatPath([...path, issue.keys[0]]), `unknown key${issue.keys.length > 1 ? 's' : ''} ${issue.keys.map((k) => `"${k}"`).join(', ')}; check the spelling against docs/configuration.md`);
    }
    throw new ConfigError(formatPath(path), issue.message);
  }
  validateTree(result.data);
  checkRunAs(result.data);
  checkAdvisors(result.data);
  return result.data;
}

/**
 * Every advisor, and every daemon's override merged over its port's, is one
 * the health layer can run (advisor.ts checkAdvisorSpec: intervals a timer can
 * hold, a path without spaces, ...). Checked here, so a bad one is refused
 * before hostlb touches the host or switches a running configuration, not
 * half-way through either. Throws ConfigError naming the key.
 */
function checkAdvisors(config: HostlbConfig): void {
  const check = (path: (string | number)[], spec: Record<string, unknown>): void => {
    try {
      advisorSpec(spec as Parameters<typeof advisorSpec>[0]);
    } catch (e) {
      if (!(e instanceof HostlbError && e.code === 'ADVISOR_INVALID')) throw e;
      // The message starts with the key ("advisor.interval: ...").
      const m = /^advisor\.(\w+): (.*)$/s.exec(e.message);
      throw new ConfigError(formatPath(m ? [...path, m[1]] : path), m ? m[2] : e.message);
    }
  };
  const plain = (a: Record<string, unknown>): Record<string, unknown> => {
    const { user: _user, group: _group, ...rest } = a;
    return rest;
  };
  config.clusters.forEach((c, ci) => c.ports.forEach((p, pi) => {
    if (!p.advisor) return;
    const at = ['clusters', ci, 'ports', pi];
    const base = plain(p.advisor as Record<string, unknown>);
    check([...at, 'advisor'], base);
    p.daemons.forEach((d, di) => {
      if (d.advisor) check([...at, 'daemons', di, 'advisor'], { ...base, ...plain(d.advisor as Record<string, unknown>) });
    });
  }));
}

/**
 * Every `user` and `group` (supervise, exec advisors and their per-daemon
 * overrides) names a user or group of this host. Throws ConfigError naming
 * the key, e.g. clusters[0].ports[0].supervise.user.
 */
function checkRunAs(config: HostlbConfig): void {
  const check = (path: (string | number)[], ids: { user?: string | number; group?: string | number } | undefined): void => {
    if (ids === undefined) return;
    try {
      resolveRunAs(ids.user, ids.group);
    } catch (e) {
      if (!(e instanceof HostlbError && e.code === 'RUN_AS_UNKNOWN')) throw e;
      // The message starts with the key ("user: ...").
      const key = e.message.startsWith('group:') ? 'group' : 'user';
      throw new ConfigError(formatPath([...path, key]), e.message.slice(key.length + 2));
    }
  };
  config.clusters.forEach((c, ci) => c.ports.forEach((p, pi) => {
    const at = ['clusters', ci, 'ports', pi];
    check([...at, 'supervise'], p.supervise);
    check([...at, 'advisor'], p.advisor);
    p.daemons.forEach((d, di) => check([...at, 'daemons', di, 'advisor'], d.advisor));
  }));
}

/**
 * Validates a configuration given as text. `file` names it in errors. Throws
 * ConfigError (code CONFIG_INVALID, or CONFIG_SYNTAX for bad YAML) with the
 * line of the offending key when it can be found.
 */
export function parseConfig(text: string, file = '<config>'): HostlbConfig {
  const lineCounter = new LineCounter();
  const doc = parseDocument(text, { lineCounter, prettyErrors: true, uniqueKeys: true });
  if (doc.errors.length > 0) {
    const e = doc.errors[0];
    const err = new ConfigError('', `${file}:${e.linePos?.[0].line ?? '?'}: ${e.message.split('\n')[0]}`, 'CONFIG_SYNTAX');
    err.file = file;
    err.line = e.linePos?.[0].line;
    throw err;
  }
  const lineOf = (path: (string | number)[]): number | undefined => {
    for (let n = path.length; n >= 0; n--) {
      const node = doc.getIn(path.slice(0, n), true);
      if (isNode(node) && node.range) return lineCounter.linePos(node.range[0]).line;
    }
    return undefined;
  };
  const fail = (path: (string | number)[], message: string): never => {
    const line = lineOf(path);
    const where = line ? `${file}:${line}` : file;
    const key = formatPath(path);
    const err = new ConfigError(key, message);
    err.message = `${where}: ${key ? `${key}: ` : ''}${message}`;
    err.file = file;
    err.line = line;
    throw err;
  };

  try {
    return validateConfig(doc.toJS() ?? {});
  } catch (e) {
    // ConfigError prefixes its message with "path: " only when there is a path.
    if (e instanceof ConfigError) return fail(parsePath(e.path), e.path ? e.message.slice(e.path.length + 2) : e.message);
    throw e;
  }
}

/** Reads and validates a configuration file. Throws ConfigError (CONFIG_UNREADABLE when it cannot be read). */
export function loadConfig(file: string): HostlbConfig {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    const err = new ConfigError('', `cannot read configuration file ${file}: ${(e as Error).message}`, 'CONFIG_UNREADABLE');
    err.file = file;
    throw err;
  }
  return parseConfig(text, file);
}
