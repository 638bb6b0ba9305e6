// HealthCheck's judgement and timing with a scripted probe and a fake clock:
// rise/fall transitions, onChange exactly on transitions, no overlapping
// probes, stop() silencing everything, the smoothed response time; then a
// short run on real timers against a real daemon, and unref'd timers.

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { createServer, type AddressInfo, type Socket } from 'node:net';
import { describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { advisorSpec, type AdvisorSpec, type Probe, type ProbeResult } from '../../src/health/advisors/index.js';
import { HealthCheck, SMOOTHING_ALPHA, WATCHDOG_GRACE_MS, type HealthState } from '../../src/health/health-check.js';

const TARGET = { address: '127.10.1.1', port: 8080 };
const INTERVAL_MS = 1000;

/** Timers that fire only when the test advances time; promise jobs run between timers. */
class FakeClock {
  now = 0;
  readonly #timers = new Map<number, { at: number; fn: () => void }>();
  #nextId = 1;

  setTimer = (fn: () => void, ms: number): unknown => {
    const id = this.#nextId++;
    this.#timers.set(id, { at: this.now + ms, fn });
    return id;
  };

  clearTimer = (handle: unknown): void => {
    this.#timers.delete(handle as number);
  };

  get pending(): number {
    return this.#timers.size;
  }

  async advance(ms: number): Promise<void> {
    const end = this.now + ms;
    await flush();
    for (;;) {
      let next: [number, { at: number; fn: () => void }] | undefined;
      for (const entry of this.#timers) if (entry[1].at <= end && (next === undefined || entry[1].at < next[1].at)) next = entry;
      if (next === undefined) break;
      this.#timers.delete(next[0]);
      this.now = next[1].at;
      next[1].fn();
      await flush();
    }
    this.now = end;
  }
}

/** Lets settled promises run their reactions (a few hops deep). */
async function flush(): Promise<void> {
  await new Promise((resolve) => setImmediate(resolve));
}

function ok(responseMs = 5): ProbeResult {
  return { ok: true, responseMs, reason: '' };
}

function fail(reason = 'connection refused'): ProbeResult {
  return { ok: false, responseMs: 1, reason };
}

/**
 * Answers from a script ('+' ok, '-' fail, or results), at once or when the
 * test releases them (`hold`); records calls, signals and overlap.
 */
class ScriptedProbe {
  readonly script: ProbeResult[];
  hold = false;
  calls = 0;
  inFlight = 0;
  maxInFlight = 0;
  readonly signals: AbortSignal[] = [];
  readonly startedAt: number[] = [];
  #release: Array<() => void> = [];

  constructor(script: string | ProbeResult[], private readonly clock?: FakeClock) {
    this.script = typeof script === 'string' ? [...script].map((c) => (c === '+' ? ok() : fail())) : [...script];
  }

  probe: Probe = (_target, _spec, signal) => {
    this.calls++;
    this.inFlight++;
    this.maxInFlight = Math.max(this.maxInFlight, this.inFlight);
    this.signals.push(signal);
    this.startedAt.push(this.clock?.now ?? 0);
    const result = this.script.shift() ?? fail('script ended');
    const done = (): ProbeResult => {
      this.inFlight--;
      return result;
    };
    if (!this.hold) return Promise.resolve().then(done);
    return new Promise((resolve) => this.#release.push(() => resolve(done())));
  };

  release(): void {
    const pending = this.#release;
    this.#release = [];
    for (const r of pending) r();
  }
}

function spec(fields: Partial<AdvisorSpec> = {}): AdvisorSpec {
  return advisorSpec({ type: 'tcp', interval: INTERVAL_MS / 1000, timeout: 0.5, ...fields });
}

interface Rig {
  check: HealthCheck;
  clock: FakeClock;
  probe: ScriptedProbe;
  changes: Array<[HealthState, ProbeResult]>;
  /** The same transitions as "probe number:state". */
  numbered: string[];
}

function rig(script: string | ProbeResult[], fields: Partial<AdvisorSpec> = {}): Rig {
  const clock = new FakeClock();
  const probe = new ScriptedProbe(script, clock);
  const changes: Array<[HealthState, ProbeResult]> = [];
  const numbered: string[] = [];
  const check = new HealthCheck(TARGET, spec(fields), (state, result) => {
    changes.push([state, result]);
    // onChange runs before the next probe starts, so calls is this probe's number.
    numbered.push(`${probe.calls}:${state}`);
  }, {
    probe: probe.probe,
    setTimer: clock.setTimer,
    clearTimer: clock.clearTimer,
  });
  return { check, clock, probe, changes, numbered };
}

/** Starts the check and lets it run `probes` probes (the first at once, then one per interval). */
async function run(r: Rig, probes: number): Promise<void> {
  r.check.start();
  await r.clock.advance(0);
  if (probes > 1) await r.clock.advance((probes - 1) * INTERVAL_MS);
}

describe('rise and fall', () => {
  // Each case: results in order ('+' ok, '-' fail), and the states onChange
  // must report, as "probe number:state" (1-based).
  const cases: Array<{ what: string; rise: number; fall: number; script: string; changes: string[]; final: HealthState }> = [
    { what: 'unknown becomes up after rise successes', rise: 2, fall: 3, script: '++', changes: ['2:up'], final: 'up' },
    { what: 'one success short of rise stays unknown', rise: 2, fall: 3, script: '+', changes: [], final: 'unknown' },
    { what: 'unknown becomes down after fall failures', rise: 2, fall: 3, script: '---', changes: ['3:down'], final: 'down' },
    { what: 'up becomes down after fall failures, and down up after rise successes', rise: 2, fall: 3, script: '++---++', changes: ['2:up', '5:down', '7:up'], final: 'up' },
    { what: 'flapping below both thresholds from unknown changes nothing', rise: 2, fall: 3, script: '+-+-+--+--+-', changes: [], final: 'unknown' },
    { what: 'flapping below fall while up changes nothing', rise: 2, fall: 3, script: '++--+--+-', changes: ['2:up'], final: 'up' },
    { what: 'flapping below rise while down changes nothing', rise: 3, fall: 2, script: '--++-++-', changes: ['2:down'], final: 'down' },
    { what: 'more successes while up report nothing more', rise: 2, fall: 3, script: '++++++', changes: ['2:up'], final: 'up' },
    { what: 'rise 1 and fall 1 follow every probe', rise: 1, fall: 1, script: '+-+-', changes: ['1:up', '2:down', '3:up', '4:down'], final: 'down' },
  ];
  for (const c of cases) {
    test(c.what, async () => {
      const r = rig(c.script, { rise: c.rise, fall: c.fall });
      await run(r, c.script.length);
      assert.equal(r.probe.calls, c.script.length);
      assert.deepEqual(r.numbered, c.changes);
      assert.equal(r.check.state, c.final);
      r.check.stop();
    });
  }

  test('counters: consecutiveOk and consecutiveFail count the current run and reset the other', async () => {
    const r = rig('++-+--');
    const seen: Array<[number, number]> = [];
    r.check.start();
    await r.clock.advance(0);
    seen.push([r.check.consecutiveOk, r.check.consecutiveFail]);
    for (let i = 1; i < 6; i++) {
      await r.clock.advance(INTERVAL_MS);
      seen.push([r.check.consecutiveOk, r.check.consecutiveFail]);
    }
    assert.deepEqual(seen, [[1, 0], [2, 0], [0, 1], [1, 0], [0, 1], [0, 2]]);
    r.check.stop();
  });

  test('onChange gets the new state and the result that caused it; lastResult follows every probe', async () => {
    const results = [ok(3), ok(4), fail('status 503, expected 200'), fail('connection refused'), fail('timed out after 500 ms')];
    const r = rig(results.map((x) => ({ ...x })));
    assert.equal(r.check.state, 'unknown');
    assert.equal(r.check.lastResult, undefined);
    await run(r, 5);
    assert.deepEqual(r.changes, [['up', results[1]], ['down', results[4]]]);
    assert.deepEqual(r.check.lastResult, results[4]);
    r.check.stop();
  });
});

describe('timing', () => {
  test('the first probe starts at once, each next one interval after the previous settled', async () => {
    const r = rig('+++');
    r.probe.hold = true;
    r.check.start();
    assert.equal(r.probe.calls, 1, 'first probe started synchronously by start()');
    await r.clock.advance(300);
    r.probe.release();
    await r.clock.advance(INTERVAL_MS - 1);
    assert.equal(r.probe.calls, 1, 'not before interval has passed since it settled');
    await r.clock.advance(1);
    assert.equal(r.probe.calls, 2);
    r.probe.release();
    await r.clock.advance(INTERVAL_MS);
    assert.deepEqual(r.probe.startedAt, [0, 300 + INTERVAL_MS, 300 + 2 * INTERVAL_MS]);
    r.check.stop();
  });

  test('probes never overlap, however long one takes (up to the watchdog)', async () => {
    const r = rig('+'.repeat(10), { timeout: 5 });
    r.probe.hold = true;
    r.check.start();
    await r.clock.advance(5 * INTERVAL_MS);
    assert.equal(r.probe.calls, 1);
    for (let i = 0; i < 5; i++) {
      r.probe.release();
      await r.clock.advance(INTERVAL_MS);
    }
    assert.equal(r.probe.calls, 6);
    assert.equal(r.probe.maxInFlight, 1);
    r.check.stop();
  });

  test('start() twice runs one loop', async () => {
    const r = rig('++++');
    r.check.start();
    r.check.start();
    await r.clock.advance(0);
    await r.clock.advance(INTERVAL_MS);
    assert.equal(r.probe.calls, 2);
    assert.equal(r.probe.maxInFlight, 1);
    r.check.stop();
  });

  test('a probe that breaks its contract and never settles is aborted and counted as a failure', async () => {
    const r = rig('-+', { timeout: 0.5, fall: 1 });
    r.probe.hold = true;
    r.check.start();
    await r.clock.advance(500 + WATCHDOG_GRACE_MS - 1);
    assert.equal(r.probe.signals[0].aborted, false);
    assert.equal(r.check.consecutiveFail, 0, 'not judged before timeout + grace');
    await r.clock.advance(1);
    assert.equal(r.probe.signals[0].aborted, true);
    assert.equal(r.check.state, 'down');
    assert.equal(r.check.lastResult?.reason, 'timed out after 500 ms');
    r.probe.release(); // its late answer is ignored
    await r.clock.advance(INTERVAL_MS);
    assert.equal(r.probe.calls, 2, 'checking went on');
    r.check.stop();
  });

  test('a probe that rejects counts as a failure with its message', async () => {
    const clock = new FakeClock();
    const check = new HealthCheck(TARGET, spec({ fall: 1 }), () => {}, {
      probe: () => Promise.reject(new Error('probe exploded')),
      setTimer: clock.setTimer,
      clearTimer: clock.clearTimer,
    });
    check.start();
    await clock.advance(0);
    assert.equal(check.state, 'down');
    assert.equal(check.lastResult?.reason, 'probe exploded');
    check.stop();
  });
});

describe('stop', () => {
  test('aborts the probe in flight, clears every timer, and nothing is called afterwards', async () => {
    const r = rig('+++', { rise: 1 });
    r.probe.hold = true;
    r.check.start();
    await r.clock.advance(100);
    r.check.stop();
    assert.equal(r.check.running, false);
    assert.equal(r.probe.signals[0].aborted, true);
    assert.equal(r.clock.pending, 0, 'no timer left behind');
    r.probe.release();
    await r.clock.advance(10 * INTERVAL_MS);
    assert.equal(r.probe.calls, 1);
    assert.deepEqual(r.changes, [], 'the late success changed nothing');
    assert.equal(r.check.state, 'unknown');
    assert.equal(r.check.lastResult, undefined);
  });

  test('between probes: the next one never starts', async () => {
    const r = rig('++++');
    await run(r, 2);
    r.check.stop();
    await r.clock.advance(10 * INTERVAL_MS);
    assert.equal(r.probe.calls, 2);
    assert.equal(r.clock.pending, 0);
  });

  test('start() after stop() resumes with state and counters kept', async () => {
    const r = rig('++-+');
    await run(r, 2);
    assert.equal(r.check.state, 'up');
    r.check.stop();
    r.check.start();
    await r.clock.advance(0);
    assert.equal(r.probe.calls, 3);
    assert.equal(r.check.state, 'up');
    assert.equal(r.check.consecutiveFail, 1);
    r.check.stop();
  });
});

describe('smoothed response time', () => {
  test('follows successful probes with alpha 0.3 and ignores failures', async () => {
    const r = rig([ok(10), fail(), ok(20), ok(30), fail(), ok(100)]);
    assert.ok(Number.isNaN(r.check.smoothedMs), 'NaN before the first success');
    const seen: number[] = [];
    r.check.start();
    await r.clock.advance(0);
    seen.push(r.check.smoothedMs);
    for (let i = 1; i < 6; i++) {
      await r.clock.advance(INTERVAL_MS);
      seen.push(r.check.smoothedMs);
    }
    const a = SMOOTHING_ALPHA;
    const s2 = a * 20 + (1 - a) * 10;
    const s3 = a * 30 + (1 - a) * s2;
    const s5 = a * 100 + (1 - a) * s3;
    const expected = [10, 10, s2, s3, s3, s5];
    assert.equal(a, 0.3);
    seen.forEach((v, i) => assert.ok(Math.abs(v - expected[i]) < 1e-9, `after probe ${i + 1}: ${v}, expected ${expected[i]}`));
    r.check.stop();
  });
});

async function until(condition: () => boolean, withinMs: number): Promise<void> {
  for (const deadline = Date.now() + withinMs; !condition() && Date.now() < deadline; ) await sleep(10);
}

describe('with real timers', () => {
  test('a tcp check against a real daemon goes up, then down when it closes', async () => {
    const sockets = new Set<Socket>();
    const server = createServer((s) => {
      sockets.add(s);
      s.on('close', () => sockets.delete(s));
      s.on('error', () => {});
    });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const target = { address: '127.0.0.1', port: (server.address() as AddressInfo).port };
    const changes: HealthState[] = [];
    const check = new HealthCheck(target, advisorSpec({ type: 'tcp', interval: 0.02, timeout: 5, rise: 2, fall: 2 }), (state) => changes.push(state));
    try {
      check.start();
      // Bounds on a state change that a working check makes in milliseconds; a busy machine may take far longer.
      await until(() => check.state === 'up', 20_000);
      assert.equal(check.state, 'up');
      // A successful probe answers before its timeout: the smoothed time lies between 0 and it.
      assert.ok(check.smoothedMs > 0 && check.smoothedMs < 5000, `smoothedMs ${check.smoothedMs}`);
      server.close();
      for (const s of sockets) s.destroy();
      await until(() => check.state === 'down', 20_000);
      assert.equal(check.state, 'down');
      assert.equal(check.lastResult?.reason, 'connection refused');
      assert.deepEqual(changes, ['up', 'down']);
    } finally {
      check.stop();
      server.close();
    }
  });

  test('timers are unref\'d: a running check does not keep a process alive', () => {
    const moduleUrl = new URL('../../src/health/health-check.js', import.meta.url).href;
    const code = [
      `const { HealthCheck } = await import(${JSON.stringify(moduleUrl)});`,
      `const probe = async () => ({ ok: true, responseMs: 1, reason: '' });`,
      `new HealthCheck({ address: '127.0.0.1', port: 9 }, { type: 'tcp', interval: 60, timeout: 30, rise: 2, fall: 3 }, () => {}, { probe }).start();`,
      `setTimeout(() => console.log('probed'), 20);`,
    ].join('\n');
    // A ref'd timer would keep the child alive for good (a 60 s interval); killed at 45 s it has no status.
    // Node's start on a busy machine takes seconds, so the bound sits below the 31 s watchdog, not near the start time.
    const started = Date.now();
    const child = spawnSync(process.execPath, ['--input-type=module', '-e', code], { encoding: 'utf8', timeout: 45_000 });
    assert.equal(child.status, 0, child.stderr);
    assert.equal(child.stdout.trim(), 'probed');
    assert.ok(Date.now() - started < 25_000, 'exited long before the next 60 s probe or the 31 s watchdog');
  });

  test('the constructor refuses an unusable spec', () => {
    assert.throws(() => new HealthCheck(TARGET, { type: 'tcp', interval: 0, timeout: 1, rise: 2, fall: 3 }, () => {}), { code: 'ADVISOR_INVALID' });
  });
});
