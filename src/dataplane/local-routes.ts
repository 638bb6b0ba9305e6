// Cluster addresses made local to the host (a `local` route in table local),
// for the planes whose packets must end in the host's own socket lookup
// (netfilter: hostlb's DNAT happens after it and the kernel answers refused
// connections; socket: the sk_lookup program runs only for local
// destinations). With `src`, a same-host client's connection leaves from a
// real address of the host (as with the TUN plane), not from the cluster
// address itself.

import { sourceAddress, type HostFacts } from '../net/host-facts.js';
import type { HostSpec } from '../net/host-spec.js';
import type { NetStep } from '../net/net-step.js';
import { parseIp } from '../wire/address.js';

/** One step per cluster address the host does not own yet (nor 127/8, local already). Pure. */
export function localClusterSteps(spec: HostSpec, facts: HostFacts): NetStep[] {
  const steps: NetStep[] = [];
  const owned = new Set(facts.addresses.map((f) => f.address));
  const taken = new Set(spec.clusters.flatMap((c) => [parseIp(c.address)!.text, ...c.ports.flatMap((p) => p.daemons.map((d) => parseIp(d.address)?.text ?? d.address))]));
  for (const c of spec.clusters) {
    const a = parseIp(c.address)!;
    // Any local address (socket plane): the host's own addresses are local already.
    if (owned.has(a.text) || (a.family === 4 && a.text.startsWith('127.')) || a.bytes.every((b) => b === 0)) continue;
    const prefix = a.family === 4 ? 32 : 128;
    const src = sourceAddress(a.family, taken, spec.device, facts);
    const route = ['local', `${a.text}/${prefix}`, 'dev', 'lo', 'table', 'local', ...(src ? ['src', src] : [])];
    steps.push({
      description: `make cluster ${a.text} a local address (refused connections are answered from it)`,
      apply: ['ip', `-${a.family}`, 'route', 'add', ...route],
      undo: ['ip', `-${a.family}`, 'route', 'del', ...route.slice(0, 6)],
    });
  }
  return steps;
}
