// The data planes the integration tests run against, and what each leaves on
// the host while hostlb runs: the TUN plane a device (`ip link`), the
// netfilter plane an nftables table `inet hostlb_<device>` and an iptables
// mangle chain `HOSTLB-<device>` with its NFQUEUE rules, the socket plane a
// bpffs at /run/hostlb/bpf/<netns inode>-<device> holding its pinned program. Tests that share
// their checks between the planes use these to see that the plane's objects
// exist during a run and are gone after a deliberate stop.
//
// API
//   DATAPLANES                                   ['tun', 'netfilter']: the planes every per-plane test runs on
//   ALL_DATAPLANES                               those and 'socket' (tests that run on it list it themselves)
//   type Dataplane
//   planeObjects(ns, dataplane, device?)         which of the plane's objects exist now (text for messages)
//   assertPlaneSetUp(ns, dataplane, device?)     throws unless the plane's objects exist
//   assertPlaneGone(ns, dataplane, device?)      throws unless none of them is left
//   iptablesChain(ns, device?, tool?)            `iptables -t mangle -S HOSTLB-<device>` lines, or null (no chain)
//   nftTable(ns, device?)                        `nft list table inet hostlb_<device>`, or null (no table)

import assert from 'node:assert/strict';
import { unmountBpffs } from '../../src/net/apply.js';
import { readFileSync, statSync } from 'node:fs';
import type { Namespace } from './netns.js';

export const DATAPLANES = ['tun', 'netfilter'] as const;
export const ALL_DATAPLANES = [...DATAPLANES, 'socket'] as const;
export type Dataplane = (typeof ALL_DATAPLANES)[number];

/** True when the socket plane's bpffs for `device` in ns is mounted. */
function bpffsMounted(ns: Namespace, device: string): boolean {
  const dir = `/run/hostlb/bpf/${statSync(`/run/netns/${ns.name}`).ino}-${device}`;
  return readFileSync('/proc/self/mountinfo', 'utf8').split('\n').some((line) => {
    const fields = line.split(' ');
    return fields[4] === dir && fields[fields.indexOf('-') + 1] === 'bpf';
  });
}

/**
 * Unmounts and removes the socket plane's bpffs of `device` in `ns` when a
 * hostlb that had to be killed left it (a deliberate stop removes its own):
 * the mount lives in the host's mount namespace and would outlive the test.
 */
export function removeBpffsLeftover(ns: Namespace, device: string): void {
  if (!bpffsMounted(ns, device)) return;
  unmountBpffs(`/run/hostlb/bpf/${statSync(`/run/netns/${ns.name}`).ino}-${device}`);
}

/** `iptables -t mangle -S HOSTLB-<device>` inside ns, as lines; null when the chain does not exist. */
export function iptablesChain(ns: Namespace, device = 'hlb0', tool: 'iptables' | 'ip6tables' = 'iptables'): string[] | null {
  try {
    return ns.exec([tool, '-w', '5', '-t', 'mangle', '-S', `HOSTLB-${device}`]).split('\n').filter((l) => l.trim() !== '');
  } catch {
    return null;
  }
}

/** Rules in mangle PREROUTING or OUTPUT that jump to hostlb's chain. */
export function iptablesJumps(ns: Namespace, device = 'hlb0', tool: 'iptables' | 'ip6tables' = 'iptables'): string[] {
  return ['PREROUTING', 'OUTPUT'].flatMap((hook) => ns.exec([tool, '-w', '5', '-t', 'mangle', '-S', hook]).split('\n').filter((l) => l.includes(`-j HOSTLB-${device}`)));
}

/** `nft list table inet hostlb_<device>` inside ns; null when the table does not exist. */
export function nftTable(ns: Namespace, device = 'hlb0', prefix = 'hostlb_'): string | null {
  try {
    return ns.exec(['nft', 'list', 'table', 'inet', `${prefix}${device}`]);
  } catch {
    return null;
  }
}

function linkExists(ns: Namespace, device: string): boolean {
  try {
    ns.ip('link', 'show', 'dev', device);
    return true;
  } catch {
    return false;
  }
}

export interface PlaneObjects {
  /** The TUN device (tun plane). */
  device: boolean;
  /** The nft table (netfilter plane). */
  nftTable: boolean;
  /** The nft table giving UDP replies the cluster's address (socket plane, UDP ports only). */
  replyTable: boolean;
  /** The iptables or ip6tables mangle chain (netfilter plane). */
  iptablesChain: boolean;
  /** Jumps into it from PREROUTING / OUTPUT (both tools; one cluster family per test gives 2). */
  iptablesJumps: number;
  /** The bpffs of the pinned dispatch program (socket plane). */
  bpffs: boolean;
}

/** Which objects of either plane exist in ns now. */
export function planeObjects(ns: Namespace, device = 'hlb0'): PlaneObjects {
  return {
    device: linkExists(ns, device),
    nftTable: nftTable(ns, device) !== null,
    replyTable: nftTable(ns, device, 'hostlb_sock_') !== null,
    iptablesChain: iptablesChain(ns, device) !== null || iptablesChain(ns, device, 'ip6tables') !== null,
    iptablesJumps: iptablesJumps(ns, device).length + iptablesJumps(ns, device, 'ip6tables').length,
    bpffs: bpffsMounted(ns, device),
  };
}

/**
 * Throws unless the running plane's objects exist: the TUN device for tun;
 * for netfilter the nft table, the iptables chain and both jumps into it; for
 * socket the bpffs, and with `udp` (the configuration has UDP ports) the
 * reply table — and none of the other planes'.
 */
export function assertPlaneSetUp(ns: Namespace, dataplane: Dataplane, device = 'hlb0', options: { udp?: boolean } = {}): void {
  const seen = planeObjects(ns, device);
  const none: PlaneObjects = { device: false, nftTable: false, replyTable: false, iptablesChain: false, iptablesJumps: 0, bpffs: false };
  const expected: PlaneObjects = dataplane === 'tun'
    ? { ...none, device: true }
    : dataplane === 'netfilter' ? { ...none, nftTable: true, iptablesChain: true, iptablesJumps: 2 } : { ...none, bpffs: true, replyTable: options.udp === true };
  assert.deepEqual(seen, expected, `the ${dataplane} data plane's objects while hostlb runs`);
}

/** Throws if any object of either plane is left in ns (after a deliberate stop). */
export function assertPlaneGone(ns: Namespace, device = 'hlb0'): void {
  assert.deepEqual(planeObjects(ns, device), { device: false, nftTable: false, replyTable: false, iptablesChain: false, iptablesJumps: 0, bpffs: false }, 'no data plane object left after hostlb stopped');
}

/** The daemons the netfilter plane's map `daemons4` / `daemons6` holds now, as "address:port" (IPv6 in brackets), sorted. */
export function nftDaemons(ns: Namespace, family: 4 | 6 = 4, device = 'hlb0'): string[] {
  const out = JSON.parse(ns.exec(['nft', '-j', 'list', 'map', 'inet', `hostlb_${device}`, `daemons${family}`])) as {
    nftables: Array<{ map?: { elem?: Array<[unknown, { concat: [string, number] }]> } }>;
  };
  const elements = out.nftables.flatMap((item) => item.map?.elem ?? []);
  return elements.map(([, value]) => (family === 4 ? `${value.concat[0]}:${value.concat[1]}` : `[${value.concat[0]}]:${value.concat[1]}`)).sort();
}
