// CPU time from /proc, to tell how a benchmark's processes shared the machine:
// one process's user+system seconds, its main thread's time running and
// waiting for a CPU, and the seconds used by every process outside a set of
// network namespaces (other work competing for the CPUs).
// Linux only; readings of processes that vanish mid-read are skipped.

import { readdirSync, readFileSync, readlinkSync, statSync } from 'node:fs';

/** Clock ticks per second of /proc/<pid>/stat: USER_HZ, 100 on every Linux architecture Node runs on. */
const TICKS_PER_SECOND = 100;

interface ProcStat {
  ppid: number;
  cpuSeconds: number;
}

function readStat(pid: number): ProcStat | null {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return null;
  }
  // Field 2, the command name, may hold spaces and parentheses: count from the last ')'.
  // After it: state(3) ppid(4) ... utime(14) stime(15).
  const fields = text.slice(text.lastIndexOf(')') + 2).split(' ');
  return { ppid: Number(fields[1]), cpuSeconds: (Number(fields[11]) + Number(fields[12])) / TICKS_PER_SECOND };
}

/** User plus system CPU seconds `pid` has used so far; NaN when it is gone. */
export function processCpuSeconds(pid: number): number {
  return readStat(pid)?.cpuSeconds ?? Number.NaN;
}

/**
 * Seconds the main thread of `pid` (the thread group leader: a Node process's
 * event loop) has spent on a CPU and waiting in a run queue for one, from
 * /proc/<pid>/schedstat; null when it is gone.
 */
export function mainThreadSchedSeconds(pid: number): { running: number; waiting: number } | null {
  try {
    const [running, waiting] = readFileSync(`/proc/${pid}/schedstat`, 'utf8').trim().split(' ').map(Number);
    return { running: running / 1e9, waiting: waiting / 1e9 };
  } catch {
    return null;
  }
}

/** The inode that names a network namespace made by `ip netns add <name>`. */
export function netnsInode(name: string): number {
  return statSync(`/run/netns/${name}`).ino;
}

/**
 * CPU seconds so far of every user-space process whose network namespace is
 * not in `excludeNetns` (inodes from netnsInode), also leaving out `excludePids`.
 * Kernel threads are left out: softirq work done for the excluded processes
 * runs in them too.
 */
export function otherProcessesCpu(excludeNetns: ReadonlySet<number>, excludePids: ReadonlySet<number>): Map<number, number> {
  const result = new Map<number, number>();
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const pid = Number(entry);
    if (pid === 2 || excludePids.has(pid)) continue;
    const stat = readStat(pid);
    if (stat === null || stat.ppid === 2) continue;
    let netns: string;
    try {
      netns = readlinkSync(`/proc/${pid}/ns/net`);
    } catch {
      continue;
    }
    const inode = Number(/\[(\d+)\]/.exec(netns)?.[1]);
    if (excludeNetns.has(inode)) continue;
    result.set(pid, stat.cpuSeconds);
  }
  return result;
}

/**
 * Seconds all CPUs together have spent idle since boot (/proc/stat's first
 * line: idle + iowait, in USER_HZ ticks, 100 a second on Linux). The
 * difference over a run says how much CPU nobody wanted: what more threads
 * (a second TUN queue, say) could have used at most.
 */
export function machineIdleSeconds(): number {
  const fields = readFileSync('/proc/stat', 'utf8').split('\n', 1)[0].trim().split(/\s+/);
  return (Number(fields[4]) + Number(fields[5])) / 100;
}

/**
 * CPU seconds used between two otherProcessesCpu snapshots. A process that
 * appeared in between counts in full; one that started and ended in between is
 * missed, so this is a lower bound.
 */
export function cpuSecondsBetween(before: Map<number, number>, after: Map<number, number>): number {
  let sum = 0;
  for (const [pid, seconds] of after) sum += Math.max(0, seconds - (before.get(pid) ?? 0));
  return sum;
}

/**
 * The `n` processes that used the most CPU between two otherProcessesCpu
 * snapshots, as "name(pid) seconds", largest first; names of processes gone by
 * now show as "?".
 */
export function topConsumers(before: Map<number, number>, after: Map<number, number>, n: number): Array<{ pid: number; name: string; seconds: number }> {
  const used: Array<{ pid: number; seconds: number }> = [];
  for (const [pid, seconds] of after) {
    const delta = seconds - (before.get(pid) ?? 0);
    if (delta > 0) used.push({ pid, seconds: delta });
  }
  used.sort((a, b) => b.seconds - a.seconds);
  return used.slice(0, n).map(({ pid, seconds }) => {
    let name = '?';
    try {
      name = readFileSync(`/proc/${pid}/comm`, 'utf8').trim();
    } catch {
      // Gone.
    }
    return { pid, name, seconds };
  });
}
