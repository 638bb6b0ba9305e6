// POST /v1/config/save, the one place the admin API writes a file: where it
// may write (the running configuration file, or under stateDir), and how (a
// temporary file, fsync, rename; never through a symlink; mode 0600).
// secrets.ts decides what the file may hold.

import { randomBytes } from 'node:crypto';
import {
  closeSync, constants, fchmodSync, fsyncSync, lstatSync, openSync, readFileSync, realpathSync, renameSync, rmSync, writeSync,
} from 'node:fs';
import { basename, dirname, isAbsolute, join, resolve } from 'node:path';
import { parse, stringify } from 'yaml';
import type { HostlbConfig } from '../config-schema.js';
import { ApiError, badRequest, conflict } from './api-error.js';
import { secretsAsInFile } from './secrets.js';

const forbidden = (code: string, message: string): ApiError => new ApiError(403, code, message, 'path');

function realDir(dir: string): string | null {
  try {
    return realpathSync(dir);
  } catch {
    return null;
  }
}

/**
 * The file a save writes: `requested` (absolute), or the running file when
 * absent. Only the running configuration file or a path under `stateDir`
 * (after resolving "..", and symlinks in the directories) is allowed: the
 * socket grants root's power to write, and this must not become "write any
 * file". Throws 400 NO_PATH / BAD_PATH, 403 SAVE_PATH_FORBIDDEN.
 */
export function saveTarget(config: HostlbConfig, configFile: string | undefined, requested: unknown): string {
  if (requested !== undefined && typeof requested !== 'string') throw badRequest('BAD_PATH', `path must be a string, got ${JSON.stringify(requested)}`, 'path');
  const path = requested ?? configFile;
  if (!path) throw badRequest('NO_PATH', `hostlb was started without --config: give "path" to save to, under stateDir (${config.stateDir})`, 'path');
  if (!isAbsolute(path)) throw badRequest('BAD_PATH', `path must be absolute, got "${path}"`, 'path');
  const target = resolve(path);
  if (configFile !== undefined && target === resolve(configFile)) return target;
  const state = realDir(config.stateDir);
  const parent = realDir(dirname(target));
  const allowed = `the running configuration file${configFile ? ` (${configFile})` : ''} or a file under stateDir (${config.stateDir})`;
  if (state === null || parent === null || (parent !== state && !parent.startsWith(`${state}/`))) {
    throw forbidden('SAVE_PATH_FORBIDDEN', `hostlb saves its configuration only to ${allowed}, not to "${path}"`);
  }
  return join(parent, basename(target));
}

/** The target's current contents as raw YAML, or null (none, unreadable, not YAML). Never follows a symlink. */
function readExisting(path: string): unknown {
  let fd: number;
  try {
    fd = openSync(path, constants.O_RDONLY | constants.O_NOFOLLOW);
  } catch {
    return null;
  }
  try {
    return parse(readFileSync(fd, 'utf8')) as unknown;
  } catch {
    return null;
  } finally {
    closeSync(fd);
  }
}

/**
 * Writes `config` as YAML to `path` (from saveTarget): secrets only as the
 * file held them (secrets.ts), into a new temporary file beside it (O_EXCL |
 * O_NOFOLLOW, mode 0600), fsync, rename over the target, fsync the directory —
 * a crash leaves the old file or the new one, never half of one. Throws 409
 * SAVE_TARGET_SYMLINK / SAVE_TARGET_NOT_FILE and leaves the target alone.
 */
export function saveConfig(config: HostlbConfig, path: string): void {
  let st: ReturnType<typeof lstatSync> | undefined;
  try {
    st = lstatSync(path);
  } catch {
    st = undefined; // a new file
  }
  if (st?.isSymbolicLink()) throw conflict('SAVE_TARGET_SYMLINK', `${path} is a symbolic link; hostlb does not write through one: remove the link, or save to the file itself`, 'path');
  if (st && !st.isFile()) throw conflict('SAVE_TARGET_NOT_FILE', `${path} exists and is not a regular file`, 'path');
  const text = `# saved by hostlb ${new Date().toISOString()}\n${stringify(secretsAsInFile(config, readExisting(path)))}`;
  const dir = dirname(path);
  const temp = join(dir, `.${basename(path)}.${randomBytes(6).toString('hex')}.tmp`);
  const fd = openSync(temp, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o600);
  try {
    fchmodSync(fd, 0o600); // whatever the umask
    writeSync(fd, text);
    fsyncSync(fd);
  } catch (e) {
    closeSync(fd);
    rmSync(temp, { force: true });
    throw e;
  }
  closeSync(fd);
  try {
    // rename() replaces the directory entry; it never follows a link put there since the check.
    renameSync(temp, path);
  } catch (e) {
    rmSync(temp, { force: true });
    throw e;
  }
  const dirFd = openSync(dir, constants.O_RDONLY | constants.O_DIRECTORY);
  try {
    fsyncSync(dirFd);
  } finally {
    closeSync(dirFd);
  }
}
