// Test support: a whole hostlb without root. The real Instance (Balancer, TUN
// data plane, HealthRuntime) runs over a MemoryLink, so it leaves the host
// alone (control/host-setup.ts NO_HOST), behind a real AdminServer; packets go
// in through the link and the plane's pump, and what it forwards comes back
// out of the link. The API, the CLI and the metrics are then checked against
// traffic whose effect the test tallied itself.
//
// API
//
//   startMemoryHostlb({ config?, tcp?, traffic?, withFile?, onStopRequested?, logger?, instanceLogger?, limits?, plane? })
//       → MemoryHostlb, in a fresh temp dir:
//       config: YAML text (default TEST_CONFIG) whose `stateDir: /run/hostlb-test` line is replaced by a
//       temp dir of the stack's own (`state`: the plane keeps its table checkpoint there, health its PID
//       file, config save may write there), written to <dir>/hostlb.yaml (`yaml` is that text, for tests
//       that rewrite the file: reload refuses another stateDir) and started with Instance.start over a
//       MemoryLink (`instance`, `link`); reload() reads that file unless withFile = false.
//       An AdminServer on <dir>/admin.sock and, with tcp = true, on 127.0.0.1:<free port> with TEST_TOKEN;
//       traffic = true pushes standardTraffic() first (`flows`).
//       logger: the AdminServer's (default silent); instanceLogger: the instance's (default silent);
//       limits: AdminLimits overrides; plane: what the API sees instead of the instance's plane (given it).
//       stack.applied                     the `source` of every apply that succeeded through the API
//                                         (reloads included), in order: the AdminServer drives the
//                                         instance through a Proxy that records them
//       stack.call(method, path, body?) and stack.callTcp(method, path, body?, token?) → ApiAnswer
//       stack.stops counts onStopRequested calls; await stack.close() closes the listeners, stops the
//       instance as hostlb does (its supervised daemons first, then the plane), closes the link and
//       removes both temp dirs.
//
//   Traffic (stack.traffic, a MemoryTraffic; the pump's clock is Date.now(), so ages and expiry are real):
//   traffic.send(packet) → Promise<PacketDescription | null>
//       injects one packet into the link, waits (turns of the event loop, at most SEND_TURNS) until the
//       pump has read it, and takes what the plane wrote back: the packet as forwarded, or null when
//       nothing came back (dropped). One packet at a time: a send while another waits throws.
//   traffic.tcpFlow({ client, clientPort, cluster, port, until? }) → Promise<MemoryFlow>
//       the client's SYN and, unless until = 'syn', the daemon's SYN-ACK and the client's ACK (the record
//       is then ESTABLISHED). Throws when a packet of the handshake is dropped, or a reply leaves with
//       another source than the cluster (the TUN plane hands back unchanged a reply it has no record of).
//   traffic.udpFlow({ client, clientPort, cluster, port }) → Promise<MemoryFlow>   one datagram and the reply
//   flow.data(bytes) → Promise<void>      one PSH-ACK (or datagram) each way
//   traffic.expected                      what the test pushed, tallied from what came back (not from the
//                                         plane's counters): per daemon name ("198.18.2.1:8080") newFlows,
//                                         packetsIn, packetsOut, bytesIn, bytesOut; totals packetsIn,
//                                         packetsOut, dropped; link.read (packets injected) and
//                                         link.written (packets the plane wrote back)
//
//   standardTraffic(traffic)              three established TCP flows and one half-open one to
//                                         198.18.100.1:80, one UDP flow to :53, one IPv6 TCP flow to
//                                         [2001:db8::100]:443, and one stray ACK (dropped, no_record)
//   apiRequest(target, method, path, body?) one HTTP request over a unix socket or TCP; a string body
//                                         is sent as it is (for bad JSON), anything else as JSON
//   freePort()                            a TCP port nobody listens on right now, on 127.0.0.1

