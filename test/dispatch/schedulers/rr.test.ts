// Round robin: exact order over daemons of weight > 0, and where it carries
// on after the daemon set changes.

import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { RoundRobinScheduler } from '../../../src/dispatch/schedulers/index.js';

function picks(scheduler: RoundRobinScheduler, count: number): number[] {
  return Array.from({ length: count }, (_, k) => scheduler.pick(k, k));
}

describe('rr', () => {
  it('cycles in port order', () => {
    const rr = new RoundRobinScheduler();
    rr.setDaemons([{ id: 3, weight: 1 }, { id: 1, weight: 1 }, { id: 2, weight: 1 }]);
    assert.deepEqual(picks(rr, 7), [3, 1, 2, 3, 1, 2, 3]);
  });

  it('skips weight 0 and ignores weight magnitudes', () => {
    const rr = new RoundRobinScheduler();
    rr.setDaemons([{ id: 1, weight: 1 }, { id: 2, weight: 0 }, { id: 3, weight: 50 }]);
    assert.deepEqual(picks(rr, 5), [1, 3, 1, 3, 1]);
  });

  it('carries on after the daemon picked last when the set changes', () => {
    const rr = new RoundRobinScheduler();
    rr.setDaemons([{ id: 1, weight: 1 }, { id: 2, weight: 1 }, { id: 3, weight: 1 }]);
    assert.deepEqual(picks(rr, 2), [1, 2]);
    rr.setDaemons([{ id: 1, weight: 2 }, { id: 2, weight: 2 }, { id: 3, weight: 2 }, { id: 4, weight: 1 }]);
    assert.deepEqual(picks(rr, 4), [3, 4, 1, 2]);
  });

  it('starts from the first daemon when the one picked last is quiesced', () => {
    const rr = new RoundRobinScheduler();
    rr.setDaemons([{ id: 1, weight: 1 }, { id: 2, weight: 1 }, { id: 3, weight: 1 }]);
    assert.deepEqual(picks(rr, 2), [1, 2]);
    rr.setDaemons([{ id: 1, weight: 1 }, { id: 2, weight: 0 }, { id: 3, weight: 1 }]);
    assert.deepEqual(picks(rr, 3), [1, 3, 1]);
  });
});
