#!/usr/bin/env bash
# The programs the tests talk to as real peers, installed from Debian's (or
# Ubuntu's) packages: nginx daemons, curl and wrk clients, iproute2 for
# network namespaces, nftables and iptables for the netfilter data plane (and
# for loss and DNAT baselines), socat, iperf3, ping and hping3 for the hard
# cases (echo, SYN flood), python3 for `hostlb run`'s Python app and raw
# packets, linux-libc-dev for the addon's linux/bpf.h, util-linux's mount for
# the socket plane's bpffs, chromium for the web dashboard's browser test
# (driven by playwright-core from npm), tmux for `hostlb top`'s terminal test,
# haproxy as the front tier of the scale-out test.
# The one list: .ci/run calls this too.
#
# Usage (as root): scripts/install-test-peers.sh
set -euo pipefail

PACKAGES=(
  iproute2 nftables iptables curl wrk nginx-light socat iperf3 procps python3 ca-certificates
  iputils-ping hping3 linux-libc-dev util-linux chromium tmux haproxy
)

if [ "$(id -u)" != 0 ]; then
  echo "install-test-peers: run as root (sudo $0): it installs ${PACKAGES[*]}" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}" >/dev/null
# nginx and haproxy from the packages may start system instances; the tests run their own.
for service in nginx haproxy; do
  systemctl stop "$service" 2>/dev/null || service "$service" stop 2>/dev/null || true
done
echo "install-test-peers: installed ${PACKAGES[*]}"
