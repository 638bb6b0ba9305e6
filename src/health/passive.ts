// Passive signals of one daemon, from the data path's counters: SYNs sent to
// it, SYN-ACKs back, RSTs in answer to a SYN. A daemon that refuses new
// connections (RST to every SYN: it died, its port closed) or ignores them (no
// answer: hung, or a firewall drops them) is taken out at once, without
// waiting for the next advisor probe.

export interface PassiveSpec {
  /** Seconds a SYN may go unanswered before it counts as ignored. */
  grace: number;
  /** Refused or ignored SYNs (in a window of `grace` seconds) that take a daemon out. */
  threshold: number;
}

export const DEFAULT_PASSIVE: Readonly<PassiveSpec> = Object.freeze({ grace: 1, threshold: 3 });

interface Sample { at: number; syns: number; answered: number; refused: number }

export type PassiveVerdict = 'refuses' | 'ignores' | null;

export class PassiveMonitor {
  private readonly history: Sample[] = [];

  constructor(private readonly spec: PassiveSpec = DEFAULT_PASSIVE) {}

  /** Forgets the past (after the daemon came back up, so old failures don't count again). */
  reset(): void {
    this.history.length = 0;
  }

  /**
   * Records the daemon's cumulative counters at time `at` (ms) and says whether
   * it now looks dead: 'refuses' when at least `threshold` SYNs were refused in
   * the last `grace` seconds and none answered; 'ignores' when at least
   * `threshold` SYNs sent between 2×grace and grace ago got no answer at all
   * (neither SYN-ACK nor RST) by now.
   */
  observe(at: number, syns: number, answered: number, refused: number): PassiveVerdict {
    const h = this.history;
    h.push({ at, syns, answered, refused });
    const graceMs = this.spec.grace * 1000;
    while (h.length > 2 && h[1].at <= at - 2 * graceMs) h.shift();
    const then = this.at(at - graceMs);
    if (then && refused - then.refused >= this.spec.threshold && answered === then.answered) return 'refuses';
    // With less than 2×grace of history (just started, or just back up after reset()) the window starts at
    // the first sample: otherwise SYNs lost in the first moments would never be judged.
    const windowStart = this.at(at - 2 * graceMs) ?? h[0];
    if (windowStart && then && windowStart !== then) {
      const sent = then.syns - windowStart.syns;
      const heard = answered - windowStart.answered + (refused - windowStart.refused);
      if (sent >= this.spec.threshold && heard === 0) return 'ignores';
    }
    return null;
  }

  /** The newest sample at or before `t`, or null. */
  private at(t: number): Sample | null {
    let found: Sample | null = null;
    for (const s of this.history) {
      if (s.at <= t) found = s;
      else break;
    }
    return found;
  }
}
