// `hostlb top`: the live view in a terminal. Follows GET /v1/view (one
// snapshot a second) and redraws the whole screen on the alternate buffer;
// keys select a daemon and drain, undrain or restart with a confirmation.
// When stdout is not a terminal it prints each snapshot as plain lines
// instead (or `-n` snapshots, then exits). Hand-written escape codes: the
// handful used here (alternate screen, cursor home, clear to end, colours) do
// not justify a terminal UI library, and the well-known ones are either
// unmaintained (blessed) or bring a renderer of their own (ink and React).

import { emitKeypressEvents } from 'node:readline';
import type { Command } from 'commander';
import type { LiveViewSnapshot } from '../view/live-view.js';
import { call, ClientError, EXIT, type ClientOptions } from './client.js';
import { renderLines, renderScreen, selectable, type TopState } from './top-render.js';
import { followView } from './view-follow.js';

interface Key { name?: string; ctrl?: boolean; shift?: boolean; sequence?: string }

/** "198.18.100.1:80/tcp" or "[2001:db8::100]:443/tcp" → the API path of that port. */
export function portApiPath(portName: string): string {
  const m = /^\[?([^\]]+?)\]?:(\d+)\/(\w+)$/.exec(portName);
  if (!m) throw new Error(`not a port name: ${portName}`);
  return `/v1/clusters/${encodeURIComponent(m[1])}/ports/${m[2]}/${m[3]}`;
}

function plain(g: ClientOptions, iterations: number | null): Promise<void> {
  return new Promise((resolve) => {
    let left = iterations;
    let lastWhy = '';
    const follower = followView(g, (view) => {
      process.stdout.write(`${renderLines(view).join('\n')}\n`);
      if (left !== null && --left <= 0) {
        follower.close();
        resolve();
      }
    }, (connected, why) => {
      if (!connected && why !== lastWhy) process.stderr.write(`hostlb top: ${why}; trying again every second\n`);
      lastWhy = connected ? '' : why;
    });
    process.once('SIGINT', () => { follower.close(); resolve(); });
  });
}

function screen(g: ClientOptions, iterations: number | null): Promise<void> {
  const out = process.stdout;
  const input = process.stdin;
  let view: LiveViewSnapshot | null = null;
  const state: TopState = { selected: 0, prompt: null, message: '', connected: false };
  let pending: (() => Promise<string>) | null = null;
  let left = iterations;

  const draw = (): void => {
    const lines = renderScreen(view, state, out.columns || 120, out.rows || 40);
    out.write(`\x1b[H${lines.join('\x1b[K\n')}\x1b[K\x1b[J`);
  };
  const act = (what: string, path: string, body: unknown, done: (answer: unknown) => string): void => {
    pending = async () => done(await call(g, 'POST', path, body, 30 * 60_000));
    state.prompt = `${what}?`;
  };

  return new Promise((resolve) => {
    const follower = followView(g, (v) => {
      view = v;
      const count = selectable(v).length;
      if (state.selected >= count) state.selected = Math.max(0, count - 1);
      draw();
      if (left !== null && --left <= 0) finish();
    }, (connected, why) => {
      state.connected = connected;
      if (!connected) state.message = `${why}; trying again every second`;
      else if (state.message.endsWith('trying again every second')) state.message = '';
      draw();
    });
    const onKey = (_text: string, key: Key = {}): void => {
      if (key.ctrl && key.name === 'c') return finish();
      if (state.prompt !== null) {
        const run = pending;
        state.prompt = null;
        pending = null;
        if (key.name === 'y' && run) {
          state.message = 'working…';
          run().then((m) => { state.message = m; }, (e: Error) => { state.message = `refused: ${e.message}`; }).finally(draw);
        } else {
          state.message = 'cancelled';
        }
        return draw();
      }
      const rows = view ? selectable(view) : [];
      const chosen = rows[state.selected];
      switch (key.name) {
        case 'q': return finish();
        case 'up': state.selected = Math.max(0, state.selected - 1); break;
        case 'down': state.selected = Math.min(rows.length - 1, state.selected + 1); break;
        case 'tab': state.selected = rows.length === 0 ? 0 : (state.selected + (key.shift ? rows.length - 1 : 1)) % rows.length; break;
        case 'd':
          if (chosen) act(`drain ${chosen.row.daemon} of ${chosen.port}`, `${portApiPath(chosen.port)}/daemons/${encodeURIComponent(chosen.row.daemon)}/drain`, {}, () => `draining ${chosen.row.daemon}: no new connections; its open ones finish`);
          break;
        case 'u':
          if (chosen) act(`undrain ${chosen.row.daemon} of ${chosen.port}`, `${portApiPath(chosen.port)}/daemons/${encodeURIComponent(chosen.row.daemon)}/undrain`, {}, () => `${chosen.row.daemon} takes new connections again`);
          break;
        case 'r':
          if (chosen && chosen.supervised) {
            act(`rolling restart of every daemon of ${chosen.port}`, `${portApiPath(chosen.port)}/restart`, {}, (a) => `restarted ${(a as { restarted: string[] }).restarted.length} daemon(s) of ${chosen.port}`);
          } else if (chosen) {
            state.message = `${chosen.port} runs daemons hostlb does not start (no supervise section): restart them yourself`;
          }
          break;
        default: return;
      }
      draw();
    };
    let finished = false;
    function finish(): void {
      if (finished) return;
      finished = true;
      follower.close();
      input.off('keypress', onKey);
      if (input.isTTY) input.setRawMode(false);
      input.pause();
      out.off('resize', draw);
      out.write('\x1b[?25h\x1b[?1049l');
      resolve();
    }
    out.write('\x1b[?1049h\x1b[?25l');
    if (input.isTTY) {
      emitKeypressEvents(input);
      input.setRawMode(true);
    }
    input.on('keypress', onKey);
    input.resume();
    out.on('resize', draw);
    draw();
  });
}

export function addTopCommand(program: Command): void {
  program.command('top')
    .description('live view of daemons, health, connections, errors, supervised processes and drains; keys: q quit, arrows/tab select, d drain, u undrain, r rolling restart')
    .option('-n, --iterations <n>', 'show this many snapshots (one a second), then exit')
    .option('--plain', 'print plain lines even on a terminal')
    .action(async (o: { iterations?: string; plain?: boolean }, cmd: Command) => {
      const g = cmd.optsWithGlobals() as ClientOptions;
      const iterations = o.iterations === undefined ? null : Number(o.iterations);
      if (iterations !== null && (!Number.isInteger(iterations) || iterations < 1)) {
        process.stderr.write(`hostlb: --iterations: expected a whole number of at least 1, got "${o.iterations}"\n`);
        process.exit(EXIT.usage);
      }
      try {
        // Fails at once, with the CLI's usual sentence and exit code, when hostlb is not there.
        await call(g, 'GET', '/v1/status');
      } catch (e) {
        if (e instanceof ClientError) {
          process.stderr.write(`hostlb: ${e.message}\n`);
          process.exit(e.exitCode);
        }
        throw e;
      }
      await (process.stdout.isTTY && process.stdin.isTTY && !o.plain ? screen(g, iterations) : plain(g, iterations));
      process.exit(EXIT.ok);
    });
}
