// hostlb's state directory and the files in it that outlive a run (journal,
// baseline, table checkpoint): the directory must be root's alone, files are
// replaced whole (temp file, fsync, rename), and a baseline is checked before
// a plan is made against it. What the files hold is their writers' business.

import { closeSync, existsSync, fsyncSync, mkdirSync, openSync, readFileSync, renameSync, rmSync, statSync, writeSync } from 'node:fs';
import { dirname } from 'node:path';
import type { HostFacts } from './host-facts.js';
import { NetError } from './net-error.js';

/**
 * Makes sure `dir` is fit to hold files hostlb later runs root commands from:
 * created with mode 0700 when missing; otherwise a directory owned by root
 * (or by the user hostlb runs as) that neither group nor others may write.
 * Throws NetError NET_STATE_DIR_UNSAFE naming the directory and the command
 * that fixes it; changes nothing when it throws.
 */
export function ensureStateDir(dir: string): void {
  if (!existsSync(dir)) mkdirSync(dir, { recursive: true, mode: 0o700 });
  const st = statSync(dir);
  if (!st.isDirectory()) throw new NetError('NET_STATE_DIR_UNSAFE', `stateDir ${dir} is not a directory: remove it or set stateDir to another path`);
  const me = process.geteuid?.() ?? 0;
  if (st.uid !== 0 && st.uid !== me) {
    throw new NetError('NET_STATE_DIR_UNSAFE', `stateDir ${dir} belongs to uid ${st.uid}, so its owner could rewrite the journal hostlb undoes as root: chown root:root ${dir} (or set stateDir to a directory of root's)`);
  }
  if ((st.mode & 0o022) !== 0) {
    throw new NetError('NET_STATE_DIR_UNSAFE', `stateDir ${dir} is writable by ${(st.mode & 0o002) !== 0 ? 'everyone' : 'its group'} (mode ${(st.mode & 0o777).toString(8).padStart(4, '0')}), so others could plant a journal hostlb would undo as root: chmod 700 ${dir}`);
  }
}

/**
 * Replaces `path` with `data` whole: written to a temp file beside it (mode
 * 0600), fsynced, renamed over `path`, and the directory fsynced, so a crash
 * leaves either the old file or the new one, never a torn one. `sync: false`
 * leaves out both fsyncs: still whole after hostlb dies (the page cache
 * outlives it), not after a power loss. Throws the fs error.
 */
export function writeFileAtomic(path: string, data: string | Uint8Array | readonly Uint8Array[], options: { sync?: boolean } = {}): void {
  const sync = options.sync ?? true;
  mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
  const tmp = `${path}.${process.pid}.tmp`;
  try {
    const fd = openSync(tmp, 'w', 0o600);
    try {
      const pieces = typeof data === 'string' || data instanceof Uint8Array ? [data] : data;
      for (const piece of pieces) writeWhole(fd, piece);
      if (sync) fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(tmp, path);
  } catch (e) {
    rmSync(tmp, { force: true });
    throw e;
  }
  if (sync) syncDirectory(dirname(path));
}

/** writeSync until every byte of `data` is written (a large write may be short). */
export function writeWhole(fd: number, data: string | Uint8Array): void {
  const bytes = typeof data === 'string' ? Buffer.from(data) : data;
  for (let at = 0; at < bytes.byteLength;) at += writeSync(fd, bytes, at, bytes.byteLength - at);
}

/** fsync of a directory, so a rename in it is on disk; ignored where the file system cannot. */
export function syncDirectory(dir: string): void {
  try {
    const fd = openSync(dir, 'r');
    try {
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
  } catch {
    // Some file systems refuse fsync on a directory (EINVAL); the rename still happened.
  }
}

const FAMILY = (v: unknown): boolean => v === 4 || v === 6;
const TEXT = (v: unknown): boolean => typeof v === 'string' && v.length < 256;

/** Why `facts` is not a HostFacts as probe.ts writes it, or null. */
function baselineProblem(facts: unknown): string | null {
  if (typeof facts !== 'object' || facts === null) return 'not an object';
  const f = facts as Record<string, unknown>;
  for (const key of ['addresses', 'devices', 'rules', 'routes']) if (!Array.isArray(f[key])) return `"${key}" is not a list`;
  const every = (key: string, ok: (item: Record<string, unknown>) => boolean): boolean =>
    (f[key] as unknown[]).every((item) => typeof item === 'object' && item !== null && ok(item as Record<string, unknown>));
  if (!every('addresses', (a) => FAMILY(a.family) && TEXT(a.address) && TEXT(a.dev) && TEXT(a.scope))) return 'an address entry is malformed';
  if (!every('devices', (d) => TEXT(d.name) && typeof d.up === 'boolean')) return 'a device entry is malformed';
  if (!every('rules', (r) => FAMILY(r.family) && Number.isInteger(r.priority) && TEXT(r.key) && (r.protocol === undefined || (TEXT(r.protocol) && /^[a-z0-9]*$/.test(r.protocol as string))))) return 'a rule entry is malformed';
  if (!every('routes', (r) => FAMILY(r.family) && TEXT(r.key))) return 'a route entry is malformed';
  const sysctls = f.sysctls;
  if (typeof sysctls !== 'object' || sysctls === null || Array.isArray(sysctls)) return '"sysctls" is not a map';
  for (const [path, value] of Object.entries(sysctls)) {
    if (typeof value !== 'string' || !/^\d{1,2}$/.test(value)) return `sysctl ${path} has the value ${JSON.stringify(value)}`;
  }
  return null;
}

/**
 * Reads the baseline a crashed run left (the host as it was before hostlb
 * changed it; plans for the adopted run are made against it). Throws NetError
 * NET_BASELINE_INVALID naming the file and what to do.
 */
export function readBaseline(path: string): HostFacts {
  let facts: unknown;
  let problem: string | null;
  try {
    facts = JSON.parse(readFileSync(path, 'utf8'));
    problem = baselineProblem(facts);
  } catch (e) {
    problem = (e as Error).message;
  }
  if (problem !== null) {
    throw new NetError('NET_BASELINE_INVALID', `the baseline ${path} of an earlier run cannot be used (${problem}): delete it, and the next start undoes that run's journal and sets the host up afresh instead of adopting it`);
  }
  return facts as HostFacts;
}
