// Test support: a `Controlled` (what the admin API drives) that needs no root,
// no TUN device and no host changes. It owns a real Dispatcher configured from
// a validated config and lets a test push packets through it, so the API, the
// CLI and the metrics can be checked against traffic whose effect is known.
//
// API
//
//   FakeInstance.fromFile(file)             loadConfig(file); reload() re-reads the same file
//   new FakeInstance(config, { configFile? })
//   fake.apply(next, source)                checkLiveChange (from instance.ts) + dispatcher.configure(next)
//                                           + dispatcher.setTimeouts(next.table.timeouts) (+ resetDaemonFlows
//                                           for removed daemons with onDaemonRemoved: reset), as Instance.apply
//                                           does minus the host routes (routesAdded/routesRemoved are 0) and
//                                           the connection log
//   fake.reload()                           apply(loadConfig(configFile)); throws HostlbError NO_CONFIG_FILE
//                                           when there is no file, as Instance does
//   fake.applied                            the `source` of every apply that succeeded, in order
//   fake.plane                              link counters as a TUN plane keeps them: read = packets pushed,
//                                           written = packets forwarded, writeShortfall = 0
//
//   Traffic (the clock is Date.now(), so ages and expiry look as in a running hostlb):
//   fake.tcpFlow({ client, clientPort, cluster, port, until? }) → FakeFlow
//       sends the client's SYN and, unless until = 'syn', the daemon's SYN-ACK and the client's ACK
//       (the record is then ESTABLISHED). Throws when the dispatcher drops a packet of the handshake.
//   fake.udpFlow({ client, clientPort, cluster, port }) → FakeFlow   one datagram and the daemon's reply
//   flow.data(bytes)                        one PSH-ACK each way
//   fake.send(packet) → PacketDescription | null   one raw packet through processPacket: the packet as
//                                           rewritten, or null when dropped
//   fake.expected                           what the test pushed, tallied from verdicts (not from the
//                                           dispatcher's counters): per daemon name ("198.18.2.1:8080")
//                                           newFlows, packetsIn, packetsOut, bytesIn, bytesOut; and
//                                           totals packetsIn, packetsOut, dropped
//
//   new FakeInstance(config, { health: true })   also a HealthRuntime (events, monitor; never started),
//                                           so a test can emit daemon events: fake.health!.events.emitEvent(...)
//
//   A whole admin stack over it, in a fresh temp dir (what the API and CLI tests talk to):
//   startFakeHostlb({ config?, tcp?, traffic?, withFile?, onStopRequested?, health?, logger?, limits? }) → FakeHostlb
//       config: YAML text (default TEST_CONFIG) written to <dir>/hostlb.yaml (the file reload() reads,
//       unless withFile = false); an AdminServer on <dir>/admin.sock and, with tcp = true, on
//       127.0.0.1:<free port> with TEST_TOKEN; traffic = true pushes standardTraffic() first.
//       health: as for FakeInstance; logger: the AdminServer's (default silent); limits: AdminLimits overrides.
//       stack.call(method, path, body?) and stack.callTcp(method, path, body?, token?) → ApiAnswer
//       stack.stops counts onStopRequested calls; stack.close() stops the listeners, removes the dir.
//   standardTraffic(fake)                   three established TCP flows and one half-open one to
//                                           198.18.100.1:80, one UDP flow to :53, one IPv6 TCP flow to
//                                           [2001:db8::100]:443, and one stray ACK (dropped, no_record)
//   apiRequest(target, method, path, body?) one HTTP request over a unix socket or TCP; a string body
//                                           is sent as it is (for bad JSON), anything else as JSON

import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { request, type IncomingHttpHeaders } from 'node:http';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino, type Logger } from 'pino';
import { HostlbError } from '../../src/errors.js';
import { AdminServer } from '../../src/control/api/server.js';
import type { Controlled } from '../../src/control/api/controlled.js';
import type { AdminLimits } from '../../src/control/api/limits.js';
import { HealthRuntime } from '../../src/control/health-runtime.js';
import type { HostlbConfig } from '../../src/control/config-schema.js';
import { loadConfig } from '../../src/control/config-file.js';
import { checkLiveChange, type ChangeSummary } from '../../src/control/instance.js';
import { Dispatcher, VERDICT_FORWARD } from '../../src/dispatch/dispatcher.js';
import { parseEndpoint, parseIp } from '../../src/wire/address.js';
import { buildTcp, buildUdp, describe as describePacket, type PacketDescription } from './packet-builder.js';

export interface DaemonTally {
  newFlows: number;
  packetsIn: number;
  packetsOut: number;
  bytesIn: number;
  bytesOut: number;
}

export interface FlowOptions {
  /** Client address (IPv4 or IPv6, same family as the cluster). */
  client: string;
  clientPort: number;
  /** Cluster address. */
  cluster: string;
  /** Cluster port. */
  port: number;
}

