// One reversible change to the host's network: the command that makes it and
// the command that takes it back. A data plane's host plan
// (dataplane/*/host-plan.ts) produces steps, apply.ts runs them and writes
// them to the journal, so a step must survive JSON unchanged. A journal is
// replayed only if its steps have shapes journal-shape.ts knows: a new kind
// of step needs its shape there too (its test runs both planners' output).

/**
 * A command as an argv. Two forms:
 * - `['ip', ...args]` runs ip(8) with `args`;
 * - `['nft', script]` runs `nft -f -` with `script` as one transaction;
 * - `['iptables' | 'ip6tables', ...args]` runs iptables on the mangle table;
 * - `['sysctl', path, value]` writes `value` to `/proc/sys/<path>`; `path` uses
 *   slashes (`net/ipv4/conf/hlb0/rp_filter`) so device names with dots stay whole.
 */
export type NetCommand = readonly string[];

export interface NetStep {
  /** What the step is for, in one line, for logs and errors. */
  readonly description: string;
  readonly apply: NetCommand;
  /** Restores what `apply` changed; "already gone" counts as done. */
  readonly undo: NetCommand;
}

/** A command as a person would type it: `ip -4 rule add ...`, `sysctl -w net.ipv4.ip_forward=1`. */
export function formatCommand(command: NetCommand): string {
  if (command[0] === 'nft' && command.length === 2) return `nft -f - <<'EOF'\n${command[1]}\nEOF`;
  if (command[0] === 'sysctl') return `sysctl -w ${command[1].replaceAll('/', '.')}=${command[2]}`;
  return command.join(' ');
}
