// Test support: a simulation of clients and daemons talking through a
// Dispatcher with real TCP- and UDP-shaped packets, on a fake clock. It owns
// the "network" (queues, loss, delay) and the endpoints; the dispatcher under
// test owns every translation decision. Test-only code: it allocates freely.
//
// API
//
//   const sim = new Sim(dispatcher, options?)
//     options: seed (harness randomness), batchSize (packets per process()
//     call, default 64), tickMs (clock step, default 1), latencyMs (delay of
//     every hop, default 1), loss (probability a hop loses a packet, 0..0.5),
//     reorderMs (extra random delay 0..reorderMs per hop, at most 100; this is
//     what reorders packets), retransmitMs (client retransmission timeout,
//     default 200; 0 = never), maxRetries (default 6), startMs (initial clock,
//     default 0), collectBudget (each step also calls dispatcher.collect(now,
//     collectBudget), as a live event loop would; default 0 = never).
//     Virtual daemons are created for every daemon in dispatcher.tree; call
//     sim.syncDaemons() after dispatcher.configure() adds daemons.
//
//   sim.now                         the fake clock in ms (a plain number; advance it only through the sim)
//   sim.tcpClient({ address, port, cluster, requests?, close?, requestBytes?, responseBytes? }) → TcpClient
//       cluster: "198.18.100.1:80" or "[2001:db8::100]:443"; close: 'client-fin' (default) | 'daemon-fin'
//       | 'client-rst' | 'daemon-rst'. The client handshakes, sends `requests` requests (default 2), waits
//       for each response, then closes as told.
//   sim.udpClient({ address, port, cluster, datagrams?, bytes? }) → UdpClient
//       sends `datagrams` datagrams (default 2), one at a time, each answered by the daemon.
//   client.start()                  sends the client's first packet at sim.now (sim.startAll() starts every client)
//   sim.step()                      advances the clock one tick and moves every packet that is due
//   sim.run(maxSteps?)              steps until nothing is in flight and no client waits; returns steps taken
//                                   (throws when maxSteps, default 100000, runs out)
//   sim.advance(ms)                 moves the clock without moving packets
//   sim.collectAll(budget?)         calls dispatcher.collect(now, budget) until every expired record is gone
//   sim.daemons                     Map<endpoint text, VirtualDaemon>
//   sim.clients                     every client, in creation order
//   sim.stats                       totals: sent, lost, offered, forwarded, dropped (by the dispatcher), delivered,
//                                   retransmits, reordered
//   sim.anomalies                   protocol surprises (unexpected segments, unknown flows); empty in a clean run
//   sim.flowMoves                   flows that reached a second daemon during their life; empty when flows stick
//
//   Every client records `seenFrom` (source endpoints of every packet it got; it accepts only the cluster's;
//   `seenAddresses` gives the addresses alone),
//   `servedBy` (daemon names its responses carried), `done`/`failed`, and packet/byte counts. Every daemon
//   records `seenClients` (client endpoints it saw as sources), `flows`, `received` (what the dispatcher
//   delivered to it) and `forwarded` (its own packets the dispatcher forwarded), per packet and per byte.
//
//   Every packet the harness delivers must carry valid checksums (checksumsValid); a bad one throws at once,
//   with the packet in hex. A packet the dispatcher emits that matches no endpoint throws too.
//
//   checkTableConsistency(dispatcher) (exported) throws unless the connection table's indexes, sizes and
//   per-daemon active counts agree with its records.

import assert from 'node:assert/strict';
import type { Dispatcher } from '../../src/dispatch/dispatcher.js';
import {
  REC_WORDS, R_CLIENT_ADDR, R_CLUSTER_ADDR, R_DAEMON_ADDR, R_DAEMON_ID, R_META, R_PORTS, R_STATE,
} from '../../src/dispatch/conn-table.js';
import { createFlowKey } from '../../src/dispatch/flow-hash.js';
import { Rng } from '../../src/dispatch/rng.js';
import { FLAG_ACTIVE, STATE_MASK } from '../../src/dispatch/tcp-state.js';
import { createBatch, createSiblingBatch, type PacketBatch } from '../../src/link/link.js';
import { parseEndpoint, parseIp } from '../../src/wire/address.js';
import { IP_PROTO_TCP, IP_PROTO_UDP } from '../../src/wire/ipv4.js';
import { TCP_ACK_FLAG, TCP_FIN, TCP_PSH, TCP_RST, TCP_SYN } from '../../src/wire/tcp.js';
import { buildTcp, buildUdp, checksumsValid, describe as describePacket, toHex, type PacketDescription } from './packet-builder.js';

