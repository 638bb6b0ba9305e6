// Sampled per-connection log lines: as a record leaves the table, a fraction
// of them (config `log.connections`) are logged with client, cluster, daemon,
// duration, bytes each way and how the connection ended.

import { RemoveReason } from '../../dispatch/conn-table.js';
import type { Dispatcher } from '../../dispatch/dispatcher.js';
import { describeRecord } from '../../dispatch/record-view.js';
import { LogBudget } from '../../log-budget.js';
import type { BaseLogger as Logger } from 'pino';

/** Connection lines per second at most, whatever the sampling rate and the connection rate. */
export const CONNECTION_LINES_PER_SECOND = 200;

/** How a connection ended, from its state and why its record left. */
export function howEnded(state: string, reason: RemoveReason, wasReset: boolean): string {
  if (reason === RemoveReason.Evicted) return 'evicted';
  if (reason === RemoveReason.Flushed) return 'flushed';
  if (wasReset) return 'reset-by-hostlb';
  if (state === 'TIME_WAIT' || state === 'LAST_ACK') return 'closed';
  if (state === 'CLOSE') return 'reset';
  return 'idle-timeout';
}

/** Installs (or, with rate 0, removes) the sampling hook on `dispatcher`. */
export function installConnectionLog(dispatcher: Dispatcher, rate: number, log: Logger, random: () => number = Math.random, budget = new LogBudget(CONNECTION_LINES_PER_SECOND)): void {
  if (rate <= 0) {
    dispatcher.connectionEnded = null;
    return;
  }
  dispatcher.connectionEnded = (id, reason) => {
    if (random() >= rate) return;
    const suppressed = budget.take();
    if (suppressed === null) return;
    const r = describeRecord(dispatcher, id);
    log.info({
      ...(suppressed > 0 ? { suppressed } : {}),
      event: 'connection', protocol: r.protocol, client: r.client, cluster: r.cluster, daemon: r.daemon,
      durationMs: Math.max(0, r.lastSeen - r.created), bytesIn: r.bytesIn, bytesOut: r.bytesOut,
      packetsIn: r.packetsIn, packetsOut: r.packetsOut, ended: howEnded(r.state, reason, r.reset),
    }, 'connection ended');
  };
}
