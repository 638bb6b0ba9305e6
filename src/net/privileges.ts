// Whether this process may change the network: creating the TUN device,
// routes, rules and sysctls all need CAP_NET_ADMIN in its network namespace.
// Checked up front so the user gets one sentence instead of an EPERM later.

import { accessSync, constants, readFileSync } from 'node:fs';

/** linux/capability.h */
export const CAP_NET_ADMIN = 12;

/**
 * Null when the process holds CAP_NET_ADMIN (bit 12 of CapEff in
 * /proc/self/status), otherwise one sentence telling the user what to do.
 * Without a readable /proc it falls back to "is this root".
 */
export function checkNetAdmin(statusText?: string): null | string {
  let status = statusText;
  if (status === undefined) {
    try {
      status = readFileSync('/proc/self/status', 'utf8');
    } catch {
      status = '';
    }
  }
  const m = /^CapEff:\s*([0-9a-fA-F]+)\s*$/m.exec(status);
  const allowed = m !== null ? ((BigInt(`0x${m[1]}`) >> BigInt(CAP_NET_ADMIN)) & 1n) === 1n : process.getuid?.() === 0;
  if (allowed) return null;
  return 'hostlb needs CAP_NET_ADMIN to set up its data plane (iptables and nftables rules, or a TUN device and routes): run it as root (sudo) or grant the capability.';
}

/** The programs of `tools` that are not on PATH (as executables). */
export function missingTools(tools: readonly string[], pathVariable = process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin'): string[] {
  const dirs = pathVariable.split(':').filter((d) => d !== '');
  return tools.filter((tool) => !dirs.some((dir) => {
    try {
      accessSync(`${dir}/${tool}`, constants.X_OK);
      return true;
    } catch {
      return false;
    }
  }));
}

/** The Debian packages that hold `tools`. */
export function toolPackages(tools: readonly string[]): string[] {
  return [...new Set(tools.map((t) => TOOL_PACKAGES[t] ?? t))];
}

/**
 * Null when every program in `tools` is on PATH, otherwise one sentence
 * naming what is missing and the Debian package that has it.
 */
export function checkTools(tools: readonly string[], pathVariable?: string): null | string {
  const missing = missingTools(tools, pathVariable);
  if (missing.length === 0) return null;
  const packages = toolPackages(missing);
  return `the netfilter data plane needs ${missing.join(' and ')}, not found on PATH: install ${packages.join(' and ')} (Debian: apt-get install -y ${packages.join(' ')}), or use dataplane: tun`;
}

const TOOL_PACKAGES: Record<string, string> = { nft: 'nftables', iptables: 'iptables', ip6tables: 'iptables' };
