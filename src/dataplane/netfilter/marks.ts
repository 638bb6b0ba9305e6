// The conntrack (and packet) marks of the netfilter data plane: which bits
// say "hostlb's flow", which name the daemon, and which record how far a TCP
// flow's events have got. host-plan.ts writes the nft rules that set them;
// the plane reads them from conntrack events and dumps.

/** The high 16 bits: `netfilter.mark`, the same on every flow of this hostlb. */
export const MARK_MASK = 0xffff0000;
/**
 * Conntrack mark bits of a TCP flow's event life (see the events chains in
 * host-plan.ts): it has reported the daemon's SYN-ACK (ANSWERED; UDP flows
 * carry it from the start), its event mask is back to "destroy only" after
 * that (QUIET), it has reported its first FIN or RST (ENDING). Daemon ids use
 * the 13 bits below them.
 */
export const ENDING_BIT = 0x8000;
export const ANSWERED_BIT = 0x4000;
export const QUIET_BIT = 0x2000;
export const EVENT_BITS = ENDING_BIT | ANSWERED_BIT | QUIET_BIT;
export const ID_MASK = 0x1fff;
/** The mark hostlb gives a connection no daemon takes: no daemon map entry, so it reaches the (local) cluster address and the kernel refuses it. */
export const REJECT_ID = 0x1fff;
