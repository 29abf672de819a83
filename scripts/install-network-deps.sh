#!/usr/bin/env bash
# Test dependencies of the network tests (tests/test_netns_*.py): Debian's nginx (the front
# door of the scale-out test), iproute2 (ip netns, tc) and nftables (packet loss and blackouts:
# this kernel has no sch_netem, see tests/netlab.py). nginx is installed without
# being started: a policy-rc.d refuses service starts during the install, so nothing listens
# on the host's port 80. Skipped, with a message, where it cannot run; the tests then skip.
set -u
need=()
[ -x /usr/sbin/nginx ] || need+=(nginx)
command -v nft >/dev/null 2>&1 || need+=(nftables)
command -v ip >/dev/null 2>&1 && command -v tc >/dev/null 2>&1 || need+=(iproute2)
if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1 || [ "$(id -u)" != "0" ]; then
  echo "note: ${need[*]} missing and apt-get unavailable (or not root): network tests will skip"
  exit 0
fi
echo "installing ${need[*]} for the network tests"
made_policy=0
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
  made_policy=1
fi
(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
  --no-install-recommends "${need[@]}" >/dev/null) || echo "warning: ${need[*]} install failed"
if [ "$made_policy" = 1 ]; then
  rm -f /usr/sbin/policy-rc.d
fi
exit 0