export interface FakeFlow {
  protocol: 'tcp' | 'udp';
  /** The daemon the scheduler chose, as the API names it ("198.18.2.1:8080", "[2001:db8:2::1]:8443"). */
  daemon: string;
  /** One packet each way (PSH-ACK for TCP), `bytes` of payload each. */
  data(bytes: number): void;
}

function endpointText(address: string, port: number): string {
  return address.includes(':') ? `[${address}]:${port}` : `${address}:${port}`;
}

export class FakeInstance implements Controlled {
  readonly dispatcher: Dispatcher;
  readonly startedAt = Date.now();
  readonly configFile: string | undefined;
  readonly plane = { packetsRead: 0, packetsWritten: 0, writeShortfall: 0 };
  readonly applied: string[] = [];
  readonly expected = { packetsIn: 0, packetsOut: 0, dropped: 0, daemons: new Map<string, DaemonTally>() };
  readonly health: HealthRuntime | undefined;
  private current: HostlbConfig;

  /** `config` must have passed validateConfig or parseConfig. Throws ConfigError on a spec the dispatcher refuses. */
  constructor(config: HostlbConfig, options: { configFile?: string; health?: boolean } = {}) {
    this.current = config;
    this.configFile = options.configFile;
    this.dispatcher = new Dispatcher({ capacity: config.table.capacity, timeouts: config.table.timeouts, seed: config.seed, hashSeed: config.seed });
    this.dispatcher.configure(config);
    this.health = options.health ? new HealthRuntime(this.dispatcher, config, pino({ level: 'silent' })) : undefined;
  }

  /** An instance over `file`, which reload() re-reads. Throws ConfigError naming file, line and key. */
  static fromFile(file: string): FakeInstance {
    return new FakeInstance(loadConfig(file), { configFile: file });
  }

  get config(): HostlbConfig {
    return this.current;
  }

  apply(next: HostlbConfig, source: string): ChangeSummary {
    checkLiveChange(this.current, next);
    const names = (): Set<string> => new Set([...this.dispatcher.tree.daemons()].map((d) => `${d.clusterPort.name} ${d.name}`));
    const before = names();
    const wasLive = new Set(this.dispatcher.tree.daemons());
    this.dispatcher.configure(next);
    this.dispatcher.setTimeouts(next.table.timeouts);
    this.current = next;
    if (next.onDaemonRemoved === 'reset') {
      for (const d of this.dispatcher.tree.daemonsById) if (d?.retired && wasLive.has(d)) this.dispatcher.resetDaemonFlows(d.id, Date.now());
    }
    this.applied.push(source);
    const after = names();
    return {
      source, routesAdded: 0, routesRemoved: 0,
      daemonsAdded: [...after].filter((d) => !before.has(d)),
      daemonsRemoved: [...before].filter((d) => !after.has(d)),
    };
  }

  reload(): ChangeSummary {
    if (!this.configFile) throw new HostlbError('NO_CONFIG_FILE', 'this hostlb was started without --config, so there is no file to reload');
    return this.apply(loadConfig(this.configFile), `reload ${this.configFile}`);
  }

  /** One packet through the dispatcher at Date.now(): the rewritten packet, or null when it was dropped. */
  send(packet: Uint8Array): PacketDescription | null {
    this.plane.packetsRead++;
    const verdict = this.dispatcher.processPacket(packet, 0, packet.length, 0, Date.now());
    if (verdict !== VERDICT_FORWARD) {
      this.expected.dropped++;
      return null;
    }
    this.plane.packetsWritten++;
    return describePacket(packet);
  }

  private tally(daemon: string): DaemonTally {
    let t = this.expected.daemons.get(daemon);
    if (!t) {
      t = { newFlows: 0, packetsIn: 0, packetsOut: 0, bytesIn: 0, bytesOut: 0 };
      this.expected.daemons.set(daemon, t);
    }
    return t;
  }

  /** Sends a client packet; returns the daemon it went to. Throws when it was dropped. */
  private inbound(packet: Uint8Array, what: string): string {
    const out = this.send(packet);
    if (!out) throw new Error(`fake-instance: the dispatcher dropped ${what}`);
    const daemon = endpointText(out.dst, out.dstPort);
    const t = this.tally(daemon);
    t.packetsIn++;
    t.bytesIn += packet.length;
    this.expected.packetsIn++;
    return daemon;
  }

  /** Sends a daemon's reply; throws unless it comes back with the cluster as its source. */
  private outbound(packet: Uint8Array, daemon: string, cluster: string, port: number, what: string): void {
    const out = this.send(packet);
    if (!out) throw new Error(`fake-instance: the dispatcher dropped ${what}`);
    if (out.src !== cluster || out.srcPort !== port) throw new Error(`fake-instance: ${what} left as ${out.src}:${out.srcPort}, not ${cluster}:${port}`);
    const t = this.tally(daemon);
    t.packetsOut++;
    t.bytesOut += packet.length;
    this.expected.packetsOut++;
  }

