// Keep-alive connections a test holds open across changes (a takeover, a
// daemon's removal, a restart of hostlb): fixtures/held-connections.mjs in
// the client namespace, driven over its stdin, one request per connection on
// each `ask`. Shared by the per-plane integration tests; not a test file.

import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { CLUSTER_V4 } from './hostlb-process.js';
import type { Namespace, NetnsSandbox } from './netns.js';

/** Compiled to dist/test/support/: three levels up is the repo root, where the .mjs fixtures stay. */
const HELD = fileURLToPath(new URL('../../../test/integration/fixtures/held-connections.mjs', import.meta.url));

/** Daemon name ("d1") per result, from the body "<daemon> <client>". */
export function names(results: Array<{ body?: string }>): string[] {
  return results.map((r) => r.body?.split(' ')[0] ?? '-');
}

/** One connection's answer to a request: the daemon's body, or what went wrong. */
export interface Held {
  id: number;
  localPort: number | null;
  status?: number;
  body?: string;
  error?: string;
}

/** fixtures/held-connections.mjs in the client namespace, driven over its stdin. */
export class HeldConnections {
  private stdout = '';
  private stderr = '';
  private readonly child: ChildProcess;

  constructor(sandbox: NetnsSandbox, ns: Namespace, host = CLUSTER_V4, port = 80) {
    this.child = sandbox.spawn(ns, [process.execPath, HELD, host, String(port)], { stdio: ['pipe', 'pipe', 'pipe'] });
    this.child.stdout?.setEncoding('utf8').on('data', (c: string) => (this.stdout += c));
    this.child.stderr?.setEncoding('utf8').on('data', (c: string) => (this.stderr += c));
    // The sandbox may have killed it first at cleanup: a write then fails with EPIPE, which is no news.
    this.child.stdin?.on('error', () => undefined);
  }

  /** Sends one command and waits (at most 20 s) for its one-line reply. */
  private async command<T>(cmd: Record<string, unknown>): Promise<T> {
    this.stdout = '';
    this.child.stdin?.write(`${JSON.stringify(cmd)}\n`);
    const deadline = Date.now() + 20_000;
    while (!this.stdout.includes('\n')) {
      if (this.child.exitCode !== null || this.child.signalCode !== null) throw new Error(`held-connections exited: ${this.stderr}`);
      if (Date.now() > deadline) throw new Error(`held-connections: no answer to ${JSON.stringify(cmd)} in 20 s: ${this.stderr}`);
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    return JSON.parse(this.stdout.slice(0, this.stdout.indexOf('\n'))) as T;
  }

  open(n: number): Promise<Held[]> {
    return this.command({ cmd: 'open', n });
  }

  ask(): Promise<Held[]> {
    return this.command({ cmd: 'ask' });
  }

  close(): Promise<unknown> {
    return this.command({ cmd: 'close' });
  }

  quit(): void {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    this.child.stdin?.end(`${JSON.stringify({ cmd: 'quit' })}\n`);
  }
}

/** Throws unless every connection answered 200, each from the daemon it had before (`before`, same order), on the same local port. */
export function assertSameDaemons(now: Held[], before: Held[], when: string, context = ''): void {
  const show = (hs: Held[]): string => hs.map((h) => `#${h.id} :${h.localPort} ${h.body ?? h.error}`).join('; ');
  assert.deepEqual(now.map((h) => h.error ?? null), now.map(() => null), `${when}: every held connection answered: ${show(now)}${context}`);
  assert.deepEqual(now.map((h) => h.status), now.map(() => 200), `${when}: HTTP 200 on every held connection: ${show(now)}`);
  assert.deepEqual(now.map((h) => `${h.localPort} ${names([h])[0]}`), before.map((h) => `${h.localPort} ${names([h])[0]}`), `${when}: each connection kept its daemon: before ${show(before)}; now ${show(now)}`);
}
