// Who the processes hostlb starts (supervised daemons, exec probes) run as,
// and what environment they get. hostlb runs as root with secrets in its own
// environment (HOSTLB_TOKEN, ...): a child gets a configured user and group,
// and only its configured variables plus a short allow-list of hostlb's.

import { readFileSync } from 'node:fs';
import { HostlbError } from '../errors.js';

/** A resolved user and group: numeric ids for spawn(), the name and home for the environment. */
export interface RunAs {
  uid: number;
  gid: number;
  /** The user's name and home when /etc/passwd knows the uid; null otherwise. */
  user: string | null;
  home: string | null;
}

/** hostlb's own variables a child may see: where programs are, the locale, the time zone, a temp dir. */
export const INHERITED_ENV: readonly string[] = ['PATH', 'HOME', 'LANG', 'LANGUAGE', 'LC_ALL', 'LC_CTYPE', 'LC_MESSAGES', 'TZ', 'TMPDIR'];

/** Where names are looked up; tests point these elsewhere. */
export interface IdFiles {
  passwd: string;
  group: string;
}

const SYSTEM_FILES: IdFiles = { passwd: '/etc/passwd', group: '/etc/group' };
const MAX_ID = 0xfffffffe; // (uid_t)-1 means "unchanged" to setuid(2)

function entries(path: string): string[][] {
  try {
    return readFileSync(path, 'utf8').split('\n').filter((l) => l !== '' && !l.startsWith('#')).map((l) => l.split(':'));
  } catch {
    return [];
  }
}

/** A whole number id, or a name (not all digits). */
function asId(value: string | number): number | null {
  if (typeof value === 'number') return value;
  return /^\d+$/.test(value) ? Number(value) : null;
}

/**
 * Resolves `user` and `group` (names, or numeric ids) against /etc/passwd
 * and /etc/group. Neither given: null (the child runs as hostlb does). A user
 * without a group gets the user's primary group (a numeric uid /etc/passwd
 * does not know: a gid of the same number); a group alone keeps hostlb's uid.
 * Throws HostlbError RUN_AS_UNKNOWN saying which name or id is wrong ("user"
 * or "group" first, for the caller to put the key in front).
 */
export function resolveRunAs(user: string | number | undefined, group: string | number | undefined, files: IdFiles = SYSTEM_FILES): RunAs | null {
  if (user === undefined && group === undefined) return null;
  const passwd = entries(files.passwd);
  let uid = process.geteuid?.() ?? 0;
  let gid: number | null = null;
  if (user !== undefined) {
    const id = asId(user);
    const entry = id === null ? passwd.find((e) => e[0] === user) : passwd.find((e) => Number(e[2]) === id);
    if (id === null && entry === undefined) throw new HostlbError('RUN_AS_UNKNOWN', `user: ${JSON.stringify(user)} is not a user of this host (${files.passwd}); give an existing name or a numeric uid`);
    uid = id ?? Number(entry![2]);
    gid = entry !== undefined ? Number(entry[3]) : uid;
  }
  if (group !== undefined) {
    const id = asId(group);
    const entry = id === null ? entries(files.group).find((e) => e[0] === group) : undefined;
    if (id === null && entry === undefined) throw new HostlbError('RUN_AS_UNKNOWN', `group: ${JSON.stringify(group)} is not a group of this host (${files.group}); give an existing name or a numeric gid`);
    gid = id ?? Number(entry![2]);
  }
  gid ??= process.getegid?.() ?? 0;
  for (const [what, id] of [['user', uid], ['group', gid]] as const) {
    if (!Number.isInteger(id) || id < 0 || id > MAX_ID) throw new HostlbError('RUN_AS_UNKNOWN', `${what}: ${id} is not an id (0-${MAX_ID})`);
  }
  const known = passwd.find((e) => Number(e[2]) === uid);
  return { uid, gid, user: known?.[0] ?? null, home: known?.[5] ?? null };
}

/** True when a child started with `runAs` would run as root. */
export function runsAsRoot(runAs: RunAs | null | undefined): boolean {
  return (runAs?.uid ?? process.geteuid?.() ?? 0) === 0;
}

/**
 * A child's environment: INHERITED_ENV from `parent`, with HOME, USER and
 * LOGNAME of the `runAs` user when it has them, then `own` (HOST, PORT, the
 * configured `env`) over that. Nothing else of hostlb's environment.
 */
export function childEnvironment(own: Record<string, string>, runAs: RunAs | null | undefined, parent: NodeJS.ProcessEnv = process.env): Record<string, string> {
  const env: Record<string, string> = {};
  for (const name of INHERITED_ENV) {
    const value = parent[name];
    if (value !== undefined) env[name] = value;
  }
  if (runAs?.user) {
    env.USER = runAs.user;
    env.LOGNAME = runAs.user;
  }
  if (runAs?.home) env.HOME = runAs.home;
  return { ...env, ...own };
}
