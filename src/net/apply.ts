// Runs planned steps against the host and keeps a journal of them, so a
// deliberate stop undoes exactly what was done and the next start after a crash
// can undo what the crashed run left. Planning lives with each data plane
// (dataplane/*/host-plan.ts).

import { execFileSync } from 'node:child_process';
import { existsSync, lstatSync, mkdirSync, readFileSync, realpathSync, rmdirSync, rmSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { NetError, type NetErrorCode } from './net-error.js';
import { bpffsDirProblem, stepShapeProblem } from './journal-shape.js';
import { BPFFS_ROOT, formatCommand, type NetCommand, type NetStep } from './net-step.js';
import { writeFileAtomic } from './state-files.js';

/** Where journals live by default: tmpfs, so a reboot (which resets the network) also forgets them. */
export const JOURNAL_DIR = '/run/hostlb';

const IP_TIMEOUT_MS = 10_000;

/** The journal of device `device`: `/run/hostlb/<device>.journal.json`. */
export function journalPathFor(device: string, dir = JOURNAL_DIR): string {
  return `${dir}/${device}.journal.json`;
}

/** The journal file's content. `steps` are in the order they were applied. */
export interface Journal {
  version: 1;
  /** The process that last applied steps to it. */
  pid: number;
  updatedAt: string;
  steps: NetStep[];
}

/** Runs one command; throws the child's error (with `stderr`) or the fs error. */
function run(command: NetCommand): void {
  if (command[0] === 'ip') {
    execFileSync('ip', command.slice(1), { stdio: ['ignore', 'ignore', 'pipe'], encoding: 'utf8', timeout: IP_TIMEOUT_MS });
    return;
  }
  if (command[0] === 'nft' && command.length === 2) {
    // One script, one nft transaction: all of it applies or none.
    execFileSync('nft', ['-f', '-'], { input: command[1], stdio: ['pipe', 'ignore', 'pipe'], encoding: 'utf8', timeout: IP_TIMEOUT_MS });
    return;
  }
  if ((command[0] === 'iptables' || command[0] === 'ip6tables') && command.includes('mangle')) {
    execFileSync(command[0], command.slice(1), { stdio: ['ignore', 'ignore', 'pipe'], encoding: 'utf8', timeout: IP_TIMEOUT_MS });
    return;
  }
  if (command[0] === 'sysctl' && command.length === 3 && /^[\w.-]+(\/[\w.-]+)*$/.test(command[1]) && !command[1].split('/').includes('..')) {
    writeFileSync(`/proc/sys/${command[1]}`, `${command[2]}\n`);
    return;
  }
  if (command[0] === 'bpffs' && command.length === 3 && bpffsDirProblem(command[2]) === null) {
    if (command[1] === 'mount') {
      mountBpffs(command[2]);
      return;
    }
    if (command[1] === 'umount') {
      unmountBpffs(command[2]);
      return;
    }
  }
  throw new NetError('NET_JOURNAL_INVALID', `not a command hostlb runs: ${JSON.stringify(command)}`);
}

/** stderr of a failed ip(8) (or nft, iptables, mount), or the message of a failed /proc/sys write. */
function failureText(error: unknown): string {
  const stderr = (error as { stderr?: unknown }).stderr;
  if (typeof stderr === 'string' && stderr.trim() !== '') return stderr.trim();
  return (error as Error).message;
}

/**
 * Undo outcomes that mean "already as it was": a deleted route ("No such
 * process", ESRCH), rule ("No such file or directory") or device ("Cannot find
 * device") is gone, or a re-added rule is there ("File exists"). A NetError is
 * hostlb's own verdict, never "already gone": the bpffs commands read
 * /proc/self/mountinfo and treat "not mounted" and "no such directory" as done
 * themselves, so what they throw is a real failure.
 */
export function isAlreadyUndone(error: unknown): boolean {
  if (error instanceof NetError) return false;
  if ((error as { code?: unknown }).code === 'ENOENT') return true;
  // iptables: "Bad rule (does a matching rule exist in that chain?)", "No chain/target/match by that name".
  return /No such file or directory|No such process|Cannot find device|does not exist|File exists|does a matching rule exist|No chain\/target\/match by that name/i.test(failureText(error));
}

function writeJournal(path: string, steps: NetStep[]): void {
  const journal: Journal = { version: 1, pid: process.pid, updatedAt: new Date().toISOString(), steps };
  try {
    // On disk before the step runs: a crash right after must still find it.
    writeFileAtomic(path, `${JSON.stringify(journal, null, 1)}\n`);
  } catch (cause) {
    throw new NetError('NET_JOURNAL_INVALID', `cannot write the journal ${path}: ${(cause as Error).message}`, { cause });
  }
}

/**
 * Reads a journal; null when there is none. Throws NET_JOURNAL_INVALID when it
 * is unreadable, NET_JOURNAL_FOREIGN when a step is not shaped like the ones
 * hostlb writes (journal-shape.ts): such a journal is never replayed.
 */
export function readJournal(path: string): Journal | null {
  if (!existsSync(path)) return null;
  let journal: Journal;
  try {
    journal = JSON.parse(readFileSync(path, 'utf8')) as Journal;
    if (typeof journal !== 'object' || journal === null || journal.version !== 1 || !Array.isArray(journal.steps)) throw new Error('unknown journal format');
    if (!Number.isInteger(journal.pid) || journal.pid < 1) throw new Error(`${JSON.stringify(journal.pid)} is not a process id`);
  } catch (cause) {
    throw new NetError('NET_JOURNAL_INVALID', `the journal ${path} cannot be read (${(cause as Error).message}): undo its changes by hand, then delete it`, { cause });
  }
  journal.steps.forEach((step, i) => {
    const problem = stepShapeProblem(step);
    if (problem !== null) {
      const description = typeof (step as { description?: unknown })?.description === 'string' ? ` "${(step as NetStep).description}"` : '';
      throw new NetError('NET_JOURNAL_FOREIGN', `the journal ${path} holds a step hostlb does not write (step ${i + 1}${description}: ${problem}), so hostlb replays none of it: inspect it, undo by hand what its steps did, then delete it`);
    }
  });
  return journal;
}

/** Undoes `steps` last to first, tolerating "already gone". Returns the steps whose undo failed, with why. */
function undoSteps(steps: NetStep[]): Array<{ step: NetStep; error: unknown }> {
  const failed: Array<{ step: NetStep; error: unknown }> = [];
  for (let i = steps.length - 1; i >= 0; i--) {
    try {
      run(steps[i].undo);
    } catch (error) {
      if (!isAlreadyUndone(error)) failed.unshift({ step: steps[i], error });
    }
  }
  return failed;
}

function describeFailures(failed: Array<{ step: NetStep; error: unknown }>): string {
  return failed.map(({ step, error }) => `${formatCommand(step.undo)}: ${failureText(error)}`).join('; ');
}

/**
 * Applies `steps` in order. Each step is written to the journal at
 * `journalPath` (directory created with mode 0700) before it runs, so a crash
 * at any point leaves a journal that covers everything done; undoing a step
 * that never ran is harmless ("already gone"). An existing journal (left by a
 * crashed run) is kept and appended to: its changes are adopted, and undone
 * with these. Throws NET_INSTANCE_RUNNING when a live process owns the journal.
 *
 * On the first failure, undoes the steps this call applied and throws NetError
 * NET_STEP_FAILED naming the step, its command and ip's stderr (or
 * NET_ROLLBACK_FAILED when undoing failed too; the journal then keeps what is left).
 */
export function applyPlan(steps: readonly NetStep[], journalPath: string): void {
  const previous = readJournal(journalPath);
  if (previous !== null && previous.pid !== process.pid && processAlive(previous.pid)) {
    throw new NetError('NET_INSTANCE_RUNNING', `process ${previous.pid} is applying or holding ${journalPath}: stop that hostlb first (hostlb stop)`);
  }
  const adopted = previous?.steps ?? [];
  const done: NetStep[] = [];
  for (const step of steps) {
    writeJournal(journalPath, [...adopted, ...done, step]);
    try {
      run(step.apply);
    } catch (cause) {
      const why = failureText(cause);
      const hint = step.apply[0] === 'ip' && /Cannot find device|ENOENT/.test(why) ? ' (does the TUN device exist? open it before applying the plan)' : '';
      const failed = undoSteps(done);
      const remaining = [...adopted, ...failed.map((f) => f.step)];
      if (remaining.length > 0) writeJournal(journalPath, remaining);
      else rmSync(journalPath, { force: true });
      const message = `could not ${step.description}: ${formatCommand(step.apply)} failed: ${why}${hint}`;
      if (failed.length > 0) {
        throw new NetError('NET_ROLLBACK_FAILED', `${message}; undoing the earlier steps failed too (${describeFailures(failed)}); ${journalPath} keeps them`, { cause, step, stderr: why });
      }
      throw new NetError('NET_STEP_FAILED', `${message}; the ${done.length} step(s) applied before it were undone`, { cause, step, stderr: why });
    }
    done.push(step);
  }
}

/**
 * Undoes every step in the journal, last first, tolerating "already gone",
 * then deletes the journal. No journal: nothing to do. Returns how many steps
 * it undid. When some undo fails, the journal keeps just those and NetError
 * NET_UNDO_FAILED says which.
 */
export function undoJournal(journalPath: string): number {
  const journal = readJournal(journalPath);
  if (journal === null) return 0;
  const failed = undoSteps(journal.steps);
  if (failed.length > 0) {
    writeJournal(journalPath, failed.map((f) => f.step));
    throw new NetError('NET_UNDO_FAILED', `${failed.length} change(s) could not be undone: ${describeFailures(failed)}; ${journalPath} keeps them`, { cause: failed[0].error });
  }
  rmSync(journalPath, { force: true });
  return journal.steps.length;
}

/**
 * Undoes the journaled steps for which `drop` returns true (last first,
 * tolerating "already gone") and keeps the rest in the journal. Used when a
 * live reconfiguration no longer needs some changes. Returns how many it
 * undid; throws NET_UNDO_FAILED (the failed ones stay journaled).
 */
export function undoSelected(journalPath: string, drop: (step: NetStep) => boolean): number {
  const journal = readJournal(journalPath);
  if (journal === null) return 0;
  const chosen = journal.steps.filter(drop);
  if (chosen.length === 0) return 0;
  const failed = undoSteps(chosen);
  const kept = journal.steps.filter((step) => !drop(step) || failed.some((f) => f.step === step));
  if (kept.length > 0) writeJournal(journalPath, kept);
  else rmSync(journalPath, { force: true });
  if (failed.length > 0) {
    throw new NetError('NET_UNDO_FAILED', `${failed.length} change(s) could not be undone: ${describeFailures(failed)}; ${journalPath} keeps them`, { cause: failed[0].error });
  }
  return chosen.length;
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (error) {
    // EPERM: it exists but belongs to someone else.
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
  // A killed process stays visible until its parent reaps it; a zombie holds nothing.
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return false;
  }
}

/** True while `pid` lives, waiting up to `ms` for a process that was just killed to finish dying. */
export function stillAlive(pid: number, ms = 3000): boolean {
  const deadline = Date.now() + ms;
  while (processAlive(pid)) {
    if (Date.now() >= deadline) return true;
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 50);
  }
  return false;
}

