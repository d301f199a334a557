#!/usr/bin/env bash
# System packages the local stack and its tests use, from Debian's archive:
#   nginx + libnginx-mod-http-js  serving's front (blue/green switch, limits, clean error bodies)
#   chromium, postgresql          tests only: the MLflow UI in a browser, PostgreSQL as the backend
#   caddy                         tests only: the HTTPS front before a local server (its internal CA)
#   prometheus                    tests only: the promotion gate reading live figures through it
#   wrk                           benchmarks only (bench/serving.py)
# Idempotent; needs root (or sudo) only when something is missing.
set -euo pipefail
want=()
command -v nginx >/dev/null 2>&1 || want+=(nginx)
[ -f /usr/lib/nginx/modules/ngx_http_js_module.so ] || want+=(libnginx-mod-http-js)
for flag in "$@"; do
  case "$flag" in
    --with-test-tools)
      command -v chromium >/dev/null 2>&1 || want+=(chromium)
      command -v caddy >/dev/null 2>&1 || want+=(caddy)
      command -v prometheus >/dev/null 2>&1 || want+=(prometheus)
      ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || want+=(postgresql)
      command -v wrk >/dev/null 2>&1 || want+=(wrk) ;;
  esac
done
[ ${#want[@]} -eq 0 ] && exit 0

sudo=""
if [ "$(id -u)" != 0 ]; then
  command -v sudo >/dev/null 2>&1 || { echo "install-system-packages: need root to install: ${want[*]} (apt-get install ${want[*]})" >&2; exit 1; }
  sudo=sudo
fi
echo "install-system-packages: installing ${want[*]}" >&2
# Debian's nginx package would start the default site on port 80; keep services off.
policy=/usr/sbin/policy-rc.d
created_policy=0
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' | $sudo tee "$policy" >/dev/null && $sudo chmod +x "$policy" && created_policy=1
fi
trap '[ $created_policy = 1 ] && $sudo rm -f "$policy"' EXIT
$sudo apt-get update -qq >/dev/null
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${want[@]}" >/dev/null