  /** A TCP flow from `client` to the cluster port: SYN, then (unless until = 'syn') SYN-ACK and ACK. */
  tcpFlow(o: FlowOptions & { until?: 'syn' | 'established' }): FakeFlow {
    const client = canonical(o.client);
    const cluster = canonical(o.cluster);
    const toCluster = { src: client, dst: cluster, srcPort: o.clientPort, dstPort: o.port };
    const daemon = this.inbound(buildTcp({ ...toCluster, flags: 'S', seq: 1000 }), `the SYN of ${client}:${o.clientPort}`);
    this.tally(daemon).newFlows++;
    const d = parseEndpoint(daemon)!;
    const fromDaemon = { src: d.address.text, dst: client, srcPort: d.port, dstPort: o.clientPort };
    let clientSeq = 1001;
    let daemonSeq = 5001;
    if (o.until !== 'syn') {
      this.outbound(buildTcp({ ...fromDaemon, flags: 'SA', seq: 5000, ack: 1001 }), daemon, cluster, o.port, 'the SYN-ACK');
      this.inbound(buildTcp({ ...toCluster, flags: 'A', seq: 1001, ack: 5001 }), 'the ACK');
    }
    return {
      protocol: 'tcp',
      daemon,
      data: (bytes: number) => {
        const payload = new Uint8Array(bytes).fill(0x61);
        this.inbound(buildTcp({ ...toCluster, flags: 'PA', seq: clientSeq, ack: daemonSeq, payload }), 'client data');
        clientSeq += bytes;
        this.outbound(buildTcp({ ...fromDaemon, flags: 'PA', seq: daemonSeq, ack: clientSeq, payload }), daemon, cluster, o.port, 'daemon data');
        daemonSeq += bytes;
      },
    };
  }

  /** A UDP flow: one datagram from the client and one reply from the chosen daemon. */
  udpFlow(o: FlowOptions): FakeFlow {
    const client = canonical(o.client);
    const cluster = canonical(o.cluster);
    const toCluster = { src: client, dst: cluster, srcPort: o.clientPort, dstPort: o.port };
    const daemon = this.inbound(buildUdp({ ...toCluster, payload: 'query' }), `the first datagram of ${client}:${o.clientPort}`);
    this.tally(daemon).newFlows++;
    const d = parseEndpoint(daemon)!;
    const fromDaemon = { src: d.address.text, dst: client, srcPort: d.port, dstPort: o.clientPort };
    this.outbound(buildUdp({ ...fromDaemon, payload: 'answer' }), daemon, cluster, o.port, 'the reply');
    return {
      protocol: 'udp',
      daemon,
      data: (bytes: number) => {
        const payload = new Uint8Array(bytes).fill(0x62);
        this.inbound(buildUdp({ ...toCluster, payload }), 'a datagram');
        this.outbound(buildUdp({ ...fromDaemon, payload }), daemon, cluster, o.port, 'a reply');
      },
    };
  }
}

function canonical(address: string): string {
  const ip = parseIp(address);
  if (!ip) throw new Error(`fake-instance: not an IP address: ${JSON.stringify(address)}`);
  return ip.text;
}

/** The configuration every control test starts from: two clusters (IPv4 and IPv6), four daemons. */
export const TEST_CONFIG = `# hostlb test configuration (the fake runs a TUN-plane dispatcher over a MemoryLink)
device: hlbtest0
dataplane: tun
stateDir: /run/hostlb-test
table:
  capacity: 1024
clusters:
  - address: 198.18.100.1
    ports:
      - port: 80
        scheduler: rr
        daemons:
          - address: 198.18.2.1:8080
          - address: 198.18.2.2:8080
      - port: 53
        protocol: udp
        daemons:
          - address: 198.18.2.3:5353
  - address: 2001:db8::100
    ports:
      - port: 443
        daemons:
          - address: "[2001:db8:2::1]:8443"
`;

export const TEST_TOKEN = 'test-token-0123456789abcdef';

export interface TrafficFlows {
  established: FakeFlow[];
  halfOpen: FakeFlow;
  udp: FakeFlow;
  v6: FakeFlow;
}