/** What cleanupLeftovers found and removed. */
export interface CleanupReport {
  /** Steps undone from a crashed run's journal. */
  undone: number;
  /** A leftover persistent TUN device of that name was deleted. */
  deviceRemoved: boolean;
}

/**
 * Called at start, before opening the device: undoes the journal a crashed run
 * left for `device` and deletes a leftover persistent TUN device of that name
 * (only a TUN device, and only one no process holds).
 * Throws NetError NET_INSTANCE_RUNNING when the journal's process is still
 * alive or the device is in use, NET_UNDO_FAILED when undoing fails.
 */
export function cleanupLeftovers(device: string, options: { journalPath?: string } = {}): CleanupReport {
  const journalPath = options.journalPath ?? journalPathFor(device);
  const journal = readJournal(journalPath);
  if (journal !== null && journal.pid !== process.pid && stillAlive(journal.pid)) {
    throw new NetError('NET_INSTANCE_RUNNING', `process ${journal.pid} still owns ${journalPath}: stop that hostlb first (hostlb stop), or delete the journal if that process is not hostlb`);
  }
  const undone = journal === null ? 0 : undoJournal(journalPath);

  let link: Record<string, unknown> | undefined;
  try {
    const out = execFileSync('ip', ['-j', '-d', 'link', 'show', 'dev', device], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: IP_TIMEOUT_MS });
    link = (JSON.parse(out) as Array<Record<string, unknown>>)[0];
  } catch {
    return { undone, deviceRemoved: false }; // no such device
  }
  const kind = (link?.linkinfo as { info_kind?: string } | undefined)?.info_kind;
  if (kind !== 'tun') return { undone, deviceRemoved: false };
  // A TUN device that is up with carrier has a process attached (the kernel
  // turns the carrier off when the last fd closes).
  const flags = (link?.flags as string[] | undefined) ?? [];
  if (flags.includes('UP') && !flags.includes('NO-CARRIER')) {
    throw new NetError('NET_INSTANCE_RUNNING', `TUN device ${device} is held by a running process: stop it first (hostlb stop)`);
  }
  try {
    execFileSync('ip', ['link', 'del', 'dev', device], { stdio: ['ignore', 'ignore', 'pipe'], encoding: 'utf8', timeout: IP_TIMEOUT_MS });
  } catch (cause) {
    if (!isAlreadyUndone(cause)) throw new NetError('NET_UNDO_FAILED', `could not delete the leftover TUN device ${device}: ${failureText(cause)}`, { cause, stderr: failureText(cause) });
  }
  return { undone, deviceRemoved: true };
}

