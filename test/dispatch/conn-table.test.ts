// The connection table against a slow reference model (a Map keyed by the
// tuple as text) under long random operation sequences on a fake clock, plus
// the full-table policy, reverse-tuple conflicts and bounded collection as
// fixed examples.

import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import {
  ConnTable, INSERT_FULL, INSERT_REVERSE_TAKEN, LIST_CLOSED, LIST_NONE, LIST_UNCONFIRMED, REC_F64, REC_WORDS, RF_EXPIRES,
  R_DAEMON_ID, R_PORT_ID, R_STATE, RemoveReason,
} from '../../src/dispatch/conn-table.js';
import { FLOW_KEY_WORDS } from '../../src/dispatch/flow-hash.js';

interface Host {
  family: 4 | 6;
  /** Four words; IPv4 uses word 0 only, IPv6 all four. */
  addr: number[];
  port: number;
}

/** A universe of clients, clusters and daemons for one run; flows are picked from it by index. */
interface Pool {
  clients: Host[];
  clusters: Host[];
  daemons: Host[];
}

interface Flow {
  key: Uint32Array;
  text: string;
  client: Host;
  protocol: number;
}

function forwardKey(client: Host, cluster: Host, protocol: number): Uint32Array {
  const k = new Uint32Array(FLOW_KEY_WORDS);
  k.set(client.addr, 0);
  k.set(cluster.addr, 4);
  k[8] = ((client.port << 16) | cluster.port) >>> 0;
  k[9] = (protocol << 8) | client.family;
  return k;
}

function reverseKey(daemon: Host, client: Host, protocol: number): Uint32Array {
  const k = new Uint32Array(FLOW_KEY_WORDS);
  k.set(daemon.addr, 0);
  k.set(client.addr, 4);
  k[8] = ((daemon.port << 16) | client.port) >>> 0;
  k[9] = (protocol << 8) | daemon.family;
  return k;
}

const keyText = (k: Uint32Array): string => Array.from(k, (w) => w.toString(16)).join('.');

/** Every flow the pool allows: each client to each cluster of its family, TCP and UDP. */
function flowsOf(pool: Pool): Flow[] {
  const flows: Flow[] = [];
  for (const client of pool.clients) {
    for (const cluster of pool.clusters) {
      if (cluster.family !== client.family) continue;
      for (const protocol of [6, 17]) {
        const key = forwardKey(client, cluster, protocol);
        flows.push({ key, text: keyText(key), client, protocol });
      }
    }
  }
  return flows;
}

const word = fc.integer({ min: 0, max: 0xffffffff });
// Ports from both halves of the 16-bit range: a port above 32767 sets the top bit of a key word.
const port = fc.oneof(fc.integer({ min: 1, max: 1024 }), fc.integer({ min: 32768, max: 65535 }), fc.integer({ min: 1, max: 65535 }));
// A small address space for IPv4 so that clients share addresses and differ by port.
const v4Host = fc.record({ family: fc.constant(4 as const), addr: fc.integer({ min: 0xc6120001, max: 0xc6120004 }).map((a) => [a, 0, 0, 0]), port });
// IPv6 hosts use all four words, and some differ from each other in one word only.
const v6Host = fc.record({
  family: fc.constant(6 as const),
  addr: fc.tuple(fc.oneof(fc.constant(0x20010db8), word), fc.oneof(fc.constant(0), word), fc.oneof(fc.constant(0), word), fc.integer({ min: 1, max: 4 }))
    .map((t) => [...t]),
  port,
});
const host = fc.oneof(v4Host, v6Host);

const poolArb: fc.Arbitrary<Pool> = fc.record({
  clients: fc.array(host, { minLength: 3, maxLength: 14 }),
  clusters: fc.tuple(v4Host, v6Host, host).map((t) => [...t] as Host[]),
  daemons: fc.tuple(v4Host, v4Host, v6Host, v6Host).map((t) => [...t] as Host[]),
});

type Op =
  | { op: 'insert'; flow: number; daemon: number; ttl: number; list: number; state: number }
  | { op: 'findForward'; flow: number }
  | { op: 'findReverse'; flow: number; daemon: number }
  | { op: 'remove'; pick: number }
  | { op: 'setList'; pick: number; list: number }
  | { op: 'touch'; pick: number; ttl: number }
  | { op: 'tick'; ms: number }
  | { op: 'collect'; budget: number }
  | { op: 'collectAll'; budget: number };

