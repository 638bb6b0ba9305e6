// Reading iperf3's JSON report (-J): the bulk rate the receiver saw and the
// bytes and seconds behind it. Knows iperf3 3.x's JSON only; running iperf3 is
// left to the caller.

/** The figures of one iperf3 client run (one TCP stream, client to server). */
export interface IperfReport {
  /** Bits per second the server received, over the run. */
  bitsPerSec: number;
  bytes: number;
  seconds: number;
}

interface IperfSum {
  bits_per_second?: unknown;
  bytes?: unknown;
  seconds?: unknown;
}

interface IperfJson {
  end?: { sum_received?: IperfSum };
  error?: unknown;
}

/**
 * Parses `iperf3 -c ... -J`'s stdout. Returns the report, or a string saying
 * why there is none: iperf3's own "error" field, or that the output was not
 * its JSON (iperf3 killed, missing).
 */
export function parseIperf(output: string): IperfReport | string {
  let json: IperfJson;
  try {
    json = JSON.parse(output) as IperfJson;
  } catch {
    return `no JSON report: ${JSON.stringify(output.trim().slice(0, 200))}`;
  }
  if (typeof json.error === 'string') return json.error;
  const received = json.end?.sum_received;
  if (received === undefined || typeof received.bits_per_second !== 'number') return 'no end.sum_received in the report';
  return { bitsPerSec: received.bits_per_second, bytes: Number(received.bytes), seconds: Number(received.seconds) };
}
