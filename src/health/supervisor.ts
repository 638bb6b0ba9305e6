// The daemons of one port run as hostlb's own child processes: one per
// instance, each on its own address, restarted with backoff when it exits on
// its own. Health checks, draining and the dispatcher's view of a daemon are
// left to the advisors, the manager and the dispatch layer.
//
// Error codes (HostlbError.code):
//   SUPERVISE_INVALID        a bad spec, option or instance index; the message names the field
//   SUPERVISE_STARTED        start() while already started
//   SUPERVISE_STOPPING       start() while stop() is still in progress
//   SUPERVISE_NOT_STARTED    startInstance()/restartInstance() before start() or after stop()
//   SUPERVISE_SPAWN_FAILED   restartInstance(): the command could not be run (ENOENT, EACCES, bad cwd)

import { spawn, type ChildProcess } from 'node:child_process';
import { EventEmitter } from 'node:events';
import { performance } from 'node:perf_hooks';
import type { Readable } from 'node:stream';
import { StringDecoder } from 'node:string_decoder';
import { HostlbError } from '../errors.js';
import { formatIpv4, formatIpv6, ipv4ToU32, parseIp } from '../wire/address.js';
import { Backoff, type BackoffOptions } from './backoff.js';
import { childEnvironment, type RunAs } from './run-as.js';
import { closeListenSocket, openListenSocket } from '../link/listen-socket.js';

export interface SuperviseSpec {
  /** Program to run: a path, or a name looked up in PATH. No shell is involved. */
  command: string;
  /** Arguments; `{host}`, `{port}` and `{index}` are replaced per instance. */
  args: string[];
  /** Number of daemons, 1..MAX_INSTANCES. */
  instances: number;
  /** Added after HOST, PORT and HOSTLB_INDEX to the few variables children inherit (run-as.ts); values take placeholders. */
  env: Record<string, string>;
  /** Address of instance 0 (IPv4 or IPv6); instance i listens on host + i. */
  host: string;
  /** The port every instance listens on. */
  port: number;
  cwd?: string;
  /** Signal asking a daemon to stop (default SIGTERM). */
  stopSignal?: 'SIGTERM' | 'SIGINT';
  /** Seconds between the stop signal and SIGKILL (default 10). */
  stopTimeout?: number;
  /** The user and group daemons run as (resolveRunAs); absent: as hostlb. */
  runAs?: RunAs | null;
  /**
   * Hand each instance a listening socket on its address and port as fd 3
   * (LISTEN_FDS=1, LISTEN_PID, LISTEN_FDNAMES=hostlb; systemd's convention),
   * opened by hostlb and kept across the instance's restarts until stop().
   */
  listenFds?: boolean;
}

export interface DaemonEndpoint {
  index: number;
  /** Canonical text of the address (RFC 5952 for IPv6). */
  address: string;
  port: number;
}

export type InstanceState = 'starting' | 'running' | 'backoff' | 'stopping' | 'stopped';

export interface InstanceExit {
  /** Exit status, or null when a signal ended the daemon or it never started. */
  code: number | null;
  signal: NodeJS.Signals | null;
  /** Wall-clock time of the exit, ms since the epoch. */
  at: number;
}

export interface InstanceInfo {
  index: number;
  address: string;
  port: number;
  pid: number | null;
  state: InstanceState;
  /** Times this instance was started again after exiting on its own (not counting stop/start by hand). */
  restarts: number;
  lastExit: InstanceExit | null;
  /** Wall-clock time its process was spawned, ms since the epoch; null while none runs. */
  startedAt: number | null;
}

/** The subset of a pino logger the supervisor writes to. */
export interface SupervisorLogger {
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
  error(obj: object, msg?: string): void;
}

export interface SupervisorOptions {
  backoff?: BackoffOptions;
  logger?: SupervisorLogger;
}

/** Event name → listener arguments. A failed spawn reports 'exited' with code and signal null. */
export type SupervisorEvents = {
  spawned: [index: number, pid: number];
  exited: [index: number, code: number | null, signal: NodeJS.Signals | null];
  restarting: [index: number, delayMs: number];
  stopped: [index: number];
  /** A line the daemon printed (without its newline); with no listener, lines go to the logger. */
  output: [index: number, stream: 'stdout' | 'stderr', pid: number | null, text: string];
};

