// Reads the host's network state for the data planes' host plans: addresses
// and devices (`ip -j addr`), policy rules (`ip -j -d rule`, both families),
// routes (`ip -j route show table all`) and the sysctls a plan may change.
// Reads only.

import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import {
  addressesFromJson,
  routeFromJson,
  ruleFromJson,
  type Family,
  type HostFacts,
  type RouteFact,
  type RuleFact,
} from './host-facts.js';
import { NetError } from './net-error.js';

const IP_TIMEOUT_MS = 10_000;

const IPV4_FORWARD = 'net/ipv4/ip_forward';
const IPV6_FORWARD = 'net/ipv6/conf/all/forwarding';

/** Every /proc/sys path a plan may consult (the TUN plane's, dataplane/tun/host-plan.ts). */
export function sysctlPaths(device: string): string[] {
  const paths = [IPV4_FORWARD, IPV6_FORWARD];
  for (const scope of ['all', 'default', device]) {
    for (const key of ['rp_filter', 'accept_local', 'route_localnet']) paths.push(`net/ipv4/conf/${scope}/${key}`);
  }
  return paths;
}

function ipJson(args: string[]): Array<Record<string, unknown>> {
  let out: string;
  try {
    out = execFileSync('ip', ['-j', ...args], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: IP_TIMEOUT_MS, maxBuffer: 256 * 1024 * 1024 });
  } catch (cause) {
    const stderr = String((cause as { stderr?: unknown }).stderr ?? (cause as Error).message).trim();
    throw new NetError('NET_PROBE_FAILED', `ip -j ${args.join(' ')} failed: ${stderr} (is iproute2 installed?)`, { cause, stderr });
  }
  out = out.trim();
  return out === '' ? [] : (JSON.parse(out) as Array<Record<string, unknown>>);
}

/** Whether the kernel has IPv6 at all (booted with ipv6.disable=1 it has no /proc/sys/net/ipv6). */
export function hasIpv6(): boolean {
  return existsSync('/proc/sys/net/ipv6');
}

/**
 * Facts about this process's network namespace for planning `device`'s set-up.
 * Tables and protocols come back numeric (`-N`), so names in
 * /etc/iproute2/rt_tables cannot hide hostlb's own rules from the plan.
 * Throws NetError NET_PROBE_FAILED when ip(8) fails.
 */
export function probeHost(device: string): HostFacts {
  const { addresses, devices } = addressesFromJson(ipJson(['addr', 'show']));
  const families: Family[] = hasIpv6() ? [4, 6] : [4];
  const rules: RuleFact[] = [];
  const routes: RouteFact[] = [];
  for (const family of families) {
    // -d adds each rule's protocol, so undo can restore the kernel's own rule exactly.
    for (const rule of ipJson(['-N', '-d', `-${family}`, 'rule', 'show'])) rules.push(ruleFromJson(family, rule));
    for (const route of ipJson(['-N', `-${family}`, 'route', 'show', 'table', 'all'])) routes.push(routeFromJson(family, route));
  }
  const sysctls: Record<string, string> = {};
  for (const path of sysctlPaths(device)) {
    try {
      sysctls[path] = readFileSync(`/proc/sys/${path}`, 'utf8').trim();
    } catch {
      // Absent: IPv6 disabled, or the device does not exist yet (dataplane/tun/host-plan.ts then
      // starts from the `default` values a new device inherits).
    }
  }
  return { addresses, devices, rules, routes, sysctls };
}
