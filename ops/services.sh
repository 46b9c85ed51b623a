#!/usr/bin/env bash
# Install the server binaries (PostgreSQL, Redis) the test suite runs as private
# instances, and the headless browser (Debian's chromium) it renders report.html in, when absent.
# Nothing is started here: the suite starts its own servers on free loopback ports
# and stops them when it ends. Debian's postinst would create and start a default
# cluster; we switch that off first so no shared server is left running.
set -euo pipefail
need=()
if ! command -v initdb >/dev/null 2>&1 && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  need+=(postgresql)
fi
if ! command -v redis-server >/dev/null 2>&1; then
  need+=(redis-server)
fi
if [ ! -x /usr/bin/chromium ]; then
  need+=(chromium)  # the report page test renders report.html in headless chromium
fi
if [ ${#need[@]} -gt 0 ]; then
  echo "services: installing ${need[*]}" >&2
  mkdir -p /etc/postgresql-common
  if ! grep -qs "^create_main_cluster" /etc/postgresql-common/createcluster.conf; then
    echo "create_main_cluster = false" >> /etc/postgresql-common/createcluster.conf
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # policy-rc.d 101: the packages' own services are not started (no init system needed)
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  rm -f /usr/sbin/policy-rc.d
fi
if ! id postgres >/dev/null 2>&1; then
  useradd --system --home /var/lib/postgresql --shell /bin/bash postgres
fi