/** An upper bound that catches a typo before it forks thousands of processes. */
export const MAX_INSTANCES = 1024;

const STOP_SIGNALS: ReadonlySet<string> = new Set(['SIGTERM', 'SIGINT']);
const DEFAULT_STOP_TIMEOUT_S = 10;
/** A daemon that writes without newlines is logged in pieces of this many characters. */
const MAX_LINE_CHARS = 16 * 1024;
const U64_MAX = (1n << 64n) - 1n;

/** A spec or argument the supervisor cannot use; the message starts with the field (e.g. `host: ...`). */
function invalid(field: string, message: string): HostlbError {
  return new HostlbError('SUPERVISE_INVALID', `${field}: ${message}`);
}

/**
 * The address and port of every instance: instance i gets `host` + i (IPv4:
 * the 32-bit address; IPv6: the low 64 bits, the interface identifier), all on
 * `port`. Pure. Throws a HostlbError with code SUPERVISE_INVALID naming `host`,
 * `instances` or `port`, including when the range runs past the last address.
 */
export function daemonEndpoints(spec: Pick<SuperviseSpec, 'host' | 'instances' | 'port'>): DaemonEndpoint[] {
  const host = typeof spec.host === 'string' ? parseIp(spec.host) : null;
  if (!host) throw invalid('host', `${JSON.stringify(spec.host)} is not an IPv4 or IPv6 address`);
  const { instances, port } = spec;
  if (!Number.isInteger(instances) || instances < 1 || instances > MAX_INSTANCES) {
    throw invalid('instances', `${String(instances)} must be a whole number from 1 to ${MAX_INSTANCES}`);
  }
  if (!Number.isInteger(port) || port < 1 || port > 65535) {
    throw invalid('port', `${String(port)} must be a whole number from 1 to 65535`);
  }
  const last = instances - 1;
  const out: DaemonEndpoint[] = [];
  if (host.family === 4) {
    const base = ipv4ToU32(host.bytes);
    if (base + last > 0xffff_ffff) {
      throw invalid('host', `${host.text} + ${last} runs past 255.255.255.255; use a lower first address or fewer instances`);
    }
    for (let i = 0; i < instances; i++) out.push({ index: i, address: formatIpv4(base + i), port });
    return out;
  }
  const bytes = new Uint8Array(host.bytes);
  const view = new DataView(bytes.buffer);
  const low = view.getBigUint64(8);
  // Carrying into the prefix would put a daemon in another subnet: refuse instead.
  if (low + BigInt(last) > U64_MAX) {
    throw invalid('host', `${host.text} + ${last} runs past the end of its /64; use a lower first address or fewer instances`);
  }
  for (let i = 0; i < instances; i++) {
    view.setBigUint64(8, low + BigInt(i));
    out.push({ index: i, address: formatIpv6(bytes, 0), port });
  }
  return out;
}

/**
 * Replaces every `{host}`, `{port}` and `{index}` in `text` (one pass: a value
 * that itself contains braces is not expanded again). Other braces stay.
 * `{host}` is the bare address, without brackets for IPv6.
 */
export function expandPlaceholders(text: string, values: { host: string; port: number; index: number }): string {
  return text.replace(/\{(host|port|index)\}/g, (_m, name: 'host' | 'port' | 'index') => String(values[name]));
}

/** One instance's process and restart bookkeeping. */
interface Slot {
  readonly index: number;
  readonly address: string;
  readonly port: number;
  /** "addr:port", or "[addr]:port" for IPv6: how logs name the daemon. */
  readonly daemon: string;
  readonly backoff: Backoff;
  state: InstanceState;
  child: ChildProcess | null;
  pid: number | null;
  /** performance.now() when the current child was spawned, for the backoff reset. */
  startedAt: number;
  /** Date.now() at the spawn, for display (startedAt is monotonic, for run lengths). */
  spawnedAt: number;
  restarts: number;
  /** The listening socket passed as fd 3 (listenFds), kept until stop(); null before the first spawn. */
  listenFd: number | null;
  lastExit: InstanceExit | null;
  lastSpawnError: Error | null;
  restartTimer: NodeJS.Timeout | null;
  killTimer: NodeJS.Timeout | null;
  /** startInstance() arrived while stopping: start again once the child is gone. */
  startAfterStop: boolean;
  stopWaiters: Array<() => void>;
  spawnWaiters: Array<{ resolve: () => void; reject: (err: Error) => void }>;
}

