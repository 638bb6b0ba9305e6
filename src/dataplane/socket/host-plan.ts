// The host set-up of the socket data plane, as reversible steps (journaled
// and undone like the other planes', see net/apply.ts):
//
// - A bpffs of the instance's own, where the dispatch program, its link and
//   its maps are pinned: they outlive a crashed hostlb (dispatch goes on with
//   the weights it had) and the next start adopts them. Unmounting it (the
//   undo) drops the pins; the program detaches once no hostlb holds it.
// - A `local` route for each cluster address the host does not own yet: the
//   sk_lookup program runs only in the socket lookup of a packet for this host.
//
// The daemons listen on their own addresses; nothing else on the host changes.

import { statSync } from 'node:fs';
import type { HostFacts } from '../../net/host-facts.js';
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
  ];
}
