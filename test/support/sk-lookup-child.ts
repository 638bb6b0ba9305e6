// The processes sk-lookup.test.ts runs: daemons and clients inside its network
// namespace (`ip netns exec <ns> node sk-lookup-child.js ...`), and a loader
// that pins a dispatch and exits. Each prints JSON lines on stdout. Not a
// test file itself.
//
//   tcp-daemon <name> <address> <port> [hold]
//                                        listens; {event:'listening',pid}; per connection
//                                        {event:'accepted',name,local,remote}, greets and ends it
//                                        (with `hold`, greets and keeps it until the client ends);
//                                        a line "close" on stdin closes the listener: {event:'closed'}
//   udp-daemon <name> <address> <port>   binds; {event:'listening',pid}; per datagram
//                                        {event:'datagram',name,remote,text}; never answers
//   tcp-client <host> <port> [localAddress] [localPort]
//                                        one connection: {ok:true,local,greeting} or {ok:false,code}
//   tcp-hold <host> <port> <localAddress> <count>
//                                        opens `count` connections at once and keeps them:
//                                        {event:'held',greetings:[...]}, or {event:'failed',code};
//                                        a line "close" on stdin ends them all: {event:'released'}
//   udp-client <host> <port> <localAddress> <count> <localPort,...>
//                                        `count` datagrams from each local port: {sent}
//   loader <pinDir> <netnsPath> <cluster> <port> <daemonPid> <daemonAddress> <daemonPort>
//                                        creates a dispatch with one daemon, attaches it to the
//                                        namespace, pins it, closes every fd and exits: {pinned:true}
//   load                                 loads both programs, closes them: {loaded:true,counting}
// Every wait is bounded (10 s a connection): a broken run ends, it does not hang.

import dgram from 'node:dgram';
import { openSync, closeSync } from 'node:fs';
import { connect, createServer, type Socket } from 'node:net';
import { createInterface } from 'node:readline';
import { SkLookupDispatch } from '../../src/bpf/sk-lookup.js';
import { takeListener } from '../../src/bpf/listener.js';
import { closeFd } from '../../src/bpf/syscalls.js';

const CONNECT_TIMEOUT_MS = 10_000;

function say(value: unknown): void {
  process.stdout.write(JSON.stringify(value) + '\n');
}

function endpoint(address: string | undefined, port: number | undefined): string {
  return address?.includes(':') ? `[${address}]:${port}` : `${address}:${port}`;
}

function tcpDaemon(name: string, address: string, port: number, hold: boolean): void {
  const server = createServer((socket: Socket) => {
    say({ event: 'accepted', name, local: endpoint(socket.localAddress, socket.localPort), remote: endpoint(socket.remoteAddress, socket.remotePort) });
    socket.on('error', () => {});
    if (hold) socket.write(`hello from ${name}`);
    else socket.end(`hello from ${name}`);
  });
  server.listen({ host: address, port, ipv6Only: address.includes(':') }, () => say({ event: 'listening', pid: process.pid }));
  createInterface({ input: process.stdin }).on('line', (line) => {
    if (line.trim() !== 'close') return;
    // close() shuts the listening fd at once; its callback would wait for open connections.
    server.close();
    say({ event: 'closed' });
  });
}

function udpDaemon(name: string, address: string, port: number): void {
  const socket = dgram.createSocket(address.includes(':') ? 'udp6' : 'udp4');
  socket.on('message', (msg, rinfo) => say({ event: 'datagram', name, remote: endpoint(rinfo.address, rinfo.port), text: msg.toString() }));
  socket.bind(port, address, () => say({ event: 'listening', pid: process.pid }));
  createInterface({ input: process.stdin }).on('line', () => {});
}

function tcpClient(host: string, port: number, localAddress?: string, localPort?: number): void {
  const socket = connect({ host, port, localAddress, localPort });
  let greeting = '';
  let local = '';
  const timer = setTimeout(() => {
    say({ ok: false, code: 'TIMEOUT' });
    process.exit(0);
  }, CONNECT_TIMEOUT_MS);
  socket.setEncoding('utf8');
  socket.on('connect', () => (local = endpoint(socket.localAddress, socket.localPort)));
  socket.on('data', (chunk: string) => (greeting += chunk));
  socket.on('end', () => {
    clearTimeout(timer);
    say({ ok: true, local, greeting });
    socket.destroy();
  });
  socket.on('error', (error: NodeJS.ErrnoException) => {
    clearTimeout(timer);
    say({ ok: false, code: error.code });
  });
}