interface ResolvedSpec {
  command: string;
  args: string[];
  env: Record<string, string>;
  cwd: string | undefined;
  stopSignal: 'SIGTERM' | 'SIGINT';
  stopTimeoutMs: number;
  runAs: RunAs | null;
  listenFds: boolean;
}

const SILENT: SupervisorLogger = { info() {}, warn() {}, error() {} };

/**
 * Runs `spec.instances` copies of `spec.command`, one per address from
 * daemonEndpoints(), as `spec.runAs` when given. Each child gets HOST, PORT,
 * HOSTLB_INDEX and `spec.env` on top of the few variables of hostlb's that
 * children inherit (childEnvironment); stdin is closed (ignored), stdout and stderr
 * are logged line by line with the daemon's address. A child that exits while
 * not asked to stop is restarted after a Backoff delay.
 *
 * Children are signalled by PID only: a daemon that forks (a shell wrapper, a
 * master with workers) must pass the signal on itself, or use `exec`.
 * All timers are unref'd; no timer callback or event path throws (a listener
 * that throws is logged). The constructor throws SUPERVISE_INVALID for a bad spec or option.
 */
export class Supervisor extends EventEmitter<SupervisorEvents> {
  readonly #spec: ResolvedSpec;
  readonly #slots: Slot[];
  readonly #logger: SupervisorLogger;
  readonly #backoff: BackoffOptions | undefined;
  /** The first address and the port: instance i is on host + i (daemonEndpoints). */
  readonly #where: { host: string; port: number };
  #started = false;
  #stopping: Promise<void> | null = null;

  constructor(spec: SuperviseSpec, options: SupervisorOptions = {}) {
    super();
    this.#spec = resolveSpec(spec);
    this.#logger = options.logger ?? SILENT;
    this.#backoff = options.backoff;
    this.#where = { host: spec.host, port: spec.port };
    this.#slots = daemonEndpoints(spec).map((e) => this.#newSlot(e));
  }

  #newSlot(e: DaemonEndpoint): Slot {
    return {
      index: e.index,
      address: e.address,
      port: e.port,
      daemon: e.address.includes(':') ? `[${e.address}]:${e.port}` : `${e.address}:${e.port}`,
      backoff: new Backoff(this.#backoff),
      state: 'stopped',
      child: null,
      pid: null,
      startedAt: 0,
      spawnedAt: 0,
      restarts: 0,
      listenFd: null,
      lastExit: null,
      lastSpawnError: null,
      restartTimer: null,
      killTimer: null,
      startAfterStop: false,
      stopWaiters: [],
      spawnWaiters: [],
    };
  }

