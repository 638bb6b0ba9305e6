// Which of the repair checks that spawn a child process run on a tick
// (repair-schedule.ts): the pure decision as a fixture table; the schedule over
// a fake change source and a fake clock, tick by tick; how iptables' variant is
// judged; and repairMissing against fake ip, nft and iptables on PATH, so what
// it spawns is recorded, not run. Needs no root.

import assert from 'node:assert/strict';
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import type { ChangeSource, WatchedSubsystem } from '../../src/net/host-watch.js';
import type { NetStep } from '../../src/net/net-step.js';
import { repairMissing, spawnChecksOf } from '../../src/net/repair.js';
import { checksDue, iptablesNotifies, RepairSchedule, SWEEP_MS, type CheckSchedule, type CheckState, type SpawnCheck } from '../../src/net/repair-schedule.js';

// ---------------------------------------------------------------------------
// The decision

const quiet: CheckState = { watched: true, changed: false, sinceMs: 1_000 };

const DECISIONS: Array<[string, Partial<Record<SpawnCheck, CheckState>>, SpawnCheck[]]> = [
  ['nothing present: nothing runs', {}, []],
  ['watched, unchanged, checked 1 s ago: nothing runs', { ip: quiet, nft: quiet, iptables: quiet }, []],
  ['never checked: runs', { ip: { ...quiet, sinceMs: Infinity } }, ['ip']],
  ['changed: only that one runs', { ip: { ...quiet, changed: true }, nft: quiet, iptables: quiet }, ['ip']],
  ['nftables changed: nft and iptables run', { ip: quiet, nft: { ...quiet, changed: true }, iptables: { ...quiet, changed: true } }, ['nft', 'iptables']],
  ['unwatched: runs, though unchanged and checked just now', { ip: { watched: false, changed: false, sinceMs: 0 }, nft: quiet }, ['ip']],
  ['just short of the sweep: nothing runs', { ip: { ...quiet, sinceMs: SWEEP_MS - 1 }, nft: quiet }, []],
  ['at the sweep: runs', { ip: { ...quiet, sinceMs: SWEEP_MS }, nft: { ...quiet, sinceMs: SWEEP_MS + 5_000 } }, ['ip', 'nft']],
  ['iptables unwatched (legacy), nft watched and quiet: only iptables', { nft: quiet, iptables: { ...quiet, watched: false } }, ['iptables']],
  ['only the checks given a state (those the journal has) are considered', { nft: { watched: false, changed: true, sinceMs: Infinity } }, ['nft']],
];

describe('checksDue', () => {
  for (const [description, states, expected] of DECISIONS) {
    test(description, () => {
      assert.deepEqual(checksDue(states), expected);
    });
  }
});

// ---------------------------------------------------------------------------
// The schedule, tick by tick

class FakeSource implements ChangeSource {
  readonly opened = new Set<WatchedSubsystem>();
  readonly changed = new Set<WatchedSubsystem>();
  closed = false;
  constructor(readonly watchable = new Set<WatchedSubsystem>(['route', 'nftables'])) {}
  watch(subsystem: WatchedSubsystem): boolean {
    if (!this.watchable.has(subsystem)) return false;
    if (!this.opened.has(subsystem)) {
      this.opened.add(subsystem);
      this.changed.add(subsystem);
    }
    return true;
  }
  take(subsystem: WatchedSubsystem): boolean {
    const was = this.changed.has(subsystem);
    this.changed.delete(subsystem);
    return was;
  }
  close(): void {
    this.closed = true;
  }
}

const ALL = new Set<SpawnCheck>(['ip', 'nft', 'iptables']);