import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { request, type IncomingHttpHeaders } from 'node:http';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino, type Logger } from 'pino';
import { AdminServer } from '../../src/control/api/server.js';
import type { Controlled } from '../../src/control/api/controlled.js';
import type { AdminLimits } from '../../src/control/api/limits.js';
import type { HostlbConfig } from '../../src/control/config-schema.js';
import { loadConfig } from '../../src/control/config-file.js';
import { Instance, type ChangeSummary } from '../../src/control/instance.js';
import type { DataPlane } from '../../src/dataplane/data-plane.js';
import { MemoryLink } from '../../src/link/memory-link.js';
import { parseEndpoint, parseIp } from '../../src/wire/address.js';
import { buildTcp, buildUdp, describe as describePacket, type PacketDescription } from './packet-builder.js';

/**
 * Turns of the event loop a send waits for the pump to read its packet. The
 * link rings the pump on the next turn and the pump forwards within that
 * callback, so one turn is the rule; the bound only turns a stopped pump into
 * an error instead of a hang.
 */
const SEND_TURNS = 1000;

/** The stateDir line of TEST_CONFIG that every stack replaces with a directory of its own. */
const STATE_DIR_LINE = 'stateDir: /run/hostlb-test';

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

export interface MemoryFlow {
  protocol: 'tcp' | 'udp';
  /** The daemon the scheduler chose, as the API names it ("198.18.2.1:8080", "[2001:db8:2::1]:8443"). */
  daemon: string;
  /** One packet each way (PSH-ACK for TCP), `bytes` of payload each. */
  data(bytes: number): Promise<void>;
}

function endpointText(address: string, port: number): string {
  return address.includes(':') ? `[${address}]:${port}` : `${address}:${port}`;
}

function canonical(address: string): string {
  const ip = parseIp(address);
  if (!ip) throw new Error(`memory-hostlb: not an IP address: ${JSON.stringify(address)}`);
  return ip.text;
}