const listArb = fc.constantFrom(LIST_NONE, LIST_UNCONFIRMED, LIST_CLOSED);
const opArb: fc.Arbitrary<Op> = fc.oneof(
  { weight: 8, arbitrary: fc.record({ op: fc.constant('insert' as const), flow: fc.nat(), daemon: fc.nat(), ttl: fc.integer({ min: 0, max: 60 }), list: listArb, state: fc.integer({ min: 1, max: 9 }) }) },
  { weight: 3, arbitrary: fc.record({ op: fc.constant('findForward' as const), flow: fc.nat() }) },
  { weight: 3, arbitrary: fc.record({ op: fc.constant('findReverse' as const), flow: fc.nat(), daemon: fc.nat() }) },
  { weight: 2, arbitrary: fc.record({ op: fc.constant('remove' as const), pick: fc.nat() }) },
  { weight: 3, arbitrary: fc.record({ op: fc.constant('setList' as const), pick: fc.nat(), list: listArb }) },
  { weight: 2, arbitrary: fc.record({ op: fc.constant('touch' as const), pick: fc.nat(), ttl: fc.integer({ min: 0, max: 60 }) }) },
  { weight: 3, arbitrary: fc.record({ op: fc.constant('tick' as const), ms: fc.integer({ min: 0, max: 15 }) }) },
  { weight: 2, arbitrary: fc.record({ op: fc.constant('collect' as const), budget: fc.integer({ min: 1, max: 6 }) }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('collectAll' as const), budget: fc.integer({ min: 1, max: 4 }) }) },
);

interface ModelRecord {
  id: number;
  flow: Flow;
  revText: string;
  daemon: number;
  state: number;
  expires: number;
  list: number;
  /** When it last joined its list (younger = larger). */
  joined: number;
}

/** The slow reference: records by forward tuple text, plus the reverse tuples they hold. */
class Model {
  readonly byFwd = new Map<string, ModelRecord>();
  readonly byRev = new Map<string, ModelRecord>();
  readonly byId = new Map<number, ModelRecord>();
  private joins = 0;
  evictions = 0;

  get size(): number {
    return this.byFwd.size;
  }

  add(r: ModelRecord): void {
    this.byFwd.set(r.flow.text, r);
    this.byRev.set(r.revText, r);
    this.byId.set(r.id, r);
  }

  delete(r: ModelRecord): void {
    this.byFwd.delete(r.flow.text);
    this.byRev.delete(r.revText);
    this.byId.delete(r.id);
  }

  setList(r: ModelRecord, list: number): void {
    if (r.list === list) return;
    r.list = list;
    r.joined = this.joins++;
  }

  oldest(list: number): ModelRecord | undefined {
    let best: ModelRecord | undefined;
    for (const r of this.byId.values()) if (r.list === list && (best === undefined || r.joined < best.joined)) best = r;
    return best;
  }

  /** The record a full table gives up for a new one, per policy. */
  victim(): ModelRecord | undefined {
    return this.oldest(LIST_UNCONFIRMED) ?? this.oldest(LIST_CLOSED);
  }

  expired(now: number): ModelRecord[] {
    return [...this.byId.values()].filter((r) => r.expires <= now);
  }
}

interface Removal {
  id: number;
  reason: number;
}

/** How often each interesting outcome happened, so the test can show the generator reached it. */
const tally = { ops: 0, inserted: 0, evicted: 0, full: 0, reverseTaken: 0, collected: 0, maxSize: 0 };

