// `hostlb top` in a real terminal (tmux): hostlb runs three supervised Node
// daemons behind 198.18.100.1:80 in a server namespace while wrk opens new
// connections from the client namespace; top, in a tmux pane, shows the three
// daemons up and their share of new connections; the keys select the second
// daemon and drain it (d, then y), which the API confirms; u lets it back in;
// q ends top. Every wait is for what the pane or the API shows, bounded by a
// hang guard a working hostlb never reaches.

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { test } from 'node:test';
import { CLUSTER_V4, HOSTLB_MAIN, type HostlbProcess } from '../support/hostlb-process.js';
import { skipUnlessRoot } from '../support/netns.js';
import { AdminClient, healthSetup, pollUntil, startHostlb, startWrk, THREE_SUPERVISED } from './health-harness.js';

const DAEMONS = ['198.18.2.11:8080', '198.18.2.12:8080', '198.18.2.13:8080'];
const WAIT_MS = 60_000;

function tmux(...args: string[]): string {
  const r = spawnSync('tmux', args, { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`tmux ${args.join(' ')}: ${r.stderr}`);
  return r.stdout;
}

test('hostlb top in tmux: the daemons with their states and shares; d then y drains the selected one, u lets it back, q quits', async (t) => {
  if (!skipUnlessRoot(t, 'network namespaces, supervised Node daemons, wrk and tmux')) return;
  if (spawnSync('tmux', ['-V']).status !== 0) {
    t.skip('tmux is not installed (apt-get install tmux, or scripts/install-test-peers.sh)');
    return;
  }
  const topo = healthSetup(t, DAEMONS.map((d) => d.split(':')[0]));
  const session = `hostlb-top-${process.pid}`;
  let hostlb: HostlbProcess | undefined;
  let wrk: ReturnType<typeof startWrk> | undefined;
  try {
    hostlb = await startHostlb(topo, THREE_SUPERVISED);
    const admin = AdminClient.of(hostlb);
    await pollUntil('three daemons up', () => admin.health(), (h) => h.length === 3 && h.every((d) => d.state === 'up'), WAIT_MS);
    // Load, so that shares have something to show; its own figures do not matter here.
    wrk = startWrk(topo.sandbox, topo.client, ['-t1', '-c4', '-d120s', '-H', 'Connection: close', `http://${CLUSTER_V4}/`], 180_000);

    // The admin socket is a file: top runs in the host's namespace and reaches it all the same.
    tmux('new-session', '-d', '-s', session, '-x', '180', '-y', '45', `${process.execPath} ${HOSTLB_MAIN} --socket ${admin.socket} top`);
    t.after(() => { spawnSync('tmux', ['kill-session', '-t', session]); });
    const pane = (): Promise<string> => Promise.resolve(tmux('capture-pane', '-p', '-t', session));
    const rowOf = (text: string, daemon: string): string => text.split('\n').find((l) => l.includes(daemon)) ?? '';

    const shown = await pollUntil('top shows the three daemons up, each with a share of new connections', pane,
      (text) => DAEMONS.every((d) => / up /.test(rowOf(text, d)) && /\s[1-9]\d?%\s/.test(rowOf(text, d))), WAIT_MS);
    assert.match(shown, /198\.18\.100\.1:80\/tcp {2}wlc {2}supervised/);
    assert.match(rowOf(shown, DAEMONS[0]), /^ {2}> /, 'the first daemon is selected');
    assert.match(shown, /PROCESSES/);

    // Down to the second daemon, d: a confirmation line; y: drained.
    tmux('send-keys', '-t', session, 'Down');
    await pollUntil('the second daemon selected', pane, (text) => /^ {2}> /.test(rowOf(text, DAEMONS[1])), WAIT_MS);
    tmux('send-keys', '-t', session, 'd');
    await pollUntil('the confirmation line', pane, (text) => text.includes(`drain ${DAEMONS[1]} of 198.18.100.1:80/tcp? y to confirm`), WAIT_MS);
    tmux('send-keys', '-t', session, 'y');
    await pollUntil('the API shows the second daemon draining', () => admin.health(), (h) => h.find((d) => d.daemon === DAEMONS[1])?.state === 'draining', WAIT_MS);
    await pollUntil('top shows it draining, the others up', pane, (text) => / draining /.test(rowOf(text, DAEMONS[1])) && / up /.test(rowOf(text, DAEMONS[0])), WAIT_MS);
    const health = await admin.health();
    assert.deepEqual(health.map((d) => [d.daemon, d.state]), [[DAEMONS[0], 'up'], [DAEMONS[1], 'draining'], [DAEMONS[2], 'up']]);

    // A key other than y cancels; u then y lets it back in.
    tmux('send-keys', '-t', session, 'u');
    await pollUntil('the undrain question', pane, (text) => text.includes(`undrain ${DAEMONS[1]}`), WAIT_MS);
    tmux('send-keys', '-t', session, 'n');
    await pollUntil('cancelled', pane, (text) => text.includes('cancelled'), WAIT_MS);
    assert.equal((await admin.health()).find((d) => d.daemon === DAEMONS[1])?.state, 'draining', 'n changed nothing');
    tmux('send-keys', '-t', session, 'u');
    await pollUntil('the undrain question again', pane, (text) => text.includes(`undrain ${DAEMONS[1]}`), WAIT_MS);
    tmux('send-keys', '-t', session, 'y');
    await pollUntil('the API shows it up again', () => admin.health(), (h) => h.find((d) => d.daemon === DAEMONS[1])?.state === 'up', WAIT_MS);

    tmux('send-keys', '-t', session, 'q');
    await pollUntil('q ended top (and its tmux session)', () => Promise.resolve(spawnSync('tmux', ['has-session', '-t', session]).status), (status) => status !== 0, WAIT_MS);
  } finally {
    wrk?.stop();
    await wrk?.done.catch(() => undefined);
    await hostlb?.stop();
  }
});
