// A HostWatch (src/net/host-watch.ts) run inside a network namespace for
// test/net/host-watch.test.ts: `ip netns exec <ns> node host-watch-child.js`.
// It watches both subsystems, clears what their opening set, and prints
// { ready, watching, pid }; then answers one JSON line per command on stdin.
// Not a test file itself.
//
//   take               -> { route, nftables, overruns }   each subsystem's flag, taken
//   wait <subsystem>   -> { changed: subsystem, overruns } once that flag is set (taken);
//                         the test bounds the wait, this does not
//   close              -> { closed: true }, then stops reading stdin: with the
//                         watch closed nothing is left to keep the process alive,
//                         so it exits by itself

import { createInterface } from 'node:readline';
import { setTimeout as sleep } from 'node:timers/promises';
import { HostWatch, type WatchedSubsystem } from '../../src/net/host-watch.js';

const problems: string[] = [];
const watch = new HostWatch((problem) => problems.push(problem));
const watching = { route: watch.watch('route'), nftables: watch.watch('nftables') };
watch.take('route');
watch.take('nftables');

const say = (value: unknown): void => {
  process.stdout.write(`${JSON.stringify(value)}\n`);
};

say({ ready: true, watching, problems, pid: process.pid });

const lines = createInterface({ input: process.stdin });
for await (const line of lines) {
  const [command, arg] = line.trim().split(' ');
  if (command === 'take') {
    say({ route: watch.take('route'), nftables: watch.take('nftables'), overruns: watch.overruns });
  } else if (command === 'wait') {
    // Polled, because the watcher only keeps a flag; 20 ms is far below any bound the test sets.
    while (!watch.take(arg as WatchedSubsystem)) await sleep(20);
    say({ changed: arg, overruns: watch.overruns, problems });
  } else if (command === 'close') {
    watch.close();
    say({ closed: true });
    break;
  } else {
    say({ error: `unknown command ${line}` });
  }
}
lines.close();
process.stdin.destroy();
