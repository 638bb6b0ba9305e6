// Daemon events — up, down, drained, restarted, weight changed — kept in a
// small ring for the API, counted for metrics, and pushed to listeners (the
// log and the server-sent event stream).

import { EventEmitter } from 'node:events';

export type DaemonEventType = 'daemon_up' | 'daemon_down' | 'daemon_drained' | 'daemon_restarted' | 'weight_changed' | 'daemon_started' | 'daemon_exited';

export interface DaemonEvent {
  /** Increasing number, so a stream reader can resume (`Last-Event-ID`). */
  id: number;
  type: DaemonEventType;
  /** ISO time. */
  at: string;
  /** "198.18.100.1:80/tcp" */
  port: string;
  /** "198.18.2.1:8080" */
  daemon: string;
  /** Why, in a few words ("http advisor: status 503, expected 200"; "refuses new connections"). */
  reason?: string;
  weight?: number;
  previousWeight?: number;
}

export class EventLog extends EventEmitter {
  private readonly ring: DaemonEvent[] = [];
  private nextId = 1;
  /** Events so far, by type (for metrics). */
  readonly counts = new Map<DaemonEventType, number>();

  constructor(private readonly keep = 1000) {
    super();
  }

  emitEvent(event: Omit<DaemonEvent, 'id' | 'at'>): DaemonEvent {
    const full: DaemonEvent = { id: this.nextId++, at: new Date().toISOString(), ...event };
    this.ring.push(full);
    if (this.ring.length > this.keep) this.ring.shift();
    this.counts.set(full.type, (this.counts.get(full.type) ?? 0) + 1);
    this.emit('event', full);
    return full;
  }

  /** Kept events with id greater than `after`, oldest first. */
  since(after = 0): DaemonEvent[] {
    return this.ring.filter((e) => e.id > after);
  }
}
