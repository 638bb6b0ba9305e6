// The host set-up of the socket data plane, as reversible steps (journaled
// and undone like the other planes', see net/apply.ts):
//
// - A bpffs of the instance's own, where the dispatch program, its link and
//   its maps are pinned: they outlive a crashed hostlb (dispatch goes on with
//   the weights it had) and the next start adopts them. Unmounting it (the
//   undo) drops the pins; the program detaches once no hostlb holds it.
// - A `local` route for each cluster address the host does not own yet: the
//   sk_lookup program runs only in the socket lookup of a packet for this host.
// - For UDP ports only, an nftables table `inet hostlb_sock_<device>` whose
//   output chain (type route, so a changed source is routed again) gives each
//   UDP daemon's replies the cluster's address and port, statelessly: a
//   daemon bound to its own address answers from it, which its client never
//   sent to (TCP needs nothing: an accepted connection's local address is the
//   cluster's). A verdict map keyed by the daemon's address and port jumps to
//   one small chain per daemon, so adding or removing a daemon is one step.
//   Everything the daemon sends from that address and port is rewritten:
//   give a UDP daemon an address it uses for nothing else.
//
// The daemons listen on their own addresses; nothing else on the host changes.

import { statSync } from 'node:fs';
import type { HostFacts } from '../../net/host-facts.js';
import { parseIp } from '../../wire/address.js';
import type { HostSpec } from '../../net/host-spec.js';
import { BPFFS_ROOT, type NetStep } from '../../net/net-step.js';
import { localClusterSteps } from '../local-routes.js';

/**
 * The bpffs (and pin directory) of the instance on `device` in this network
 * namespace: named after both, so instances in two namespaces never share one.
 */
export function pinDirectory(device: string): string {
  return `${BPFFS_ROOT}/${statSync('/proc/self/ns/net').ino}-${device}`;
}

/** The steps in the order they run; undo runs them backwards. Pure. */
export function planSocketSetup(spec: HostSpec, facts: HostFacts, pinDir: string): NetStep[] {
  return [
    {
      description: `a bpffs for the pinned socket dispatch of ${spec.device} (it survives hostlb; unmounting ends it)`,
      apply: ['bpffs', 'mount', pinDir],
      undo: ['bpffs', 'umount', pinDir],
    },
    ...localClusterSteps(spec, facts),
    ...udpReplySteps(spec),
  ];
}

/** The nft table of the instance on `device`. */
export function replyTableName(device: string): string {
  return `hostlb_sock_${device.replace(/[^A-Za-z0-9_]/g, '_')}`;
}

function udpReplySteps(spec: HostSpec): NetStep[] {
  const table = replyTableName(spec.device);
  const steps: NetStep[] = [];
  for (const c of spec.clusters) {
    const cluster = parseIp(c.address);
    // A cluster written as a port alone answers from whatever address the client used: no one address to give.
    if (cluster === null || cluster.text === '0.0.0.0' || cluster.text === '::') continue;
    const ip = cluster.family === 4 ? 'ip' : 'ip6';
    for (const p of c.ports) {
      if (p.protocol !== 'udp') continue;
      for (const d of p.daemons) {
        const daemon = parseIp(d.address);
        if (daemon === null || (daemon.text === cluster.text && d.port === p.port)) continue;
        const chain = `r_${daemon.text.replace(/[^A-Za-z0-9]/g, '_')}_${d.port}`;
        steps.push({
          description: `UDP replies of daemon ${d.address}:${d.port} leave from ${cluster.text}:${p.port}`,
          apply: ['nft', [
            `add chain inet ${table} ${chain}`,
            `add rule inet ${table} ${chain} udp sport set ${p.port} ${ip} saddr set ${cluster.text}`,
            `add element inet ${table} udp${cluster.family} { ${daemon.text} . ${d.port} : goto ${chain} }`,
          ].join('\n')],
          undo: ['nft', [`delete element inet ${table} udp${cluster.family} { ${daemon.text} . ${d.port} }`, `delete chain inet ${table} ${chain}`].join('\n')],
        });
      }
    }
  }
  if (steps.length === 0) return [];
  return [{
    description: `nftables table inet ${table}: UDP daemons' replies get their cluster's address and port`,
    apply: ['nft', [
      `add table inet ${table}`,
      `add map inet ${table} udp4 { type ipv4_addr . inet_service : verdict; }`,
      `add map inet ${table} udp6 { type ipv6_addr . inet_service : verdict; }`,
      `add chain inet ${table} replies { type route hook output priority mangle; policy accept; }`,
      `add rule inet ${table} replies meta nfproto ipv4 meta l4proto udp ip saddr . udp sport vmap @udp4`,
      `add rule inet ${table} replies meta nfproto ipv6 meta l4proto udp ip6 saddr . udp sport vmap @udp6`,
    ].join('\n')],
    undo: ['nft', `delete table inet ${table}`],
  }, ...steps];
}
