// The front tier's view of this host: TCP listeners speaking HAProxy's
// agent-check protocol (agent-line.ts), one per configured agent address and
// port. A listener that serves one cluster port answers at once; one shared by
// several waits briefly for the line HAProxy's `agent-send` sends ("80/tcp",
// "80", or the port's full name) and answers for that port — or, named none,
// for the weakest of them. Each connection gets one line and is closed;
// anything else a client sends is ignored. Also keeps the two states that are
// the front tier's business only: a port drained with `hostlb port drain`
// (its daemons keep serving what still arrives) and "hostlb is stopping".

import { createServer, type Server, type Socket } from 'node:net';
import type { Logger } from '../logger.js';
import { agentAnswer, type AgentAnswer, type PortCapacity } from './agent-line.js';

/** One cluster port an agent listener answers for. */
export interface AgentPort {
  /** "198.18.100.1:80/tcp" */
  name: string;
  port: number;
  protocol: string;
  maxconn?: number;
}

export interface AgentListenerSpec {
  address: string;
  port: number;
  ports: AgentPort[];
}

/** How long a shared listener waits for agent-send's line before answering for the weakest port. */
const NAME_WAIT_MS = 1000;
/** A client that names nothing within this many bytes is answered at once. */
const MAX_REQUEST = 256;

function key(l: { address: string; port: number }): string {
  return l.address.includes(':') ? `[${l.address}]:${l.port}` : `${l.address}:${l.port}`;
}

/** The port a line from agent-send names: its full name, "80/tcp", or "80" when only one protocol has it. */
export function namedPort(ports: readonly AgentPort[], text: string): AgentPort | undefined {
  const want = text.trim();
  return ports.find((p) => p.name === want)
    ?? ports.find((p) => `${p.port}/${p.protocol}` === want)
    ?? (ports.filter((p) => String(p.port) === want).length === 1 ? ports.find((p) => String(p.port) === want) : undefined);
}

export class FrontTierAgent {
  private readonly listeners = new Map<string, { server: Server; spec: AgentListenerSpec }>();
  private readonly drained = new Set<string>();
  private stopping = false;

  /** `capacity(name)`: the port's configured and effective weights now (undefined: no such port). */
  constructor(private readonly capacity: (portName: string) => PortCapacity | undefined, private readonly log: Logger) {}

  /** The answer for port `name` now. */
  answer(port: AgentPort): AgentAnswer {
    return agentAnswer({
      capacity: this.capacity(port.name) ?? { configured: [], effective: [] },
      draining: this.drained.has(port.name),
      stopping: this.stopping,
      maxconn: port.maxconn,
    });
  }

  /** `hostlb port drain` / `undrain`: tells the front tier to send this port nothing new (or again). */
  setDrained(portName: string, drained: boolean): void {
    if (drained) this.drained.add(portName);
    else this.drained.delete(portName);
  }

  isDrained(portName: string): boolean {
    return this.drained.has(portName);
  }

  /** From now on every answer says maint. True when some listener is there to say it. */
  announceStop(): boolean {
    this.stopping = true;
    return this.listeners.size > 0;
  }

  /**
   * Opens listeners that are new, closes those no longer wanted, and points
   * the kept ones at their new ports. Throws (EADDRINUSE, EADDRNOTAVAIL) for
   * a listener it cannot open, having closed the ones it opened in this call.
   */
  async sync(specs: AgentListenerSpec[]): Promise<void> {
    const wanted = new Map(specs.map((s) => [key(s), s]));
    const opened: string[] = [];
    try {
      for (const [k, spec] of wanted) {
        const now = this.listeners.get(k);
        if (now) {
          now.spec = spec;
          continue;
        }
        const entry = { server: createServer((socket) => this.serve(socket, entry.spec)), spec };
        await new Promise<void>((resolve, reject) => {
          entry.server.once('error', reject);
          entry.server.listen(spec.port, spec.address, () => {
            entry.server.off('error', reject);
            resolve();
          });
        });
        entry.server.on('error', (err) => this.log.error({ err, agent: k }, 'agent listener error; still listening'));
        this.listeners.set(k, entry);
        opened.push(k);
        this.log.info({ event: 'agent_listening', agent: k, ports: spec.ports.map((p) => p.name) }, 'front-tier agent listening');
      }
    } catch (e) {
      for (const k of opened) this.closeOne(k);
      throw e;
    }
    for (const k of [...this.listeners.keys()]) if (!wanted.has(k)) this.closeOne(k);
    for (const name of [...this.drained]) if (!specs.some((s) => s.ports.some((p) => p.name === name))) this.drained.delete(name);
  }

  close(): void {
    for (const k of [...this.listeners.keys()]) this.closeOne(k);
  }

  private closeOne(k: string): void {
    const entry = this.listeners.get(k);
    if (!entry) return;
    this.listeners.delete(k);
    entry.server.close();
  }

  private serve(socket: Socket, spec: AgentListenerSpec): void {
    socket.on('error', () => socket.destroy());
    socket.setTimeout(5000, () => socket.destroy());
    const say = (port: AgentPort | undefined): void => {
      const answers = (port ? [port] : spec.ports).map((p) => this.answer(p));
      // Named none (or none we know): the weakest port speaks for the listener.
      const weakest = answers.reduce((a, b) => (b.weightPercent < a.weightPercent ? b : a));
      socket.end(`${weakest.line}\n`);
    };
    if (spec.ports.length === 1) {
      say(spec.ports[0]);
      return;
    }
    let answered = false;
    const reply = (port: AgentPort | undefined): void => {
      if (answered) return;
      answered = true;
      clearTimeout(timer);
      socket.removeAllListeners('data');
      say(port);
    };
    const timer = setTimeout(() => reply(undefined), NAME_WAIT_MS);
    let text = '';
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => {
      text += chunk;
      const end = text.search(/[\r\n]/);
      if (end >= 0 || text.length > MAX_REQUEST) reply(namedPort(spec.ports, end >= 0 ? text.slice(0, end) : ''));
    });
    socket.on('end', () => reply(namedPort(spec.ports, text)));
  }
}