export type Protocol = 'tcp' | 'udp';
export type CloseMode = 'client-fin' | 'daemon-fin' | 'client-rst' | 'daemon-rst';

export interface SimOptions {
  seed?: number;
  batchSize?: number;
  tickMs?: number;
  latencyMs?: number;
  loss?: number;
  reorderMs?: number;
  retransmitMs?: number;
  maxRetries?: number;
  startMs?: number;
  collectBudget?: number;
}

export interface Counts {
  packets: number;
  bytes: number;
}

export interface SimStats {
  /** Packets endpoints put on the network (retransmissions included). */
  sent: number;
  /** Packets the harness lost on purpose (either hop). */
  lost: number;
  /** Packets handed to the dispatcher. */
  offered: number;
  /** Packets the dispatcher forwarded / dropped. */
  forwarded: number;
  dropped: number;
  /** Packets that reached an endpoint. */
  delivered: number;
  retransmits: number;
  /** Packets that reached the dispatcher after a later packet of the same sender. */
  reordered: number;
}

/** "198.18.0.1:40000" or "[2001:db8::1]:40000", from canonical address text. */
export function endpointText(address: string, port: number): string {
  return address.includes(':') ? `[${address}]:${port}` : `${address}:${port}`;
}

function canonical(address: string): string {
  const ip = parseIp(address);
  if (ip === null) throw new Error(`sim: not an IP address: ${JSON.stringify(address)}`);
  return ip.text;
}

