#!/usr/bin/env bash
# Installs one machine of a household provisioned by `naila init` (docs/deployment.md):
# copies its env file, certificates and keys into place with the right owners and modes,
# installs its systemd unit (deploy/systemd/) and enables and (re)starts it.
#
# Usage: scripts/install-service.sh hub|ai-server|broker [FOLDER]
#   FOLDER  that machine's folder from naila init (default: naila-household/<machine>)
#   hub        -> /etc/naila/{hub.env,ca.crt,hub.crt,hub.key,hub-client.crt,hub-client.key}, naila-hub.service
#   ai-server  -> /etc/naila/{ai-server.env,ca.crt,ai-server.crt,ai-server.key}, naila-ai-server.service
#   broker     -> /etc/mosquitto/mosquitto.conf, /etc/mosquitto/naila/{acl,passwd,certs/}, mosquitto.service
# Run it again after a re-run of naila init (a device added or revoked): the hub and the broker
# then pick up the new tokens and users.
#
# DESTDIR=/some/root installs under that root instead, without creating users, changing owners
# or calling systemctl (what would run is printed): for packaging and tests.
set -euo pipefail

die() { echo "install-service: $*" >&2; exit 1; }
[ $# -ge 1 ] && [ $# -le 2 ] || { sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//' >&2; exit 2; }

machine=$1
src=${2:-naila-household/$machine}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
dest=${DESTDIR:-}
live=1
[ -z "$dest" ] || live=0
[ "$live" -eq 0 ] || [ "$(id -u)" -eq 0 ] || die "run as root (or set DESTDIR to install under another root)"
[ -d "$src" ] || die "$src: no such folder (give the $machine folder that naila init wrote)"

# install FILE MODE OWNER:GROUP TARGET; owners only on a live system.
put() {
  local file=$1 mode=$2 owner=$3 target=$4
  [ -f "$src/$file" ] || die "$src/$file is missing: is $src the $machine folder from naila init?"
  if [ "$live" -eq 1 ]; then
    install -D -m "$mode" -o "${owner%:*}" -g "${owner#*:}" "$src/$file" "$dest$target"
  else
    install -D -m "$mode" "$src/$file" "$dest$target"
  fi
  echo "install-service: $target ($mode $owner)"
}

dir() {
  local mode=$1 owner=$2 target=$3
  if [ "$live" -eq 1 ]; then
    install -d -m "$mode" -o "${owner%:*}" -g "${owner#*:}" "$dest$target"
  else
    install -d -m "$mode" "$dest$target"
  fi
}

run() {
  if [ "$live" -eq 1 ]; then "$@"; else echo "install-service: would run: $*"; fi
}

service_user() {
  if [ "$live" -eq 1 ] && ! id naila >/dev/null 2>&1; then
    useradd --system --home-dir /var/lib/naila --no-create-home --shell /usr/sbin/nologin naila
    echo "install-service: created the system user naila"
  fi
}

unit() {
  local name=$1
  install -D -m 0644 "$here/deploy/systemd/$name" "$dest/etc/systemd/system/$name"
  echo "install-service: /etc/systemd/system/$name"
  run systemctl daemon-reload
  run systemctl enable "$name"
  run systemctl restart "$name"
}

case "$machine" in
  hub)
    service_user
    dir 0755 root:root /etc/naila
    # The env file is read by systemd (root) before the service drops to the user naila.
    put hub.env 0600 root:root /etc/naila/hub.env
    for f in ca.crt hub.crt hub-client.crt; do put "$f" 0644 root:root "/etc/naila/$f"; done
    for f in hub.key hub-client.key; do put "$f" 0600 naila:naila "/etc/naila/$f"; done
    unit naila-hub.service
    ;;
  ai-server)
    service_user
    dir 0755 root:root /etc/naila
    put ai-server.env 0600 root:root /etc/naila/ai-server.env
    for f in ca.crt ai-server.crt; do put "$f" 0644 root:root "/etc/naila/$f"; done
    put ai-server.key 0600 naila:naila /etc/naila/ai-server.key
    unit naila-ai-server.service
    ;;
  broker)
    # mosquitto reads the password file and its key as the user mosquitto after dropping root.
    dir 0750 root:mosquitto /etc/mosquitto/naila
    dir 0750 root:mosquitto /etc/mosquitto/naila/certs
    put mosquitto.conf 0644 root:root /etc/mosquitto/mosquitto.conf
    put acl 0644 root:root /etc/mosquitto/naila/acl
    put passwd 0640 root:mosquitto /etc/mosquitto/naila/passwd
    for f in ca.crt server.crt; do put "certs/$f" 0644 root:root "/etc/mosquitto/naila/certs/$f"; done
    put certs/server.key 0640 root:mosquitto /etc/mosquitto/naila/certs/server.key
    run systemctl enable mosquitto.service
    run systemctl restart mosquitto.service
    ;;
  *)
    die "unknown machine '$machine': hub, ai-server or broker"
    ;;
esac
echo "install-service: $machine installed"
