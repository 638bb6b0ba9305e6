// Puts back host objects that vanish underneath a running hostlb: an
// `nft flush ruleset` (what `systemctl restart nftables` does), an
// `iptables -t mangle -F`, a deleted route or rule, a sysctl set back, an
// unmounted bpffs. Sysctls and bpffs mounts are checked in-process on every
// call; the checks that need a child process (ip, nft, iptables: never a
// blocking call on the packet path's thread) run when a CheckSchedule says so
// (repair-schedule.ts). The missing steps are applied again; the journal is
// not touched: it already lists them, and stop undoes them.

import { execFile } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { bpffsMountTarget } from './apply.js';
import type { NetStep } from './net-step.js';
import type { CheckSchedule, SpawnCheck } from './repair-schedule.js';

const TIMEOUT_MS = 10_000;

export interface RepairReport {
  /**
   * Steps applied again, by kind (ip, sysctl, nft, iptables, ip6tables,
   * bpffs). A bpffs comes back empty: its plane re-pins its objects when told.
   */
  repaired: Record<string, number>;
  /** Checks or repairs that failed (logged by the caller). */
  errors: string[];
}

interface Outcome {
  ok: boolean;
  stderr: string;
}

/** Once `signal` is aborted (stop, hand-over) children are killed at once and none is started. */
function run(signal: AbortSignal, argv: readonly string[], input?: string): Promise<Outcome> {
  if (signal.aborted) return Promise.resolve({ ok: false, stderr: 'aborted' });
  return new Promise((resolve) => {
    const child = execFile(argv[0], argv.slice(1), { timeout: TIMEOUT_MS, encoding: 'utf8', signal, killSignal: 'SIGKILL' }, (error, _stdout, stderr) => {
      resolve({ ok: error === null, stderr: String(stderr ?? (error as Error | null)?.message ?? '') });
    });
    // A child that exits before reading its input (killed at abort, crashed)
    // makes the write fail with EPIPE: its exit already says what went wrong,
    // and an unhandled stream error would take the process down.
    child.stdin?.on('error', () => {});
    if (input !== undefined) child.stdin?.end(input);
  });
}

function runOut(signal: AbortSignal, argv: readonly string[]): Promise<{ ok: boolean; stdout: string; stderr: string }> {
  if (signal.aborted) return Promise.resolve({ ok: false, stdout: '', stderr: 'aborted' });
  return new Promise((resolve) => {
    execFile(argv[0], argv.slice(1), { timeout: TIMEOUT_MS, encoding: 'utf8', maxBuffer: 16 << 20, signal, killSignal: 'SIGKILL' }, (error, stdout, stderr) => {
      resolve({ ok: error === null, stdout: String(stdout ?? ''), stderr: String(stderr ?? '') });
    });
  });
}

/** An `ip` step whose command, run again, fails when its effect is present: add of a route, rule or address; del of the `local` rule. */
function rerunnable(step: NetStep): boolean {
  const a = step.apply;
  if (a[0] !== 'ip') return false;
  const verb = a.indexOf('add') >= 0 ? 'add' : a.indexOf('del') >= 0 ? 'del' : null;
  return verb !== null && (a.includes('route') || a.includes('rule') || a.includes('addr') || a.includes('address'));
}

/** iproute2's answer when a step's effect is already there (add) or already gone (del). */
const PRESENT = /File exists|No such file or directory|No such process|Cannot find device/;

/** The nft table of the journal's first nft step ("inet hostlb_hlb0"), if any. */
function nftTable(nft: readonly NetStep[]): string | undefined {
  return nft.length > 0 ? /^add table (\S+ \S+)$/m.exec(nft[0].apply[1])?.[1] : undefined;
}

/** The checks that spawn a child process which `steps` have something for. */
export function spawnChecksOf(steps: readonly NetStep[]): Set<SpawnCheck> {
  const out = new Set<SpawnCheck>();
  if (steps.some(rerunnable)) out.add('ip');
  if (nftTable(steps.filter((s) => s.apply[0] === 'nft')) !== undefined) out.add('nft');
  if (steps.some((s) => (s.apply[0] === 'iptables' || s.apply[0] === 'ip6tables') && s.apply.includes('-N'))) out.add('iptables');
  return out;
}

/**
 * Checks `steps` (a journal's, in order) against the host and applies the
 * missing ones again. `nft` steps are judged by their table (a flush removes
 * all of it; then every nft step runs again, in order); iptables steps by their
 * chain, its jumps and its rule count (a mismatch: undone and applied again);
 * ip steps by running them again (a present effect answers "File exists");
 * sysctls by their value; bpffs mounts by /proc/self/mountinfo (a bpffs
 * mounted on the step's directory). Never throws.
 *
 * Sysctls and bpffs mounts are checked on every call (no child process unless
 * one is missing); ip, nft and iptables only when `schedule` has them due
 * (without a schedule: always), and those that failed are handed back to it.
 *
 * `abort` kills the commands in flight synchronously (SIGKILL) and starts no
 * more: call it before undoing the journal, so nothing is put back after.
 */
