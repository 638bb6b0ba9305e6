// The udp advisor: a datagram to the daemon from a connected socket, and a
// wait for a reply (containing `reply`, if set). A connected socket accepts
// datagrams from the daemon's address and port only, and hears the kernel's
// ICMP port-unreachable as ECONNREFUSED: a closed port fails at once.

import { createSocket } from 'node:dgram';
import { isIP } from 'node:net';
import { quote, reasonFromError, runProbe, targetProblem, UDP_DEFAULT_PAYLOAD, type Probe } from './advisor.js';

/**
 * Probe: ok on the first reply that contains spec.reply (any reply without
 * it). Silence ends as 'no reply within N ms'; only replies that lacked the
 * text end as 'reply lacks "..."'. Matching is on bytes (the text as UTF-8).
 */
export const udpProbe: Probe = (target, spec, signal) => {
  let mismatched = false;
  return runProbe(
    spec,
    signal,
    (finish) => {
      const problem = targetProblem(target);
      if (problem !== '') {
        finish(false, problem);
        return;
      }
      const wanted = spec.reply === undefined || spec.reply === '' ? undefined : Buffer.from(spec.reply);
      const socket = createSocket(isIP(target.address) === 6 ? 'udp6' : 'udp4');
      let closed = false;
      socket.on('error', (err) => finish(false, reasonFromError(err)));
      socket.on('message', (msg) => {
        if (wanted === undefined || msg.includes(wanted)) finish(true);
        else mismatched = true;
      });
      socket.connect(target.port, target.address, () => {
        if (closed) return;
        socket.send(Buffer.from(spec.payload ?? UDP_DEFAULT_PAYLOAD), (err) => {
          if (err) finish(false, reasonFromError(err));
        });
      });
      return () => {
        closed = true;
        socket.close();
      };
    },
    (ms) => (mismatched ? `reply lacks ${quote(spec.reply ?? '')}` : `no reply within ${ms} ms`),
  );
};
