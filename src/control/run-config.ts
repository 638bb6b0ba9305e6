// `hostlb run -i N -p PORT -- CMD ARGS…`: the configuration a one-liner
// stands for, as the YAML a user would have written (so `--save` can write it
// and the same validation applies). Pure: the caller says which plane runs and
// who invoked it.
//
// The instances listen on loopback addresses of their own, derived from the
// port (127.<port high byte>.<port low byte>.1 + i): no address to set up,
// and two runs on different ports never meet. On the socket plane the cluster
// is 0.0.0.0 — the port on every address of the host, localhost included;
// the other planes need one address, given with --address.

import { basename } from 'node:path';
import type { PlaneKind } from '../dataplane/data-plane.js';
import type { HostlbConfig } from './config-schema.js';
import { SCHEDULER_NAMES } from '../dispatch/schedulers/scheduler.js';
import { ConfigError } from '../errors.js';
import { parseIp } from '../wire/address.js';

export interface RunOptions {
  /** Instances; default: the number of CPUs. */
  instances: number;
  port: number;
  protocol: 'tcp' | 'udp';
  scheduler: string;
  /** "tcp", or "http:/path". */
  health: string;
  /** The user the instances run as; null: not given. */
  user: string | null;
  /** K=V pairs. */
  env: string[];
  name: string | null;
  /** The cluster address; null: 0.0.0.0 on the socket plane, else required. */
  address: string | null;
  dataplane: HostlbConfig['dataplane'];
  /** Pass each instance its listening socket (LISTEN_FDS). */
  listenFds: boolean;
  stopTimeout: string;
  /** A front tier's agent-check port (HAProxy agent-port); null: none. */
  agent: number | null;
}

export interface RunContext {
  /** The plane that will run (choosePlane of options.dataplane). */
  plane: PlaneKind;
  /** $SUDO_USER when hostlb was started with sudo. */
  sudoUser: string | undefined;
  stateDir: string;
}

/** Interpreters whose program is their first argument: `python3 app.py` is named app.py. */
const INTERPRETERS = /^(node|nodejs|bun|deno|python[0-9.]*|ruby|perl|php|java)$/;

/** What logs and status call the program when --name is not given. */
export function defaultName(command: string, args: readonly string[]): string {
  const program = args.find((a) => !a.startsWith('-'));
  return INTERPRETERS.test(basename(command)) && program !== undefined ? basename(program) : basename(command);
}

/** The first instance's address for `port`: 127.<high>.<low>.1. */
export function instanceBase(port: number): string {
  return `127.${port >> 8}.${port & 0xff}.1`;
}

function advisorOf(health: string): Record<string, unknown> {
  if (health === 'tcp') return { type: 'tcp' };
  const m = /^http:(\/\S*)$/.exec(health);
  if (m === null) throw new ConfigError('--health', `"${health}" is neither tcp nor http:/path (for example http:/healthz)`);
  return { type: 'http', path: m[1] };
}

function envOf(pairs: readonly string[]): Record<string, string> {
  const env: Record<string, string> = {};
  for (const pair of pairs) {
    const at = pair.indexOf('=');
    if (at <= 0) throw new ConfigError('--env', `"${pair}" is not NAME=VALUE`);
    env[pair.slice(0, at)] = pair.slice(at + 1);
  }
  return env;
}

/**
 * The configuration `hostlb run` runs, as the raw object a YAML file would
 * hold (validateConfig takes it; --save writes it). Throws ConfigError naming
 * the option to change.
 */
export function runConfig(command: string, args: readonly string[], options: RunOptions, context: RunContext): Record<string, unknown> {
  if (!Number.isInteger(options.port) || options.port < 1 || options.port > 65535) throw new ConfigError('--port', `${String(options.port)} is not a port number 1..65535`);
  if (!Number.isInteger(options.instances) || options.instances < 1 || options.instances > 253) throw new ConfigError('--instances', `${String(options.instances)} is not a number of instances 1..253`);
  if (options.protocol !== 'tcp' && options.protocol !== 'udp') throw new ConfigError('--protocol', `"${String(options.protocol)}" is not tcp or udp`);
  if (!(SCHEDULER_NAMES as readonly string[]).includes(options.scheduler)) throw new ConfigError('--scheduler', `"${options.scheduler}" is not one of ${SCHEDULER_NAMES.join(', ')}`);
  let address = options.address;
  if (address === null) {
    if (context.plane !== 'socket') {
      throw new ConfigError('--address', `this host runs the ${context.plane} data plane, which serves one address, not every address of the host: give one with --address (127.0.0.1 for this host alone, or one of its own addresses)`);
    }
    address = '0.0.0.0';
  } else if (parseIp(address) === null) {
    throw new ConfigError('--address', `"${address}" is not an IP address`);
  }
  const user = options.user ?? context.sudoUser ?? null;
  if (user === null) {
    throw new ConfigError('--user', 'the instances would run as root: name the user to run them as (--user www-data), or --user root to mean it');
  }
  const name = options.name ?? defaultName(command, args);
  const supervise: Record<string, unknown> = {
    command,
    args: [...args],
    instances: options.instances,
    host: instanceBase(options.port),
    port: options.port,
    env: { HOSTLB_NAME: name, ...envOf(options.env) },
    stopTimeout: options.stopTimeout,
    user,
  };
  if (options.listenFds) supervise.listenFds = true;
  return {
    dataplane: options.dataplane,
    stateDir: context.stateDir,
    clusters: [{
      address,
      ports: [{
        port: options.port,
        protocol: options.protocol,
        scheduler: options.scheduler,
        advisor: { ...advisorOf(options.health), interval: '1s', timeout: '1s', rise: 1, fall: 2 },
        supervise,
        ...(options.agent !== null ? { agent: { port: options.agent } } : {}),
      }],
    }],
  };
}