export async function repairMissing(steps: readonly NetStep[], abort: AbortSignal, schedule?: CheckSchedule): Promise<RepairReport> {
  const report: RepairReport = { repaired: {}, errors: [] };
  const count = (kind: string, n: number): void => {
    if (n > 0) report.repaired[kind] = (report.repaired[kind] ?? 0) + n;
  };
  const present = spawnChecksOf(steps);
  const due = present.size === 0 ? present : schedule?.due(present) ?? present;
  // A check that failed proved nothing: it runs again on the next tick.
  const unsettled = new Set<SpawnCheck>();
  const fail = (check: SpawnCheck, error: string): void => {
    report.errors.push(error);
    unsettled.add(check);
  };

  for (const step of steps) {
    if (step.apply[0] !== 'sysctl' || abort.aborted) continue;
    const [, path, value] = step.apply;
    try {
      if (readFileSync(`/proc/sys/${path}`, 'utf8').trim() !== value) {
        writeFileSync(`/proc/sys/${path}`, `${value}\n`);
        count('sysctl', 1);
      }
    } catch (e) {
      report.errors.push(`sysctl ${path}: ${(e as Error).message}`);
    }
  }

  // Each directory once: a journal may list a mount twice (re-applied when adopted),
  // and mountinfo is read once, so a second pass would stack a second bpffs on it.
  const bpffsDirs = new Map(steps.filter((s) => s.apply[0] === 'bpffs' && s.apply[1] === 'mount').map((s) => [s.apply[2], s]));
  if (bpffsDirs.size > 0 && !abort.aborted) {
    let mountinfo: string | undefined;
    try {
      mountinfo = await readFile('/proc/self/mountinfo', 'utf8');
    } catch (e) {
      report.errors.push(`/proc/self/mountinfo: ${(e as Error).message}`);
    }
    for (const [dir, step] of mountinfo === undefined ? [] : bpffsDirs) {
      if (abort.aborted) break;
      try {
        const at = bpffsMountTarget(dir, mountinfo);
        if (at === null) continue;
        const r = await run(abort, ['mount', '-t', 'bpf', 'bpf', at]);
        if (r.ok) count('bpffs', 1);
        else report.errors.push(`${step.description}: ${r.stderr.trim()}`);
      } catch (e) {
        report.errors.push(`${step.description}: ${(e as Error).message}`);
      }
    }
  }

  const nft = steps.filter((s) => s.apply[0] === 'nft');
  const table = nftTable(nft);
  if (table !== undefined && due.has('nft')) {
    const listed = await run(abort, ['nft', 'list', 'table', ...table.split(' ')]);
    if (!listed.ok) {
      for (const step of nft) {
        const r = await run(abort, ['nft', '-f', '-'], step.apply[1]);
        if (r.ok) count('nft', 1);
        else fail('nft', `${step.description}: ${r.stderr.trim()}`);
      }
    }
  }

  for (const tool of due.has('iptables') ? ['iptables', 'ip6tables'] : []) {
    const own = steps.filter((s) => s.apply[0] === tool);
    const chain = own.find((s) => s.apply.includes('-N'))?.apply.at(-1);
    if (chain === undefined) continue;
    const listed = await runOut(abort, [tool, '-w', '5', '-t', 'mangle', '-S']);
    if (!listed.ok) {
      fail('iptables', `${tool} -t mangle -S: ${listed.stderr.trim()}`);
      continue;
    }
    const lines = listed.stdout.split('\n');
    const jumps = own.filter((s) => s.apply.includes('-I')).length;
    const rules = own.filter((s) => s.apply.includes('-A')).length;
    const intact = lines.includes(`-N ${chain}`)
      && lines.filter((l) => / -j /.test(l) && l.endsWith(` -j ${chain}`) && !l.startsWith(`-A ${chain} `)).length === jumps
      && lines.filter((l) => l.startsWith(`-A ${chain} `)).length === rules;
    if (intact) continue;
    // Partly gone: take the rest away (errors expected: some are gone) and build it again in order.
    for (const step of [...own].reverse()) await run(abort, step.undo);
    let applied = 0;
    for (const step of own) {
      const r = await run(abort, step.apply);
      if (r.ok) applied++;
      else fail('iptables', `${step.description}: ${r.stderr.trim()}`);
    }
    count(tool, applied);
  }

  // One `ip -batch` per family: a line that fails with "File exists" (or, for a del, "No such
  // file") was present; a line that succeeds was missing and is back.
  for (const family of due.has('ip') ? ['-4', '-6', null] : []) {
    const own = steps.filter((s) => rerunnable(s) && (family === null ? s.apply[1] !== '-4' && s.apply[1] !== '-6' : s.apply[1] === family));
    if (own.length === 0) continue;
    const lines = own.map((s) => s.apply.slice(family === null ? 1 : 2).join(' '));
    const r = await run(abort, ['ip', ...(family === null ? [] : [family]), '-force', '-batch', '-'], `${lines.join('\n')}\n`);
    const failed = new Map<number, string>();
    const text = r.stderr.split('\n');
    for (let i = 0; i < text.length; i++) {
      const m = /^Command failed -:(\d+)/.exec(text[i]);
      if (m !== null) failed.set(Number(m[1]) - 1, text.slice(Math.max(0, i - 2), i).join(' '));
    }
    // A failure that names no line (ip missing, killed at the timeout) says nothing of the steps.
    if (!r.ok && failed.size === 0) {
      fail('ip', `ip${family === null ? '' : ` ${family}`} -batch: ${r.stderr.trim() || 'failed'}`);
      continue;
    }
    own.forEach((step, i) => {
      const why = failed.get(i);
      if (why === undefined) count('ip', 1);
      else if (!PRESENT.test(why)) fail('ip', `${step.description}: ${why.trim()}`);
    });
  }
  if (due.size > 0) schedule?.settled([...unsettled]);
  return report;
}
