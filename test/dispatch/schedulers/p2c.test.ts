// Power of two choices: of the two daemons drawn, the one with fewer active
// flows per unit of weight gets the flow.

import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Rng } from '../../../src/dispatch/rng.js';
import { PowerOfTwoScheduler } from '../../../src/dispatch/schedulers/index.js';

/** random() replays `draws`; with equal weights, r < 0.5 draws the first daemon of two. */
function scripted(draws: number[], active: Map<number, number>): PowerOfTwoScheduler {
  let k = 0;
  return new PowerOfTwoScheduler({ activeFlows: (id) => active.get(id) ?? 0, random: () => draws[k++ % draws.length] });
}

describe('p2c', () => {
  it('prefers the less loaded of the two it draws, whichever came first', () => {
    const active = new Map([[1, 5], [2, 1]]);
    const p2c = scripted([0.1, 0.6, 0.6, 0.1], active);
    p2c.setDaemons([{ id: 1, weight: 1 }, { id: 2, weight: 1 }]);
    assert.equal(p2c.pick(0, 0), 2);
    assert.equal(p2c.pick(0, 0), 2);
    active.set(1, 0);
    assert.equal(p2c.pick(0, 0), 1);
    assert.equal(p2c.pick(0, 0), 1);
  });

  it('compares load per unit of weight: 6 flows on weight 4 beat 1 flow on weight 1', () => {
    // Weights 4 and 1 in the alias table: r = 0.1 draws daemon 1, r = 0.6 daemon 2.
    const active = new Map([[1, 6], [2, 1]]);
    const p2c = scripted([0.1, 0.6], active);
    p2c.setDaemons([{ id: 1, weight: 4 }, { id: 2, weight: 1 }]);
    // (6+1)/4 = 1.75 < (1+1)/1 = 2.
    assert.equal(p2c.pick(0, 0), 1);
  });

  it('sends a loaded daemon only the flows where both draws hit it: about 1/16 with 4 daemons (±1 percentage point)', () => {
    const active = new Map([[1, 100]]);
    const rng = new Rng(11);
    const p2c = new PowerOfTwoScheduler({ activeFlows: (id) => active.get(id) ?? 0, random: () => rng.next() });
    p2c.setDaemons([1, 2, 3, 4].map((id) => ({ id, weight: 1 })));
    const picks = 100_000;
    let loaded = 0;
    for (let k = 0; k < picks; k++) if (p2c.pick(0, 0) === 1) loaded++;
    assert.ok(Math.abs(loaded / picks - 1 / 16) <= 0.01, `loaded daemon share ${loaded / picks}`);
  });
});