function nextTurn(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

/** Packets through a running instance's MemoryLink, with the tallies of what they should have done. */
export class MemoryTraffic {
  readonly expected = {
    packetsIn: 0, packetsOut: 0, dropped: 0,
    link: { read: 0, written: 0 },
    daemons: new Map<string, DaemonTally>(),
  };
  private sending = false;

  constructor(readonly link: MemoryLink) {}

  /**
   * One packet through the pump and the dispatcher, at Date.now(): the packet
   * as the plane wrote it back, or null when it wrote nothing (dropped).
   * Throws when the link refuses the packet, the pump does not read it within
   * SEND_TURNS turns, or more than one packet comes back.
   */
  async send(packet: Uint8Array): Promise<PacketDescription | null> {
    if (this.sending) throw new Error('memory-hostlb: one packet at a time (await each send)');
    this.sending = true;
    try {
      const unasked = this.link.drain();
      if (unasked.length > 0) throw new Error(`memory-hostlb: the plane wrote ${unasked.length} packet(s) nobody sent`);
      if (!this.link.inject(packet)) throw new Error('memory-hostlb: the link refused the packet (closed, or its queue is full)');
      this.expected.link.read++;
      for (let turn = 0; this.link.queued > 0; turn++) {
        if (turn === SEND_TURNS) throw new Error(`memory-hostlb: the pump did not read the packet within ${SEND_TURNS} turns of the event loop (is the instance stopped?)`);
        await nextTurn();
      }
      // The pump writes what it forwards in the same callback that read it.
      const out = this.link.drain();
      if (out.length > 1) throw new Error(`memory-hostlb: one packet in, ${out.length} out`);
      this.expected.link.written += out.length;
      if (out.length === 0) {
        this.expected.dropped++;
        return null;
      }
      return describePacket(out[0]);
    } finally {
      this.sending = false;
    }
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
  private async inbound(packet: Uint8Array, what: string): Promise<string> {
    const out = await this.send(packet);
    if (!out) throw new Error(`memory-hostlb: the plane dropped ${what}`);
    const daemon = endpointText(out.dst, out.dstPort);
    const t = this.tally(daemon);
    t.packetsIn++;
    t.bytesIn += packet.length;
    this.expected.packetsIn++;
    return daemon;
  }

  /** Sends a daemon's reply; throws unless it comes back with the cluster as its source. */
  private async outbound(packet: Uint8Array, daemon: string, cluster: string, port: number, what: string): Promise<void> {
    const out = await this.send(packet);
    if (!out) throw new Error(`memory-hostlb: the plane dropped ${what}`);
    if (out.src !== cluster || out.srcPort !== port) throw new Error(`memory-hostlb: ${what} left as ${out.src}:${out.srcPort}, not ${cluster}:${port} (passed through without a record?)`);
    const t = this.tally(daemon);
    t.packetsOut++;
    t.bytesOut += packet.length;
    this.expected.packetsOut++;
  }

  /** A TCP flow from `client` to the cluster port: SYN, then (unless until = 'syn') SYN-ACK and ACK. */
  async tcpFlow(o: FlowOptions & { until?: 'syn' | 'established' }): Promise<MemoryFlow> {
    const client = canonical(o.client);
    const cluster = canonical(o.cluster);
    const toCluster = { src: client, dst: cluster, srcPort: o.clientPort, dstPort: o.port };
    const daemon = await this.inbound(buildTcp({ ...toCluster, flags: 'S', seq: 1000 }), `the SYN of ${client}:${o.clientPort}`);
    this.tally(daemon).newFlows++;
    const d = parseEndpoint(daemon)!;
    const fromDaemon = { src: d.address.text, dst: client, srcPort: d.port, dstPort: o.clientPort };
    let clientSeq = 1001;
    let daemonSeq = 5001;
    if (o.until !== 'syn') {
      await this.outbound(buildTcp({ ...fromDaemon, flags: 'SA', seq: 5000, ack: 1001 }), daemon, cluster, o.port, 'the SYN-ACK');
      await this.inbound(buildTcp({ ...toCluster, flags: 'A', seq: 1001, ack: 5001 }), 'the ACK');
    }
    return {
      protocol: 'tcp',
      daemon,
      data: async (bytes: number) => {
        const payload = new Uint8Array(bytes).fill(0x61);
        await this.inbound(buildTcp({ ...toCluster, flags: 'PA', seq: clientSeq, ack: daemonSeq, payload }), 'client data');
        clientSeq += bytes;
        await this.outbound(buildTcp({ ...fromDaemon, flags: 'PA', seq: daemonSeq, ack: clientSeq, payload }), daemon, cluster, o.port, 'daemon data');
        daemonSeq += bytes;
      },
    };
  }

  /** A UDP flow: one datagram from the client and one reply from the chosen daemon. */
  async udpFlow(o: FlowOptions): Promise<MemoryFlow> {
    const client = canonical(o.client);
    const cluster = canonical(o.cluster);
    const toCluster = { src: client, dst: cluster, srcPort: o.clientPort, dstPort: o.port };
    const daemon = await this.inbound(buildUdp({ ...toCluster, payload: 'query' }), `the first datagram of ${client}:${o.clientPort}`);
    this.tally(daemon).newFlows++;
    const d = parseEndpoint(daemon)!;
    const fromDaemon = { src: d.address.text, dst: client, srcPort: d.port, dstPort: o.clientPort };
    await this.outbound(buildUdp({ ...fromDaemon, payload: 'answer' }), daemon, cluster, o.port, 'the reply');
    return {
      protocol: 'udp',
      daemon,
      data: async (bytes: number) => {
        const payload = new Uint8Array(bytes).fill(0x62);
        await this.inbound(buildUdp({ ...toCluster, payload }), 'a datagram');
        await this.outbound(buildUdp({ ...fromDaemon, payload }), daemon, cluster, o.port, 'a reply');
      },
    };
  }
}

/**
 * The configuration every control test starts from: two clusters (IPv4 and
 * IPv6), four daemons. The health layer changes nothing on its own clock: no
 * advisor, no supervised port, and on each port neither the manager nor slow
 * start (by default every daemon's effective weight ramps from 10 to 100 over
 * its first 10 s, and the manager re-weighs every 2 s), so effective weights
 * stay weight × 100 and a snapshot of the API before and after a request can
 * be compared whole. The pump collects expired records, so standardTraffic's
 * half-open flow gets an hour (not 60 s) to outlive the slowest run. Its
 * stateDir line is replaced by each stack.
 */
export const TEST_CONFIG = `# hostlb test configuration (the real instance, over a MemoryLink)
device: hlbtest0
dataplane: tun
${STATE_DIR_LINE}
table:
  capacity: 1024
  timeouts:
    synRecv: 1h
clusters:
  - address: 198.18.100.1
    ports:
      - port: 80
        scheduler: rr
        manager:
          enabled: false
          slowStart: 0
        daemons:
          - address: 198.18.2.1:8080
          - address: 198.18.2.2:8080
      - port: 53
        protocol: udp
        manager:
          enabled: false
          slowStart: 0
        daemons:
          - address: 198.18.2.3:5353
  - address: 2001:db8::100
    ports:
      - port: 443
        manager:
          enabled: false
          slowStart: 0
        daemons:
          - address: "[2001:db8:2::1]:8443"
`;

export const TEST_TOKEN = 'test-token-0123456789abcdef';

export interface TrafficFlows {
  established: MemoryFlow[];
  halfOpen: MemoryFlow;
  udp: MemoryFlow;
  v6: MemoryFlow;
}

/** Pushes the standard flows (see the head of this file) through `traffic`. */
export async function standardTraffic(traffic: MemoryTraffic): Promise<TrafficFlows> {
  const established: MemoryFlow[] = [];
  for (const clientPort of [40001, 40002, 40003]) established.push(await traffic.tcpFlow({ client: '198.18.0.10', clientPort, cluster: '198.18.100.1', port: 80 }));
  await established[0].data(100);
  const halfOpen = await traffic.tcpFlow({ client: '198.18.0.11', clientPort: 40010, cluster: '198.18.100.1', port: 80, until: 'syn' });
  const udp = await traffic.udpFlow({ client: '198.18.0.12', clientPort: 5000, cluster: '198.18.100.1', port: 53 });
  const v6 = await traffic.tcpFlow({ client: '2001:db8:1::10', clientPort: 40020, cluster: '2001:db8::100', port: 443 });
  await v6.data(10);
  // An ACK of no known flow: dropped and counted as no_record on port 80.
  if (await traffic.send(buildTcp({ src: '198.18.0.13', dst: '198.18.100.1', srcPort: 40030, dstPort: 80, flags: 'A' })) !== null) {
    throw new Error('memory-hostlb: a stray ACK was forwarded');
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

/**
 * The instance as the AdminServer drives it: everything delegated, apply
 * recording the source of each change that succeeded (reload() calls apply
 * through the proxy, so reloads are recorded too), and `plane` replaced
 * when the test gives one.
 */
function controlledView(instance: Instance, applied: string[], plane: DataPlane | undefined): Controlled {
  const apply = (next: HostlbConfig, source: string): ChangeSummary => {
    const summary = instance.apply(next, source);
    applied.push(source);
    return summary;
  };
  return new Proxy(instance, {
    get(target, key, receiver) {
      if (key === 'apply') return apply;
      if (key === 'plane' && plane !== undefined) return plane;
      return Reflect.get(target, key, receiver) as unknown;
    },
  });
}

export interface MemoryHostlb {
  dir: string;
  /** The config file (also written when withFile = false, but then the instance does not know it). */
  file: string;
  /** The text written to `file`: the config given, with the stack's own stateDir. */
  yaml: string;
  /** The configuration's stateDir: a temp dir of this stack's own. */
  state: string;
  socket: string;
  /** The TCP listener's port, or 0 without one. */
  tcpPort: number;
  instance: Instance;
  link: MemoryLink;
  traffic: MemoryTraffic;
  admin: AdminServer;
  flows: TrafficFlows | null;
  /** The source of every change applied through the API (reloads included), in order. */
  readonly applied: readonly string[];
  /** How many times onStopRequested was called. */
  readonly stops: number;
  call(method: string, path: string, body?: unknown): Promise<ApiAnswer>;
  /** Through the TCP listener; `token` undefined sends no Authorization header. */
  callTcp(method: string, path: string, body?: unknown, token?: string): Promise<ApiAnswer>;
  /**
   * Stops everything and removes both temp dirs. Supervised daemons are
   * stopped (and awaited) before the instance: their exits rewrite the PID
   * file in stateDir, which must not come back after the dir is gone.
   */
  close(): Promise<void>;
}

export interface StartOptions {
  /** YAML text with TEST_CONFIG's stateDir line (default TEST_CONFIG). */
  config?: string;
  tcp?: boolean;
  traffic?: boolean;
  /** Default true: the instance knows its file, so reload and config save work without a path. */
  withFile?: boolean;
  onStopRequested?(): void;
  /** The AdminServer's logger (default: silent). */
  logger?: Logger;
  /** The instance's logger (default: silent). */
  instanceLogger?: Logger;
  limits?: Partial<AdminLimits>;
  /** The plane the API sees instead of the instance's own (which it is given). */
  plane?(real: DataPlane): DataPlane;
}

/** Starts a stack (see the head of this file). Throws what Instance.start and AdminServer.start throw. */
export async function startMemoryHostlb(options: StartOptions = {}): Promise<MemoryHostlb> {
  const text = options.config ?? TEST_CONFIG;
  if (!text.includes(STATE_DIR_LINE)) throw new Error(`memory-hostlb: the config must say "${STATE_DIR_LINE}" (each stack replaces it with a directory of its own)`);
  const dir = mkdtempSync(join(tmpdir(), 'hostlb-control-'));
  const state = mkdtempSync(join(tmpdir(), 'hostlb-state-'));
  const cleanUp = (): void => {
    rmSync(dir, { recursive: true, force: true });
    rmSync(state, { recursive: true, force: true });
  };
  let instance: Instance | null = null;
  const link = new MemoryLink({ name: 'hlbtest0' });
  try {
    // Searchable by anybody, so a permission test sees the socket's own mode, not the directory's.
    chmodSync(dir, 0o755);
    const file = join(dir, 'hostlb.yaml');
    const yaml = text.replace(STATE_DIR_LINE, `stateDir: ${state}`);
    writeFileSync(file, yaml);
    const config = loadConfig(file);
    const silent = pino({ level: 'silent' });
    const started = Instance.start(config, { logger: options.instanceLogger ?? silent, configFile: options.withFile === false ? undefined : file, link });
    instance = started;
    const traffic = new MemoryTraffic(link);
    const flows = options.traffic ? await standardTraffic(traffic) : null;
    const applied: string[] = [];
    const socket = join(dir, 'admin.sock');
    const tcpPort = options.tcp ? await freePort() : 0;
    let stops = 0;
    const admin = await AdminServer.start(controlledView(started, applied, options.plane?.(started.plane)), {
      socket,
      tcp: options.tcp ? { host: '127.0.0.1', port: tcpPort, token: TEST_TOKEN } : undefined,
      version: '0.0.0-test',
      logger: options.logger ?? silent,
      limits: options.limits,
      onStopRequested: () => {
        stops++;
        options.onStopRequested?.();
      },
    });
    return {
      dir, file, yaml, state, socket, tcpPort, instance: started, link, traffic, admin, flows, applied,
      get stops() { return stops; },
      call: (method, path, body) => apiRequest({ socket }, method, path, body),
      callTcp: (method, path, body, token) => apiRequest({ port: tcpPort, token }, method, path, body),
      close: async () => {
        admin.close();
        try {
          await started.stopDaemons();
          started.stop();
        } finally {
          link.close();
          cleanUp();
        }
      },
    };
  } catch (e) {
    if (instance !== null) {
      await instance.stopDaemons();
      instance.stop();
    }
    link.close();
    cleanUp();
    throw e;
  }
}
