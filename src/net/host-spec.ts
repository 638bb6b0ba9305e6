// What hostlb asks of the host's network: the TUN device's name, the policy
// routing table it may use, and every cluster with its ports and daemons.
// A data plane's host plan (dataplane/*/host-plan.ts) turns this into
// commands; the config file is parsed elsewhere.

/** Table 100, as in DESIGN.md: daemon replies and loopback clusters are routed through it. */
export const DEFAULT_ROUTE_TABLE = 100;

/** The default TUN device name. */
export const DEFAULT_DEVICE = 'hlb0';

export type PortProtocol = 'tcp' | 'udp' | 'any';

export interface HostSpec {
  /** The TUN device name (at most 15 bytes), e.g. "hlb0". */
  device: string;
  /** Policy routing table id for hostlb's routes (1..2^32-1, not 253/254/255). Default 100. */
  routeTable: number;
  clusters: Array<{
    /** IPv4 or IPv6 address clients connect to. */
    address: string;
    ports: Array<{
      port: number;
      protocol: PortProtocol;
      /** Each daemon's own address and port; same family as the cluster. */
      daemons: Array<{ address: string; port: number }>;
    }>;
  }>;
}
