// What the admin API needs of a running hostlb. `Instance` (TUN, root) is the
// real one; tests can put a dispatcher over a MemoryLink behind the same shape.

import type { NetfilterPlane } from '../../dataplane/netfilter-plane.js';
import type { Dispatcher } from '../../dispatch/dispatcher.js';
import type { HostlbConfig } from '../config-schema.js';
import type { HealthRuntime } from '../health-runtime.js';
import type { ChangeSummary } from '../instance.js';

export interface Controlled {
  readonly config: HostlbConfig;
  readonly dispatcher: Dispatcher;
  readonly plane?: { packetsRead: number; packetsWritten: number; writeShortfall: number } | null;
  /** The netfilter data plane, when it is the one running: its flows are conntrack's, not the table's. */
  readonly netfilter?: NetfilterPlane | null;
  readonly startedAt: number;
  readonly configFile: string | undefined;
  /** Validated whole and applied atomically; throws ConfigError naming the key. */
  apply(next: HostlbConfig, source: string): ChangeSummary;
  /** Re-reads the config file; throws ConfigError naming file, line and key. */
  reload(): ChangeSummary;
  /** Advisors, manager, supervised daemons and events; absent in a bare test instance. */
  readonly health?: HealthRuntime;
}