// ---- bpffs -------------------------------------------------------------------
// The socket data plane pins its sk_lookup link and maps in a bpffs instance of
// its own, so they outlive a crash of hostlb. mount(8) and umount(8) follow
// symlinks and stack a second mount on a mounted directory, so both commands
// look first: they act only on a real directory <BPFFS_ROOT>/<name> and only on
// a bpffs mounted right there, never on anything else.

/** One mount of /proc/<pid>/mountinfo (proc(5)): the fields hostlb reads. */
export interface MountEntry {
  id: number;
  parentId: number;
  /** Unescaped: the kernel writes space, tab, newline and backslash in octal (`\040`). */
  mountPoint: string;
  fsType: string;
}

const MOUNTINFO = '/proc/self/mountinfo';

/** The mounts listed in `text`, the content of a mountinfo file; lines that are not one are skipped. */
export function parseMountInfo(text: string): MountEntry[] {
  const mounts: MountEntry[] = [];
  for (const line of text.split('\n')) {
    // id parent major:minor root mount-point options [optional fields...] - type source super-options
    const fields = line.split(' ');
    const dash = fields.indexOf('-', 6);
    if (dash < 0 || dash + 1 >= fields.length) continue;
    const mountPoint = fields[4].replace(/\\([0-7]{3})/g, (_, octal: string) => String.fromCharCode(parseInt(octal, 8)));
    mounts.push({ id: Number(fields[0]), parentId: Number(fields[1]), mountPoint, fsType: fields[dash + 1] });
  }
  return mounts;
}