/** Runs `ops` against a fresh table and the model, checking agreement after every step. */
function runScenario(capacity: number, seed: number, weakHash: boolean, pool: Pool, ops: Op[]): void {
  const table = new ConnTable(capacity, seed);
  const model = new Model();
  const flows = flowsOf(pool);
  const removals: Removal[] = [];
  let now = 1000;
  // A weak hash piles every record onto a few home slots: long probe runs, equal stored hashes,
  // and backward-shift deletion in the middle of runs.
  const hashOf = (k: Uint32Array): number => (weakHash ? table.hashKey(k) & 3 : table.hashKey(k));

  table.setListener({
    recordRemoved(id, reason) {
      const r = model.byId.get(id);
      assert.ok(r, `listener heard of record ${id}, which the model does not hold`);
      assert.ok(table.isInUse(id), 'the listener runs before the slot is freed');
      // Fields are still readable.
      assert.equal(table.u32[id * REC_WORDS + R_DAEMON_ID], r.daemon);
      assert.ok(!removals.some((x) => x.id === id), `record ${id} removed twice in one operation`);
      removals.push({ id, reason });
    },
  });

  const pickRecord = (pick: number): ModelRecord | undefined => {
    const records = [...model.byId.values()];
    return records.length === 0 ? undefined : records[pick % records.length];
  };

  for (const op of ops) {
    removals.length = 0;
    switch (op.op) {
      case 'insert': {
        const flow = flows[op.flow % flows.length];
        if (model.byFwd.has(flow.text)) break; // insert's contract: the caller checked the key is absent
        const daemons = pool.daemons.filter((d) => d.family === flow.client.family);
        const daemonIdx = pool.daemons.indexOf(daemons[op.daemon % daemons.length]);
        const daemon = pool.daemons[daemonIdx];
        const rev = reverseKey(daemon, flow.client, flow.protocol);
        const revText = keyText(rev);
        const addr = Uint32Array.from([0xdead, ...daemon.addr]);
        let expected: number | 'id';
        let victim: ModelRecord | undefined;
        if (model.byRev.has(revText)) expected = INSERT_REVERSE_TAKEN;
        else if (model.size < capacity) expected = 'id';
        else if ((victim = model.victim()) !== undefined) expected = 'id';
        else expected = INSERT_FULL;
        const id = table.insert(flow.key, hashOf(flow.key), addr, 1, daemon.port, daemonIdx, 7, op.state, now, now + op.ttl);
        if (expected !== 'id') {
          if (expected === INSERT_FULL) tally.full++;
          else tally.reverseTaken++;
          assert.equal(id, expected, `insert of ${flow.text}`);
          assert.deepEqual(removals, []);
          break;
        }
        assert.ok(id >= 0 && id < capacity, `insert returned ${id}`);
        if (victim) {
          assert.deepEqual(removals, [{ id: victim.id, reason: RemoveReason.Evicted }], 'evicted the wrong record');
          assert.notEqual(victim.list, LIST_NONE);
          model.delete(victim);
          model.evictions++;
          tally.evicted++;
        } else {
          assert.deepEqual(removals, []);
        }
        assert.ok(!model.byId.has(id), `insert reused live id ${id}`);
        const r: ModelRecord = { id, flow, revText, daemon: daemonIdx, state: op.state, expires: now + op.ttl, list: LIST_NONE, joined: -1 };
        model.add(r);
        tally.inserted++;
        if (op.list !== LIST_NONE) {
          table.setList(id, op.list);
          model.setList(r, op.list);
        }
        break;
      }
      case 'findForward': {
        const flow = flows[op.flow % flows.length];
        assert.equal(table.findForward(flow.key, hashOf(flow.key)), model.byFwd.get(flow.text)?.id ?? -1);
        break;
      }
      case 'findReverse': {
        const flow = flows[op.flow % flows.length];
        const daemon = pool.daemons[op.daemon % pool.daemons.length];
        const rev = reverseKey(daemon, flow.client, flow.protocol);
        assert.equal(table.findReverse(rev, table.hashKey(rev)), model.byRev.get(keyText(rev))?.id ?? -1);
        break;
      }
      case 'remove': {
        const r = pickRecord(op.pick);
        // One pick in four aims at an id not in use (or out of range), which remove ignores.
        if (r === undefined || op.pick % 4 === 3) {
          const free = [-1, capacity, ...Array.from({ length: capacity }, (_, i) => i).filter((i) => !model.byId.has(i))];
          table.remove(free[op.pick % free.length], RemoveReason.Flushed);
          assert.deepEqual(removals, []);
          break;
        }
        table.remove(r.id, RemoveReason.Ended);
        assert.deepEqual(removals, [{ id: r.id, reason: RemoveReason.Ended }]);
        model.delete(r);
        break;
      }
      case 'setList': {
        const r = pickRecord(op.pick);
        if (!r) break;
        table.setList(r.id, op.list);
        model.setList(r, op.list);
        break;
      }
      case 'touch': {
        // What the dispatcher does on every packet: a new expiry time, written straight into the record.
        const r = pickRecord(op.pick);
        if (!r) break;
        r.expires = now + op.ttl;
        table.f64[r.id * REC_F64 + RF_EXPIRES] = r.expires;
        break;
      }
      case 'tick':
        now += op.ms;
        break;
      case 'collect': {
        const removed = table.collect(now, op.budget);
        assert.ok(removed <= op.budget, `collect removed ${removed} > budget ${op.budget}`);
        assert.equal(removals.length, removed);
        tally.collected += removed;
        for (const x of removals) {
          const r = model.byId.get(x.id)!;
          assert.equal(x.reason, RemoveReason.Expired);
          assert.ok(r.expires <= now, `collect removed record ${x.id}, which expires at ${r.expires} > now ${now}`);
          model.delete(r);
        }
        break;
      }
      case 'collectAll': {
        const expired = model.expired(now).length;
        const bound = Math.ceil(capacity / Math.min(capacity, op.budget * 4)) + Math.ceil(expired / op.budget);
        let calls = 0;
        let total = 0;
        while (model.expired(now).length > 0) {
          assert.ok(calls < bound, `collect(now, ${op.budget}) still leaves expired records after ${calls} calls (bound ${bound})`);
          removals.length = 0;
          const removed = table.collect(now, op.budget);
          calls++;
          assert.ok(removed <= op.budget);
          assert.equal(removals.length, removed);
          for (const x of removals) {
            const r = model.byId.get(x.id)!;
            assert.ok(r.expires <= now, `collect removed live record ${x.id}`);
            model.delete(r);
          }
          total += removed;
        }
        assert.equal(total, expired);
        tally.collected += total;
        break;
      }
    }

    // After every operation: sizes, fields, list heads, and both indexes for every flow.
    tally.ops++;
    tally.maxSize = Math.max(tally.maxSize, table.size);
    assert.equal(table.size, model.size, `size after ${JSON.stringify(op)}`);
    assert.ok(table.size <= capacity);
    assert.equal(table.evictions, model.evictions);
    for (const r of model.byId.values()) {
      const b = r.id * REC_WORDS;
      assert.ok(table.isInUse(r.id));
      assert.equal(table.u32[b + R_STATE], r.state);
      assert.equal(table.u32[b + R_PORT_ID], 7);
      assert.equal(table.listOf(r.id), r.list);
      assert.equal(table.f64[r.id * REC_F64 + RF_EXPIRES], r.expires);
    }
    for (const list of [LIST_UNCONFIRMED, LIST_CLOSED]) assert.equal(table.oldest(list), model.oldest(list)?.id ?? -1, `oldest on list ${list}`);
    for (const flow of flows) assert.equal(table.findForward(flow.key, hashOf(flow.key)), model.byFwd.get(flow.text)?.id ?? -1, `findForward ${flow.text}`);
    for (const r of model.byId.values()) {
      const d = pool.daemons[r.daemon];
      const rev = reverseKey(d, r.flow.client, r.flow.protocol);
      assert.equal(table.findReverse(rev, table.hashKey(rev)), r.id, `findReverse of record ${r.id}`);
    }
  }
}

