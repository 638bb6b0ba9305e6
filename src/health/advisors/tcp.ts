// The tcp advisor: a daemon is healthy when it completes a TCP handshake.
// Connects, then closes at once without sending a byte; the response time is
// the handshake's. Timing and timeout are advisor.ts's runProbe().

import { connect } from 'node:net';
import { reasonFromError, runProbe, targetProblem, type Probe } from './advisor.js';

/** Probe: ok once connected; 'connection refused', 'timed out after N ms', ... otherwise. */
export const tcpProbe: Probe = (target, spec, signal) =>
  runProbe(spec, signal, (finish) => {
    const problem = targetProblem(target);
    if (problem !== '') {
      finish(false, problem);
      return;
    }
    const socket = connect({ host: target.address, port: target.port });
    socket.once('connect', () => finish(true));
    // `on`, not `once`: a second 'error' with no listener would throw.
    socket.on('error', (err) => finish(false, reasonFromError(err)));
    // destroy() on a connected socket with nothing unread closes with a FIN,
    // so the daemon sees an orderly close rather than a reset.
    return () => {
      socket.destroy();
    };
  });
