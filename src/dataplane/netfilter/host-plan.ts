// The host set-up of the netfilter data plane, as reversible steps (journaled
// and undone like the TUN plane's routes, see apply.ts):
//
// - iptables (mangle, PREROUTING and OUTPUT): the first packet of each new
//   connection to a cluster port goes to hostlb's NFQUEUE queue. --queue-bypass
//   lets it through when no hostlb listens (crash, restart); the kernel-side
//   hash rule below then picks the daemon. This kernel has no nftables `queue`
//   statement, hence iptables(-nft) for this one rule.
// - nftables table `inet hostlb_<name>`: in the nat hooks each cluster port
//   has a chain: a packet without hostlb's mark gets one from a hash of its
//   source (the fallback buckets), then every packet is sent to the daemon its
//   mark names (`dnat to meta mark map`), and the mark is kept on the
//   conntrack entry so the conntrack events of the flow name the daemon.
//   conntrack carries every later packet both ways.
// - A `local` route for each cluster address the host does not own yet, so a
//   connection refused (no daemon up) is answered by the kernel from the
//   cluster address, and same-host clients' packets have somewhere to go.
//
// The maps' elements (which mark is which daemon, the fallback buckets) are
// not steps: they are state that the data plane rewrites in one nft
// transaction whenever daemons or weights change (nft-maps.ts).

import type { HostFacts } from '../../net/host-facts.js';
import type { HostSpec } from '../../net/host-spec.js';
import { NetError } from '../../net/net-error.js';
import type { NetStep } from '../../net/net-step.js';
import { localClusterSteps } from '../local-routes.js';
import { ANSWERED_BIT, ENDING_BIT, EVENT_BITS, MARK_MASK, QUIET_BIT } from './marks.js';
import { parseIp } from '../../wire/address.js';

export interface NetfilterSpec extends HostSpec {
  /** NFQUEUE queue number (0..65535), one per hostlb instance. */
  queue: number;
  /** Mark of daemon id i is `markBase | i`; the low 16 bits of markBase are zero. */
  markBase: number;
}

/** Buckets of the kernel-side hash that picks a daemon while hostlb is away. */
export const FALLBACK_BUCKETS = 64;

/** nft table of the instance `name` (the config's device name). */
export function tableName(name: string): string {
  return `hostlb_${name.replace(/[^A-Za-z0-9_]/g, '_')}`;
}

/** iptables chain of the instance (at most 28 characters). */
export function queueChainName(name: string): string {
  return `HOSTLB-${name}`.slice(0, 28);
}

/** A cluster port's chain and fallback map name: stable across restarts, so a crashed run's set-up is adopted. */
export function portObjectName(address: string, protocol: string, port: number): string {
  return `c_${address.replace(/[^A-Za-z0-9]/g, '_')}_${protocol}_${port}`;
}

export function hex(n: number): string {
  return `0x${(n >>> 0).toString(16).padStart(8, '0')}`;
}