describe('ConnTable against a reference model', () => {
  it('agrees under 200 random sequences of 300-400 operations (insert, find, remove, setList, touch, collect)', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 24 }),
        fc.integer({ min: 0, max: 0x7fffffff }),
        fc.boolean(),
        poolArb,
        fc.array(opArb, { minLength: 300, maxLength: 400 }),
        (capacity, seed, weakHash, pool, ops) => runScenario(capacity, seed, weakHash, pool, ops),
      ),
      // Seeded: the tally of rare outcomes below must not depend on the draw (it failed ~1 run in 10 unseeded).
      { numRuns: 200, seed: 0x5eed },
    );
    // The sequences reached every branch of the policy, many times over.
    assert.ok(tally.ops >= 200 * 300);
    for (const k of ['inserted', 'evicted', 'full', 'reverseTaken', 'collected'] as const) assert.ok(tally[k] >= 200, `${k}: ${tally[k]}`);
    assert.ok(tally.maxSize >= 20);
  });

  it('every removal reaches the listener exactly once over a whole run', () => {
    fc.assert(
      fc.property(poolArb, fc.array(opArb, { minLength: 300, maxLength: 300 }), fc.integer({ min: 1, max: 12 }), (pool, ops, capacity) => {
        const table = new ConnTable(capacity);
        const heard: number[] = [];
        table.setListener({ recordRemoved: (id) => heard.push(id) });
        const flows = flowsOf(pool);
        let inserted = 0;
        let now = 0;
        for (const op of ops) {
          if (op.op === 'insert') {
            const flow = flows[op.flow % flows.length];
            if (table.findForward(flow.key, table.hashKey(flow.key)) !== -1) continue;
            const daemon = pool.daemons.filter((d) => d.family === flow.client.family)[op.daemon % 2];
            const id = table.insert(flow.key, table.hashKey(flow.key), Uint32Array.from(daemon.addr), 0, daemon.port, 0, 0, 1, now, now + op.ttl);
            if (id >= 0) {
              inserted++;
              table.setList(id, op.list);
            }
          } else if (op.op === 'remove') {
            table.remove(op.pick % (capacity + 1), RemoveReason.Ended);
          } else if (op.op === 'tick') {
            now += op.ms;
          } else if (op.op === 'collect' || op.op === 'collectAll') {
            table.collect(now, op.budget);
          }
        }
        table.remove(-5, RemoveReason.Flushed);
        table.forEach((id) => table.remove(id, RemoveReason.Flushed));
        assert.equal(table.size, 0);
        assert.equal(heard.length, inserted, 'one removal heard per record ever inserted');
      }),
      // Seeded: the tally of rare outcomes below must not depend on the draw (it failed ~1 run in 10 unseeded).
      { numRuns: 200, seed: 0x5eed },
    );
  });
});

