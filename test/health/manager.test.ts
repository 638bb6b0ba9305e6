// The manager's arithmetic and the passive monitor, in isolation: scores
// against the mean, proportions, smoothing, bounds, slow start; refused and
// ignored SYNs taking a daemon out.

import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { computeFactors, DEFAULT_MANAGER, effectiveWeight, inverseScores, slowStartRamp, type ManagerSpec } from '../../src/health/manager.js';
import { PassiveMonitor } from '../../src/health/passive.js';

const spec = (over: Partial<ManagerSpec> = {}): ManagerSpec => ({ ...DEFAULT_MANAGER, proportions: { ...DEFAULT_MANAGER.proportions }, ...over });

describe('manager', () => {
  it('scores each value against the mean, less is better', () => {
    assert.deepEqual(inverseScores([10, 10], 1), [1, 1]);
    const [a, b] = inverseScores([5, 15], 1);
    assert.equal(a, 2);
    assert.ok(Math.abs(b - 10 / 15) < 1e-9);
    assert.deepEqual(inverseScores([NaN, NaN], 1), [1, 1], 'unknown everywhere is neutral');
    assert.deepEqual(inverseScores([0, 0], 1), [1, 1], 'all idle is neutral');
  });

  it('a slower daemon gets a smaller factor when response time counts', () => {
    const s = spec({ proportions: { active: 0, new: 0, response: 1, passive: 0 }, smoothing: 1 });
    const f = computeFactors([
      { active: 0, newFlows: 0, responseMs: 10, handshakeMs: NaN },
      { active: 0, newFlows: 0, responseMs: 10, handshakeMs: NaN },
      { active: 0, newFlows: 0, responseMs: 100, handshakeMs: NaN },
    ], [1, 1, 1], s);
    assert.ok(f[2] < f[0] / 3, `slow daemon factor ${f[2]} vs ${f[0]}`);
    assert.equal(f[0], f[1]);
  });

  it('smooths towards the new value and stays within bounds', () => {
    const s = spec({ proportions: { active: 1, new: 0, response: 0, passive: 0 }, smoothing: 0.5, minFactor: 0.6, maxFactor: 3 });
    const samples = [{ active: 1, newFlows: 0, responseMs: NaN, handshakeMs: NaN }, { active: 1000, newFlows: 0, responseMs: NaN, handshakeMs: NaN }];
    const once = computeFactors(samples, [1, 1], s);
    assert.ok(once[0] > 1 && once[0] <= 3);
    assert.ok(once[1] >= 0.6 && once[1] < 1);
    let f = [1, 1];
    for (let i = 0; i < 20; i++) f = computeFactors(samples, f, s);
    assert.equal(f[0], 3, 'capped at maxFactor');
    assert.equal(f[1], 0.6, 'floored at minFactor');
  });

  it('ramps a returning daemon over the slow-start period, not at once', () => {
    assert.equal(slowStartRamp(0, 10), 0.1);
    assert.ok(Math.abs(slowStartRamp(5000, 10) - 0.55) < 1e-9);
    assert.equal(slowStartRamp(10_000, 10), 1);
    assert.equal(slowStartRamp(0, 0), 1, 'no slow start');
    assert.equal(effectiveWeight(0, 5, 1), 0, 'quiesced stays 0');
    assert.equal(effectiveWeight(2, 1, 0.1), 20);
    assert.equal(effectiveWeight(1, 0.001, 0.1), 1, 'a live daemon never drops to 0');
  });
});

describe('passive monitor', () => {
  it('takes out a daemon that refuses: RSTs to SYNs and no SYN-ACK', () => {
    const m = new PassiveMonitor({ grace: 1, threshold: 3 });
    assert.equal(m.observe(0, 10, 10, 0), null);
    assert.equal(m.observe(500, 11, 10, 1), null);
    assert.equal(m.observe(1000, 14, 10, 4), 'refuses');
  });

  it('does not take out a daemon that answers most SYNs', () => {
    const m = new PassiveMonitor({ grace: 1, threshold: 3 });
    for (let t = 0; t <= 5000; t += 250) assert.equal(m.observe(t, t / 10, t / 10 - 2, 0), null);
  });

  it('takes out a daemon that ignores: SYNs sent a grace period ago got no answer at all', () => {
    const m = new PassiveMonitor({ grace: 1, threshold: 3 });
    assert.equal(m.observe(0, 0, 0, 0), null);
    assert.equal(m.observe(1000, 5, 0, 0), null, 'too early: the SYNs may still be answered');
    assert.equal(m.observe(2000, 9, 0, 0), 'ignores');
  });

  it('forgets old failures after reset()', () => {
    const m = new PassiveMonitor({ grace: 1, threshold: 3 });
    m.observe(0, 0, 0, 0);
    m.observe(1000, 5, 0, 5);
    m.reset();
    assert.equal(m.observe(1100, 5, 0, 5), null);
  });
});
