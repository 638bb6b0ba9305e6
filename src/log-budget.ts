// How many lines a noisy source may log: a budget per second, so a flood of
// connections or a failure that repeats on every packet or tick costs a few
// lines, not a disk. What was left out is counted and reported with the next
// line that goes out.

export class LogBudget {
  private windowStart = -Infinity;
  private used = 0;
  private dropped = 0;

  /** `perWindow` lines every `windowMs` (ms; default one second). */
  constructor(private readonly perWindow: number, private readonly windowMs = 1_000, private readonly clock: () => number = Date.now) {}

  /**
   * null when this line must be left out; otherwise how many were left out
   * since the last line that went out (0 most of the time).
   */
  take(): number | null {
    const now = this.clock();
    if (now - this.windowStart >= this.windowMs) {
      this.windowStart = now;
      this.used = 0;
    }
    if (this.used >= this.perWindow) {
      this.dropped++;
      return null;
    }
    this.used++;
    const dropped = this.dropped;
    this.dropped = 0;
    return dropped;
  }
}
