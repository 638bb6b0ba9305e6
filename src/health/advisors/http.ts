// The http advisor: one request to the daemon (method, path, Host header) whose
// status must equal `expect` and, if `body` is set, whose body must contain
// it. The whole exchange, connect to verdict, is bounded by the timeout.

import { request } from 'node:http';
import {
  HTTP_DEFAULT_EXPECT,
  HTTP_DEFAULT_METHOD,
  HTTP_DEFAULT_PATH,
  quote,
  reasonFromError,
  runProbe,
  targetProblem,
  type Probe,
  type ProbeFinish,
} from './advisor.js';
import type { IncomingMessage } from 'node:http';

/** Sent as User-Agent so a daemon's access log can tell checks from clients. */
export const HTTP_USER_AGENT = 'hostlb-advisor';

/**
 * Probe: ok when the status equals spec.expect (and the body holds spec.body).
 * Without `body` the verdict comes with the response head, so responseMs is
 * time to first byte; with it, the body is read only until the text appears.
 * A fresh connection per probe (no keep-alive): a pooled socket would hide a
 * daemon that stopped accepting.
 */
export const httpProbe: Probe = (target, spec, signal) =>
  runProbe(spec, signal, (finish) => {
    const problem = targetProblem(target);
    if (problem !== '') {
      finish(false, problem);
      return;
    }
    const expect = spec.expect ?? HTTP_DEFAULT_EXPECT;
    const headers: Record<string, string> = { 'user-agent': HTTP_USER_AGENT, accept: '*/*' };
    if (spec.host !== undefined) headers.host = spec.host;
    const req = request({
      host: target.address,
      port: target.port,
      method: spec.method ?? HTTP_DEFAULT_METHOD,
      path: spec.path ?? HTTP_DEFAULT_PATH,
      headers,
      agent: false,
    });
    req.on('error', (err) => finish(false, reasonFromError(err)));
    req.on('response', (res) => {
      res.on('error', (err) => finish(false, reasonFromError(err)));
      if (res.statusCode !== expect) {
        finish(false, `status ${String(res.statusCode)}, expected ${expect}`);
        return;
      }
      if (spec.body === undefined || spec.body === '') finish(true);
      else matchBody(res, spec.body, finish);
    });
    req.end();
    return () => {
      req.destroy();
    };
  });

/** Reads `res` until `wanted` appears (ok) or the body ends without it. */
function matchBody(res: IncomingMessage, wanted: string, finish: ProbeFinish): void {
  // setEncoding keeps a multi-byte character split across chunks whole.
  res.setEncoding('utf8');
  // Only the last wanted.length - 1 characters can start a match that a later
  // chunk completes, so a large body costs no more memory than a small one.
  let tail = '';
  res.on('data', (chunk: string) => {
    const text = tail + chunk;
    if (text.includes(wanted)) finish(true);
    else tail = text.slice(Math.max(0, text.length - (wanted.length - 1)));
  });
  res.on('end', () => finish(false, `body lacks ${quote(wanted)}`));
}
