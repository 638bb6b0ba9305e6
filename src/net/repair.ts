// Puts back host objects that vanish underneath a running hostlb: an
// `nft flush ruleset` (what `systemctl restart nftables` does), an
// `iptables -t mangle -F`, a deleted route or rule, a sysctl set back, an
// unmounted bpffs. Every second the journaled steps are checked (child
// processes, never a blocking call on the packet path's thread) and the
// missing ones applied again; the journal is not touched: it already lists
// them, and stop undoes them.

import { execFile } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { bpffsMountTarget } from './apply.js';
import type { NetStep } from './net-step.js';

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

/**
 * Checks `steps` (a journal's, in order) against the host and applies the
 * missing ones again. `nft` steps are judged by their table (a flush removes
 * all of it; then every nft step runs again, in order); iptables steps by their
 * chain, its jumps and its rule count (a mismatch: undone and applied again);
 * ip steps by running them again (a present effect answers "File exists");
 * sysctls by their value; bpffs mounts by /proc/self/mountinfo (a bpffs
 * mounted on the step's directory). Never throws.
 *
 * `abort` kills the commands in flight synchronously (SIGKILL) and starts no
 * more: call it before undoing the journal, so nothing is put back after.
 */
export async function repairMissing(steps: readonly NetStep[], abort: AbortSignal): Promise<RepairReport> {
  const report: RepairReport = { repaired: {}, errors: [] };
  const count = (kind: string, n: number): void => {
    if (n > 0) report.repaired[kind] = (report.repaired[kind] ?? 0) + n;
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
  const table = nft.length > 0 ? /^add table (\S+ \S+)$/m.exec(nft[0].apply[1])?.[1] : undefined;
  if (table !== undefined) {
    const listed = await run(abort, ['nft', 'list', 'table', ...table.split(' ')]);
    if (!listed.ok) {
      for (const step of nft) {
        const r = await run(abort, ['nft', '-f', '-'], step.apply[1]);
        if (r.ok) count('nft', 1);
        else report.errors.push(`${step.description}: ${r.stderr.trim()}`);
      }
    }
  }

  for (const tool of ['iptables', 'ip6tables']) {
    const own = steps.filter((s) => s.apply[0] === tool);
    const chain = own.find((s) => s.apply.includes('-N'))?.apply.at(-1);
    if (chain === undefined) continue;
    const listed = await runOut(abort, [tool, '-w', '5', '-t', 'mangle', '-S']);
    if (!listed.ok) {
      report.errors.push(`${tool} -t mangle -S: ${listed.stderr.trim()}`);
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
      else report.errors.push(`${step.description}: ${r.stderr.trim()}`);
    }
    count(tool, applied);
  }

  // One `ip -batch` per family: a line that fails with "File exists" (or, for a del, "No such
  // file") was present; a line that succeeds was missing and is back.
  for (const family of ['-4', '-6', null]) {
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
    own.forEach((step, i) => {
      const why = failed.get(i);
      if (why === undefined) count('ip', 1);
      else if (!PRESENT.test(why)) report.errors.push(`${step.description}: ${why.trim()}`);
    });
  }
  return report;
}
