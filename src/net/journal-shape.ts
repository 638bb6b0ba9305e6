// What a journal step may look like before hostlb replays it. A journal is a
// file of root commands; hostlb undoes (or adopts) only steps shaped like the
// ones the data planes' host plans (dataplane/tun/host-plan.ts,
// dataplane/netfilter/host-plan.ts, and the socket plane's bpffs mounts) write,
// so a tampered or foreign journal cannot make it run anything else. Pure: no I/O.

import { isIP } from 'node:net';
import { BPFFS_ROOT } from './net-step.js';

const DEVICE = /^[A-Za-z0-9_.-]{1,15}$/;
const UINT = /^\d{1,10}$/;
const TABLE = /^(\d{1,10}|local|main|default)$/;
const IPPROTO = /^(tcp|udp|icmp|ipv6-icmp)$/;
const RULE_PROTOCOL = /^[a-z0-9]{1,16}$/;
const NFT_TABLE = 'hostlb_[A-Za-z0-9_]{1,32}';
const NFT_NAME = '[A-Za-z0-9_]{1,64}';
const IPT_CHAIN = /^HOSTLB-[A-Za-z0-9_.-]{1,21}$/;
const BPFFS_NAME = /^[A-Za-z0-9_.-]{1,64}$/;
const SYSCTL = /^(net\/ipv4\/ip_forward|net\/ipv6\/conf\/all\/forwarding|net\/ipv4\/conf\/(all|default|[A-Za-z0-9_.-]{1,15})\/(rp_filter|accept_local|route_localnet))$/;

/** An address (`198.18.0.1`) or a prefix (`198.18.0.1/32`, `2001:db8::/64`). */
function isAddressOrPrefix(text: string): boolean {
  const slash = text.indexOf('/');
  const address = slash < 0 ? text : text.slice(0, slash);
  const family = isIP(address);
  if (family === 0) return false;
  if (slash < 0) return true;
  const bits = text.slice(slash + 1);
  return /^\d{1,3}$/.test(bits) && Number(bits) <= (family === 4 ? 32 : 128);
}

/** Checks `key value` pairs against `allowed`; each key at most once. Returns a problem or null. */
function pairsProblem(args: readonly string[], allowed: Record<string, (value: string) => boolean>): string | null {
  if (args.length % 2 !== 0) return `a key without a value in ${JSON.stringify(args)}`;
  const seen = new Set<string>();
  for (let i = 0; i < args.length; i += 2) {
    const [key, value] = [args[i], args[i + 1]];
    const check = Object.hasOwn(allowed, key) ? allowed[key] : undefined;
    if (check === undefined) return `"${key}" is not an argument hostlb writes`;
    if (seen.has(key)) return `"${key}" given twice`;
    seen.add(key);
    if (!check(value)) return `${JSON.stringify(value)} is not a value hostlb writes for "${key}"`;
  }
  return null;
}

const RULE_KEYS: Record<string, (v: string) => boolean> = {
  pref: (v) => UINT.test(v),
  to: isAddressOrPrefix,
  from: isAddressOrPrefix,
  iif: (v) => DEVICE.test(v),
  ipproto: (v) => IPPROTO.test(v),
  dport: (v) => UINT.test(v),
  sport: (v) => UINT.test(v),
  lookup: (v) => TABLE.test(v),
  protocol: (v) => RULE_PROTOCOL.test(v),
};

const ROUTE_KEYS: Record<string, (v: string) => boolean> = {
  dev: (v) => DEVICE.test(v),
  src: (v) => isIP(v) !== 0,
  table: (v) => TABLE.test(v),
  metric: (v) => UINT.test(v),
};

function ipProblem(args: readonly string[]): string | null {
  if (args.length === 5 && args[0] === 'link' && args[1] === 'set' && args[2] === 'dev' && (args[4] === 'up' || args[4] === 'down')) {
    return DEVICE.test(args[3]) ? null : `${JSON.stringify(args[3])} is not a device name`;
  }
  const [family, object, verb, ...rest] = args;
  if ((family !== '-4' && family !== '-6') || (verb !== 'add' && verb !== 'del')) return 'not an ip rule/route add/del or link set';
  if (object === 'rule') {
    if (!rest.includes('lookup')) return 'a rule without lookup';
    return pairsProblem(rest, RULE_KEYS);
  }
  if (object === 'route') {
    let i = 0;
    if (rest[i] === 'blackhole' || rest[i] === 'local') i++;
    const dst = rest[i++];
    if (dst === undefined || (dst !== 'default' && !isAddressOrPrefix(dst))) return `${JSON.stringify(dst)} is not a route destination`;
    return pairsProblem(rest.slice(i), ROUTE_KEYS);
  }
  return `"${object}" is not an ip object hostlb changes`;
}

/** The lines dataplane/netfilter/host-plan.ts and dataplane/socket/host-plan.ts write, one pattern each (tokens as nft reads them). */
const NFT_LINES: readonly RegExp[] = [
  new RegExp(`^(add|delete) table inet ${NFT_TABLE}$`),
  new RegExp(`^add map inet ${NFT_TABLE} ${NFT_NAME} \\{ [A-Za-z0-9_ .:;]+ \\}$`),
  new RegExp(`^delete (map|chain) inet ${NFT_TABLE} ${NFT_NAME}$`),
  new RegExp(`^add chain inet ${NFT_TABLE} ${NFT_NAME}( \\{ type (nat|filter|route) hook (prerouting|output|input|postrouting) priority (dstnat|mangle|-?\\d{1,4}); policy accept; \\})?$`),
  // Rule bodies: matches, marks, maps and verdicts; no statement separator, quote or comment.
  new RegExp(`^add rule inet ${NFT_TABLE} ${NFT_NAME} [A-Za-z0-9_ .:@&|!=<>(),{}/-]+$`),
  new RegExp(`^(add|delete) element inet ${NFT_TABLE} ${NFT_NAME} \\{ [A-Za-z0-9_ .:,-]+ \\}$`),
];

