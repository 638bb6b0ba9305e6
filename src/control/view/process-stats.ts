// What a supervised process costs, read from /proc: CPU time (user + system,
// /proc/<pid>/stat) and resident memory (VmRSS, /proc/<pid>/status). A
// process that is gone, or a line that does not parse, reads as null: the
// live view shows "-" rather than failing.

import { readFileSync } from 'node:fs';

/** /proc reports CPU time in USER_HZ ticks, which Linux fixes at 100 per second for user space. */
const USER_HZ = 100;

export interface ProcessUse {
  cpuSeconds: number;
  rssBytes: number;
}

/** Parses /proc/<pid>/stat: utime and stime are fields 14 and 15, counted after the command name's closing parenthesis. */
export function parseCpuSeconds(stat: string): number | null {
  const close = stat.lastIndexOf(')');
  if (close < 0) return null;
  // After ") " come field 3 (state) onwards: utime is the 12th of those, stime the 13th.
  const fields = stat.slice(close + 2).split(' ');
  const utime = Number(fields[11]);
  const stime = Number(fields[12]);
  return Number.isFinite(utime) && Number.isFinite(stime) ? (utime + stime) / USER_HZ : null;
}

/** Parses the VmRSS line of /proc/<pid>/status (kB) into bytes. */
export function parseRssBytes(status: string): number | null {
  const m = /^VmRSS:\s+(\d+) kB$/m.exec(status);
  return m ? Number(m[1]) * 1024 : null;
}

export function processUse(pid: number): ProcessUse | null {
  try {
    const cpu = parseCpuSeconds(readFileSync(`/proc/${pid}/stat`, 'utf8'));
    const rss = parseRssBytes(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return cpu === null || rss === null ? null : { cpuSeconds: cpu, rssBytes: rss };
  } catch {
    return null;
  }
}