function setup(options: { watchable?: WatchedSubsystem[]; iptablesNotifies?: boolean } = {}) {
  const source = new FakeSource(options.watchable ? new Set(options.watchable) : undefined);
  let now = 1_000_000;
  let asked = 0;
  const schedule = new RepairSchedule(source, {
    now: () => now,
    iptablesNotifies: () => {
      asked++;
      return options.iptablesNotifies ?? true;
    },
  });
  return {
    source, schedule,
    /** Advances the clock by `ms` and returns what is due, sorted. */
    tick: (ms: number, present: ReadonlySet<SpawnCheck> = ALL): SpawnCheck[] => {
      now += ms;
      return [...schedule.due(present)].sort();
    },
    asked: () => asked,
  };
}

describe('RepairSchedule', () => {
  test('the first tick runs every check present; then none while nothing changes, until the sweep', () => {
    const { tick } = setup();
    assert.deepEqual(tick(0), ['ip', 'iptables', 'nft']);
    for (let s = 1; s < SWEEP_MS / 1000; s++) assert.deepEqual(tick(1_000), [], `quiet at ${s} s`);
    assert.deepEqual(tick(1_000), ['ip', 'iptables', 'nft'], 'the sweep, 30 s after the last run');
    assert.deepEqual(tick(1_000), []);
  });

  test('a route change runs the ip check alone; an nftables change runs nft and iptables', () => {
    const { source, tick } = setup();
    tick(0);
    source.changed.add('route');
    assert.deepEqual(tick(1_000), ['ip']);
    assert.deepEqual(tick(1_000), [], 'the flag was taken');
    source.changed.add('nftables');
    assert.deepEqual(tick(1_000), ['iptables', 'nft']);
    assert.deepEqual(tick(1_000), []);
  });

  test('a check run because of a change starts its own 30 s over; the others keep theirs', () => {
    const { source, tick } = setup();
    tick(0);
    tick(20_000);
    source.changed.add('route');
    assert.deepEqual(tick(1_000), ['ip']);
    assert.deepEqual(tick(9_000), ['iptables', 'nft'], 'nft and iptables last ran 30 s ago');
    assert.deepEqual(tick(20_000), []);
    assert.deepEqual(tick(1_000), ['ip'], 'ip last ran 30 s ago');
  });

  test('a change that arrives while a check runs makes it due on the next tick', () => {
    const { source, schedule, tick } = setup();
    tick(0);
    assert.deepEqual(tick(1_000), []);
    source.changed.add('route');
    assert.deepEqual(tick(1_000), ['ip']);
    // The check is in flight (after due, before settled): a change lands.
    source.changed.add('route');
    schedule.settled([]);
    assert.deepEqual(tick(1_000), ['ip']);
  });

  test('a check that failed runs again on the next tick, until it succeeds', () => {
    const { schedule, tick } = setup();
    tick(0);
    schedule.settled(['nft']);
    assert.deepEqual(tick(1_000), ['nft']);
    schedule.settled(['nft']);
    assert.deepEqual(tick(1_000), ['nft']);
    schedule.settled([]);
    assert.deepEqual(tick(1_000), []);
  });

  test('a subsystem that cannot be watched has its checks run on every tick; the others do not', () => {
    const { tick } = setup({ watchable: ['nftables'] });
    tick(0);
    for (let i = 0; i < 5; i++) assert.deepEqual(tick(1_000), ['ip']);
  });

  test('iptables-legacy (no notifications): iptables runs on every tick, nft only on a change; the variant is judged once', () => {
    const { source, tick, asked } = setup({ iptablesNotifies: false });
    tick(0);
    for (let i = 0; i < 5; i++) assert.deepEqual(tick(1_000), ['iptables']);
    source.changed.add('nftables');
    assert.deepEqual(tick(1_000), ['iptables', 'nft']);
    assert.equal(asked(), 1);
  });

  test('only the subsystems the journal needs are watched (no nftables socket for a journal without nft or iptables)', () => {
    const { source, tick } = setup();
    assert.deepEqual(tick(0, new Set(['ip'])), ['ip']);
    assert.deepEqual(tick(1_000, new Set(['ip'])), []);
    assert.deepEqual([...source.opened], ['route']);
    // A reconfiguration adds nft steps: checked at once (never run), and watched from then on.
    assert.deepEqual(tick(1_000, new Set(['ip', 'nft'])), ['nft']);
    assert.deepEqual(tick(1_000, new Set(['ip', 'nft'])), []);
    assert.deepEqual([...source.opened].sort(), ['nftables', 'route']);
  });

  test('close closes the change source', () => {
    const { source, schedule } = setup();
    schedule.close();
    assert.equal(source.closed, true);
  });
});