function nftProblem(args: readonly string[]): string | null {
  if (args.length !== 1) return 'nft takes one script';
  for (const line of args[0].split('\n')) {
    if (!NFT_LINES.some((pattern) => pattern.test(line))) return `the nft line ${JSON.stringify(line)} is not one hostlb writes`;
  }
  return null;
}

const NFQUEUE_TAIL = ['-m', 'conntrack', '--ctstate', 'NEW', '!', '--ctstatus', 'CONFIRMED', '-j', 'NFQUEUE', '--queue-num'];

function iptablesProblem(args: readonly string[]): string | null {
  if (args[0] !== '-w' || args[1] !== '5' || args[2] !== '-t' || args[3] !== 'mangle') return 'not "-w 5 -t mangle"';
  const [op, chain, ...rest] = args.slice(4);
  if ((op === '-N' || op === '-X') && rest.length === 0) return IPT_CHAIN.test(chain) ? null : `${JSON.stringify(chain)} is not a hostlb chain`;
  if ((op === '-I' || op === '-D') && (chain === 'PREROUTING' || chain === 'OUTPUT')) {
    return rest.length === 2 && rest[0] === '-j' && IPT_CHAIN.test(rest[1]) ? null : 'a hook rule that does not jump to a hostlb chain';
  }
  if ((op === '-A' || op === '-D') && IPT_CHAIN.test(chain)) {
    // -d ADDR -p PROTO --dport N [--syn] -m conntrack ... --queue-num N --queue-bypass
    const [d, address, p, proto, dport, port, ...tail] = rest;
    const syn = tail[0] === '--syn' ? tail.shift() : undefined;
    const ok = d === '-d' && isIP(address) !== 0 && p === '-p' && (proto === 'tcp' || proto === 'udp') && dport === '--dport' && UINT.test(port)
      && (syn === undefined || proto === 'tcp') && tail.length === NFQUEUE_TAIL.length + 2
      && NFQUEUE_TAIL.every((token, i) => tail[i] === token) && UINT.test(tail[NFQUEUE_TAIL.length]) && tail[NFQUEUE_TAIL.length + 1] === '--queue-bypass';
    return ok ? null : 'not the queue rule hostlb writes';
  }
  return `"${op} ${chain}" is not an iptables change hostlb makes`;
}

/**
 * Why `dir` is not a directory hostlb mounts a bpffs on, or null when it is:
 * exactly `<BPFFS_ROOT>/<name>`, one level, `name` not `.` or `..`. apply.ts
 * checks this too before it runs a bpffs command.
 */
export function bpffsDirProblem(dir: string): string | null {
  const name = dir.startsWith(`${BPFFS_ROOT}/`) ? dir.slice(BPFFS_ROOT.length + 1) : '';
  if (BPFFS_NAME.test(name) && name !== '.' && name !== '..') return null;
  return `${JSON.stringify(dir)} is not a bpffs directory hostlb mounts (${BPFFS_ROOT}/<name>)`;
}

function bpffsProblem(args: readonly string[]): string | null {
  if (args.length !== 2) return `bpffs takes a verb and a directory, not ${JSON.stringify(args)}`;
  if (args[0] !== 'mount' && args[0] !== 'umount') return `"bpffs ${args[0]}" is not a bpffs change hostlb makes`;
  return bpffsDirProblem(args[1]);
}

/** Why `command` is not one hostlb writes, or null when it is. */
export function commandShapeProblem(command: unknown): string | null {
  if (!Array.isArray(command) || command.length === 0 || !command.every((c) => typeof c === 'string')) return 'not a list of strings';
  const [program, ...args] = command as string[];
  switch (program) {
    case 'ip': return ipProblem(args);
    case 'nft': return nftProblem(args);
    case 'iptables':
    case 'ip6tables': return iptablesProblem(args);
    case 'sysctl':
      if (args.length !== 2 || !SYSCTL.test(args[0])) return `${JSON.stringify(args[0])} is not a sysctl hostlb writes`;
      return /^\d{1,2}$/.test(args[1]) ? null : `${JSON.stringify(args[1])} is not a sysctl value hostlb writes`;
    case 'bpffs': return bpffsProblem(args);
    default: return `${JSON.stringify(program)} is not a program hostlb runs`;
  }
}

/** Why `step` is not a step hostlb writes (both its commands are checked), or null when it is. */
export function stepShapeProblem(step: unknown): string | null {
  if (typeof step !== 'object' || step === null) return 'not an object';
  const { description, apply, undo } = step as Record<string, unknown>;
  if (typeof description !== 'string' || description.length > 500) return 'no description';
  const applyProblem = commandShapeProblem(apply);
  if (applyProblem !== null) return `apply: ${applyProblem}`;
  const undoProblem = commandShapeProblem(undo);
  return undoProblem === null ? null : `undo: ${undoProblem}`;
}
