// What supervised daemons print, kept apart from hostlb's own log: the last
// KEEP lines of each instance in memory (for `hostlb logs` and the admin
// API), and every line appended to a file per instance under the state
// directory, rotated once it passes MAX_FILE_BYTES (one older file, `.1`, is
// kept). Lines carry one sequence number across all instances, so a reader
// that asks for what came after the last it saw (since=N) misses nothing the
// rings still hold.

import { closeSync, fstatSync, mkdirSync, openSync, renameSync, writeSync } from 'node:fs';
import { join } from 'node:path';

/** Lines kept in memory per instance. */
const KEEP = 1_000;
/** A log file is rotated past this size. */
const MAX_FILE_BYTES = 10 * 1024 * 1024;

export interface LogLine {
  /** Increasing across every instance's lines. */
  id: number;
  /** ISO time the line was read. */
  at: string;
  /** The supervised program's name (supervise.env.HOSTLB_NAME, else its command's file name). */
  name: string;
  /** The cluster port it serves ("198.18.100.1:80/tcp"). */
  port: string;
  index: number;
  /** The instance's address:port. */
  daemon: string;
  pid: number | null;
  stream: 'stdout' | 'stderr';
  text: string;
}

export interface LogFilter {
  /** An instance index, a daemon address:port, or a program name. */
  instance?: string;
  /** Only lines with a larger id. */
  since?: number;
  /** At most this many, the most recent. */
  limit?: number;
}

interface Sink {
  ring: LogLine[];
  /** The open file, or null (not opened yet, or memory only). */
  fd: number | null;
  path: string | null;
  bytes: number;
}

export class InstanceLogs {
  private next = 1;
  private readonly sinks = new Map<string, Sink>();

  /** `dir`: where the files go (created, mode 0700), or null to keep lines in memory only. */
  constructor(private readonly dir: string | null, private readonly keep = KEEP, private readonly maxFileBytes = MAX_FILE_BYTES) {}

  /** Records one line. Never throws: a file that cannot be written leaves the line in memory. */
  add(line: Omit<LogLine, 'id' | 'at'>): LogLine {
    const full: LogLine = { id: this.next++, at: new Date().toISOString(), ...line };
    const sink = this.sink(line.port, line.index);
    sink.ring.push(full);
    if (sink.ring.length > this.keep) sink.ring.splice(0, sink.ring.length - this.keep);
    this.write(sink, `${full.at} ${full.stream === 'stderr' ? 'E' : 'O'} ${full.text}\n`);
    return full;
  }

  /** The lines kept that pass `filter`, oldest first. */
  lines(filter: LogFilter = {}): LogLine[] {
    const since = filter.since ?? 0;
    const wanted = filter.instance;
    const out: LogLine[] = [];
    for (const sink of this.sinks.values()) {
      for (const l of sink.ring) {
        if (l.id <= since) continue;
        if (wanted !== undefined && wanted !== String(l.index) && wanted !== l.daemon && wanted !== l.name) continue;
        out.push(l);
      }
    }
    out.sort((a, b) => a.id - b.id);
    return filter.limit !== undefined && out.length > filter.limit ? out.slice(out.length - filter.limit) : out;
  }

  /** The file an instance's lines go to, or null (memory only). */
  fileOf(port: string, index: number): string | null {
    return this.dir === null ? null : join(this.dir, `${port.replace(/[^A-Za-z0-9.]/g, '_')}.${index}.log`);
  }

  /** Closes the files; the lines stay readable. */
  close(): void {
    for (const sink of this.sinks.values()) {
      if (sink.fd !== null) closeQuietly(sink.fd);
      sink.fd = null;
    }
  }

  private sink(port: string, index: number): Sink {
    const key = `${port}#${index}`;
    let sink = this.sinks.get(key);
    if (sink === undefined) {
      sink = { ring: [], fd: null, path: this.fileOf(port, index), bytes: 0 };
      this.sinks.set(key, sink);
    }
    return sink;
  }

  /**
   * Appends to the instance's file (synchronous writes to the page cache: a
   * line's order and the rotation never race an asynchronous stream).
   */
  private write(sink: Sink, text: string): void {
    if (sink.path === null) return;
    try {
      if (sink.fd === null) {
        mkdirSync(this.dir!, { recursive: true, mode: 0o700 });
        sink.fd = openSync(sink.path, 'a', 0o600);
        sink.bytes = fstatSync(sink.fd).size;
      }
      const bytes = Buffer.byteLength(text);
      if (sink.bytes > 0 && sink.bytes + bytes > this.maxFileBytes) {
        closeSync(sink.fd);
        sink.fd = null;
        renameSync(sink.path, `${sink.path}.1`);
        sink.fd = openSync(sink.path, 'a', 0o600);
        sink.bytes = 0;
      }
      writeSync(sink.fd, text);
      sink.bytes += bytes;
    } catch {
      // A full disk or a removed directory: the line stays in memory; the next one opens the file again.
      if (sink.fd !== null) closeQuietly(sink.fd);
      sink.fd = null;
    }
  }
}

function closeQuietly(fd: number): void {
  try {
    closeSync(fd);
  } catch {
    // Already closed.
  }
}