function tcpHold(host: string, port: number, localAddress: string, count: number): void {
  const sockets: Socket[] = [];
  const greetings: string[] = [];
  const timer = setTimeout(() => {
    say({ event: 'failed', code: 'TIMEOUT', greetings });
    process.exit(0);
  }, CONNECT_TIMEOUT_MS);
  for (let i = 0; i < count; i++) {
    const socket = connect({ host, port, localAddress });
    sockets.push(socket);
    socket.setEncoding('utf8');
    socket.once('data', (chunk: string) => {
      greetings.push(chunk);
      if (greetings.length < count) return;
      clearTimeout(timer);
      say({ event: 'held', greetings });
    });
    socket.on('error', (error: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      say({ event: 'failed', code: error.code });
      process.exit(0);
    });
  }
  createInterface({ input: process.stdin }).on('line', (line) => {
    if (line.trim() !== 'close') return;
    let open = sockets.length;
    for (const socket of sockets) {
      socket.once('close', () => {
        if (--open === 0) say({ event: 'released' });
      });
      socket.end();
    }
  });
}

async function udpClient(host: string, port: number, localAddress: string, count: number, localPorts: number[]): Promise<void> {
  let sent = 0;
  for (const localPort of localPorts) {
    const socket = dgram.createSocket(host.includes(':') ? 'udp6' : 'udp4');
    await new Promise<void>((resolve) => socket.bind(localPort, localAddress, resolve));
    for (let i = 0; i < count; i++) {
      await new Promise<void>((resolve, reject) => socket.send(`p${localPort}-${i}`, port, host, (e) => (e ? reject(e) : resolve())));
      sent++;
    }
    await new Promise<void>((resolve) => socket.close(resolve));
  }
  say({ sent });
}

function loader(dir: string, netnsPath: string, cluster: string, port: number, daemonPid: number, daemonAddress: string, daemonPort: number): void {
  const dispatch = SkLookupDispatch.create();
  const netns = openSync(netnsPath, 'r');
  try {
    const { fd } = takeListener({ protocol: 'tcp', address: daemonAddress, port: daemonPort, netnsPid: daemonPid });
    dispatch.setSocket(1, fd);
    closeFd(fd);
    dispatch.setPort({ protocol: 'tcp', family: 4, port, address: cluster }, 0);
    dispatch.setBuckets(0, [1]);
    dispatch.attach(netns);
    dispatch.pin(dir);
  } finally {
    closeSync(netns);
    dispatch.close();
  }
  say({ pinned: true });
}

function load(): void {
  const dispatch = SkLookupDispatch.create();
  const counting = dispatch.fds.count >= 0;
  dispatch.close();
  say({ loaded: true, counting });
}

const [command, ...args] = process.argv.slice(2);
switch (command) {
  case 'tcp-daemon':
    tcpDaemon(args[0], args[1], Number(args[2]), args[3] === 'hold');
    break;
  case 'udp-daemon':
    udpDaemon(args[0], args[1], Number(args[2]));
    break;
  case 'tcp-client':
    tcpClient(args[0], Number(args[1]), args[2], args[3] === undefined ? undefined : Number(args[3]));
    break;
  case 'tcp-hold':
    tcpHold(args[0], Number(args[1]), args[2], Number(args[3]));
    break;
  case 'udp-client':
    await udpClient(args[0], Number(args[1]), args[2], Number(args[3]), args[4].split(',').map(Number));
    break;
  case 'loader':
    loader(args[0], args[1], args[2], Number(args[3]), Number(args[4]), args[5], Number(args[6]));
    break;
  case 'load':
    load();
    break;
  default:
    say({ error: `unknown command ${String(command)}` });
    process.exit(2);
}

