// Structured JSON logs on stderr (pino): start, stop, configuration changes,
// daemon state changes, errors. Written synchronously so the last lines before
// an exit are never lost.

import { pino, type BaseLogger } from 'pino';

/** What hostlb's code logs through: any pino logger (tests pass one writing to a buffer). */
export type Logger = BaseLogger;

export function createLogger(level = process.env.HOSTLB_LOG_LEVEL ?? 'info'): Logger {
  return pino({ level, base: { pid: process.pid }, timestamp: pino.stdTimeFunctions.isoTime }, pino.destination({ fd: 2, sync: true }));
}
