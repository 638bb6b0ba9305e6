// Where the cgroup v2 hierarchy is mounted: the counting program of the
// least-loaded pick (bpf/load-count.ts) attaches to its root, under which
// every process's sockets are. Systems with cgroup v2 alone mount it at
// /sys/fs/cgroup; hybrid ones (v1 controllers beside it) at
// /sys/fs/cgroup/unified; read from the mount table, not guessed.

import { readFileSync } from 'node:fs';

/**
 * The mount point of the cgroup v2 hierarchy's root in `mountinfo` text
 * (/proc/self/mountinfo), or null when none is mounted. A mount of a
 * sub-tree (root field other than "/") does not count.
 */
export function cgroupRootIn(mountinfo: string): string | null {
  for (const line of mountinfo.split('\n')) {
    // "36 25 0:31 / /sys/fs/cgroup/unified rw,... shared:10 - cgroup2 cgroup2 rw,..."
    const [left, right] = line.split(' - ');
    if (right === undefined || right.split(' ')[0] !== 'cgroup2') continue;
    const fields = left.split(' ');
    if (fields[3] !== '/' || fields[4] === undefined) continue;
    return fields[4].replace(/\\([0-7]{3})/g, (_, octal: string) => String.fromCharCode(parseInt(octal, 8)));
  }
  return null;
}

/** This process's view of cgroupRootIn. */
export function cgroupRoot(): string | null {
  try {
    return cgroupRootIn(readFileSync('/proc/self/mountinfo', 'utf8'));
  } catch {
    return null;
  }
}
