#!/usr/bin/env bash
# Creates or updates the mosquitto password file for NAILA: the service users (hub, AI server,
# web app) and one user per device (user name == device id, which deploy/mosquitto/acl relies on).
#
# Passwords are random and never given on a command line (mosquitto_passwd reads them on stdin,
# so they do not show in ps). Each new or rotated password is written once to
# OUT_DIR/<user>.env (MQTT_USERNAME=..., MQTT_PASSWORD=..., mode 0600) for you to copy to that
# machine (/etc/naila/*.env, or the Pi's boot config) and then delete. Nothing secret is kept in
# the repository: the script refuses an OUT_DIR inside a git work tree.
#
# Usage: scripts/mqtt-users.sh [-f PASSWD_FILE] [-o OUT_DIR] [-s] [-r] [DEVICE_ID ...]
#        scripts/mqtt-users.sh [-f PASSWD_FILE] -d DEVICE_ID ...
#   -f  password file (default /etc/mosquitto/naila/passwd; created 0640, group mosquitto)
#   -o  where the .env files go (default: a "credentials" directory beside the password file)
#   -s  also the service users: naila-hub, naila-ai-server, naila-app
#   -r  rotate: new passwords for users that already exist (default: existing users are kept)
#   -d  delete the given devices instead
# Then reload the broker so it rereads the file: systemctl reload mosquitto
set -euo pipefail

SERVICE_USERS=(naila-hub naila-ai-server naila-app)
passwd_file=/etc/mosquitto/naila/passwd
out_dir=""
services=0
rotate=0
delete=0

usage() { sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//' >&2; exit 2; }
die() { echo "mqtt-users: $*" >&2; exit 1; }

while getopts "f:o:srdh" opt; do
  case "$opt" in
    f) passwd_file=$OPTARG ;;
    o) out_dir=$OPTARG ;;
    s) services=1 ;;
    r) rotate=1 ;;
    d) delete=1 ;;
    *) usage ;;
  esac
done
shift $((OPTIND - 1))
devices=("$@")

command -v mosquitto_passwd >/dev/null || die "mosquitto_passwd not found (apt-get install mosquitto)"

# Device ids become MQTT user names and, through the ACL's %u, topic levels: the same rule as
# shared/mqtt/topics.py (a '/', '+' or '#' would reach other topics), and never a service user's
# name (that would hand a device the service's rights).
for id in "${devices[@]}"; do
  [[ "$id" =~ ^[A-Za-z0-9_.-]{1,64}$ && "$id" != "." && "$id" != ".." ]] ||
    die "device id '$id' must be 1-64 characters of [A-Za-z0-9_.-], not '.' or '..'"
  for svc in "${SERVICE_USERS[@]}"; do
    [ "$id" != "$svc" ] || die "device id '$id' is a service user name"
  done
done

has_user() { [ -f "$passwd_file" ] && grep -q "^$1:" "$passwd_file"; }

if [ "$delete" -eq 1 ]; then
  [ ${#devices[@]} -gt 0 ] || die "-d needs at least one device id"
  [ -f "$passwd_file" ] || die "no password file at $passwd_file"
  for id in "${devices[@]}"; do
    if has_user "$id"; then
      mosquitto_passwd -D "$passwd_file" "$id"
      echo "mqtt-users: deleted $id"
    else
      echo "mqtt-users: $id not in $passwd_file"
    fi
  done
  echo "mqtt-users: reload the broker to apply: systemctl reload mosquitto"
  exit 0
fi

users=()
[ "$services" -eq 0 ] || users+=("${SERVICE_USERS[@]}")
users+=("${devices[@]}")
[ ${#users[@]} -gt 0 ] || usage

out_dir=${out_dir:-$(dirname "$passwd_file")/credentials}
probe=$out_dir
while [ ! -d "$probe" ]; do probe=$(dirname "$probe"); done
if git -C "$probe" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  die "$out_dir is inside a git work tree; write credentials outside any repository (-o)"
fi
mkdir -p "$out_dir"
chmod 0700 "$out_dir"

# Create the file before any password goes in, already private: mosquitto (which drops root for
# the user mosquitto) needs to read it, nobody else.
mkdir -p "$(dirname "$passwd_file")"
if [ ! -f "$passwd_file" ]; then
  (umask 027 && : >"$passwd_file")
fi

changed=0
for user in "${users[@]}"; do
  if has_user "$user" && [ "$rotate" -eq 0 ]; then
    echo "mqtt-users: $user exists, password kept (-r to rotate)"
    continue
  fi
  # 32 URL-safe characters (192 bits): no quoting trouble in env files or boot configs.
  password=$(head -c 24 /dev/urandom | base64 | tr '+/' '-_')
  printf '%s\n%s\n' "$password" "$password" | mosquitto_passwd "$passwd_file" "$user" >/dev/null
  (umask 077 && printf 'MQTT_USERNAME=%s\nMQTT_PASSWORD=%s\n' "$user" "$password" >"$out_dir/$user.env")
  echo "mqtt-users: $user -> $out_dir/$user.env"
  changed=1
done

# mosquitto_passwd rewrites the file; put the permissions back every time.
chmod 0640 "$passwd_file"
if getent group mosquitto >/dev/null 2>&1; then
  chgrp mosquitto "$passwd_file" 2>/dev/null || echo "mqtt-users: could not chgrp mosquitto $passwd_file (run as root)"
fi
if [ "$changed" -eq 1 ]; then
  echo "mqtt-users: copy each .env to its machine, delete it here, then: systemctl reload mosquitto"
fi
