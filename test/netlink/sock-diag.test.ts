// sock_diag messages built and read in TypeScript: the dump request's struct
// (family, protocol, state mask), the kernel's inet_diag_msg read back (ports,
// addresses, accept queue, inode), and, as root, a dump of this namespace's
// TCP sockets that finds a listener this test opens.

import assert from 'node:assert/strict';
import { createServer } from 'node:net';
import { test } from 'node:test';
import { MessageReader, NetlinkWriter } from '../../src/netlink/message.js';
import { readDiagSocket, TCP_ESTABLISHED, TCP_LISTEN, writeTcpDestroy, writeTcpDump } from '../../src/netlink/sock-diag.js';
import { TcpSocketTable } from '../../src/dataplane/socket/socket-table.js';

test('sock_diag: a TCP dump request asks for the family, TCP and the states given', () => {
  const w = new NetlinkWriter(256);
  writeTcpDump(w, 6, [TCP_ESTABLISHED, TCP_LISTEN]);
  const v = new DataView(w.buffer.buffer);
  assert.equal(v.getUint32(0, true), 16 + 56, 'nlmsghdr + inet_diag_req_v2');
  assert.equal(v.getUint16(4, true), 20, 'SOCK_DIAG_BY_FAMILY');
  assert.equal(v.getUint16(6, true), 0x301, 'NLM_F_REQUEST | NLM_F_DUMP');
  assert.equal(w.buffer[16], 10, 'AF_INET6');
  assert.equal(w.buffer[17], 6, 'IPPROTO_TCP');
  assert.equal(v.getUint32(20, true), (1 << 1) | (1 << 10), 'ESTABLISHED | LISTEN');
});

test('sock_diag: an inet_diag_msg is read field by field', () => {
  const buf = new Uint8Array(16 + 72);
  const v = new DataView(buf.buffer);
  v.setUint32(0, buf.length, true);
  v.setUint16(4, 20, true);
  buf[16] = 2; // AF_INET
  buf[17] = TCP_LISTEN;
  v.setUint16(20, 8080, false);
  v.setUint16(22, 0, false);
  buf.set([198, 18, 2, 1], 24);
  v.setUint32(16 + 56, 3, true); // rqueue
  v.setUint32(16 + 68, 4242, true); // inode
  v.setUint32(16 + 44, 0xdeadbeef, true); // cookie, low word
  v.setUint32(16 + 48, 7, true);
  const m = new MessageReader();
  m.reset(buf, v, 0, buf.length);
  assert.ok(m.next());
  assert.deepEqual(readDiagSocket(v, m), {
    family: 4, state: TCP_LISTEN, localPort: 8080, remotePort: 0, local: new Uint8Array([198, 18, 2, 1]), remote: new Uint8Array(4), rxQueue: 3, inode: 4242, cookie: [0xdeadbeef, 7],
  });
});

test('sock_diag: a SOCK_DESTROY request names the socket by its addresses, ports and cookie, and asks for an acknowledgment', () => {
  const w = new NetlinkWriter(256);
  writeTcpDestroy(w, { family: 6, state: TCP_ESTABLISHED, local: new Uint8Array(16).fill(1), localPort: 80, remote: new Uint8Array(16).fill(2), remotePort: 40000, rxQueue: 0, inode: 9, cookie: [0x11223344, 0x55] });
  const v = new DataView(w.buffer.buffer);
  assert.equal(v.getUint32(0, true), 16 + 56);
  assert.equal(v.getUint16(4, true), 21, 'SOCK_DESTROY');
  assert.equal(v.getUint16(6, true), 0x5, 'NLM_F_REQUEST | NLM_F_ACK');
  assert.deepEqual([w.buffer[16], w.buffer[17]], [10, 6], 'AF_INET6, TCP');
  assert.equal(v.getUint16(24, false), 80, 'sport: the local port');
  assert.equal(v.getUint16(26, false), 40000, 'dport: the client\'s');
  assert.deepEqual([...w.buffer.subarray(28, 44)], new Array(16).fill(1), 'src: the local address');
  assert.deepEqual([...w.buffer.subarray(44, 60)], new Array(16).fill(2), 'dst: the client');
  assert.deepEqual([v.getUint32(64, true), v.getUint32(68, true)], [0x11223344, 0x55], 'the cookie, so a reused 4-tuple is not the one destroyed');
});

test('sock_diag: a dump of this namespace lists a listener with its inode (root)', { skip: process.getuid?.() !== 0 ? 'needs root (netlink sock_diag of every socket)' : false }, async () => {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as { port: number }).port;
  const table = new TcpSocketTable();
  try {
    const found = table.read().filter((s) => s.state === TCP_LISTEN && s.localPort === port);
    assert.equal(found.length, 1, 'the listener, once');
    assert.deepEqual([...found[0].local], [127, 0, 0, 1]);
    assert.ok(found[0].inode > 0, 'with its inode');
  } finally {
    table.close();
    server.close();
  }
});
