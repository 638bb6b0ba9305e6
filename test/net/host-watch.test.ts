// The host watch (src/net/host-watch.ts) against a real kernel, in a fresh
// network namespace: a child process (test/support/host-watch-child.ts) runs
// the watch there. Links, addresses, routes and rules changed mark `route`;
// nft and iptables-nft changes mark `nftables`; nothing changed marks
// nothing; an overrun (notifications lost while the child was stopped) marks
// the subsystem and leaves it watched; a closed watch lets the process exit.
// The bounds are the test's own, for a broken run: each wait ends at the
// event. Needs root.

import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { test, type TestContext } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { NetnsSandbox, skipUnlessRoot, type Namespace } from '../support/netns.js';

const CHILD = fileURLToPath(new URL('../support/host-watch-child.js', import.meta.url));
const WHY_ROOT = 'network namespaces, netlink multicast groups';
/** How long an answer may take before the run counts as broken: far beyond any machine's need. */
const BOUND_MS = 30_000;

type Answer = Record<string, unknown>;

/** The child, one JSON line per answer. */
class WatchChild {
  private readonly answers: Answer[] = [];
  private waiter: (() => void) | null = null;
  private stderr = '';
  readonly exited: Promise<number | null>;

  constructor(readonly proc: ChildProcess) {
    createInterface({ input: proc.stdout! }).on('line', (line) => {
      this.answers.push(JSON.parse(line) as Answer);
      this.waiter?.();
    });
    proc.stderr!.setEncoding('utf8').on('data', (chunk: string) => (this.stderr += chunk));
    this.exited = new Promise((resolve) => proc.once('exit', (code) => resolve(code)));
  }

  /** The next answer; fails the test after BOUND_MS (with what the child printed on stderr). */
  async next(what: string): Promise<Answer> {
    const deadline = Date.now() + BOUND_MS;
    while (this.answers.length === 0) {
      if (Date.now() > deadline || this.proc.exitCode !== null) assert.fail(`no answer to "${what}" from the watch child (exit ${this.proc.exitCode}):\n${this.stderr}`);
      await new Promise<void>((resolve) => {
        this.waiter = resolve;
        setTimeout(resolve, 200).unref();
      });
    }
    return this.answers.shift()!;
  }

  /** Sends `command`; `why` names the step in a failure. */
  async ask(command: string, why = ''): Promise<Answer> {
    this.proc.stdin!.write(`${command}\n`);
    return this.next(why === '' ? command : `${command}" after "${why}`);
  }
}

async function startChild(t: TestContext): Promise<{ sandbox: NetnsSandbox; ns: Namespace; child: WatchChild; pid: number }> {
  const sandbox = NetnsSandbox.forTest(t);
  const ns = sandbox.namespace();
  const child = new WatchChild(sandbox.spawn(ns, [process.execPath, CHILD], { stdio: ['pipe', 'pipe', 'pipe'] }));
  const ready = await child.next('start');
  assert.deepEqual(ready.watching, { route: true, nftables: true }, `both subsystems watched: ${JSON.stringify(ready.problems)}`);
  return { sandbox, ns, child, pid: ready.pid as number };
}

/** Each marks `route`, and not `nftables`. */
const ROUTE_CHANGES: Array<[string, string[]]> = [
  ['an IPv4 route added', ['ip', 'route', 'add', 'blackhole', '198.18.7.0/24']],
  ['an IPv4 route deleted', ['ip', 'route', 'del', 'blackhole', '198.18.7.0/24']],
  ['an IPv6 route added', ['ip', '-6', 'route', 'add', 'blackhole', '2001:db8:7::/48']],
  ['an IPv4 rule added', ['ip', 'rule', 'add', 'pref', '1234', 'from', '198.18.7.1', 'lookup', '100']],
  ['an IPv4 rule deleted', ['ip', 'rule', 'del', 'pref', '1234']],
  ['an IPv6 rule added', ['ip', '-6', 'rule', 'add', 'pref', '1234', 'from', '2001:db8:7::1', 'lookup', '100']],
  ['an address added', ['ip', 'addr', 'add', '198.18.7.1/32', 'dev', 'lo']],
  ['a link added', ['ip', 'link', 'add', 'hwv0', 'type', 'veth', 'peer', 'name', 'hwv1']],
  ['a link set up', ['ip', 'link', 'set', 'hwv0', 'up']],
  ['a link deleted', ['ip', 'link', 'del', 'hwv0']],
];

