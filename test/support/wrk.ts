// wrk for a test that ends the load itself: started in a namespace with a -d
// longer than any run, stopped with SIGINT once the test has counted what it
// needs (wrk stops at once and still prints its summary). A load that lasts
// "until N requests were served" measures hostlb; one that lasts "10 s" and
// expects N measures the machine. Parsing the summary is left to the caller.
//
// API
//   startWrk(sandbox, ns, args, timeoutMs): RunningWrk
//       args follow `wrk`; killed (SIGKILL, no summary) at timeoutMs, a bound for a broken run
//   running.stop()                          SIGINT by PID (idempotent)
//   running.done: Promise<RunResult>        how wrk ended, with its output

import type { Namespace, NetnsSandbox, RunResult } from './netns.js';

export interface RunningWrk {
  stop(): void;
  readonly done: Promise<RunResult>;
}

export function startWrk(sandbox: NetnsSandbox, ns: Namespace, args: string[], timeoutMs: number): RunningWrk {
  const child = sandbox.spawn(ns, ['wrk', ...args]);
  let stdout = '';
  let stderr = '';
  let timedOut = false;
  child.stdout?.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
  child.stderr?.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
  const timer = setTimeout(() => {
    timedOut = true;
    child.kill('SIGKILL');
  }, timeoutMs);
  const done = new Promise<RunResult>((resolve) => {
    child.on('error', (error) => {
      clearTimeout(timer);
      resolve({ code: null, signal: null, stdout, stderr: stderr + String(error), timedOut });
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr, timedOut });
    });
  });
  // `ip netns exec` execs wrk: the child's PID is wrk's.
  return { stop: () => void (child.exitCode === null && child.signalCode === null && child.kill('SIGINT')), done };
}