/** Pushes the standard flows (see the head of this file) through `fake`. */
export function standardTraffic(fake: FakeInstance): TrafficFlows {
  const established = [40001, 40002, 40003].map((clientPort) => fake.tcpFlow({ client: '198.18.0.10', clientPort, cluster: '198.18.100.1', port: 80 }));
  established[0].data(100);
  const halfOpen = fake.tcpFlow({ client: '198.18.0.11', clientPort: 40010, cluster: '198.18.100.1', port: 80, until: 'syn' });
  const udp = fake.udpFlow({ client: '198.18.0.12', clientPort: 5000, cluster: '198.18.100.1', port: 53 });
  const v6 = fake.tcpFlow({ client: '2001:db8:1::10', clientPort: 40020, cluster: '2001:db8::100', port: 443 });
  v6.data(10);
  // An ACK of no known flow: dropped and counted as no_record on port 80.
  if (fake.send(buildTcp({ src: '198.18.0.13', dst: '198.18.100.1', srcPort: 40030, dstPort: 80, flags: 'A' })) !== null) {
    throw new Error('fake-instance: a stray ACK was forwarded');
  }
  return { established, halfOpen, udp, v6 };
}

export interface ApiAnswer {
  status: number;
  headers: IncomingHttpHeaders;
  text: string;
  /** Parsed JSON when the answer is JSON, else the text. */
  body: unknown;
}

export type ApiTarget = { socket: string } | { port: number; token?: string };

/** One request to an admin listener. A string body is sent unchanged; anything else (not undefined) as JSON. */
export function apiRequest(target: ApiTarget, method: string, path: string, body?: unknown): Promise<ApiAnswer> {
  const payload = body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body);
  return new Promise((resolve, reject) => {
    const headers: Record<string, string | number> = {};
    if (payload !== undefined) {
      headers['content-type'] = 'application/json';
      headers['content-length'] = Buffer.byteLength(payload);
    }
    if ('port' in target && target.token !== undefined) headers.authorization = `Bearer ${target.token}`;
    const req = request({
      ...('socket' in target ? { socketPath: target.socket } : { host: '127.0.0.1', port: target.port }),
      method, path, headers,
    }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('error', reject);
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        let parsed: unknown = text;
        if (method !== 'HEAD' && (res.headers['content-type'] ?? '').includes('application/json')) parsed = JSON.parse(text);
        resolve({ status: res.statusCode ?? 0, headers: res.headers, text, body: parsed });
      });
    });
    req.on('error', reject);
    if (payload !== undefined) req.write(payload);
    req.end();
  });
}

/** A TCP port nobody listens on right now, on 127.0.0.1. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}

export interface FakeHostlb {
  dir: string;
  /** The config file (also written when withFile = false, but then the instance does not know it). */
  file: string;
  socket: string;
  /** The TCP listener's port, or 0 without one. */
  tcpPort: number;
  fake: FakeInstance;
  admin: AdminServer;
  flows: TrafficFlows | null;
  /** How many times onStopRequested was called. */
  readonly stops: number;
  call(method: string, path: string, body?: unknown): Promise<ApiAnswer>;
  /** Through the TCP listener; `token` undefined sends no Authorization header. */
  callTcp(method: string, path: string, body?: unknown, token?: string): Promise<ApiAnswer>;
  close(): void;
}

export interface StartOptions {
  config?: string;
  tcp?: boolean;
  traffic?: boolean;
  /** Default true: the instance knows its file, so reload and config save work without a path. */
  withFile?: boolean;
  onStopRequested?(): void;
  /** A HealthRuntime on the instance (never started), for daemon events. */
  health?: boolean;
  /** The AdminServer's logger (default: silent). */
  logger?: Logger;
  limits?: Partial<AdminLimits>;
}

export async function startFakeHostlb(options: StartOptions = {}): Promise<FakeHostlb> {
  const dir = mkdtempSync(join(tmpdir(), 'hostlb-control-'));
  // Searchable by anybody, so a permission test sees the socket's own mode, not the directory's.
  chmodSync(dir, 0o755);
  const file = join(dir, 'hostlb.yaml');
  writeFileSync(file, options.config ?? TEST_CONFIG);
  const config = loadConfig(file);
  const fake = new FakeInstance(config, { configFile: options.withFile === false ? undefined : file, health: options.health });
  const flows = options.traffic ? standardTraffic(fake) : null;
  const socket = join(dir, 'admin.sock');
  const tcpPort = options.tcp ? await freePort() : 0;
  let stops = 0;
  const admin = await AdminServer.start(fake, {
    socket,
    tcp: options.tcp ? { host: '127.0.0.1', port: tcpPort, token: TEST_TOKEN } : undefined,
    version: '0.0.0-test',
    logger: options.logger ?? pino({ level: 'silent' }),
    limits: options.limits,
    onStopRequested: () => {
      stops++;
      options.onStopRequested?.();
    },
  });
  return {
    dir, file, socket, tcpPort, fake, admin, flows,
    get stops() { return stops; },
    call: (method, path, body) => apiRequest({ socket }, method, path, body),
    callTcp: (method, path, body, token) => apiRequest({ port: tcpPort, token }, method, path, body),
    close: () => {
      admin.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
