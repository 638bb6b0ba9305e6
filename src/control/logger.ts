// Structured JSON logs on stderr (pino): start, stop, configuration changes,
// daemon state changes, errors. Written asynchronously, so a slow stderr (a
// pipe nobody drains fast, a full journald) never holds the packet path;
// pino flushes what is still buffered when the process exits.

import { pino, type BaseLogger } from 'pino';

/** What hostlb's code logs through: any pino logger (tests pass one writing to a buffer). */
export type Logger = BaseLogger;

export function createLogger(level = process.env.HOSTLB_LOG_LEVEL ?? 'info'): Logger {
  return pino({ level, base: { pid: process.pid }, timestamp: pino.stdTimeFunctions.isoTime }, pino.destination({ fd: 2, sync: false }));
}
