// One reversible change to the host: the command that makes it and the command
// that takes it back. A data plane's host plan (dataplane/*/host-plan.ts)
// produces steps, apply.ts runs them and writes them to the journal, so a step
// must survive JSON unchanged. A journal is replayed only if its steps have
// shapes journal-shape.ts knows: a new kind of step needs its shape there too
// (its test runs the planners' output).

/**
 * Where the socket data plane mounts its own bpffs instances, one directory
 * each (`<BPFFS_ROOT>/<name>`, name `[A-Za-z0-9_.-]{1,64}`, not `.` or `..`).
 * Under /run: tmpfs, so a reboot (which drops every BPF object) forgets them.
 */
export const BPFFS_ROOT = '/run/hostlb/bpf';

/**
 * A command as an argv. The forms:
 * - `['ip', ...args]` runs ip(8) with `args`;
 * - `['nft', script]` runs `nft -f -` with `script` as one transaction;
 * - `['iptables' | 'ip6tables', ...args]` runs iptables on the mangle table;
 * - `['sysctl', path, value]` writes `value` to `/proc/sys/<path>`; `path` uses
 *   slashes (`net/ipv4/conf/hlb0/rp_filter`) so device names with dots stay whole;
 * - `['bpffs', 'mount', dir]` creates `dir` (mode 0700, parents too) and mounts
 *   a new bpffs instance on it (`mount -t bpf bpf <dir>`), so BPF objects pinned
 *   there outlive hostlb; a bpffs already mounted on `dir` counts as done;
 * - `['bpffs', 'umount', dir]` unmounts that bpffs (dropping every pin in it:
 *   a program attached through a pinned link detaches once no fd holds the
 *   link), then removes the empty `dir`; nothing mounted, or no `dir`, counts
 *   as done. Neither touches anything but a bpffs mounted on `dir`, and `dir`
 *   is always `<BPFFS_ROOT>/<name>`.
 */
export type NetCommand = readonly string[];

export interface NetStep {
  /** What the step is for, in one line, for logs and errors. */
  readonly description: string;
  readonly apply: NetCommand;
  /** Restores what `apply` changed; "already gone" counts as done. */
  readonly undo: NetCommand;
}

/** A command as a person would type it: `ip -4 rule add ...`, `sysctl -w net.ipv4.ip_forward=1`, `mount -t bpf bpf /run/hostlb/bpf/x`. */
export function formatCommand(command: NetCommand): string {
  if (command[0] === 'nft' && command.length === 2) return `nft -f - <<'EOF'\n${command[1]}\nEOF`;
  if (command[0] === 'sysctl') return `sysctl -w ${command[1].replaceAll('/', '.')}=${command[2]}`;
  if (command[0] === 'bpffs' && command.length === 3 && command[1] === 'mount') return `mount -t bpf bpf ${command[2]}`;
  if (command[0] === 'bpffs' && command.length === 3 && command[1] === 'umount') return `umount ${command[2]}`;
  return command.join(' ');
}
