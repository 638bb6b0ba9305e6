// One decision per queued packet: the first packet of a new connection to a
// cluster port, as NFQUEUE copies its head. The packet is read through the
// wire views (only its head is at hand), its cluster port found, and the
// Balancer's choice recorded by the flow accounting. The plane turns the
// answer into a mark. Packet path: never throws, allocates nothing for IPv4.

import type { Balancer } from '../../dispatch/balancer.js';
import { createFlowKey, hashAddress, hashFlowKey, SOURCE_HASH_SEED } from '../../dispatch/flow-hash.js';
import { read16, read32 } from '../../wire/bytes.js';
import { IP_PROTO_TCP, IP_PROTO_UDP, Ipv4Packet } from '../../wire/ipv4.js';
import { Ipv6Packet } from '../../wire/ipv6.js';
import { WireError } from '../../wire/wire-error.js';
import { clientKey } from './client-key.js';
import { UNDECIDED, type FlowAccounting } from './flow-accounting.js';

export class QueueDecision {
  private readonly ip4 = new Ipv4Packet();
  private readonly ip6 = new Ipv6Packet();
  private readonly key = createFlowKey();

  constructor(private readonly balancer: Balancer, private readonly accounting: FlowAccounting, private readonly hashSeed: number) {}

  /**
   * The daemon id for the packet whose first `copied` bytes are at
   * `buf[at…]`: a daemon's id, REJECT_ID (no daemon takes new flows), or
   * UNDECIDED — not a TCP or UDP flow to a cluster port hostlb can read
   * (extension headers, a head cut short), left to the kernel-side hash.
   */
  decide(buf: Uint8Array, at: number, copied: number): number {
    const key = this.key;
    const version = copied > 0 ? buf[at] >>> 4 : 0;
    let family: number, protocol: number, l4: number, clientAt: number, clientLength: number;
    if (version === 4) {
      const ip = this.ip4;
      if (ip.wrapHead(buf, at, copied) !== WireError.None) return UNDECIDED;
      family = 4;
      protocol = ip.protocol;
      l4 = ip.payloadOffset;
      clientAt = at + 12;
      clientLength = 4;
      key[0] = ip.srcAddr; key[1] = 0; key[2] = 0; key[3] = 0;
      key[4] = ip.dstAddr; key[5] = 0; key[6] = 0; key[7] = 0;
    } else if (version === 6) {
      const ip = this.ip6;
      if (ip.wrapHead(buf, at, copied) !== WireError.None) return UNDECIDED;
      family = 6;
      protocol = ip.transportProtocol;
      l4 = ip.transportOffset;
      clientAt = ip.srcAddrOffset;
      clientLength = 16;
      for (let w = 0; w < 4; w++) {
        key[w] = read32(buf, clientAt + 4 * w);
        key[4 + w] = read32(buf, ip.dstAddrOffset + 4 * w);
      }
    } else {
      return UNDECIDED;
    }
    // Extension headers, or no transport ports in the copy: the fallback hash decides.
    if ((protocol !== IP_PROTO_TCP && protocol !== IP_PROTO_UDP) || l4 + 4 > at + copied) return UNDECIDED;
    const srcPort = read16(buf, l4);
    const dstPort = read16(buf, l4 + 2);
    key[8] = ((srcPort << 16) | dstPort) >>> 0;
    key[9] = (protocol << 8) | family;
    const port = this.balancer.tree.findPort(family, key, 4, protocol, dstPort);
    if (port === undefined) return UNDECIDED;
    const flow = clientKey(protocol, buf, clientAt, clientLength, srcPort, dstPort);
    return this.accounting.decide(port, flow, protocol, hashFlowKey(key, this.hashSeed), hashAddress(key, 0, SOURCE_HASH_SEED));
  }
}