describe('ConnTable examples', () => {
  const v4 = (last: number, p: number): Host => ({ family: 4, addr: [0xc6120000 + last, 0, 0, 0], port: p });
  const cluster = v4(0x6401, 80);
  const daemon = v4(0x0201, 8080);
  const daemonAddr = Uint32Array.from(daemon.addr);

  let clientsMade = 0;
  function fill(table: ConnTable, count: number, list: number, now: number): number[] {
    const ids: number[] = [];
    for (let i = 0; i < count; i++) {
      const n = clientsMade++;
      const key = forwardKey(v4(0x1000 + n, 40000 + n), cluster, 6);
      const id = table.insert(key, table.hashKey(key), daemonAddr, 0, 8080, 0, 0, 1, now, now + 1000);
      assert.ok(id >= 0);
      table.setList(id, list);
      ids.push(id);
    }
    return ids;
  }

  const fresh = (n: number): Uint32Array => forwardKey(v4(0x5000 + n, 50000 + n), cluster, 6);

  it('a full table gives up the oldest unconfirmed record first, then the oldest closed one, never an established one', () => {
    const table = new ConnTable(6);
    const removed: Removal[] = [];
    table.setListener({ recordRemoved: (id, reason) => removed.push({ id, reason }) });
    const established = fill(table, 2, LIST_NONE, 0);
    const closed = fill(table, 2, LIST_CLOSED, 0);
    const unconfirmed = fill(table, 2, LIST_UNCONFIRMED, 0);
    assert.equal(table.size, 6);
    // Re-joining a list makes a record the youngest: the second unconfirmed one is now the oldest.
    table.setList(unconfirmed[0], LIST_NONE);
    table.setList(unconfirmed[0], LIST_UNCONFIRMED);
    const victims = [unconfirmed[1], unconfirmed[0], closed[0], closed[1]];
    for (let n = 0; n < 4; n++) {
      const key = fresh(n);
      const id = table.insert(key, table.hashKey(key), daemonAddr, 0, 8080, 0, 0, 3, 10, 1000);
      assert.equal(id, victims[n], `insert ${n} reuses the slot it freed`);
      assert.deepEqual(removed[n], { id: victims[n], reason: RemoveReason.Evicted });
    }
    assert.equal(table.evictions, 4);
    // Now only established records (the two originals and the four new ones, all LIST_NONE) remain.
    const key = fresh(9);
    assert.equal(table.insert(key, table.hashKey(key), daemonAddr, 0, 8080, 0, 0, 3, 10, 1000), INSERT_FULL);
    assert.equal(table.size, 6);
    assert.equal(removed.length, 4);
    for (const id of established) assert.ok(table.isInUse(id));
  });

  it('refuses a record whose daemon-side tuple another record holds, even with room to spare', () => {
    const table = new ConnTable(8);
    const client = v4(0x1001, 40001);
    const a = forwardKey(client, cluster, 6);
    const b = forwardKey(client, v4(0x6402, 80), 6); // the same client port to another cluster
    assert.ok(table.insert(a, table.hashKey(a), daemonAddr, 0, 8080, 0, 0, 1, 0, 10) >= 0);
    assert.equal(table.insert(b, table.hashKey(b), daemonAddr, 0, 8080, 0, 0, 1, 0, 10), INSERT_REVERSE_TAKEN);
    // The same pair with another protocol, or to another daemon port, is a different daemon-side tuple.
    const c = forwardKey(client, v4(0x6402, 80), 17);
    assert.ok(table.insert(c, table.hashKey(c), daemonAddr, 0, 8080, 0, 0, 1, 0, 10) >= 0);
    assert.ok(table.insert(b, table.hashKey(b), daemonAddr, 0, 8081, 0, 0, 1, 0, 10) >= 0);
    assert.equal(table.size, 3);
  });

  it('finds the reverse tuple of a daemon port above 32767', () => {
    const table = new ConnTable(4);
    const client = v4(0x1001, 40001);
    const key = forwardKey(client, cluster, 6);
    const id = table.insert(key, table.hashKey(key), daemonAddr, 0, 40080, 0, 0, 1, 0, 10);
    const rev = reverseKey({ ...daemon, port: 40080 }, client, 6);
    assert.equal(table.findReverse(rev, table.hashKey(rev)), id);
  });

  it('IPv6 keys that differ in one word only are different records', () => {
    const table = new ConnTable(16);
    const c6: Host = { family: 6, addr: [0x20010db8, 0, 0, 0x100], port: 443 };
    const d6 = Uint32Array.from([0x20010db8, 2, 0, 1]);
    const ids: number[] = [];
    for (let w = 0; w < 4; w++) {
      const addr = [0x20010db8, 1, 0, 0x10];
      addr[w] ^= 0x80000000;
      const key = forwardKey({ family: 6, addr, port: 50000 }, c6, 6);
      ids.push(table.insert(key, table.hashKey(key), d6, 0, 8443, 0, 0, 1, 0, 10));
    }
    assert.equal(new Set(ids).size, 4);
    assert.ok(ids.every((id) => id >= 0));
    const probe = forwardKey({ family: 6, addr: [0x20010db8, 1, 0, 0x10], port: 50000 }, c6, 6);
    assert.equal(table.findForward(probe, table.hashKey(probe)), -1, 'the unflipped address was never inserted');
  });

  it('collect(now, budget) removes at most budget per call, only expired records, and all of them in time', () => {
    const table = new ConnTable(100);
    for (let i = 0; i < 100; i++) {
      const key = fresh(i);
      table.insert(key, table.hashKey(key), daemonAddr, 0, 8080, 0, 0, 1, 0, i % 2 === 0 ? 50 : 500);
    }
    const removed: number[] = [];
    table.setListener({ recordRemoved: (id) => removed.push(id) });
    let calls = 0;
    while (removed.length < 50) {
      const before = removed.length;
      assert.ok(table.collect(100, 3) <= 3);
      assert.ok(removed.length - before <= 3);
      assert.ok(++calls <= Math.ceil(100 / 12) + Math.ceil(50 / 3), 'took too many calls');
    }
    for (const id of removed) assert.equal(table.f64[id * REC_F64 + RF_EXPIRES], 50);
    // Nothing else is expired: many more calls remove nothing.
    for (let i = 0; i < 20; i++) assert.equal(table.collect(100, 3), 0);
    assert.equal(table.size, 50);
    assert.equal(table.collect(100, 0), 0, 'a zero budget does no work');
  });

  it('rejects a capacity outside 1..2^26', () => {
    for (const bad of [0, -1, 1.5, NaN, 2 ** 26 + 1]) assert.throws(() => new ConnTable(bad), RangeError);
  });
});
