// The schedulers' one public surface: createScheduler() builds a port's
// scheduler by name. Daemon ids must be integers in [0, 2^31) (the tables are
// Int32Array and -1 means "no daemon"); weights non-negative integers.

import { LeastConnectionScheduler } from './lc.js';
import { MaglevScheduler } from './maglev.js';
import { PowerOfTwoScheduler } from './p2c.js';
import { RandomScheduler } from './random.js';
import { RoundRobinScheduler } from './rr.js';
import { SCHEDULER_NAMES } from './scheduler.js';
import type { Scheduler, SchedulerContext, SchedulerName, SchedulerOptions } from './scheduler.js';
import { SourceHashScheduler } from './sh.js';
import { WeightedLeastConnectionScheduler } from './wlc.js';
import { WeightedRoundRobinScheduler } from './wrr.js';

export { SCHEDULER_NAMES } from './scheduler.js';
export type { Scheduler, SchedulerContext, SchedulerDaemon, SchedulerName, SchedulerOptions } from './scheduler.js';
export { RoundRobinScheduler } from './rr.js';
export { WeightedRoundRobinScheduler } from './wrr.js';
export { LeastConnectionScheduler } from './lc.js';
export { WeightedLeastConnectionScheduler } from './wlc.js';
export { AliasTable, RandomScheduler } from './random.js';
export { PowerOfTwoScheduler } from './p2c.js';
export { SH_TABLE_SIZE, SourceHashScheduler } from './sh.js';
export { MAGLEV_DEFAULT_TABLE_SIZE, MAGLEV_MAX_TABLE_SIZE, MaglevScheduler, buildMaglevTable, isPrime } from './maglev.js';

/**
 * Control path: a scheduler with no daemons yet (pick() returns -1 until
 * setDaemons()). `ctx` is read on every pick by lc, wlc, random and p2c.
 * Throws RangeError for an unknown name or a maglevTableSize that is not prime.
 */
export function createScheduler(name: SchedulerName, ctx: SchedulerContext, options: SchedulerOptions = {}): Scheduler {
  switch (name) {
    case 'rr':
      return new RoundRobinScheduler();
    case 'wrr':
      return new WeightedRoundRobinScheduler();
    case 'lc':
      return new LeastConnectionScheduler(ctx);
    case 'wlc':
      return new WeightedLeastConnectionScheduler(ctx);
    case 'random':
      return new RandomScheduler(ctx);
    case 'p2c':
      return new PowerOfTwoScheduler(ctx);
    case 'sh':
      return new SourceHashScheduler();
    case 'maglev':
      return new MaglevScheduler(options.maglevTableSize);
    default:
      throw new RangeError(`unknown scheduler "${String(name)}"; expected one of ${SCHEDULER_NAMES.join(', ')}`);
  }
}