/** The mounts on exactly `path` (none on a directory below or above it). */
export function mountsOn(mounts: readonly MountEntry[], path: string): MountEntry[] {
  return mounts.filter((m) => m.mountPoint === path);
}

/** The mount on `path` that is uppermost (nothing else is mounted on it there): what a lookup of `path` sees and what umount(8) removes. */
export function topMountOn(mounts: readonly MountEntry[], path: string): MountEntry | undefined {
  const here = mountsOn(mounts, path);
  return here.find((m) => !here.some((other) => other.parentId === m.id));
}

function readMounts(): MountEntry[] {
  return parseMountInfo(readFileSync(MOUNTINFO, 'utf8'));
}

/**
 * Throws unless `dir` has the shape journal-shape.ts allows (then nothing is
 * done: NET_JOURNAL_INVALID) and each of /run/hostlb, BPFFS_ROOT and `dir` that
 * exists is a directory, not a symlink (`code`).
 */
function checkBpffsDir(dir: string, code: NetErrorCode): void {
  const problem = bpffsDirProblem(dir);
  if (problem !== null) throw new NetError('NET_JOURNAL_INVALID', `not a command hostlb runs: ${problem}`);
  for (const path of [dirname(BPFFS_ROOT), BPFFS_ROOT, dir]) {
    let isDirectory: boolean;
    let isLink = false;
    try {
      const st = lstatSync(path);
      isDirectory = st.isDirectory();
      isLink = st.isSymbolicLink();
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') continue;
      throw new NetError(code, `cannot look at ${path}: ${(error as Error).message}`, { cause: error });
    }
    if (!isDirectory) {
      throw new NetError(code, `${path} is ${isLink ? 'a symbolic link' : 'not a directory'}, so hostlb will not mount or unmount a bpffs through it: remove it (hostlb creates the directories it needs)`);
    }
  }
}

