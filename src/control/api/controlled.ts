// What the admin API needs of a running hostlb: its configuration, the
// Balancer (daemons, weights, counts), the data plane (flows, counters), and
// health. `Instance` is the one there is; tests build it over a MemoryLink.

import type { FrontTierAgent } from '../agent/agent-server.js';
import type { DataPlane } from '../../dataplane/data-plane.js';
import type { Balancer } from '../../dispatch/balancer.js';
import type { HostlbConfig } from '../config-schema.js';
import type { HealthRuntime } from '../health-runtime.js';
import type { ChangeSummary } from '../instance.js';

export interface Controlled {
  readonly config: HostlbConfig;
  readonly balancer: Balancer;
  readonly plane: DataPlane;
  /** Advisors, manager, supervised daemons and events. */
  readonly health: HealthRuntime;
  /** The front tier's agent-check answers; `hostlb port drain` and stopping change them. */
  readonly agent: FrontTierAgent;
  /** Host objects put back after they vanished, by kind (hostlb_repairs_total). */
  readonly repairs: Readonly<Record<string, number>>;
  readonly startedAt: number;
  readonly configFile: string | undefined;
  /** Validated whole and applied atomically; throws ConfigError naming the key. */
  apply(next: HostlbConfig, source: string): ChangeSummary;
  /** Re-reads the config file; throws ConfigError naming file, line and key. */
  reload(): ChangeSummary;
}
