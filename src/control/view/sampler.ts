// Rates from counters: once a second the live view takes a sample of the
// counters hostlb already keeps (new flows per daemon, drops by reason,
// answered packets, each supervised process's CPU time) and keeps the last
// minute of them. Per-second rates, each daemon's share of new connections
// over the minute and the series behind the share chart are differences
// between samples — derived, never counted twice. Pure: the caller takes the
// samples, so tests hand in their own.

/** Cumulative counters at one moment. */
export interface CounterSample {
  /** ms (any monotonic clock; only differences are used). */
  at: number;
  /** New flows per daemon, keyed "<port> <daemon>", since hostlb started. */
  newFlows: ReadonlyMap<string, number>;
  /** Drops and answered packets by reason ("drop.no_daemon", "answered.resets", ...), since hostlb started. */
  events: ReadonlyMap<string, number>;
  /** CPU time per process id, seconds, since it started. */
  cpuSeconds: ReadonlyMap<number, number>;
}

/** Samples kept: one minute at one per second, plus the one the minute is measured from. */
export const WINDOW_SAMPLES = 61;

export class RateSampler {
  private readonly samples: CounterSample[] = [];

  constructor(private readonly keep = WINDOW_SAMPLES) {}

  add(sample: CounterSample): void {
    this.samples.push(sample);
    if (this.samples.length > this.keep) this.samples.splice(0, this.samples.length - this.keep);
  }

  /** Seconds the kept samples span (0 with fewer than two). */
  get spanSeconds(): number {
    return this.samples.length < 2 ? 0 : (this.last(0).at - this.samples[0].at) / 1000;
  }

  private last(back: number): CounterSample {
    return this.samples[this.samples.length - 1 - back];
  }

  /** Per second over the last interval; 0 until there are two samples. A counter that went backwards (a daemon re-added) counts 0. */
  private rate(pick: (s: CounterSample) => number | undefined): number {
    if (this.samples.length < 2) return 0;
    const now = this.last(0);
    const before = this.last(1);
    const seconds = (now.at - before.at) / 1000;
    const delta = (pick(now) ?? 0) - (pick(before) ?? 0);
    return seconds > 0 && delta > 0 ? delta / seconds : 0;
  }

  /** New flows per second to daemon `key` ("<port> <daemon>"). */
  newPerSecond(key: string): number {
    return this.rate((s) => s.newFlows.get(key));
  }

  /** Every drop or answer reason that moved in the last interval, per second. */
  eventsPerSecond(): Record<string, number> {
    const out: Record<string, number> = {};
    if (this.samples.length < 2) return out;
    for (const name of this.last(0).events.keys()) {
      const r = this.rate((s) => s.events.get(name));
      if (r > 0) out[name] = r;
    }
    return out;
  }

  /** CPU use of process `pid` over the last interval, percent of one core; null until it has two samples. */
  cpuPercent(pid: number): number | null {
    if (this.samples.length < 2 || !this.last(1).cpuSeconds.has(pid) || !this.last(0).cpuSeconds.has(pid)) return null;
    return this.rate((s) => s.cpuSeconds.get(pid)) * 100;
  }

  /**
   * Each daemon's share of the new flows the given daemons took over the kept
   * window (0..1; all 0 when none took any): the fairness figure.
   */
  shares(keys: readonly string[]): Map<string, number> {
    const out = new Map<string, number>();
    const first = this.samples[0];
    const now = this.samples.length > 0 ? this.last(0) : undefined;
    const deltas = keys.map((k) => (first && now ? Math.max(0, (now.newFlows.get(k) ?? 0) - (first.newFlows.get(k) ?? 0)) : 0));
    const total = deltas.reduce((a, b) => a + b, 0);
    keys.forEach((k, i) => out.set(k, total > 0 ? deltas[i] / total : 0));
    return out;
  }

  /** New flows of daemon `key` in each interval of the window, oldest first (for the share chart). */
  series(key: string): number[] {
    const out: number[] = [];
    for (let i = 1; i < this.samples.length; i++) {
      out.push(Math.max(0, (this.samples[i].newFlows.get(key) ?? 0) - (this.samples[i - 1].newFlows.get(key) ?? 0)));
    }
    return out;
  }
}
