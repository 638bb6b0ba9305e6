// Structured JSON logs on stderr (pino): start, stop, configuration changes,
// daemon state changes, errors. Written synchronously so the last lines before
// an exit are never lost.

import { pino, type Logger } from 'pino';

export type { Logger };

export function createLogger(level = process.env.HOSTLB_LOG_LEVEL ?? 'info'): Logger {
  return pino({ level, base: { pid: process.pid }, timestamp: pino.stdTimeFunctions.isoTime }, pino.destination({ fd: 2, sync: true }));
}