// ---------------------------------------------------------------------------
// iptables' variant, from what PATH resolves to

describe('iptablesNotifies', () => {
  const root = mkdtempSync(join(tmpdir(), 'hostlb-iptables-'));
  after(() => rmSync(root, { recursive: true, force: true }));
  let n = 0;
  /** A PATH directory holding `links` (name → target basename), each target an empty file beside them. */
  const pathWith = (links: Record<string, string>): string => {
    const dir = join(root, String(++n));
    mkdirSync(dir);
    for (const [name, target] of Object.entries(links)) {
      writeFileSync(join(dir, target), '');
      symlinkSync(target, join(dir, name));
    }
    return dir;
  };
  const CASES: Array<[string, Record<string, string>, boolean]> = [
    ['both the nft variant (Debian: iptables → iptables-nft → xtables-nft-multi)', { iptables: 'xtables-nft-multi', ip6tables: 'xtables-nft-multi' }, true],
    ['iptables-nft, no ip6tables installed', { iptables: 'xtables-nft-multi' }, true],
    ['iptables-legacy', { iptables: 'xtables-legacy-multi', ip6tables: 'xtables-legacy-multi' }, false],
    ['iptables nft, ip6tables legacy (Debian switches them one by one)', { iptables: 'xtables-nft-multi', ip6tables: 'xtables-legacy-multi' }, false],
    ['something else (a wrapper script)', { iptables: 'my-firewall-wrapper' }, false],
    ['neither installed', {}, false],
  ];
  for (const [description, links, expected] of CASES) {
    test(description, () => {
      assert.equal(iptablesNotifies(`${join(root, 'missing')}:${pathWith(links)}`), expected);
    });
  }

  test('the first one on PATH counts', () => {
    assert.equal(iptablesNotifies(`${pathWith({ iptables: 'xtables-legacy-multi' })}:${pathWith({ iptables: 'xtables-nft-multi' })}`), false);
  });
});

// ---------------------------------------------------------------------------
// repairMissing spawns only the checks that are due

const STEPS: NetStep[] = [
  { description: 'the nft table', apply: ['nft', 'add table inet hostlb_hlb0\nadd chain inet hostlb_hlb0 pre'], undo: ['nft', 'delete table inet hostlb_hlb0'] },
  { description: 'the mangle chain', apply: ['iptables', '-t', 'mangle', '-N', 'HOSTLB-hlb0'], undo: ['iptables', '-t', 'mangle', '-X', 'HOSTLB-hlb0'] },
  { description: 'the cluster route', apply: ['ip', '-4', 'route', 'add', '198.18.0.1/32', 'dev', 'hlb0', 'table', '100'], undo: ['ip', '-4', 'route', 'del', '198.18.0.1/32', 'dev', 'hlb0', 'table', '100'] },
];

/** A schedule that answers `due` and records what it was told. */
class FixedSchedule implements CheckSchedule {
  present: SpawnCheck[] | null = null;
  unsettled: SpawnCheck[] | null = null;
  constructor(private readonly answer: SpawnCheck[]) {}
  due(present: ReadonlySet<SpawnCheck>): ReadonlySet<SpawnCheck> {
    this.present = [...present].sort();
    return new Set(this.answer.filter((c) => present.has(c)));
  }
  settled(unsettled: readonly SpawnCheck[]): void {
    this.unsettled = [...unsettled].sort();
  }
}