/** The steps in the order they run; undo runs them backwards. */
export function planNetfilterSetup(spec: NetfilterSpec, facts: HostFacts): NetStep[] {
  if (!Number.isInteger(spec.queue) || spec.queue < 0 || spec.queue > 65535) {
    throw new NetError('NET_SPEC_INVALID', `netfilter.queue must be an integer 0..65535, got ${spec.queue}`);
  }
  if ((spec.markBase & ~MARK_MASK) !== 0) {
    throw new NetError('NET_SPEC_INVALID', `netfilter.mark must have its low 16 bits zero, got ${hex(spec.markBase)}`);
  }
  const table = tableName(spec.device);
  const chain = queueChainName(spec.device);
  const base = hex(spec.markBase);
  const steps: NetStep[] = [];
  const families = new Set<4 | 6>();
  for (const c of spec.clusters) {
    const a = parseIp(c.address);
    if (!a) throw new NetError('NET_SPEC_INVALID', `cluster address ${c.address} is not an IP address`);
    families.add(a.family);
  }

  // nft: the table, the daemon maps and the dispatch chains in the nat hooks.
  steps.push({
    description: `nftables table inet ${table}: daemons by mark, cluster ports to their chains`,
    apply: ['nft', [
      `add table inet ${table}`,
      `add map inet ${table} daemons4 { type mark : ipv4_addr . inet_service; }`,
      `add map inet ${table} daemons6 { type mark : ipv6_addr . inet_service; }`,
      `add map inet ${table} ports4 { type ipv4_addr . inet_proto . inet_service : verdict; }`,
      `add map inet ${table} ports6 { type ipv6_addr . inet_proto . inet_service : verdict; }`,
      `add chain inet ${table} prerouting { type nat hook prerouting priority dstnat; policy accept; }`,
      `add chain inet ${table} output { type nat hook output priority -100; policy accept; }`,
      ...['prerouting', 'output'].flatMap((hook) => [
        `add rule inet ${table} ${hook} ip daddr . meta l4proto . th dport vmap @ports4`,
        `add rule inet ${table} ${hook} ip6 daddr . meta l4proto . th dport vmap @ports6`,
      ]),
      // Conntrack events, trimmed. A TCP flow reports every state change
      // unless told otherwise (6.9 events per connection in bench:e2e).
      // hostlb needs two: the daemon's answer to the SYN (its SYN-ACK), and
      // the first FIN or RST (no longer active, and hostlb forgets it), plus
      // destroyed for a flow that ends without either (a timeout, or a SYN
      // refused with a RST: conntrack kills that entry at once). The answer
      // is the daemon's SYN-ACK, not the client's ACK that makes the flow
      // assured: passive health must hear only what the daemon does, or
      // spoofed SYNs (never completed) and a SYN scan (the scanner's kernel
      // resets each SYN-ACK) would take healthy daemons out. For a daemon on
      // this host that event is built on hostlb's thread (the verdict
      // re-injects the SYN and the daemon answers in the same call); it
      // replaces the assured event, so a flow still costs three. Between
      // conntrack and the hook that delivers a packet's events, these chains
      // set the flow's event mask: state changes for the SYN-ACK, then only
      // its destruction, then state changes for the first FIN or RST and the
      // answering one, then nothing (hostlb has forgotten the flow by then).
      `add chain inet ${table} events_in { type filter hook input priority 0; policy accept; }`,
      `add chain inet ${table} events_out { type filter hook postrouting priority 0; policy accept; }`,
      // Most packets leave at the third rule: other traffic at the second,
      // a settled flow's segments at the third.
      ...['events_in', 'events_out'].flatMap((chain) => [
        `add rule inet ${table} ${chain} meta l4proto != tcp accept`,
        `add rule inet ${table} ${chain} ct mark & ${hex(MARK_MASK)} != ${base} accept`,
        `add rule inet ${table} ${chain} ct mark & ${hex(MARK_MASK | EVENT_BITS)} == ${hex(spec.markBase | ANSWERED_BIT | QUIET_BIT)} tcp flags & (fin | rst) == 0 accept`,
        // The first FIN or RST: reported. QUIET is cleared and serves as ARMED from here on.
        `add rule inet ${table} ${chain} ct mark & ${hex(MARK_MASK | ENDING_BIT)} == ${base} tcp flags & (fin | rst) != 0 ct mark set ct mark and ${hex(~QUIET_BIT >>> 0)} or ${hex(ENDING_BIT)} ct event set protoinfo accept`,
        // Once ending, the flow is silenced only by a packet after the answering FIN or RST
        // (which arms it): the mask is the flow's, not the packet's, so narrowing it on just
        // any packet could drop the first FIN's event before another CPU delivered it (seen
        // under load). A packet after the answer comes after the first FIN's event went out.
        `add rule inet ${table} ${chain} ct mark & ${hex(ENDING_BIT | QUIET_BIT)} == ${hex(ENDING_BIT)} tcp flags & (fin | rst) != 0 ct mark set ct mark or ${hex(QUIET_BIT)} accept`,
        `add rule inet ${table} ${chain} ct mark & ${hex(ENDING_BIT | QUIET_BIT)} == ${hex(ENDING_BIT | QUIET_BIT)} tcp flags & (fin | rst) == 0 ct event set 0x0 accept`,
        `add rule inet ${table} ${chain} ct mark & ${hex(ENDING_BIT)} != 0 accept`,
        `add rule inet ${table} ${chain} ct mark & ${hex(ANSWERED_BIT)} == 0 ct direction reply tcp flags & (syn | ack) == syn | ack ct mark set ct mark or ${hex(ANSWERED_BIT)} ct event set protoinfo,destroy accept`,
        `add rule inet ${table} ${chain} ct mark & ${hex(ANSWERED_BIT | QUIET_BIT)} == ${hex(ANSWERED_BIT)} ct mark set ct mark or ${hex(QUIET_BIT)} ct event set destroy accept`,
        `add rule inet ${table} ${chain} ct event set destroy`,
      ]),
    ].join('\n')],
    undo: ['nft', `delete table inet ${table}`],
  });
  for (const c of spec.clusters) {
    const a = parseIp(c.address)!;
    const ip = a.family === 4 ? 'ip' : 'ip6';
    for (const p of c.ports) {
      const name = portObjectName(a.text, p.protocol, p.port);
      const protocols = p.protocol === 'any' ? ['tcp', 'udp'] : [p.protocol];
      const elements = protocols.map((proto) => `${a.text} . ${proto} . ${p.port}`);
      steps.push({
        description: `nftables chain for ${a.text} port ${p.port}/${p.protocol}: fallback hash, then dnat by mark`,
        apply: ['nft', [
          `add map inet ${table} ${name} { typeof numgen inc mod ${FALLBACK_BUCKETS} : meta mark; }`,
          `add chain inet ${table} ${name}`,
          `add rule inet ${table} ${name} meta l4proto { tcp, udp } meta mark & ${hex(MARK_MASK)} != ${base} meta mark set jhash ${ip} saddr . th sport mod ${FALLBACK_BUCKETS} seed 0x686c6221 map @${name}`,
          // TCP reports no NEW event (hostlb counted the flow when it decided; see the events chains); UDP has no states to report.
          `add rule inet ${table} ${name} meta l4proto tcp ct mark set meta mark ct event set protoinfo,destroy dnat ${ip} to meta mark map @daemons${a.family}`,
          // A UDP flow has no answer to wait for: ANSWERED from the start keeps it out of the dump of unanswered handshakes.
          `add rule inet ${table} ${name} meta l4proto udp ct mark set meta mark or ${hex(ANSWERED_BIT)} ct event set new,destroy dnat ${ip} to meta mark map @daemons${a.family}`,
          `add element inet ${table} ports${a.family} { ${elements.map((e) => `${e} : jump ${name}`).join(', ')} }`,
        ].join('\n')],
        undo: ['nft', [
          `delete element inet ${table} ports${a.family} { ${elements.join(', ')} }`,
          `delete chain inet ${table} ${name}`,
          `delete map inet ${table} ${name}`,
        ].join('\n')],
      });
    }
  }

  // iptables: queue the first packet of each new connection.
  for (const family of [4, 6] as const) {
    if (!families.has(family)) continue;
    const tool = family === 4 ? 'iptables' : 'ip6tables';
    steps.push({ description: `${tool} mangle chain ${chain}`, apply: [tool, '-w', '5', '-t', 'mangle', '-N', chain], undo: [tool, '-w', '5', '-t', 'mangle', '-X', chain] });
    for (const hook of ['PREROUTING', 'OUTPUT']) {
      steps.push({
        description: `${tool} mangle ${hook} jumps to ${chain}`,
        apply: [tool, '-w', '5', '-t', 'mangle', '-I', hook, '-j', chain],
        undo: [tool, '-w', '5', '-t', 'mangle', '-D', hook, '-j', chain],
      });
    }
    for (const c of spec.clusters) {
      const a = parseIp(c.address)!;
      if (a.family !== family) continue;
      for (const p of c.ports) {
        for (const proto of p.protocol === 'any' ? ['tcp', 'udp'] : [p.protocol]) {
          // --syn first: a cheap flags test keeps every later TCP segment away from the conntrack match.
          const rule = ['-d', a.text, '-p', proto, '--dport', String(p.port), ...(proto === 'tcp' ? ['--syn'] : []), '-m', 'conntrack', '--ctstate', 'NEW', '!', '--ctstatus', 'CONFIRMED',
            '-j', 'NFQUEUE', '--queue-num', String(spec.queue), '--queue-bypass'];
          steps.push({
            description: `queue new ${proto} connections to ${a.text} port ${p.port} to hostlb (queue ${spec.queue})`,
            apply: [tool, '-w', '5', '-t', 'mangle', '-A', chain, ...rule],
            undo: [tool, '-w', '5', '-t', 'mangle', '-D', chain, ...rule],
          });
        }
      }
    }
  }

  steps.push(...localClusterSteps(spec, facts));
  return steps;
}
