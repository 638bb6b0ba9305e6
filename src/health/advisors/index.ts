// The advisors' one public surface: probeFor() picks a probe by type, and the
// contract types and helpers of advisor.ts are re-exported. Scheduling probes
// and judging rise and fall is health-check.ts's.

import { HostlbError } from '../../errors.js';
import { ADVISOR_TYPES, type AdvisorType, type Probe } from './advisor.js';
import { execProbe } from './exec.js';
import { httpProbe } from './http.js';
import { tcpProbe } from './tcp.js';
import { udpProbe } from './udp.js';

export {
  ADVISOR_DEFAULTS,
  ADVISOR_TYPES,
  CLEANUP_GRACE_MS,
  HTTP_DEFAULT_EXPECT,
  HTTP_DEFAULT_METHOD,
  HTTP_DEFAULT_PATH,
  UDP_DEFAULT_PAYLOAD,
  advisorSpec,
  checkAdvisorSpec,
  reasonFromError,
  runProbe,
  timeoutMs,
} from './advisor.js';
export type { AdvisorSpec, AdvisorType, Probe, ProbeCleanup, ProbeFinish, ProbeResult, ProbeTarget } from './advisor.js';
export { execProbe } from './exec.js';
export { HTTP_USER_AGENT, httpProbe } from './http.js';
export { tcpProbe } from './tcp.js';
export { udpProbe } from './udp.js';

const PROBES: Readonly<Record<AdvisorType, Probe>> = Object.freeze({
  tcp: tcpProbe,
  http: httpProbe,
  udp: udpProbe,
  exec: execProbe,
});

/** The probe for an advisor type. Throws a HostlbError with code ADVISOR_INVALID for an unknown type. */
export function probeFor(type: AdvisorType): Probe {
  if (!Object.hasOwn(PROBES, type)) {
    throw new HostlbError('ADVISOR_INVALID', `advisor.type: ${JSON.stringify(type)} is not one of ${ADVISOR_TYPES.join(', ')}`);
  }
  return PROBES[type];
}
