// Power of two choices: draw two daemons by weight, send the new flow to the
// one with fewer active flows per unit of weight. Near least-connection balance
// for two load reads per flow, without herding onto one idle daemon.

import type { Scheduler, SchedulerContext, SchedulerDaemon } from './scheduler.js';
import { AliasTable } from './random.js';

export class PowerOfTwoScheduler implements Scheduler {
  readonly name = 'p2c' as const;
  private readonly ctx: SchedulerContext;
  private readonly table = new AliasTable();

  constructor(ctx: SchedulerContext) {
    this.ctx = ctx;
  }

  setDaemons(daemons: readonly SchedulerDaemon[]): void {
    this.table.build(daemons);
  }

  pick(_flowHash: number, _sourceHash: number): number {
    const { table, ctx } = this;
    const { ids, weights } = table;
    if (ids.length === 0) return -1;
    // The two draws may coincide (always so with one daemon); that daemon then wins.
    const a = table.sample(ctx.random());
    const b = table.sample(ctx.random());
    if (a === b) return ids[a];
    // Same +1 overhead as wlc: between two idle daemons the heavier wins.
    const loadA = ctx.activeFlows(ids[a]) + 1;
    const loadB = ctx.activeFlows(ids[b]) + 1;
    // loadB/weightB < loadA/weightA without division; a tie goes to the first draw.
    return loadB * weights[a] < loadA * weights[b] ? ids[b] : ids[a];
  }
}
