// What every scheduler promises the dispatcher: pick a daemon for a new flow
// from a port's daemon set, on the packet path, without allocating or throwing.
// Which flows exist and how many each daemon holds is the dispatcher's business.

export const SCHEDULER_NAMES = ['rr', 'wrr', 'lc', 'wlc', 'random', 'p2c', 'sh', 'maglev'] as const;
export type SchedulerName = (typeof SCHEDULER_NAMES)[number];

/** A daemon as a scheduler sees it. `id` is stable for the daemon's life; weight 0 = quiesced. */
export interface SchedulerDaemon {
  readonly id: number;
  readonly weight: number;
}

/** What a scheduler may read from the dispatcher. */
export interface SchedulerContext {
  /** Active flows (connection records) the daemon holds now. */
  activeFlows(daemonId: number): number;
  /** Uniform random number in [0, 1), from a seeded generator (never Math.random, so simulations repeat). */
  random(): number;
}

export interface Scheduler {
  readonly name: SchedulerName;
  /**
   * Control path: the port's daemons or their weights changed. Replaces the
   * whole set. May allocate. Daemons with weight 0 stay known but get no new flows.
   */
  setDaemons(daemons: readonly SchedulerDaemon[]): void;
  /**
   * Packet path: the daemon id for a new flow, or -1 when no daemon has weight > 0.
   * `flowHash` is a 32-bit hash of the flow's 5-tuple; `sourceHash` of the client address.
   * Never allocates, never throws.
   */
  pick(flowHash: number, sourceHash: number): number;
}

export interface SchedulerOptions {
  /** Maglev lookup table size; must be prime. Default 65537. */
  maglevTableSize?: number;
}