describe('repairMissing with a schedule', () => {
  const dir = mkdtempSync(join(tmpdir(), 'hostlb-fake-tools-'));
  const log = join(dir, 'spawned.log');
  const savedPath = process.env.PATH;
  /**
   * Fake tools that log their name and first arguments, and answer as a host
   * with everything in place: `ip -batch` says "File exists" for each line,
   * `nft list` succeeds, `iptables -S` lists the chain. `ip` fails outright
   * (no line named) when FAIL_IP exists.
   */
  const tool = (name: string, body: string): void => {
    writeFileSync(join(dir, name), `#!/bin/sh\necho "${name} $1 $2" >> ${log}\n${body}\n`);
    chmodSync(join(dir, name), 0o755);
  };
  tool('ip', `[ -e ${dir}/FAIL_IP ] && { echo 'Segmentation fault' >&2; exit 139; }\ni=0; while read -r line; do i=$((i+1)); echo 'RTNETLINK answers: File exists' >&2; echo "Command failed -:$i" >&2; done; exit 1`);
  tool('nft', 'exit 0');
  tool('iptables', 'echo "-P PREROUTING ACCEPT"; echo "-N HOSTLB-hlb0"');
  tool('ip6tables', 'exit 0');
  process.env.PATH = `${dir}:${savedPath}`;
  after(() => {
    process.env.PATH = savedPath;
    rmSync(dir, { recursive: true, force: true });
  });
  const spawned = (): string[] => {
    try {
      return readFileSync(log, 'utf8').trim().split('\n').filter((l) => l !== '').sort();
    } catch {
      return [];
    } finally {
      rmSync(log, { force: true });
    }
  };

  test('spawnChecksOf: the checks a journal has steps for', () => {
    assert.deepEqual([...spawnChecksOf(STEPS)].sort(), ['ip', 'iptables', 'nft']);
    assert.deepEqual([...spawnChecksOf(STEPS.slice(2))], ['ip']);
    assert.deepEqual([...spawnChecksOf([])], []);
  });

  test('nothing due: nothing spawned, nothing repaired, no error', async () => {
    const schedule = new FixedSchedule([]);
    const report = await repairMissing(STEPS, new AbortController().signal, schedule);
    assert.deepEqual(spawned(), []);
    assert.deepEqual(report, { repaired: {}, errors: [] });
    assert.deepEqual(schedule.present, ['ip', 'iptables', 'nft'], 'asked about every check the journal has');
  });

  test('only ip due: only ip spawned, and it settled', async () => {
    const schedule = new FixedSchedule(['ip']);
    const report = await repairMissing(STEPS, new AbortController().signal, schedule);
    assert.deepEqual(spawned(), ['ip -4 -force']);
    assert.deepEqual(report, { repaired: {}, errors: [] });
    assert.deepEqual(schedule.unsettled, []);
  });

  test('nft and iptables due: those two spawned, ip not', async () => {
    const report = await repairMissing(STEPS, new AbortController().signal, new FixedSchedule(['nft', 'iptables']));
    assert.deepEqual(spawned(), ['iptables -w 5', 'nft list table']);
    assert.deepEqual(report, { repaired: {}, errors: [] });
  });

  test('no schedule: every check runs, as before there was one', async () => {
    await repairMissing(STEPS, new AbortController().signal);
    assert.deepEqual(spawned(), ['ip -4 -force', 'iptables -w 5', 'nft list table']);
  });

  test('an ip that fails naming no line: an error, nothing counted as repaired, and ip handed back unsettled', async () => {
    writeFileSync(join(dir, 'FAIL_IP'), '');
    try {
      const schedule = new FixedSchedule(['ip', 'nft']);
      const report = await repairMissing(STEPS, new AbortController().signal, schedule);
      assert.deepEqual(report.repaired, {});
      assert.equal(report.errors.length, 1);
      assert.match(report.errors[0], /^ip -4 -batch: Segmentation fault/);
      assert.deepEqual(schedule.unsettled, ['ip']);
    } finally {
      rmSync(join(dir, 'FAIL_IP'));
      spawned();
    }
  });
});
