// Kernel counters of the netfilter paths as one network namespace sees them:
// conntrack's statistics (/proc/net/stat/nf_conntrack: per-CPU rows in hex,
// summed here) and table fill, and NFQUEUE's per-queue counters
// (/proc/net/netfilter/nfnetlink_queue). Both files are per namespace. Also a
// reader of Prometheus text, for hostlb's GET /metrics. Reading a namespace's
// files is left to the caller (a function that returns a file's text).

/** Conntrack counters, summed over CPUs, and the table's fill when read. */
export interface ConntrackStats {
  /** Entries in the namespace's table now, and the most it may hold (nf_conntrack_max). */
  entries: number;
  max: number;
  /** Packets dropped because no entry could be made (table full), entries evicted to make room, inserts that lost a race, invalid packets. */
  drop: number;
  earlyDrop: number;
  insertFailed: number;
  invalid: number;
}

/** `read(path)` returns the text of a file inside the namespace; null when the file is missing (no conntrack module). */
export function conntrackStats(read: (path: string) => string | null): ConntrackStats | null {
  const text = read('/proc/net/stat/nf_conntrack');
  if (text === null) return null;
  const lines = text.trim().split('\n');
  const names = lines[0].trim().split(/\s+/);
  const sum = new Map<string, number>();
  for (const line of lines.slice(1)) {
    line.trim().split(/\s+/).forEach((hex, i) => sum.set(names[i], (sum.get(names[i]) ?? 0) + parseInt(hex, 16)));
  }
  const count = Number(read('/proc/sys/net/netfilter/nf_conntrack_count')?.trim() ?? Number.NaN);
  const max = Number(read('/proc/sys/net/netfilter/nf_conntrack_max')?.trim() ?? Number.NaN);
  return { entries: count, max, drop: sum.get('drop') ?? 0, earlyDrop: sum.get('early_drop') ?? 0, insertFailed: sum.get('insert_failed') ?? 0, invalid: sum.get('invalid') ?? 0 };
}

export function conntrackDelta(after: ConntrackStats, before: ConntrackStats): ConntrackStats {
  return {
    entries: after.entries, max: after.max, drop: after.drop - before.drop, earlyDrop: after.earlyDrop - before.earlyDrop,
    insertFailed: after.insertFailed - before.insertFailed, invalid: after.invalid - before.invalid,
  };
}

export function describeConntrack(c: ConntrackStats): string {
  return `conntrack ${c.drop} dropped (table full), ${c.earlyDrop} early drops, ${c.insertFailed} insert failures, ${c.invalid} invalid; ${c.entries}/${c.max} entries at the end`;
}

/** One NFQUEUE queue's counters. */
export interface QueueStats {
  /** Packets the kernel has queued so far (id_sequence: the id of the last packet). */
  queued: number;
  /** Packets waiting for a verdict now. */
  waiting: number;
  /** Dropped because the queue was full / because the netlink socket's buffer was full (not counted with fail-open, which accepts instead). */
  queueDropped: number;
  userDropped: number;
}

/** The counters of queue `queue`, or null when nobody has bound it. */
export function queueStats(read: (path: string) => string | null, queue: number): QueueStats | null {
  const text = read('/proc/net/netfilter/nfnetlink_queue');
  if (text === null) return null;
  for (const line of text.trim().split('\n')) {
    // queue_number peer_portid queue_total copy_mode copy_range queue_dropped user_dropped id_sequence 1
    const f = line.trim().split(/\s+/).map(Number);
    if (f.length >= 8 && f[0] === queue) return { waiting: f[2], queueDropped: f[5], userDropped: f[6], queued: f[7] };
  }
  return null;
}

export function queueDelta(after: QueueStats, before: QueueStats): QueueStats {
  return { queued: after.queued - before.queued, waiting: after.waiting, queueDropped: after.queueDropped - before.queueDropped, userDropped: after.userDropped - before.userDropped };
}

/** Sample values of a Prometheus text exposition, keyed by `name{labels}` as written (no labels: the bare name). */
export function parsePrometheus(text: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const m = /^([^\s{]+(?:\{[^}]*\})?)\s+(\S+)/.exec(line);
    if (m !== null) out.set(m[1], Number(m[2]));
  }
  return out;
}
