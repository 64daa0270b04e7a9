#!/usr/bin/env bash
# System packages some tests use: Prometheus (promtool, the server) for the monitoring tests, nftables
# for the network-fault tests in network namespaces, and real corosync with its libcpg for the baseline of
# bench/cpg.py (tests/netns/test_corosync_baseline.py runs it). Installed only as root with apt; never fails the
# caller: a test whose tool is missing skips and says why.
set -u
want=()
command -v prometheus >/dev/null 2>&1 || want+=(prometheus)
command -v nft >/dev/null 2>&1 || want+=(nftables)
command -v corosync >/dev/null 2>&1 || want+=(corosync)
ldconfig -p 2>/dev/null | grep -q 'libcpg\.so\.4' || want+=(libcpg4)
[ ${#want[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "sysdeps: not root or no apt-get; tests needing ${want[*]} will skip" >&2
    exit 0
fi
echo "sysdeps: installing ${want[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
if ! { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${want[@]}"; } >/dev/null 2>&1; then
    echo "sysdeps: apt-get could not install ${want[*]}; tests needing them will skip" >&2
fi
# the Debian package starts a Prometheus service where an init system runs; tests start their own
# (and the corosync one: the baseline starts its own daemons, in network namespaces)
if command -v systemctl >/dev/null 2>&1; then
    systemctl disable --now prometheus prometheus-node-exporter corosync >/dev/null 2>&1
fi
pkill -x prometheus-node-exporter >/dev/null 2>&1
exit 0
