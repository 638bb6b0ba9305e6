// Starting and stopping a hostlb instance with the TUN data plane: validate,
// clean up after a crashed run, open the device, set up the host's routes and
// rules (journaled), pump packets; and on stop undo all of it, in that order
// reversed. The CLI and the demo both come through here.

import { Dispatcher } from '../dispatch/dispatcher.js';
import { TunPlane } from '../dataplane/tun-plane.js';
import { HostlbError } from '../errors.js';
import { TunLink } from '../link/tun-link.js';
import { applyPlan, cleanupLeftovers, journalPathFor, undoJournal } from '../net/apply.js';
import type { HostSpec } from '../net/host-spec.js';
import { planHostSetup } from '../net/plan.js';
import { checkNetAdmin } from '../net/privileges.js';
import { probeHost } from '../net/probe.js';
import { parseEndpoint } from '../wire/address.js';
import type { HostlbConfig } from './config-schema.js';

export interface Running {
  readonly config: HostlbConfig;
  readonly dispatcher: Dispatcher;
  readonly plane: TunPlane;
  readonly link: TunLink;
  /** Stops the data plane and undoes every change to the host. Safe to call twice. */
  stop(): void;
}

/** What the network set-up needs from a configuration. */
export function hostSpecOf(config: HostlbConfig): HostSpec {
  return {
    device: config.device,
    routeTable: config.routeTable,
    clusters: config.clusters.map((c) => ({
      address: c.address,
      ports: c.ports.map((p) => ({
        port: p.port,
        protocol: p.protocol,
        daemons: p.daemons.map((d) => {
          const e = parseEndpoint(d.address)!;
          return { address: e.address.text, port: e.port };
        }),
      })),
    })),
  };
}

export type Log = (event: string, fields?: Record<string, unknown>) => void;

/**
 * Starts an instance. Throws HostlbError (NEEDS_NET_ADMIN, NET_*, TUN_*) and
 * leaves the host as it found it when any step fails.
 */
export function startInstance(config: HostlbConfig, log: Log): Running {
  const missing = checkNetAdmin();
  if (missing !== null) throw new HostlbError('NEEDS_NET_ADMIN', missing);

  // Everything that can be checked without touching the host comes first.
  const dispatcher = new Dispatcher({ capacity: config.table.capacity, timeouts: config.table.timeouts, seed: config.seed, hashSeed: config.seed });
  dispatcher.configure(config);
  const spec = hostSpecOf(config);

  const journal = journalPathFor(config.device, config.stateDir);
  const leftovers = cleanupLeftovers(config.device, { journalPath: journal });
  if (leftovers.undone > 0 || leftovers.deviceRemoved) log('cleaned up after an earlier run', { ...leftovers });

  // Persistent: if this process dies, the device and its routes stay, so
  // daemon replies go nowhere rather than leaking out untranslated (DESIGN.md).
  const link = TunLink.open(config.device, { persist: true });
  try {
    applyPlan(planHostSetup(spec, probeHost(config.device)), journal);
  } catch (e) {
    link.setPersist(false);
    link.close();
    throw e;
  }
  const plane = new TunPlane(link, dispatcher);
  plane.start();
  log('started', { device: config.device, clusters: config.clusters.map((c) => c.address), capacity: config.table.capacity });

  let stopped = false;
  return {
    config, dispatcher, plane, link,
    stop(): void {
      if (stopped) return;
      stopped = true;
      plane.stop();
      const undone = undoJournal(journal);
      link.setPersist(false);
      link.close();
      log('stopped', { undone });
    },
  };
}

/** One line of counters for people watching a terminal. */
export function countersLine(running: Running): string {
  const d = running.dispatcher;
  const stats = d.balancer.stats;
  const drops = stats.drops.reduce((a, b) => a + b, 0);
  const perDaemon = [...d.tree.daemons()].map((x) => `${x.name}=${stats.daemonCounters(x.id).newFlows}`).join(' ');
  return `flows ${d.table.size} active, packets in ${stats.forwardedIn} out ${stats.forwardedOut}, drops ${drops}; new flows per daemon: ${perDaemon}`;
}
