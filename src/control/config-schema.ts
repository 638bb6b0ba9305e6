// The shape of hostlb's configuration file, as a zod schema: every key, its
// type, its default. Meaning beyond shape (addresses parse, daemons share their
// cluster's family, no port served twice) is checked by dispatch/config-tree.

import { z } from 'zod';
import { SCHEDULER_NAMES } from '../dispatch/schedulers/scheduler.js';
import { DEFAULT_TIMEOUTS } from '../dispatch/tcp-state.js';

/** A duration: a number of seconds, or text such as "900s", "15m", "2h", "500ms". */
export const duration = z.union([
  z.number().nonnegative(),
  z.string().regex(/^\d+(\.\d+)?(ms|s|m|h)$/, 'expected a duration such as 30s, 15m, 2h or 500ms'),
]).transform((v) => {
  if (typeof v === 'number') return v;
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h)$/.exec(v)!;
  const n = Number(m[1]);
  return m[2] === 'ms' ? n / 1000 : m[2] === 's' ? n : m[2] === 'm' ? n * 60 : n * 3600;
});

/** A user or group a child process runs as: a name, or a numeric id (resolved when the file is validated). */
const runAsId = z.union([z.string().min(1), z.number().int().min(0)]);

/** An advisor: how hostlb probes a daemon's health (health/advisors). */
const advisorFields = {
  type: z.enum(['tcp', 'http', 'udp', 'exec']),
  interval: duration.default(2),
  timeout: duration.default(1),
  rise: z.number().int().min(1).max(100).default(2),
  fall: z.number().int().min(1).max(100).default(3),
  method: z.string().regex(/^[A-Z]+$/, 'expected an HTTP method such as GET or HEAD').optional(),
  path: z.string().regex(/^\//, 'expected a path starting with /').optional(),
  expect: z.number().int().min(100).max(599).optional(),
  body: z.string().optional(),
  host: z.string().optional(),
  payload: z.string().optional(),
  reply: z.string().optional(),
  command: z.string().optional(),
  args: z.array(z.string()).optional(),
  /** exec: the user (and group) the command runs as; default hostlb's own (root: a warning at start). */
  user: runAsId.optional(),
  group: runAsId.optional(),
};
const advisor = z.strictObject(advisorFields).superRefine((a, ctx) => {
  if (a.type === 'exec' && !a.command) ctx.addIssue({ code: 'custom', path: ['command'], message: 'an exec advisor needs a command' });
  for (const key of ['user', 'group'] as const) {
    if (a.type !== 'exec' && a[key] !== undefined) ctx.addIssue({ code: 'custom', path: [key], message: `only an exec advisor runs a command; remove ${key} from this ${a.type} advisor` });
  }
  if (a.timeout > a.interval) ctx.addIssue({ code: 'custom', path: ['timeout'], message: `timeout (${a.timeout} s) must not exceed interval (${a.interval} s)` });
});
/** Per-daemon override: any advisor key, merged over the port's advisor. */
const advisorOverride = z.strictObject({ ...advisorFields, type: advisorFields.type.optional() }).partial();

const daemon = z.strictObject({
  address: z.string().describe('daemon address:port, IPv6 in brackets'),
  weight: z.number().int().min(0).max(10000).default(1),
  advisor: advisorOverride.optional(),
});

const manager = z.strictObject({
  enabled: z.boolean().default(true),
  interval: duration.default(2),
  proportions: z.strictObject({
    active: z.number().min(0).max(1).default(0.5),
    new: z.number().min(0).max(1).default(0.5),
    response: z.number().min(0).max(1).default(0),
    passive: z.number().min(0).max(1).default(0),
  }).default({ active: 0.5, new: 0.5, response: 0, passive: 0 }),
  smoothing: z.number().gt(0).max(1).default(0.5),
  slowStart: duration.default(10),
  minFactor: z.number().gt(0).max(1).default(0.1),
  maxFactor: z.number().min(1).max(100).default(10),
});

const supervise = z.strictObject({
  command: z.string().min(1),
  args: z.array(z.string()).default([]),
  instances: z.number().int().min(1).max(256),
  env: z.record(z.string(), z.string()).default({}),
  /** First daemon address; instance i gets this address + i. */
  host: z.string(),
  /** Port every instance listens on. */
  port: z.number().int().min(1).max(65535),
  cwd: z.string().optional(),
  stopTimeout: duration.default(10),
  /** The user (and group) the daemons run as: required, so that root is never chosen by default (write root to mean it). */
  user: runAsId.optional(),
  group: runAsId.optional(),
  /** hostlb opens each instance's listening socket and passes it as fd 3 (LISTEN_FDS=1), kept across restarts. */
  listenFds: z.boolean().default(false),
});

const port = z.strictObject({
  port: z.number().int().min(1).max(65535),
  protocol: z.enum(['tcp', 'udp', 'any']).default('tcp'),
  scheduler: z.enum(SCHEDULER_NAMES).default('wlc'),
  daemons: z.array(daemon).default([]),
  advisor: advisor.optional(),
  manager: manager.default(() => manager.parse({})),
  /** Passive signals from the data path: take out a daemon that refuses or ignores new connections. */
  passive: z.strictObject({
    enabled: z.boolean().default(true),
    grace: duration.default(1),
    threshold: z.number().int().min(1).max(1000).default(3),
    /** Without an advisor, how long a daemon taken out by passive signals stays out before it is tried again. */
    holdDown: duration.default(5),
  }).default({ enabled: true, grace: 1, threshold: 3, holdDown: 5 }),
  /** New flows when every daemon is down: reject (TCP RST / ICMP port unreachable from the cluster) or use the daemons anyway. */
  whenAllDown: z.enum(['reject', 'use']).default('reject'),
  /** A daemon's existing flows when it goes down: kept (they may still finish) or reset (each end gets a RST when it next sends). */
  downFlows: z.enum(['keep', 'reset']).default('keep'),
  supervise: supervise.optional(),
  /** Answer a front tier's HAProxy agent-check for this port (docs/scale-out.md). */
  agent: z.strictObject({
    /** TCP port of the agent listener (HAProxy's agent-port). */
    port: z.number().int().min(1).max(65535),
    /** Address it listens on; default: the cluster's address (every address for a wildcard cluster). */
    address: z.string().optional(),
    /** Sent as maxconn:N in every answer. */
    maxconn: z.number().int().min(1).max(1_000_000).optional(),
    /** How long hostlb answers "maint" before it takes its rules away when it stops: at least one agent-inter of the front tier. */
    stopGrace: duration.default(3),
  }).optional(),
}).superRefine((p, ctx) => {
  if (p.supervise && p.daemons.length > 0) ctx.addIssue({ code: 'custom', path: ['daemons'], message: 'a port with supervise gets its daemons from it; remove the daemons list' });
  // Never root by default: the daemons are programs of their own, and root is for those who say so.
  if (p.supervise && p.supervise.user === undefined) ctx.addIssue({ code: 'custom', path: ['supervise', 'user'], message: 'the daemons would run as root: name the user they run as (user: www-data), or write user: root to mean it' });
  if (p.supervise?.listenFds && p.protocol !== 'tcp') ctx.addIssue({ code: 'custom', path: ['supervise', 'listenFds'], message: `hostlb passes listening TCP sockets only; set protocol: tcp or listenFds: false (this port is ${p.protocol})` });
});

const cluster = z.strictObject({
  address: z.string(),
  ports: z.array(port).min(1),
});

const timeouts = z.strictObject({
  established: duration.default(DEFAULT_TIMEOUTS.established),
  synRecv: duration.default(DEFAULT_TIMEOUTS.synRecv),
  finWait: duration.default(DEFAULT_TIMEOUTS.finWait),
  closeWait: duration.default(DEFAULT_TIMEOUTS.closeWait),
  lastAck: duration.default(DEFAULT_TIMEOUTS.lastAck),
  timeWait: duration.default(DEFAULT_TIMEOUTS.timeWait),
  close: duration.default(DEFAULT_TIMEOUTS.close),
  udp: duration.default(DEFAULT_TIMEOUTS.udp),
});

const admin = z.strictObject({
  /** Unix socket of the admin API; default <stateDir>/admin.sock. */
  socket: z.string().regex(/^\//, 'expected an absolute path').optional(),
  /** Also listen on TCP ("127.0.0.1:9180"); needs a token. */
  listen: z.string().regex(/^(\[[0-9a-fA-F:.]+\]|[0-9.]+|localhost):\d{1,5}$/, 'expected host:port, e.g. 127.0.0.1:9180').optional(),
  /** Bearer token for the TCP listener (at least 16 characters), or a file holding it. */
  token: z.string().min(16, 'a token needs at least 16 characters').optional(),
  tokenFile: z.string().regex(/^\//, 'expected an absolute path').optional(),
  /**
   * Serve the web dashboard's page (docs/dashboard.md) on the TCP listener at /dashboard/; absent = false.
   * Optional rather than defaulted so an absent `admin` stays `{}`.
   */
  dashboard: z.boolean().optional(),
}).superRefine((a, ctx) => {
  if (a.listen && !a.token && !a.tokenFile) ctx.addIssue({ code: 'custom', path: ['listen'], message: 'a TCP listener needs admin.token or admin.tokenFile: without one anybody who can reach the port could reconfigure hostlb' });
  if (a.dashboard && !a.listen) ctx.addIssue({ code: 'custom', path: ['dashboard'], message: 'the dashboard is served on the TCP listener: set admin.listen (with admin.token), or leave admin.dashboard off and run `hostlb dashboard`, which serves it on localhost through the admin socket' });
});

export const configSchema = z.strictObject({
  /** TUN device name (Linux allows 15 characters). */
  device: z.string().regex(/^[A-Za-z0-9_.-]{1,15}$/, 'expected a device name of 1-15 letters, digits, "_", "." or "-"').default('hlb0'),
  /**
   * Who moves packets: the kernel (NFQUEUE verdicts, conntrack, nftables DNAT;
   * the default: it wins bench:e2e) or hostlb itself through a TUN device.
   */
  dataplane: z.enum(['auto', 'socket', 'netfilter', 'tun']).default('auto'),
  netfilter: z.strictObject({
    /** NFQUEUE queue number the first packet of each new connection comes to hostlb on. */
    queue: z.number().int().min(0).max(65535).default(4242),
    /** hostlb's marks are `mark | daemon id`; the low 16 bits must be zero. */
    mark: z.number().int().min(0x10000).max(0xffff0000).refine((m) => (m & 0xffff) === 0, 'the low 16 bits must be zero (e.g. 0x4c420000): they carry the daemon id').default(0x4c420000),
    /** Packets the kernel holds for hostlb before it accepts the rest unmarked (fail-open: the kernel-side hash picks). */
    queueLength: z.number().int().min(16).max(1 << 20).default(4096),
  }).default({ queue: 4242, mark: 0x4c420000, queueLength: 4096 }),
  tun: z.strictObject({
    /**
     * Ask the kernel for checksum and segmentation offloads on the TUN device:
     * one read or write then moves a 64 KB super-packet instead of one MTU-sized packet.
     */
    offloads: z.boolean().default(true),
    /**
     * Read and write the TUN device a batch at a time through an io_uring (one
     * system call per batch, not per packet); a kernel or sandbox that refuses
     * io_uring falls back to one call per packet, with a warning.
     */
    ioUring: z.boolean().default(true),
  }).default({ offloads: true, ioUring: true }),
  /** Where the journal of host changes lives (undone at stop, or at the next start after a crash). */
  stateDir: z.string().regex(/^\//, 'expected an absolute directory path').default('/run/hostlb'),
  /** Policy-routing table hostlb owns for daemon replies. */
  routeTable: z.number().int().min(1).max(252).default(100),
  table: z.strictObject({
    capacity: z.number().int().min(1).max(1 << 26).default(1 << 20),
    timeouts: timeouts.default(() => timeouts.parse({})),
    /** Seconds between checkpoints of the table (restored after a crash or a takeover); 0 = none. */
    checkpoint: duration.default(5),
  }).default(() => ({ capacity: 1 << 20, timeouts: timeouts.parse({}), checkpoint: 5 })),
  /** Seed for flow hashing and random schedulers; fixed so consistent hashing survives a restart. */
  seed: z.number().int().min(0).max(0xffffffff).default(0x686c62),
  admin: admin.default({}),
  /** What happens to the flows of a daemon removed from the configuration: kept until they end, or reset. */
  onDaemonRemoved: z.enum(['keep', 'reset']).default('keep'),
  log: z.strictObject({
    /** Fraction of ended connections logged (0 = none, 1 = all): client, cluster, daemon, duration, bytes, how it ended. */
    connections: z.number().min(0).max(1).default(0),
  }).default({ connections: 0 }),
  clusters: z.array(cluster).min(1),
});

export type HostlbConfig = z.output<typeof configSchema>;