function parseEndpointOrThrow(text: string): { address: string; port: number } {
  const ep = parseEndpoint(text);
  if (ep === null) throw new Error(`sim: not address:port: ${JSON.stringify(text)}`);
  return { address: ep.address.text, port: ep.port };
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** `text`, padded with '.' to at least `size` bytes. */
function payloadOf(text: string, size: number): Uint8Array {
  return encoder.encode(text.length >= size ? text : text + ' ' + '.'.repeat(Math.max(0, size - text.length - 1)));
}

/** seq a comes before b, modulo 2^32 (RFC 9293 §3.4). */
function seqBefore(a: number, b: number): boolean {
  return ((a - b) | 0) < 0;
}

const add32 = (a: number, b: number): number => (a + b) >>> 0;

interface InFlight {
  packet: Uint8Array;
  due: number;
  /** Who sent it; null for packets a test injects. */
  sender: Endpoint | null;
  /** Tie-break so equal due times keep FIFO order. */
  order: number;
}

/** Anything that sends and receives packets in the simulation. */
abstract class Endpoint {
  readonly key: string;
  readonly endpoint: string;
  /** Packets and bytes this endpoint put on the network. */
  readonly sent: Counts = { packets: 0, bytes: 0 };
  /** Packets and bytes the dispatcher delivered to it. */
  readonly received: Counts = { packets: 0, bytes: 0 };
  /** Its own packets the dispatcher forwarded. */
  readonly forwarded: Counts = { packets: 0, bytes: 0 };
  /** Send order of the latest of its packets offered to the dispatcher (to count reordering). */
  lastOffered = -1;
  constructor(protected readonly sim: Sim, readonly address: string, readonly port: number, keys: string) {
    this.endpoint = endpointText(address, port);
    this.key = keys;
  }
  abstract receive(desc: PacketDescription, packet: Uint8Array): void;
}

abstract class VirtualClient extends Endpoint {
  abstract readonly protocol: Protocol;
  readonly cluster: { address: string; port: number; text: string };
  /** Source endpoints of every packet that reached this client. */
  readonly seenFrom = new Set<string>();
  /** Packets refused because they did not come from the cluster. */
  rejected = 0;

  /** Source addresses (without ports) of every packet that reached this client. */
  get seenAddresses(): Set<string> {
    return new Set([...this.seenFrom].map((e) => parseEndpointOrThrow(e).address));
  }
  /** Daemon names carried in the responses this client accepted. */
  readonly servedBy = new Set<string>();
  responses = 0;
  done = false;
  failed = false;
  retries = 0;
  protected lastSent: Uint8Array | null = null;
  protected lastSentAt = 0;
  /** True while a retransmission timer runs. */
  waiting = false;

  constructor(sim: Sim, address: string, port: number, cluster: string, protocol: Protocol) {
    const a = canonical(address);
    super(sim, a, port, `${protocol}|${a}|${port}`);
    const c = parseEndpointOrThrow(cluster);
    this.cluster = { ...c, text: endpointText(c.address, c.port) };
  }

  abstract start(): void;

  receive(desc: PacketDescription, packet: Uint8Array): void {
    const from = endpointText(desc.src, desc.srcPort);
    this.seenFrom.add(from);
    if (from !== this.cluster.text) {
      this.rejected++;
      this.sim.anomaly(`${this.endpoint} got a packet from ${from}, not from the cluster ${this.cluster.text}`);
      return;
    }
    this.accept(desc, packet);
  }

  protected abstract accept(desc: PacketDescription, packet: Uint8Array): void;

  /** Sends `packet` and, when `wait`, arms the retransmission timer with it. */
  protected send(packet: Uint8Array, wait: boolean): void {
    this.sim.transmit(packet, this);
    if (wait) {
      this.lastSent = packet;
      this.lastSentAt = this.sim.now;
      this.retries = 0;
      this.waiting = true;
    }
  }

  protected finish(): void {
    this.done = true;
    this.waiting = false;
    this.lastSent = null;
  }

  /** When the retransmission timer fires, or Infinity. */
  get timerAt(): number {
    return this.waiting && this.sim.retransmitMs > 0 ? this.lastSentAt + this.sim.retransmitMs : Infinity;
  }

  /** Called by the sim when the timer is due. */
  timerFired(): void {
    if (!this.waiting || this.lastSent === null) return;
    if (this.retries >= this.sim.maxRetries) {
      this.failed = true;
      this.waiting = false;
      return;
    }
    this.retries++;
    this.sim.stats.retransmits++;
    this.lastSentAt = this.sim.now;
    this.sim.transmit(this.lastSent.slice(), this);
  }
}

export interface TcpClientOptions {
  address: string;
  port: number;
  cluster: string;
  requests?: number;
  close?: CloseMode;
  requestBytes?: number;
  responseBytes?: number;
}

export type TcpClientState = 'idle' | 'syn-sent' | 'established' | 'fin-wait' | 'last-ack' | 'time-wait' | 'closed';

export class TcpClient extends VirtualClient {
  readonly protocol = 'tcp' as const;
  state: TcpClientState = 'idle';
  readonly requests: number;
  readonly close: CloseMode;
  readonly requestBytes: number;
  readonly responseBytes: number;
  private iss: number;
  private sndNxt = 0;
  private rcvNxt = 0;
  private requestsSent = 0;

  constructor(sim: Sim, o: TcpClientOptions) {
    super(sim, o.address, o.port, o.cluster, 'tcp');
    this.requests = o.requests ?? 2;
    this.close = o.close ?? 'client-fin';
    this.requestBytes = o.requestBytes ?? 64;
    this.responseBytes = o.responseBytes ?? 200;
    this.iss = sim.randomU32();
  }

  start(): void {
    assert.equal(this.state, 'idle', `${this.endpoint} started twice`);
    this.state = 'syn-sent';
    this.send(this.segment(TCP_SYN, this.iss, 0), true);
    this.sndNxt = add32(this.iss, 1);
  }

  /** Response payload the daemon sends for request `i` (the daemon reads the size from the request). */
  private requestText(i: number): string {
    return `REQ ${i} ${this.responseBytes}`;
  }

  protected accept(desc: PacketDescription): void {
    const flags = desc.flags;
    if (flags & TCP_RST) {
      if (this.state === 'established' && this.close === 'daemon-rst' && this.requestsSent > this.requests) {
        this.state = 'closed';
        this.finish();
      } else if (this.state !== 'closed' && this.state !== 'time-wait') {
        this.sim.anomaly(`${this.endpoint} was reset in state ${this.state}`);
        this.state = 'closed';
        this.failed = true;
        this.finish();
      }
      return;
    }
    switch (this.state) {
      case 'syn-sent':
        if ((flags & (TCP_SYN | TCP_ACK_FLAG)) === (TCP_SYN | TCP_ACK_FLAG) && desc.ack === this.sndNxt) {
          this.rcvNxt = add32(desc.seq, 1);
          this.state = 'established';
          this.send(this.segment(TCP_ACK_FLAG, this.sndNxt, this.rcvNxt), false);
          this.next();
        } else {
          this.sim.anomaly(`${this.endpoint} in syn-sent got flags ${flags} ack ${desc.ack}`);
        }
        return;
      case 'established':
        if (flags & TCP_SYN) return this.duplicate(desc); // a retransmitted SYN-ACK
        if (desc.seq !== this.rcvNxt) return this.duplicate(desc);
        if (desc.payload.length > 0) {
          this.rcvNxt = add32(this.rcvNxt, desc.payload.length);
          const [word, index, name] = decoder.decode(desc.payload).split(' ');
          if (word !== 'RES' || Number(index) !== this.responses) {
            this.sim.anomaly(`${this.endpoint} got response ${JSON.stringify(word)} ${index}, expected RES ${this.responses}`);
            return;
          }
          this.servedBy.add(name);
          this.responses++;
          this.next();
          return;
        }
        if (flags & TCP_FIN) {
          if (this.close !== 'daemon-fin') this.sim.anomaly(`${this.endpoint} got an unexpected FIN from the daemon`);
          this.rcvNxt = add32(this.rcvNxt, 1);
          this.state = 'last-ack';
          this.send(this.segment(TCP_FIN | TCP_ACK_FLAG, this.sndNxt, this.rcvNxt), true);
          this.sndNxt = add32(this.sndNxt, 1);
        }
        return;
      case 'fin-wait':
        if (desc.seq !== this.rcvNxt) return this.duplicate(desc);
        if ((flags & TCP_FIN) && desc.ack === this.sndNxt) {
          this.rcvNxt = add32(this.rcvNxt, 1);
          this.state = 'time-wait';
          this.send(this.segment(TCP_ACK_FLAG, this.sndNxt, this.rcvNxt), false);
          this.finish();
        }
        return;
      case 'last-ack':
        if ((flags & TCP_ACK_FLAG) && desc.ack === this.sndNxt && !(flags & TCP_FIN)) {
          this.state = 'closed';
          this.finish();
        } else {
          this.duplicate(desc);
        }
        return;
      default:
        // time-wait / closed: a late duplicate (the daemon resent its FIN): acknowledge it again.
        if (this.state === 'time-wait' && (flags & TCP_FIN)) {
          this.send(this.segment(TCP_ACK_FLAG, this.sndNxt, this.rcvNxt), false);
        } else {
          this.duplicate(desc);
        }
    }
  }

  private duplicate(desc: PacketDescription): void {
    this.sim.anomaly(`${this.endpoint} (${this.state}) got an out-of-order segment seq ${desc.seq} flags ${desc.flags}, expected seq ${this.rcvNxt}`);
  }

  /** After the handshake or a response: the next request, or the close. */
  private next(): void {
    if (this.requestsSent < this.requests) {
      const data = payloadOf(this.requestText(this.requestsSent), this.requestBytes);
      this.requestsSent++;
      this.send(this.segment(TCP_PSH | TCP_ACK_FLAG, this.sndNxt, this.rcvNxt, data), true);
      this.sndNxt = add32(this.sndNxt, data.length);
      return;
    }
    switch (this.close) {
      case 'client-fin':
        this.state = 'fin-wait';
        this.send(this.segment(TCP_FIN | TCP_ACK_FLAG, this.sndNxt, this.rcvNxt), true);
        this.sndNxt = add32(this.sndNxt, 1);
        return;
      case 'client-rst':
        this.state = 'closed';
        this.send(this.segment(TCP_RST | TCP_ACK_FLAG, this.sndNxt, this.rcvNxt), false);
        this.finish();
        return;
      case 'daemon-fin':
      case 'daemon-rst': {
        const data = encoder.encode(this.close === 'daemon-fin' ? 'QUIT' : 'RESET');
        this.requestsSent++;
        this.send(this.segment(TCP_PSH | TCP_ACK_FLAG, this.sndNxt, this.rcvNxt, data), true);
        this.sndNxt = add32(this.sndNxt, data.length);
        return;
      }
    }
  }

  private segment(flags: number, seq: number, ack: number, payload?: Uint8Array): Uint8Array {
    return buildTcp({
      src: this.address, dst: this.cluster.address, srcPort: this.port, dstPort: this.cluster.port,
      flags, seq, ack, payload,
    });
  }
}

export interface UdpClientOptions {
  address: string;
  port: number;
  cluster: string;
  datagrams?: number;
  bytes?: number;
}

export class UdpClient extends VirtualClient {
  readonly protocol = 'udp' as const;
  readonly datagrams: number;
  readonly bytes: number;
  private sentCount = 0;

  constructor(sim: Sim, o: UdpClientOptions) {
    super(sim, o.address, o.port, o.cluster, 'udp');
    this.datagrams = o.datagrams ?? 2;
    this.bytes = o.bytes ?? 48;
  }

  start(): void {
    assert.equal(this.sentCount, 0, `${this.endpoint} started twice`);
    this.next();
  }

  protected accept(desc: PacketDescription): void {
    const [word, index, name] = decoder.decode(desc.payload).split(' ');
    if (word !== 'A' || Number(index) !== this.responses) {
      // A late answer to a retransmitted datagram: already counted.
      this.sim.anomaly(`${this.endpoint} got answer ${JSON.stringify(word)} ${index}, expected A ${this.responses}`);
      return;
    }
    this.servedBy.add(name);
    this.responses++;
    if (this.responses === this.datagrams) this.finish();
    else this.next();
  }

  private next(): void {
    const data = payloadOf(`Q ${this.sentCount} ${this.bytes + 20}`, this.bytes);
    this.sentCount++;
    this.send(buildUdp({ src: this.address, dst: this.cluster.address, srcPort: this.port, dstPort: this.cluster.port, payload: data }), true);
  }
}

interface DaemonConn {
  state: 'syn-rcvd' | 'established' | 'fin-sent' | 'last-ack' | 'closed';
  sndNxt: number;
  rcvNxt: number;
  last: Uint8Array | null;
}

/**
 * A daemon: answers whatever arrives for its own address:port, TCP or UDP,
 * from that address:port, to the source it sees (the client's real address).
 */
export class VirtualDaemon extends Endpoint {
  /** Dispatcher daemon ids that name this endpoint (one per cluster port it serves). */
  readonly ids = new Set<number>();
  /** Client endpoints this daemon saw packets from. */
  readonly seenClients = new Set<string>();
  /** Flows ("tcp <client endpoint>") this daemon saw. */
  readonly flows = new Set<string>();
  private readonly conns = new Map<string, DaemonConn>();

  constructor(sim: Sim, address: string, port: number) {
    super(sim, address, port, `${address}|${port}`);
  }

  /** The name this daemon writes into its answers. */
  get name(): string {
    return this.endpoint;
  }

  receive(desc: PacketDescription): void {
    const client = endpointText(desc.src, desc.srcPort);
    const flow = `${desc.protocol === IP_PROTO_TCP ? 'tcp' : 'udp'} ${client}`;
    this.seenClients.add(client);
    this.flows.add(flow);
    this.sim.noteFlow(flow, this);
    if (desc.protocol === IP_PROTO_UDP) {
      const [word, index, size] = decoder.decode(desc.payload).split(' ');
      if (word !== 'Q') {
        this.sim.anomaly(`${this.endpoint} got an unknown datagram ${JSON.stringify(word)} from ${client}`);
        return;
      }
      this.transmit(buildUdp({
        src: this.address, dst: desc.src, srcPort: this.port, dstPort: desc.srcPort,
        payload: payloadOf(`A ${index} ${this.name}`, Number(size)),
      }));
      return;
    }
    this.tcp(desc, flow);
  }

  private tcp(desc: PacketDescription, flow: string): void {
    const flags = desc.flags;
    let conn = this.conns.get(flow);
    const reply = (f: number, payload?: Uint8Array): void => {
      const c = conn!;
      const packet = buildTcp({
        src: this.address, dst: desc.src, srcPort: this.port, dstPort: desc.srcPort,
        flags: f, seq: c.sndNxt, ack: c.rcvNxt, payload,
      });
      c.last = packet;
      this.transmit(packet);
      c.sndNxt = add32(c.sndNxt, (payload?.length ?? 0) + (f & (TCP_SYN | TCP_FIN) ? 1 : 0));
    };
    if (flags & TCP_RST) {
      if (conn) conn.state = 'closed';
      return;
    }
    if ((flags & (TCP_SYN | TCP_ACK_FLAG)) === TCP_SYN) {
      if (conn && conn.state !== 'closed') {
        if (conn.last) this.transmit(conn.last.slice()); // a retransmitted SYN: answer again
        return;
      }
      conn = { state: 'syn-rcvd', sndNxt: this.sim.randomU32(), rcvNxt: add32(desc.seq, 1), last: null };
      this.conns.set(flow, conn);
      reply(TCP_SYN | TCP_ACK_FLAG);
      return;
    }
    if (!conn) {
      this.sim.anomaly(`${this.endpoint} got a segment for unknown flow ${flow}`);
      return;
    }
    if (desc.seq !== conn.rcvNxt) {
      if (seqBefore(desc.seq, conn.rcvNxt) && (desc.payload.length > 0 || (flags & TCP_FIN))) {
        // A retransmission: our answer was lost. Send it again, as a TCP would re-acknowledge.
        if (conn.last) this.transmit(conn.last.slice());
      } else if (!seqBefore(desc.seq, conn.rcvNxt)) {
        this.sim.anomaly(`${this.endpoint} got seq ${desc.seq} from ${flow}, expected ${conn.rcvNxt}`);
      }
      return;
    }
    if (conn.state === 'syn-rcvd' && (flags & TCP_ACK_FLAG)) conn.state = 'established';
    if (desc.payload.length > 0) {
      conn.rcvNxt = add32(conn.rcvNxt, desc.payload.length);
      const [word, index, size] = decoder.decode(desc.payload).split(' ');
      if (word === 'REQ') {
        reply(TCP_PSH | TCP_ACK_FLAG, payloadOf(`RES ${index} ${this.name}`, Number(size)));
      } else if (word === 'QUIT') {
        conn.state = 'fin-sent';
        reply(TCP_FIN | TCP_ACK_FLAG);
      } else if (word === 'RESET') {
        conn.state = 'closed';
        reply(TCP_RST | TCP_ACK_FLAG);
      } else {
        this.sim.anomaly(`${this.endpoint} got unknown data ${JSON.stringify(word)} from ${flow}`);
      }
      return;
    }
    if (flags & TCP_FIN) {
      conn.rcvNxt = add32(conn.rcvNxt, 1);
      if (conn.state === 'fin-sent') {
        conn.state = 'closed';
        reply(TCP_ACK_FLAG);
      } else {
        conn.state = 'last-ack';
        reply(TCP_FIN | TCP_ACK_FLAG);
      }
      return;
    }
    if (conn.state === 'last-ack' && desc.ack === conn.sndNxt) conn.state = 'closed';
  }

  private transmit(packet: Uint8Array): void {
    this.sim.transmit(packet, this);
  }
}

export class Sim {
  now: number;
  readonly dispatcher: Dispatcher;
  readonly tickMs: number;
  readonly latencyMs: number;
  readonly loss: number;
  readonly reorderMs: number;
  readonly retransmitMs: number;
  readonly maxRetries: number;
  readonly collectBudget: number;
  /** Records dispatcher.collect() removed during step(). */
  collected = 0;
  readonly clients: VirtualClient[] = [];
  readonly daemons = new Map<string, VirtualDaemon>();
  readonly stats: SimStats = { sent: 0, lost: 0, offered: 0, forwarded: 0, dropped: 0, delivered: 0, retransmits: 0, reordered: 0 };
  /** Protocol surprises, first 1000 kept; `anomalyCount` counts them all. */
  readonly anomalies: string[] = [];
  anomalyCount = 0;
  /** "flow: daemon A then daemon B" for every flow that reached a second daemon. */
  readonly flowMoves: string[] = [];

  private readonly rng: Rng;
  private readonly input: PacketBatch;
  private readonly output: PacketBatch;
  private readonly senders: (Endpoint | null)[];
  private inFlight: InFlight[] = [];
  private order = 0;
  private readonly routes = new Map<string, Endpoint>();
  private readonly flowOwner = new Map<string, VirtualDaemon>();

  constructor(dispatcher: Dispatcher, options: SimOptions = {}) {
    this.dispatcher = dispatcher;
    this.now = options.startMs ?? 0;
    this.tickMs = options.tickMs ?? 1;
    this.latencyMs = options.latencyMs ?? 1;
    this.loss = options.loss ?? 0;
    this.reorderMs = options.reorderMs ?? 0;
    this.retransmitMs = options.retransmitMs ?? 200;
    this.maxRetries = options.maxRetries ?? 6;
    this.collectBudget = options.collectBudget ?? 0;
    if (!(this.loss >= 0 && this.loss <= 0.5)) throw new RangeError(`sim: loss must be in 0..0.5, got ${this.loss}`);
    if (!(this.reorderMs >= 0 && this.reorderMs <= 100)) throw new RangeError(`sim: reorderMs must be in 0..100, got ${this.reorderMs}`);
    if (!(this.tickMs > 0)) throw new RangeError(`sim: tickMs must be positive, got ${this.tickMs}`);
    this.rng = new Rng(options.seed ?? 1);
    this.input = createBatch(options.batchSize ?? 64, 2048);
    this.output = createSiblingBatch(this.input);
    this.senders = new Array<Endpoint | null>(this.input.capacity).fill(null);
    this.syncDaemons();
  }

  /** Creates a virtual daemon for every daemon of the dispatcher's tree not yet known (retired ones stay). */
  syncDaemons(): void {
    for (const d of this.dispatcher.tree.daemonsById) {
      if (!d) continue;
      const address = d.address.text;
      const key = `${address}|${d.port}`;
      let vd = this.daemons.get(endpointText(address, d.port));
      if (!vd) {
        vd = new VirtualDaemon(this, address, d.port);
        this.daemons.set(vd.endpoint, vd);
        this.routes.set(`tcp|${key}`, vd);
        this.routes.set(`udp|${key}`, vd);
      }
      vd.ids.add(d.id);
    }
  }

  tcpClient(options: TcpClientOptions): TcpClient {
    return this.addClient(new TcpClient(this, options));
  }

  udpClient(options: UdpClientOptions): UdpClient {
    return this.addClient(new UdpClient(this, options));
  }

  private addClient<T extends VirtualClient>(client: T): T {
    if (this.routes.has(client.key)) throw new Error(`sim: ${client.key} already exists`);
    this.routes.set(client.key, client);
    this.clients.push(client);
    return client;
  }

  startAll(): void {
    for (const c of this.clients) c.start();
  }

  /** Puts a packet on the network towards the dispatcher. Tests may inject odd packets with sender null. */
  transmit(packet: Uint8Array, sender: Endpoint | null): void {
    this.stats.sent++;
    if (sender) {
      sender.sent.packets++;
      sender.sent.bytes += packet.length;
    }
    if (this.loss > 0 && this.rng.next() < this.loss) {
      this.stats.lost++;
      return;
    }
    this.inFlight.push({ packet, due: this.now + this.hopDelay(), sender, order: this.order++ });
  }

  private hopDelay(): number {
    return this.latencyMs + (this.reorderMs > 0 ? Math.floor(this.rng.next() * (this.reorderMs + 1)) : 0);
  }

  randomU32(): number {
    return this.rng.nextU32();
  }

  anomaly(text: string): void {
    this.anomalyCount++;
    if (this.anomalies.length < 1000) this.anomalies.push(`t=${this.now}: ${text}`);
  }

  /** Daemons call this for every packet they get; a flow seen by a second daemon is a move. */
  noteFlow(flow: string, daemon: VirtualDaemon): void {
    const owner = this.flowOwner.get(flow);
    if (owner === undefined) this.flowOwner.set(flow, daemon);
    else if (owner !== daemon) this.flowMoves.push(`${flow}: ${owner.endpoint} then ${daemon.endpoint}`);
  }

  /** The daemon that first served a flow ("tcp <client endpoint>"), if any. */
  flowDaemon(flow: string): VirtualDaemon | undefined {
    return this.flowOwner.get(flow);
  }

  get inFlightCount(): number {
    return this.inFlight.length;
  }

  /** Advances the clock one tick, fires due client timers, and moves every due packet through the dispatcher. */
  step(): void {
    this.now += this.tickMs;
    for (const c of this.clients) if (c.timerAt <= this.now) c.timerFired();
    for (;;) {
      const due = this.takeDue();
      if (due.length === 0) break;
      for (let i = 0; i < due.length; i += this.input.capacity) this.pass(due.slice(i, i + this.input.capacity));
    }
    if (this.collectBudget > 0) this.collected += this.dispatcher.collect(this.now, this.collectBudget);
  }

  /** Removes and returns the packets due now, oldest first (due time, then send order). */
  private takeDue(): InFlight[] {
    const due: InFlight[] = [];
    const rest: InFlight[] = [];
    for (const p of this.inFlight) (p.due <= this.now ? due : rest).push(p);
    this.inFlight = rest;
    due.sort((a, b) => a.due - b.due || a.order - b.order);
    return due;
  }

  /** One dispatcher batch: copy in, process, deliver what comes out. */
  private pass(packets: InFlight[]): void {
    const input = this.input;
    const slot = input.slotSize;
    for (let i = 0; i < packets.length; i++) {
      const p = packets[i].packet;
      if (p.length > slot) throw new Error(`sim: packet of ${p.length} bytes exceeds the ${slot}-byte slot`);
      input.buffer.set(p, i * slot);
      input.offsets[i] = i * slot;
      input.lengths[i] = p.length;
      input.flags[i] = 0;
      const sender = packets[i].sender;
      this.senders[i] = sender;
      if (sender) {
        if (packets[i].order < sender.lastOffered) this.stats.reordered++;
        else sender.lastOffered = packets[i].order;
      }
    }
    input.count = packets.length;
    this.stats.offered += packets.length;
    const n = this.dispatcher.process(input, this.output, this.now);
    this.stats.forwarded += n;
    this.stats.dropped += packets.length - n;
    for (let j = 0; j < n; j++) {
      const off = this.output.offsets[j];
      const len = this.output.lengths[j];
      const i = off / slot;
      assert.ok(Number.isInteger(i) && i < packets.length, `sim: output offset ${off} is no input slot`);
      const packet = input.buffer.slice(off, off + len);
      assert.equal(len, packets[i].packet.length, 'sim: the dispatcher changed a packet length');
      const sender = this.senders[i];
      if (sender) {
        sender.forwarded.packets++;
        sender.forwarded.bytes += len;
      }
      if (this.loss > 0 && this.rng.next() < this.loss) {
        this.stats.lost++;
        continue;
      }
      this.deliver(packet);
    }
  }

  private deliver(packet: Uint8Array): void {
    if (!checksumsValid(packet)) {
      throw new Error(`sim: the dispatcher emitted a packet with a bad checksum at t=${this.now}:\n${toHex(packet)}`);
    }
    const desc = describePacket(packet);
    const proto = desc.protocol === IP_PROTO_TCP ? 'tcp' : desc.protocol === IP_PROTO_UDP ? 'udp' : `p${desc.protocol}`;
    const target = this.routes.get(`${proto}|${desc.dst}|${desc.dstPort}`);
    if (!target) {
      throw new Error(`sim: the dispatcher emitted a packet for ${proto} ${endpointText(desc.dst, desc.dstPort)}, which no endpoint owns:\n${toHex(packet)}`);
    }
    this.stats.delivered++;
    target.received.packets++;
    target.received.bytes += packet.length;
    target.receive(desc, packet);
  }

  /** Earliest time something will happen (a packet due or a client timer), or Infinity. */
  nextEventAt(): number {
    let t = Infinity;
    for (const p of this.inFlight) if (p.due < t) t = p.due;
    for (const c of this.clients) {
      const at = c.timerAt;
      if (at < t) t = at;
    }
    return t;
  }

  /**
   * Steps until nothing is in flight and no client timer runs. Idle stretches
   * (only timers pending) are skipped by moving the clock straight to the
   * next event. Returns the steps taken; throws when `maxSteps` runs out.
   */
  run(maxSteps = 100_000): number {
    let steps = 0;
    for (;;) {
      const next = this.nextEventAt();
      if (next === Infinity) return steps;
      if (steps >= maxSteps) throw new Error(`sim: still busy after ${maxSteps} steps (${this.inFlight.length} packets in flight)`);
      if (this.inFlight.length === 0 && next > this.now + this.tickMs) this.now = next - this.tickMs;
      this.step();
      steps++;
    }
  }

  advance(ms: number): void {
    assert.ok(ms >= 0, 'sim: the clock only moves forward');
    this.now += ms;
  }

  /**
   * Calls dispatcher.collect(now, budget) until a whole sweep of the table
   * finds nothing more to remove. Returns how many records went.
   */
  collectAll(budget = 64): number {
    const d = this.dispatcher;
    const sweep = Math.ceil(d.table.capacity / Math.min(d.table.capacity, budget * 4));
    let removed = 0;
    let idle = 0;
    while (idle < sweep) {
      const r = d.collect(this.now, budget);
      removed += r;
      idle = r < budget ? idle + 1 : 0;
    }
    return removed;
  }
}

/**
 * Throws unless the table agrees with itself: every record in use is found
 * through both indexes under its own key, size counts the records in use and
 * stays within capacity, and each daemon's active-flow count equals the
 * records that carry FLAG_ACTIVE for it.
 */
export function checkTableConsistency(d: Dispatcher): void {
  const t = d.table;
  const u32 = t.u32;
  const key = createFlowKey();
  let count = 0;
  const active = new Map<number, number>();
  t.forEach((id) => {
    count++;
    const b = id * REC_WORDS;
    for (let i = 0; i < 4; i++) {
      key[i] = u32[b + R_CLIENT_ADDR + i];
      key[4 + i] = u32[b + R_CLUSTER_ADDR + i];
    }
    key[8] = u32[b + R_PORTS];
    key[9] = u32[b + R_META] & 0xffff;
    assert.equal(t.findForward(key, t.hashKey(key)), id, `record ${id} is not found through the forward index`);
    for (let i = 0; i < 4; i++) {
      key[i] = u32[b + R_DAEMON_ADDR + i];
      key[4 + i] = u32[b + R_CLIENT_ADDR + i];
    }
    key[8] = ((u32[b + R_META] & 0xffff0000) | (u32[b + R_PORTS] >>> 16)) >>> 0;
    key[9] = u32[b + R_META] & 0xffff;
    assert.equal(t.findReverse(key, t.hashKey(key)), id, `record ${id} is not found through the reverse index`);
    const daemonId = u32[b + R_DAEMON_ID];
    assert.ok(d.tree.daemonsById[daemonId] !== undefined, `record ${id} names daemon ${daemonId}, which does not exist`);
    assert.ok((u32[b + R_STATE] & STATE_MASK) !== 0, `record ${id} has state NONE`);
    if (u32[b + R_STATE] & FLAG_ACTIVE) active.set(daemonId, (active.get(daemonId) ?? 0) + 1);
  });
  assert.equal(t.size, count, 'table.size differs from the records in use');
  assert.ok(t.size <= t.capacity, 'table.size exceeds its capacity');
  for (const daemon of d.tree.daemonsById) {
    if (!daemon) continue;
    assert.equal(d.balancer.activeFlows(daemon.id), active.get(daemon.id) ?? 0, `daemon ${daemon.name} (id ${daemon.id}) active-flow count`);
  }
}
