// Network namespaces for tests that touch the network: creates uniquely named
// namespaces, veth pairs between them and child processes inside them, and
// removes all of it when the test ends, pass or fail. Needs root.
//
// API
//   hasRoot(): boolean
//   skipUnlessRoot(t, why): boolean        false (and t.skip('needs root: <why>')) without root
//   NetnsSandbox.forTest(t): NetnsSandbox  a sandbox whose cleanup() runs in t.after()
//   new NetnsSandbox()                     the same, for try/finally { sandbox.cleanup() }
//   sandbox.namespace(): Namespace         'hlbt-<pid>-<n>', loopback up
//   sandbox.veth(a, b, { a?, b?, aName?, bName? }): VethPair
//                                          a veth pair between two namespaces, up, with
//                                          addresses (CIDR strings; IPv6 added nodad)
//   sandbox.spawn(ns, argv, options?): ChildProcess   runs argv inside ns; killed (by PID) at cleanup;
//                                                    sharedMounts: nsenter the netns only (mounts outlive the child)
//   sandbox.run(ns, argv, { timeoutMs?, env? }): Promise<RunResult>
//                                          runs to completion (killed at the timeout, default 60 s), never rejects
//   sandbox.cleanup()                      kills live children, deletes the namespaces (and with
//                                          them their devices, routes and rules); idempotent
//   ns.name                                the namespace's name
//   ns.exec(argv, options?): string        runs argv inside ns synchronously, returns stdout;
//                                          throws with stderr on failure
//   ns.ip(...args): string                 `ip -n <ns> ...`
//   ns.ipJson<T>(...args): T               `ip -n <ns> -j ...`, parsed
//   ns.readSysctl(path), ns.writeSysctl(path, value)   path under /proc/sys, e.g. 'net/ipv4/ip_forward'
//
// Use addresses from 198.18.0.0/15, 2001:db8::/32 or the loopback range only.
// As a last resort, namespaces still present when the process exits are deleted
// by an exit hook (a SIGKILLed test runner can still leave `hlbt-*` behind:
// `ip netns list | grep hlbt-` finds them).

import { execFileSync, spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import type { TestContext } from 'node:test';

/** Everything an `ip netns exec` child printed, and how it ended. */
export interface RunResult {
  /** Exit status, or null when killed by a signal. */
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  /** True when the sandbox killed the child at its timeout. */
  timedOut: boolean;
}

export interface VethEnd {
  ns: Namespace;
  dev: string;
}

export interface VethPair {
  a: VethEnd;
  b: VethEnd;
}

export interface VethOptions {
  /** Addresses for the end in namespace a, as CIDR ("198.18.0.1/24", "2001:db8::1/64"). */
  a?: string | string[];
  /** Addresses for the end in namespace b. */
  b?: string | string[];
  /** Device names; default "hv<n>a" and "hv<n>b". */
  aName?: string;
  bName?: string;
}

// Bounds on a child that should take milliseconds (ip, nft, ss); reached only
// when one hangs, so generous enough for a busy machine.
const SYNC_TIMEOUT_MS = 30_000;
const RUN_TIMEOUT_MS = 60_000;
let namespaceCounter = 0;
let vethCounter = 0;
const liveNamespaces = new Set<string>();
let exitHookInstalled = false;

export function hasRoot(): boolean {
  return typeof process.getuid === 'function' && process.getuid() === 0;
}

/** Returns true when the test may go on; otherwise marks it skipped with `needs root: <why>`. */
export function skipUnlessRoot(t: TestContext, why: string): boolean {
  if (hasRoot()) return true;
  t.skip(`needs root: ${why} (run the tests as root; CI does)`);
  return false;
}

function runIp(args: string[]): string {
  return execFileSync('ip', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: SYNC_TIMEOUT_MS });
}

function describeFailure(argv: string[], error: unknown): Error {
  const stderr = String((error as { stderr?: unknown }).stderr ?? '').trim();
  return new Error(`${argv.join(' ')} failed${stderr ? `: ${stderr}` : ` (${(error as Error).message})`}`, { cause: error });
}

function deleteNamespace(name: string): void {
  try {
    runIp(['netns', 'del', name]);
  } catch {
    // Already gone (a test deleted it itself): nothing to undo.
  }
  liveNamespaces.delete(name);
}

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on('exit', () => {
    for (const name of [...liveNamespaces]) deleteNamespace(name);
  });
}

/** One network namespace created by a sandbox. */
export class Namespace {
  constructor(readonly name: string) {}

  /** Runs `argv` inside the namespace, waits, returns stdout. Throws (with stderr) on a non-zero exit. */
  exec(argv: string[], options: { input?: string; env?: NodeJS.ProcessEnv; timeoutMs?: number } = {}): string {
    const full = ['netns', 'exec', this.name, ...argv];
    try {
      return execFileSync('ip', full, {
        encoding: 'utf8',
        input: options.input,
        env: options.env,
        stdio: [options.input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'],
        timeout: options.timeoutMs ?? SYNC_TIMEOUT_MS,
      });
    } catch (error) {
      throw describeFailure(['ip', ...full], error);
    }
  }

  /** `ip -n <ns> <args>`; returns stdout, throws with stderr. */
  ip(...args: string[]): string {
    const full = ['-n', this.name, ...args];
    try {
      return runIp(full);
    } catch (error) {
      throw describeFailure(['ip', ...full], error);
    }
  }

  /** `ip -n <ns> -j <args>`, parsed ([] when ip prints nothing). */
  ipJson<T = unknown>(...args: string[]): T {
    const out = this.ip('-j', ...args).trim();
    return (out === '' ? [] : JSON.parse(out)) as T;
  }

  /** Reads /proc/sys/<path> inside the namespace, trimmed. */
  readSysctl(path: string): string {
    return this.exec(['cat', `/proc/sys/${path}`]).trim();
  }

  writeSysctl(path: string, value: string): void {
    this.exec(['sh', '-c', 'printf "%s\\n" "$1" > "/proc/sys/$2"', 'sh', value, path]);
  }
}

export class NetnsSandbox {
  private readonly namespaces: Namespace[] = [];
  private readonly children = new Set<ChildProcess>();
  private cleaned = false;

