// What the packet path decides about one packet. A verdict is a plain number,
// not an error: the packet path never throws on a bad packet, it drops it and
// bumps a named counter (drop-reason.ts, stats.ts).

/**
 * Not sent. Whoever returned it has already counted why (a drop reason, or an
 * answer it declined to give); the caller only leaves the packet out.
 */
export const VERDICT_DROP = 0;
/**
 * Sent on, as it now stands in the buffer: translated, turned into an answer
 * (a RST, an ICMP error, an echo reply) or handed back unchanged. The packet's
 * IP length may have changed (the translator's `ipLen` says the new one).
 */
export const VERDICT_FORWARD = 1;
