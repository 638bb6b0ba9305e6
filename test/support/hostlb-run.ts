// `hostlb run` as a test drives it: started in a server namespace until it
// printed its block with every instance up, ended (Ctrl-C, then SIGKILL after
// 30 s) whatever the test found, and asked until every instance answered.

import type { ChildProcess } from 'node:child_process';
import { chmodSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { TestContext } from 'node:test';
import { instanceBase } from '../../src/control/run-config.js';
import { tempDir } from './daemons.js';
import { removeBpffsLeftover } from './dataplanes.js';
import { clusterTopology, curlThrough, HOSTLB_MAIN } from './hostlb-process.js';
import { NetnsSandbox, type Namespace } from './netns.js';

/**
 * Client and server namespaces, and a temp directory with `files` (name →
 * text) in it, readable by the user the copies run as (nobody).
 */
export function runStage(t: TestContext, files: Record<string, string>): { sandbox: NetnsSandbox; client: Namespace; server: Namespace; dir: string } {
  const sandbox = NetnsSandbox.forTest(t);
  const { client, server } = clusterTopology(sandbox);
  const dir = tempDir(t);
  chmodSync(dir, 0o755);
  for (const [name, text] of Object.entries(files)) writeFileSync(join(dir, name), text, { mode: 0o644 });
  return { sandbox, client, server, dir };
}

/** Bound on every wait for a line or an answer: reached only when hostlb is broken. */
export const WAIT_MS = 60_000;

export async function until<T>(what: string, read: () => T | undefined): Promise<T> {
  const deadline = Date.now() + WAIT_MS;
  for (;;) {
    const value = read();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`${what}: not within ${WAIT_MS} ms`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

export interface Running {
  child: ChildProcess;
  block: string;
  pids: Array<{ index: number; address: string; pid: number }>;
  stderr(): string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/** `hostlb run <options> -- <command>` in the server namespace, until it printed its block with every instance up. */
export async function startRun(sandbox: NetnsSandbox, server: Namespace, port: number, options: string[], command: string[]): Promise<Running> {
  const argv = [process.execPath, HOSTLB_MAIN, 'run', '-p', String(port), '--user', 'nobody', '--dataplane', 'socket', ...options, '--', ...command];
  const child = sandbox.spawn(server, argv, { sharedMounts: true });
  let stdout = '';
  let stderr = '';
  child.stdout?.setEncoding('utf8').on('data', (c: string) => (stdout += c));
  child.stderr?.setEncoding('utf8').on('data', (c: string) => (stderr += c));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
  let block: string;
  try {
    block = await until('the run block with every instance up', () => {
      if (child.exitCode !== null) throw new Error(`hostlb run exited ${child.exitCode}:\n${stderr}`);
      return /stop {6}Ctrl-C/.test(stdout) ? stdout : undefined;
    });
  } catch (e) {
    await endRun({ child, block: stdout, pids: [], stderr: () => stderr, exited }, server, `hlr${port}`);
    throw e;
  }
  const base = instanceBase(port).split('.').slice(0, 3).join('\\.');
  const pids = [...block.matchAll(new RegExp(`instance {2}(\\d+) {2}(${base}\\.\\d+):${port} {2}pid (\\d+) {2}up`, 'g'))].map((m) => ({ index: Number(m[1]), address: m[2], pid: Number(m[3]) }));
  return { child, block, pids, stderr: () => stderr, exited };
}

/**
 * After a failed check: a run still going gets Ctrl-C and 30 s to undo its
 * set-up, then SIGKILL; a killed run's bpffs (left on purpose, for the next
 * start to adopt) is removed so that it does not outlive the test.
 */
export async function endRun(running: Running, server: Namespace, device: string): Promise<void> {
  if (running.child.exitCode === null && running.child.signalCode === null) {
    running.child.kill('SIGINT');
    const ended = await Promise.race([running.exited.then(() => true), new Promise<boolean>((resolve) => setTimeout(resolve, 30_000, false).unref())]);
    if (!ended) running.child.kill('SIGKILL');
    await running.exited;
  }
  removeBpffsLeftover(server, device);
}

/** Asks `url` (from `ns`) until every PID in `pids` has answered; returns the answers ("index pid uid"). */
export async function servedByAll(sandbox: NetnsSandbox, ns: Namespace, url: string, pids: number[]): Promise<string[]> {
  const answers: string[] = [];
  const deadline = Date.now() + WAIT_MS;
  while (!pids.every((p) => answers.some((a) => Number(a.split(' ')[1]) === p)) && Date.now() < deadline) {
    const results = await curlThrough(sandbox, ns, Array.from({ length: 10 }, () => url));
    for (const r of results) if (r.httpCode === 200) answers.push(r.body.trim());
  }
  return answers;
}