  /** A sandbox whose cleanup() is registered with `t.after`, so it runs pass or fail. */
  static forTest(t: TestContext): NetnsSandbox {
    const sandbox = new NetnsSandbox();
    t.after(() => sandbox.cleanup());
    return sandbox;
  }

  /** Creates a namespace named `hlbt-<pid>-<n>` with its loopback up. */
  namespace(): Namespace {
    if (this.cleaned) throw new Error('this sandbox has been cleaned up');
    installExitHook();
    const name = `hlbt-${process.pid}-${++namespaceCounter}`;
    runIp(['netns', 'add', name]);
    liveNamespaces.add(name);
    const ns = new Namespace(name);
    this.namespaces.push(ns);
    ns.ip('link', 'set', 'dev', 'lo', 'up');
    return ns;
  }

  /** A veth pair with one end in `a` and one in `b`, both up, with the given addresses. */
  veth(a: Namespace, b: Namespace, options: VethOptions = {}): VethPair {
    const n = ++vethCounter;
    const aName = options.aName ?? `hv${n}a`;
    const bName = options.bName ?? `hv${n}b`;
    // Created directly inside the namespaces: nothing appears in the host's.
    a.ip('link', 'add', aName, 'type', 'veth', 'peer', 'name', bName, 'netns', b.name);
    for (const [ns, dev, addrs] of [
      [a, aName, options.a],
      [b, bName, options.b],
    ] as const) {
      for (const addr of addrs === undefined ? [] : Array.isArray(addrs) ? addrs : [addrs]) {
        // nodad: an IPv6 address is usable at once instead of "tentative" for ~1 s.
        if (addr.includes(':')) ns.ip('-6', 'addr', 'add', addr, 'dev', dev, 'nodad');
        else ns.ip('addr', 'add', addr, 'dev', dev);
      }
      ns.ip('link', 'set', 'dev', dev, 'up');
    }
    return { a: { ns: a, dev: aName }, b: { ns: b, dev: bName } };
  }

  /**
   * Starts `argv` inside `ns` (stdio piped unless options say otherwise); killed by PID at cleanup.
   * `sharedMounts`: enter only the network namespace (nsenter), not a mount namespace of its own as
   * `ip netns exec` does, so what the child mounts (the socket plane's bpffs) outlives it, as on a host.
   */
  spawn(ns: Namespace, argv: string[], options: SpawnOptions & { sharedMounts?: boolean } = {}): ChildProcess {
    const { sharedMounts, ...spawnOptions } = options;
    const command = sharedMounts === true ? ['nsenter', `--net=/run/netns/${ns.name}`, '--', ...argv] : ['ip', 'netns', 'exec', ns.name, ...argv];
    const child = spawn(command[0], command.slice(1), { stdio: ['ignore', 'pipe', 'pipe'], ...spawnOptions });
    this.children.add(child);
    child.once('exit', () => this.children.delete(child));
    return child;
  }

  /** Runs `argv` inside `ns` to completion; kills it after `timeoutMs` (default 60 s). Never rejects. */
  run(ns: Namespace, argv: string[], options: { timeoutMs?: number; env?: NodeJS.ProcessEnv } = {}): Promise<RunResult> {
    return new Promise((resolve) => {
      const child = this.spawn(ns, argv, { env: options.env });
      let stdout = '';
      let stderr = '';
      let timedOut = false;
      child.stdout?.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
      child.stderr?.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
      const timer = setTimeout(() => {
        timedOut = true;
        if (child.pid !== undefined) process.kill(child.pid, 'SIGKILL');
      }, options.timeoutMs ?? RUN_TIMEOUT_MS);
      child.on('error', (error) => {
        clearTimeout(timer);
        resolve({ code: null, signal: null, stdout, stderr: stderr + String(error), timedOut });
      });
      child.on('close', (code, signal) => {
        clearTimeout(timer);
        resolve({ code, signal, stdout, stderr, timedOut });
      });
    });
  }

  /** Kills live children (SIGKILL, by PID) and deletes every namespace this sandbox made. Idempotent. */
  cleanup(): void {
    if (this.cleaned) return;
    this.cleaned = true;
    for (const child of this.children) {
      if (child.pid !== undefined && child.exitCode === null && child.signalCode === null) {
        try {
          process.kill(child.pid, 'SIGKILL');
        } catch {
          // Exited between the check and the kill.
        }
      }
    }
    this.children.clear();
    // Deleting a namespace destroys its virtual devices (veth, tun), and with
    // them its addresses, routes and rules; nothing reaches the host's namespace.
    for (const ns of this.namespaces) deleteNamespace(ns.name);
    this.namespaces.length = 0;
  }
}
