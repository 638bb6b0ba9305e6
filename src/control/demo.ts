// The built-in default behind `npm start`: three small HTTP daemons on their
// own loopback addresses and a cluster address in front of them. Loopback-range
// addresses (127.10.x.x) keep every packet of the demo on this machine, even if
// something is misconfigured.

import { createServer, type Server } from 'node:http';
import type { HostlbConfig } from './config-schema.js';
import { parseConfig } from './config-file.js';

export const DEMO_CLUSTER = '127.10.0.1';
export const DEMO_PORT = 80;
export const DEMO_DAEMONS = ['127.10.1.1', '127.10.1.2', '127.10.1.3'];
export const DEMO_DAEMON_PORT = 8080;

export function demoConfig(dataplane: 'socket' | 'netfilter' | 'tun' = 'netfilter'): HostlbConfig {
  return parseConfig(`
device: hlb0
dataplane: ${dataplane}
table: { capacity: 65536 }
clusters:
  - address: ${DEMO_CLUSTER}
    ports:
      - port: ${DEMO_PORT}
        protocol: tcp
        scheduler: rr
        daemons:
${DEMO_DAEMONS.map((a) => `          - { address: "${a}:${DEMO_DAEMON_PORT}" }`).join('\n')}
`, '<built-in demo>');
}

/**
 * Starts one HTTP daemon on `address:port` that answers every request with its
 * name and the client address it saw — the proof that hostlb is transparent.
 */
export function startDemoDaemon(name: string, address: string, port: number): Promise<Server> {
  const server = createServer((req, res) => {
    const body = `${name} (${address}:${port}) answered; it saw the client as ${req.socket.remoteAddress}:${req.socket.remotePort}\n`;
    res.writeHead(200, { 'content-type': 'text/plain', 'content-length': Buffer.byteLength(body), 'x-hostlb-daemon': name });
    res.end(body);
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, address, () => resolve(server));
  });
}

export async function startDemoDaemons(): Promise<Server[]> {
  return Promise.all(DEMO_DAEMONS.map((a, i) => startDemoDaemon(`daemon-${i + 1}`, a, DEMO_DAEMON_PORT)));
}

export function demoInstructions(config: Pick<HostlbConfig, 'device' | 'dataplane'>): string {
  const device = config.device;
  const whereToLook = config.dataplane === 'socket'
    ? ['Where to look: `mount | grep /run/hostlb/bpf` (the pinned sk_lookup program), `ss -ltnp` (the daemons\' own listening sockets,',
      'which take the connections: no NAT, no conntrack),']
    : config.dataplane === 'netfilter'
    ? [`Where to look: \`nft list table inet hostlb_${device}\` (daemons by mark, fallback buckets), \`iptables -t mangle -S HOSTLB-${device}\``,
      '(the queue rule that brings each new connection to hostlb) and /proc/net/nf_conntrack (the flows, marked),']
    : [`Where to look: \`ip rule\`, \`ip route show table 100\`, \`ip -s link show ${device}\` (packets through the TUN device),`];
  return [
    '',
    `hostlb demo is running: cluster ${DEMO_CLUSTER}:${DEMO_PORT} → ${DEMO_DAEMONS.map((a) => `${a}:${DEMO_DAEMON_PORT}`).join(', ')} (round robin).`,
    '',
    'Try it from another shell on this machine:',
    `  curl http://${DEMO_CLUSTER}/`,
    `  for i in 1 2 3 4 5 6; do curl -s http://${DEMO_CLUSTER}/; done`,
    '',
    'Each answer names the daemon that served it and the client address it saw (yours, not hostlb\'s).',
    `Data plane: ${config.dataplane} (see docs/dataplanes.md).`,
    ...whereToLook,
    'and `npx hostlb status` / `npx hostlb conns` (the admin API on /run/hostlb/admin.sock).',
    'Press Ctrl-C to stop; every change to the host is undone.',
    '',
  ].join('\n');
}
