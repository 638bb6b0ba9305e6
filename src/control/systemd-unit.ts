// The systemd unit `hostlb startup` writes: hostlb started at boot from a
// configuration file, as a Type=notify service (READY=1 once the host set-up
// is in place and every health check has answered once; sd-notify.ts), the
// file validated before a start and before a reload, restarted on failure,
// with the capabilities hostlb uses and no more. Pure: the caller writes it.

import { resolve } from 'node:path';

export interface UnitOptions {
  /** The configuration file (made absolute). */
  config: string;
  /** The node binary and hostlb's main.js (absolute). */
  node: string;
  main: string;
  /** The unit's name without .service (default hostlb). */
  name: string;
}

/**
 * CAP_NET_ADMIN: routes, rules, nftables, iptables, netlink, TUN; CAP_NET_RAW:
 * raw sockets of the advisors and the TUN plane; CAP_BPF and CAP_PERFMON: the
 * socket plane's programs; CAP_SYS_ADMIN: mounting its bpffs and attaching at
 * the cgroup root; CAP_SYS_PTRACE: pidfd_getfd of a daemon's listening
 * socket; CAP_SETUID, CAP_SETGID: children as another user; CAP_KILL: their
 * stop signal; CAP_CHOWN, CAP_DAC_OVERRIDE, CAP_FOWNER: the state directory.
 */
export const CAPABILITIES = [
  'CAP_NET_ADMIN', 'CAP_NET_RAW', 'CAP_NET_BIND_SERVICE', 'CAP_BPF', 'CAP_PERFMON', 'CAP_SYS_ADMIN', 'CAP_SYS_PTRACE',
  'CAP_SETUID', 'CAP_SETGID', 'CAP_KILL', 'CAP_CHOWN', 'CAP_DAC_OVERRIDE', 'CAP_FOWNER',
] as const;

function quote(arg: string): string {
  // systemd's own quoting: double quotes, with \ and " escaped; % doubled (specifiers).
  return /^[A-Za-z0-9_./:@+-]+$/.test(arg) ? arg : `"${arg.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/%/g, '%%')}"`;
}

export function systemdUnit(options: UnitOptions): string {
  const hostlb = [options.node, options.main].map(quote).join(' ');
  const config = quote(resolve(options.config));
  return `# Written by \`hostlb startup\`. Enable: systemctl daemon-reload && systemctl enable --now ${options.name}
[Unit]
Description=hostlb load balancer (${options.config.replace(/%/g, '%%')})
Documentation=https://github.com/hostlb/hostlb/blob/main/README.md
After=network-online.target nftables.service
Wants=network-online.target

[Service]
# READY=1 once the host set-up is in place and every health check answered once.
Type=notify
NotifyAccess=main
ExecStartPre=${hostlb} check --config ${config}
ExecStart=${hostlb} start --config ${config}
# A reload validates the file first: a broken one fails the reload and changes nothing.
ExecReload=${hostlb} check --config ${config}
ExecReload=/bin/kill -HUP $MAINPID
# SIGTERM: hostlb drains and stops its supervised daemons, then undoes every change to the host.
KillMode=mixed
TimeoutStartSec=90
TimeoutStopSec=60
Restart=on-failure
RestartSec=2
# The default stateDir, root's and 0700 as hostlb requires; kept across a crash for the restart to adopt.
RuntimeDirectory=hostlb
RuntimeDirectoryMode=0700
RuntimeDirectoryPreserve=yes
CapabilityBoundingSet=${CAPABILITIES.join(' ')}
NoNewPrivileges=yes

[Install]
WantedBy=multi-user.target
`;
}
