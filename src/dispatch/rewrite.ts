// Rewriting one address and (optionally) one port of a packet in place, with
// incremental checksum updates (RFC 1624). Shared by inbound translation
// (destination → daemon) and outbound translation (source → cluster).

import { read16, read32, write16, write32 } from '../wire/bytes.js';
import { applyComplete, applyPartial, applyUdpV4, delta16, delta32 } from '../wire/checksum.js';
import { IPV4_CHECKSUM } from '../wire/ipv4.js';

/**
 * Replaces the address at `buf[addrOff]` (4 bytes for family 4, 16 for 6)
 * with `words[at..]` (record form: IPv4 in word 0) and the 16-bit port at
 * `buf[portOff]` with `port`, then updates the IPv4 header checksum (family 4,
 * header at `ipOff`) and the transport checksum at `buf[csumOff]`.
 *
 * `udp` selects RFC 768 rules (a zero checksum means none and stays zero; the
 * same is kept for IPv6, where only tunnels may send zero, RFC 6935).
 * `partial` means the transport field holds a folded pseudo-header sum
 * (virtio NEEDS_CSUM): addresses change it without complementing, ports do not.
 * `csumOff` < 0 means the transport header is absent (a later fragment).
 */
export function rewriteAddressAndPort(
  buf: Uint8Array, family: number, ipOff: number, addrOff: number,
  words: Uint32Array, at: number, portOff: number, port: number,
  csumOff: number, udp: boolean, partial: boolean,
): void {
  let addrDelta: number;
  if (family === 4) {
    const old = read32(buf, addrOff);
    const value = words[at];
    addrDelta = delta32(old, value);
    write32(buf, addrOff, value);
    applyComplete(buf, ipOff + IPV4_CHECKSUM, addrDelta);
  } else {
    addrDelta = 0;
    for (let i = 0; i < 4; i++) {
      const old = read32(buf, addrOff + 4 * i);
      const value = words[at + i];
      addrDelta += delta32(old, value);
      write32(buf, addrOff + 4 * i, value);
    }
  }
  if (csumOff < 0) return;
  let delta = addrDelta;
  const oldPort = read16(buf, portOff);
  if (oldPort !== port) {
    write16(buf, portOff, port);
    if (!partial) delta += delta16(oldPort, port);
  }
  if (partial) applyPartial(buf, csumOff, addrDelta);
  else if (udp) applyUdpV4(buf, csumOff, delta);
  else applyComplete(buf, csumOff, delta);
}