/**
 * Gets `dir` ready for `['bpffs', 'mount', dir]`: created with mode 0700
 * (parents too). Returns the path to mount on, or null when a bpffs is mounted
 * there already (an adopting start re-applies the step; the instance and its
 * pins are kept). `mountinfo` is /proc/self/mountinfo's text, read when not
 * given. Throws NetError: NET_JOURNAL_INVALID for a `dir` outside BPFFS_ROOT
 * (nothing done), NET_STEP_FAILED when a part of the path is not a directory
 * or another file system is mounted on `dir`.
 */
export function bpffsMountTarget(dir: string, mountinfo?: string): string | null {
  checkBpffsDir(dir, 'NET_STEP_FAILED');
  try {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
  } catch (cause) {
    throw new NetError('NET_STEP_FAILED', `cannot create ${dir}: ${(cause as Error).message}`, { cause });
  }
  checkBpffsDir(dir, 'NET_STEP_FAILED');
  const at = realpathSync(dir); // == dir unless /run itself is a link; mountinfo lists real paths
  const top = topMountOn(mountinfo === undefined ? readMounts() : parseMountInfo(mountinfo), at);
  if (top === undefined) return at;
  if (top.fsType === 'bpf') return null;
  throw new NetError('NET_STEP_FAILED', `${at} has a ${top.fsType} file system mounted on it, not a bpffs, and hostlb leaves other mounts alone: unmount it (umount ${at}) if nothing uses it`);
}

/** Runs `['bpffs', 'mount', dir]`: see bpffsMountTarget; throws its errors and mount(8)'s (with `stderr`). */
export function mountBpffs(dir: string): void {
  const at = bpffsMountTarget(dir);
  if (at !== null) execFileSync('mount', ['-t', 'bpf', 'bpf', at], { stdio: ['ignore', 'ignore', 'pipe'], encoding: 'utf8', timeout: IP_TIMEOUT_MS });
}

/**
 * Runs `['bpffs', 'umount', dir]`: unmounts the bpffs on `dir` (each one, if
 * several got stacked there), which drops its pins, then removes `dir`.
 * Nothing mounted there, or no `dir`, is done. Throws NetError (which
 * isAlreadyUndone never takes for done): NET_JOURNAL_INVALID for a `dir`
 * outside BPFFS_ROOT (nothing done), NET_UNDO_FAILED when another file system
 * is mounted on `dir` (left alone), umount(8) fails, or `dir` is not empty
 * once unmounted.
 */
export function unmountBpffs(dir: string): void {
  checkBpffsDir(dir, 'NET_UNDO_FAILED');
  let at: string;
  try {
    at = realpathSync(dir);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return; // a mount needs its directory: nothing mounted
    throw new NetError('NET_UNDO_FAILED', `cannot look at ${dir}: ${(error as Error).message}`, { cause: error });
  }
  const stacked = mountsOn(readMounts(), at).length;
  for (let i = 0; i < stacked; i++) {
    const top = topMountOn(readMounts(), at);
    if (top === undefined) break;
    if (top.fsType !== 'bpf') {
      throw new NetError('NET_UNDO_FAILED', `${at} has a ${top.fsType} file system mounted on it, not the bpffs hostlb mounted, and hostlb leaves other mounts alone: unmount it by hand`);
    }
    try {
      execFileSync('umount', [at], { stdio: ['ignore', 'ignore', 'pipe'], encoding: 'utf8', timeout: IP_TIMEOUT_MS });
    } catch (cause) {
      if (topMountOn(readMounts(), at)?.id !== top.id) continue; // unmounted by someone else meanwhile
      throw new NetError('NET_UNDO_FAILED', `umount ${at} failed: ${failureText(cause)}`, { cause, stderr: failureText(cause) });
    }
  }
  const left = topMountOn(readMounts(), at);
  if (left !== undefined) throw new NetError('NET_UNDO_FAILED', `${at} still has a ${left.fsType} file system mounted on it after umount: unmount it by hand`);
  try {
    rmdirSync(at);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return;
    const why = code === 'ENOTEMPTY' || code === 'EEXIST' ? 'is not empty once its bpffs is unmounted (files were put in the directory under it): look at them and remove them' : `cannot be removed (${(error as Error).message}): remove it by hand`;
    throw new NetError('NET_UNDO_FAILED', `${at} ${why}`, { cause: error });
  }
}