  /**
   * Grows or shrinks to `instances` without touching the instances below both
   * counts: new ones start at once (when started), the ones past the new count
   * are stopped (stop signal, SIGKILL after stopTimeout) and their passed
   * sockets closed; resolves once they are gone. Throws SUPERVISE_INVALID as
   * daemonEndpoints() does.
   */
  async resize(instances: number): Promise<void> {
    const endpoints = daemonEndpoints({ ...this.#where, instances });
    for (const e of endpoints.slice(this.#slots.length)) {
      const slot = this.#newSlot(e);
      this.#slots.push(slot);
      if (this.#started) this.#spawn(slot);
    }
    // Listed until they are gone, so their 'exited' and 'stopped' events name an instance.
    const going = this.#slots.slice(instances);
    await Promise.all(going.map((slot) => this.#stopSlot(slot)));
    const gone = this.#slots.splice(instances);
    for (const slot of gone) {
      if (slot.listenFd !== null) closeListenSocket(slot.listenFd);
      slot.listenFd = null;
    }
  }

  /** Spawns every instance. Throws SUPERVISE_STARTED or SUPERVISE_STOPPING. */
  start(): void {
    if (this.#stopping) throw new HostlbError('SUPERVISE_STOPPING', 'start(): stop() is still in progress; wait for it to resolve');
    if (this.#started) throw new HostlbError('SUPERVISE_STARTED', 'start(): the supervisor is already running; call stop() first');
    this.#started = true;
    for (const slot of this.#slots) {
      slot.backoff.reset();
      if (slot.state === 'stopped') this.#spawn(slot);
    }
  }

  /** A snapshot of every instance, in index order. */
  instances(): InstanceInfo[] {
    return this.#slots.map((s) => ({
      index: s.index,
      address: s.address,
      port: s.port,
      pid: s.pid,
      state: s.state,
      restarts: s.restarts,
      lastExit: s.lastExit && { ...s.lastExit },
      startedAt: s.pid !== null ? s.spawnedAt : null,
    }));
  }

  /**
   * Sends the stop signal, then SIGKILL after stopTimeout; resolves once the
   * child has exited. It is not restarted until startInstance(). Resolves at
   * once for an instance already stopped; cancels a pending restart. Rejects
   * with SUPERVISE_INVALID for an index out of range.
   */
  stopInstance(index: number): Promise<void> {
    let slot: Slot;
    try {
      slot = this.#slot(index);
    } catch (err) {
      return Promise.reject(err);
    }
    return this.#stopSlot(slot);
  }

  /**
   * Starts an instance stopped by stopInstance() (or waiting out a backoff,
   * which is cut short) with a fresh backoff. No-op for one already running;
   * one still stopping starts once its child is gone. Throws SUPERVISE_INVALID
   * or SUPERVISE_NOT_STARTED.
   */
  startInstance(index: number): void {
    const slot = this.#slot(index);
    if (!this.#started) {
      throw new HostlbError('SUPERVISE_NOT_STARTED', `startInstance(${index}): the supervisor is not running; call start() first`);
    }
    slot.backoff.reset();
    switch (slot.state) {
      case 'backoff':
        this.#clearRestart(slot);
        this.#spawn(slot);
        break;
      case 'stopped':
        this.#spawn(slot);
        break;
      case 'stopping':
        slot.startAfterStop = true;
        break;
      case 'starting':
      case 'running':
        break;
    }
  }

  /**
   * stopInstance() then startInstance(); resolves once the new child has
   * spawned (not once it listens: readiness is the advisors' business).
   * Rejects with SUPERVISE_SPAWN_FAILED when the command cannot be run; the
   * instance then keeps retrying with backoff.
   */
  async restartInstance(index: number): Promise<void> {
    const slot = this.#slot(index);
    await this.#stopSlot(slot);
    this.startInstance(index);
    await this.#whenSpawned(slot);
  }

  /**
   * Stops every instance in parallel (stop signal, SIGKILL after stopTimeout).
   * When it resolves no child is left, no restart is pending and no timer
   * remains. start() may be called again afterwards.
   */
  stop(): Promise<void> {
    if (this.#stopping) return this.#stopping;
    this.#started = false;
    const all = Promise.all(this.#slots.map((s) => this.#stopSlot(s)));
    this.#stopping = all.then(() => {
      this.#stopping = null;
      // No instance is left to take over the passed sockets: they close with the supervisor.
      for (const slot of this.#slots) {
        if (slot.listenFd !== null) closeListenSocket(slot.listenFd);
        slot.listenFd = null;
      }
    });
    return this.#stopping;
  }

  #slot(index: number): Slot {
    const slot = Number.isInteger(index) ? this.#slots[index] : undefined;
    if (!slot) throw invalid('index', `${String(index)} is not an instance (0..${this.#slots.length - 1})`);
    return slot;
  }

  #spawn(slot: Slot): void {
    slot.state = 'starting';
    slot.startAfterStop = false;
    slot.lastSpawnError = null;
    const vars = { host: slot.address, port: slot.port, index: slot.index };
    const own: Record<string, string> = { HOST: slot.address, PORT: String(slot.port), HOSTLB_INDEX: String(slot.index) };
    for (const [name, value] of Object.entries(this.#spec.env)) own[name] = expandPlaceholders(value, vars);
    // Not hostlb's whole environment: it may hold HOSTLB_TOKEN and the like.
    const env = childEnvironment(own, this.#spec.runAs);
    const args = this.#spec.args.map((a) => expandPlaceholders(a, vars));
    const ids = this.#spec.runAs ? { uid: this.#spec.runAs.uid, gid: this.#spec.runAs.gid } : {};

    let child: ChildProcess;
    try {
      if (this.#spec.listenFds) {
        slot.listenFd ??= openListenSocket(slot.address, slot.port);
        env.LISTEN_FDS = '1';
        env.LISTEN_FDNAMES = 'hostlb';
        // LISTEN_PID must be the daemon's own PID (sd_listen_fds checks it), known only
        // once it runs: a shell sets it and execs the command, keeping the PID.
        child = spawn('/bin/sh', ['-c', 'LISTEN_PID=$$; export LISTEN_PID; exec "$0" "$@"', this.#spec.command, ...args], {
          cwd: this.#spec.cwd, env, stdio: ['ignore', 'pipe', 'pipe', slot.listenFd], ...ids,
        });
      } else {
        child = spawn(this.#spec.command, args, { cwd: this.#spec.cwd, env, stdio: ['ignore', 'pipe', 'pipe'], ...ids });
      }
    } catch (err) {
      // Synchronous only for arguments libuv rejects outright (e.g. a NUL byte in an argument).
      this.#spawnFailed(slot, asError(err));
      return;
    }
    slot.child = child;
    slot.pid = child.pid ?? null;
    slot.startedAt = performance.now();
    slot.spawnedAt = Date.now();

    // A failed spawn emits 'error' and 'close' but never 'spawn' or 'exit'.
    let spawned = false;
    let finished = false;
    child.once('spawn', () => {
      spawned = true;
      if (slot.child !== child) return;
      const pid = child.pid as number;
      if (slot.state === 'starting') slot.state = 'running';
      this.#log('info', { daemon: slot.daemon, index: slot.index, pid }, 'daemon spawned');
      for (const w of slot.spawnWaiters.splice(0)) w.resolve();
      this.#emit('spawned', slot.index, pid);
    });
    child.on('error', (err) => {
      if (!spawned && !finished) {
        finished = true;
        this.#spawnFailed(slot, err);
      } else {
        // After a spawn this comes from kill() failing; the 'exit' still arrives.
        this.#log('warn', { daemon: slot.daemon, index: slot.index, pid: child.pid, err: err.message }, 'daemon process error');
      }
    });
    child.once('exit', (code, signal) => {
      if (finished) return;
      finished = true;
      this.#exited(slot, code, signal);
    });
    this.#forward(slot, child.stdout, 'stdout', child.pid);
    this.#forward(slot, child.stderr, 'stderr', child.pid);
  }

  #spawnFailed(slot: Slot, err: Error): void {
    slot.child = null;
    slot.pid = null;
    slot.lastSpawnError = err;
    slot.lastExit = { code: null, signal: null, at: Date.now() };
    this.#log('error', { daemon: slot.daemon, index: slot.index, command: this.#spec.command, cwd: this.#spec.cwd, err: err.message }, 'daemon failed to start');
    const failure = spawnFailure(slot, this.#spec.command, err);
    for (const w of slot.spawnWaiters.splice(0)) w.reject(failure);
    this.#afterExit(slot, 0);
  }

  #exited(slot: Slot, code: number | null, signal: NodeJS.Signals | null): void {
    const runMs = performance.now() - slot.startedAt;
    const pid = slot.pid;
    slot.child = null;
    slot.pid = null;
    slot.lastExit = { code, signal, at: Date.now() };
    const expected = slot.state === 'stopping' || !this.#started;
    this.#log(expected ? 'info' : 'warn', { daemon: slot.daemon, index: slot.index, pid, code, signal, runMs: Math.round(runMs) }, 'daemon exited');
    this.#afterExit(slot, runMs);
  }

  /** The child is gone: settle the instance's next state first, then tell listeners. */
  #afterExit(slot: Slot, runMs: number): void {
    const exit = slot.lastExit as InstanceExit;
    if (slot.killTimer) clearTimeout(slot.killTimer);
    slot.killTimer = null;

    if (slot.state === 'stopping' || !this.#started) {
      slot.state = 'stopped';
      const again = slot.startAfterStop;
      slot.startAfterStop = false;
      const waiters = slot.stopWaiters.splice(0);
      this.#emit('exited', slot.index, exit.code, exit.signal);
      this.#emit('stopped', slot.index);
      for (const w of waiters) w();
      // A listener may already have started it again; start only once.
      if (again && this.#started && slot.state === 'stopped') this.#spawn(slot);
      return;
    }

    slot.backoff.noteRun(runMs);
    const delayMs = slot.backoff.next();
    slot.state = 'backoff';
    const timer = setTimeout(() => {
      if (slot.restartTimer !== timer || slot.state !== 'backoff') return;
      slot.restartTimer = null;
      try {
        slot.restarts++;
        this.#spawn(slot);
      } catch (err) {
        this.#log('error', { daemon: slot.daemon, index: slot.index, err: asError(err).message }, 'daemon restart failed');
      }
    }, delayMs);
    timer.unref();
    slot.restartTimer = timer;
    this.#log('info', { daemon: slot.daemon, index: slot.index, delayMs, restarts: slot.restarts }, 'daemon restarting after backoff');
    this.#emit('exited', slot.index, exit.code, exit.signal);
    // An 'exited' listener may have stopped or started the instance already.
    if (slot.restartTimer === timer) this.#emit('restarting', slot.index, delayMs);
  }

  #stopSlot(slot: Slot): Promise<void> {
    slot.startAfterStop = false;
    switch (slot.state) {
      case 'stopped':
        return Promise.resolve();
      case 'backoff':
        this.#clearRestart(slot);
        slot.state = 'stopped';
        this.#log('info', { daemon: slot.daemon, index: slot.index }, 'daemon stopped during backoff');
        this.#emit('stopped', slot.index);
        return Promise.resolve();
      case 'stopping':
        return new Promise((resolve) => slot.stopWaiters.push(resolve));
      case 'starting':
      case 'running': {
        const child = slot.child as ChildProcess;
        slot.state = 'stopping';
        const done = new Promise<void>((resolve) => slot.stopWaiters.push(resolve));
        this.#log('info', { daemon: slot.daemon, index: slot.index, pid: slot.pid, signal: this.#spec.stopSignal }, 'stopping daemon');
        this.#signal(slot, child, this.#spec.stopSignal);
        const timer = setTimeout(() => {
          if (slot.killTimer !== timer) return;
          slot.killTimer = null;
          this.#log('warn', { daemon: slot.daemon, index: slot.index, pid: slot.pid, stopTimeoutMs: this.#spec.stopTimeoutMs }, 'daemon ignored the stop signal; sending SIGKILL');
          this.#signal(slot, child, 'SIGKILL');
        }, this.#spec.stopTimeoutMs);
        timer.unref();
        slot.killTimer = timer;
        return done;
      }
    }
  }

  #whenSpawned(slot: Slot): Promise<void> {
    if (slot.state === 'running') return Promise.resolve();
    if (slot.state === 'starting') return new Promise((resolve, reject) => slot.spawnWaiters.push({ resolve, reject }));
    const cause = slot.lastSpawnError ?? new Error(`instance is ${slot.state}`);
    return Promise.reject(spawnFailure(slot, this.#spec.command, cause));
  }

  #clearRestart(slot: Slot): void {
    if (slot.restartTimer) clearTimeout(slot.restartTimer);
    slot.restartTimer = null;
  }

  #signal(slot: Slot, child: ChildProcess, signal: NodeJS.Signals): void {
    try {
      // ChildProcess.kill() signals the PID it spawned and does nothing once that PID was reaped,
      // so a recycled PID is never hit.
      child.kill(signal);
    } catch (err) {
      this.#log('error', { daemon: slot.daemon, index: slot.index, pid: child.pid, signal, err: asError(err).message }, 'cannot signal daemon');
    }
  }

  /** Logs a child's stream line by line; a trailing partial line is logged when the stream ends. */
  #forward(slot: Slot, stream: Readable | null, name: 'stdout' | 'stderr', pid: number | undefined): void {
    if (!stream) return;
    const decoder = new StringDecoder('utf8');
    const fields = { daemon: slot.daemon, index: slot.index, pid, stream: name };
    let pending = '';
    const line = (raw: string): void => {
      const text = raw.endsWith('\r') ? raw.slice(0, -1) : raw;
      if (this.listenerCount('output') > 0) this.#emit('output', slot.index, name, pid ?? null, text);
      else this.#log('info', fields, text);
    };
    stream.on('data', (chunk: Buffer) => {
      pending += decoder.write(chunk);
      let nl: number;
      while ((nl = pending.indexOf('\n')) !== -1) {
        line(pending.slice(0, nl));
        pending = pending.slice(nl + 1);
      }
      while (pending.length > MAX_LINE_CHARS) {
        line(pending.slice(0, MAX_LINE_CHARS));
        pending = pending.slice(MAX_LINE_CHARS);
      }
    });
    stream.on('end', () => {
      pending += decoder.end();
      if (pending !== '') line(pending);
      pending = '';
    });
    stream.on('error', (err) => this.#log('warn', { ...fields, err: err.message }, 'cannot read daemon output'));
  }

  #emit<K extends keyof SupervisorEvents>(event: K, ...args: SupervisorEvents[K]): void {
    try {
      // The typed overloads do not accept a spread of a generic tuple; the signature above checks it.
      (this.emit as (e: string, ...a: unknown[]) => boolean)(event, ...args);
    } catch (err) {
      this.#log('error', { event, err: asError(err).message }, 'supervisor event listener threw');
    }
  }

  #log(level: 'info' | 'warn' | 'error', obj: object, msg: string): void {
    try {
      this.#logger[level](obj, msg);
    } catch {
      // A broken logger must not take the supervisor down with it.
    }
  }
}

function resolveSpec(spec: SuperviseSpec): ResolvedSpec {
  if (typeof spec.command !== 'string' || spec.command === '') throw invalid('command', 'must be a non-empty string');
  if (!Array.isArray(spec.args) || !spec.args.every((a) => typeof a === 'string')) throw invalid('args', 'must be a list of strings');
  if (typeof spec.env !== 'object' || spec.env === null || Array.isArray(spec.env)) throw invalid('env', 'must be a map of names to strings');
  for (const [name, value] of Object.entries(spec.env)) {
    if (typeof value !== 'string') throw invalid(`env.${name}`, `${JSON.stringify(value)} must be a string`);
  }
  if (spec.cwd !== undefined && (typeof spec.cwd !== 'string' || spec.cwd === '')) throw invalid('cwd', 'must be a non-empty path');
  const stopSignal = spec.stopSignal ?? 'SIGTERM';
  if (!STOP_SIGNALS.has(stopSignal)) throw invalid('stopSignal', `${JSON.stringify(stopSignal)} must be SIGTERM or SIGINT`);
  const stopTimeout = spec.stopTimeout ?? DEFAULT_STOP_TIMEOUT_S;
  if (typeof stopTimeout !== 'number' || !Number.isFinite(stopTimeout) || stopTimeout < 0) {
    throw invalid('stopTimeout', `${String(stopTimeout)} must be a number of seconds >= 0`);
  }
  return {
    command: spec.command,
    args: [...spec.args],
    env: { ...spec.env },
    cwd: spec.cwd,
    stopSignal,
    stopTimeoutMs: stopTimeout * 1000,
    runAs: spec.runAs ?? null,
    listenFds: spec.listenFds === true,
  };
}

function spawnFailure(slot: Slot, command: string, cause: Error): HostlbError {
  return new HostlbError('SUPERVISE_SPAWN_FAILED', `instance ${slot.index} (${slot.daemon}): cannot run ${JSON.stringify(command)}: ${cause.message}`, { cause });
}

function asError(err: unknown): Error {
  return err instanceof Error ? err : new Error(String(err));
}