/** Each marks `nftables`, and not `route`. */
const NFTABLES_CHANGES: Array<[string, string[]]> = [
  ['an nft table added', ['nft', 'add', 'table', 'inet', 'hlbtest']],
  ['an iptables-nft chain added (the mangle table)', ['iptables', '-w', '5', '-t', 'mangle', '-N', 'HLBTEST']],
  ['an iptables-nft rule added', ['iptables', '-w', '5', '-t', 'mangle', '-A', 'HLBTEST', '-j', 'RETURN']],
  // A flush of chains that hold no rule deletes nothing and notifies nothing.
  ['an iptables-nft flush', ['iptables', '-w', '5', '-t', 'mangle', '-F']],
  ['nft flush ruleset', ['nft', 'flush', 'ruleset']],
];

test('a fresh watch stays clean while nothing changes; each route change marks route alone; closed, the process exits by itself', async (t) => {
  if (!skipUnlessRoot(t, WHY_ROOT)) return;
  const { ns, child } = await startChild(t);
  assert.deepEqual(await child.ask('take'), { route: false, nftables: false, overruns: 0 }, 'nothing changed since the watch opened');

  for (const [description, argv] of ROUTE_CHANGES) {
    ns.exec(argv);
    assert.deepEqual(await child.ask('wait route', description), { changed: 'route', overruns: 0, problems: [] }, description);
    assert.equal((await child.ask('take')).nftables, false, `${description}: nftables not marked`);
  }

  // Quiet: whatever the last change sent has been read; then a second of nothing.
  await child.ask('take');
  await sleep(1_000);
  assert.deepEqual(await child.ask('take'), { route: false, nftables: false, overruns: 0 }, 'nothing changed, nothing marked');

  assert.deepEqual(await child.ask('close'), { closed: true });
  const code = await Promise.race([child.exited, sleep(BOUND_MS, 'still running' as const, { ref: false })]);
  assert.equal(code, 0, 'with the watch closed, nothing keeps the child alive');
});

test('nft and iptables-nft changes mark nftables alone', async (t) => {
  if (!skipUnlessRoot(t, WHY_ROOT)) return;
  const { ns, child } = await startChild(t);
  for (const [description, argv] of NFTABLES_CHANGES) {
    ns.exec(argv);
    assert.deepEqual(await child.ask('wait nftables', description), { changed: 'nftables', overruns: 0, problems: [] }, description);
    assert.equal((await child.ask('take')).route, false, `${description}: route not marked`);
  }
});

test('notifications lost to an overrun mark the subsystem, and it stays watched after', async (t) => {
  if (!skipUnlessRoot(t, WHY_ROOT)) return;
  const { ns, child, pid } = await startChild(t);
  // Stopped, the child reads nothing while far more notifications arrive than
  // its receive buffer holds (256 KiB; one route's is a few hundred bytes).
  process.kill(pid, 'SIGSTOP');
  try {
    const routes = Array.from({ length: 8192 }, (_, i) => `route add blackhole 198.18.${64 + (i >> 8)}.${i & 255}/32`);
    ns.exec(['ip', '-batch', '-'], { input: `${routes.join('\n')}\n` });
  } finally {
    process.kill(pid, 'SIGCONT');
  }
  const woke = await child.ask('wait route');
  assert.equal(woke.changed, 'route');
  assert.ok((woke.overruns as number) > 0, `the overrun was seen: ${JSON.stringify(woke)}`);
  // libuv stops polling a socket that reported POLLERR (as an overrun does):
  // the next change must still be noticed.
  await child.ask('take');
  ns.exec(['ip', 'route', 'add', 'blackhole', '198.18.7.0/24']);
  const after = await child.ask('wait route');
  assert.equal(after.changed, 'route', 'a change after the overrun is noticed');
  assert.deepEqual(after.problems, []);
});
