#!/usr/bin/env bash
# Puts the NAILA device agent on Raspberry Pi OS Lite (64-bit, bookworm; Pi 5, Pi 4, Pi 3) from
# this checkout, as a systemd service (docs/deployment.md, "Raspberry Pi OS: one command").
#
# Usage: sudo scripts/install-pi-os.sh [--camera] [CONF]
#   --camera  a Pi camera (CSI): apt's python3-picamera2, which matches the system's libcamera,
#             seen from the venv (--system-site-packages; PyPI's picamera2 would shadow it), and
#             numpy < 2 in the venv (apt's simplejpeg, which picamera2 imports, is built on numpy 1)
#   CONF      the device's folder from naila init (devices/<id>/: naila.conf and naila-ca.crt) or a
#             naila.conf; checked like the SD image does and written as /etc/naila/device.env
#             (root:naila 0640), naila-ca.crt as /etc/naila/ca.crt. Without CONF an existing
#             device.env is kept; with none the unit waits for one (systemctl start naila-device).
# Steps: apt-get install (python3-venv libopus0 libspeexdsp1 libportaudio2 python3-lgpio, +
# python3-picamera2), the system user naila (groups audio, video, gpio), the venv /opt/naila/venv
# (--system-site-packages) with pip install '.[device]', the config, the unit
# device_agent/naila-device.service + deploy/systemd/naila-device.service.d/50-pi-os.conf, enabled
# and (re)started. Run it again after a git pull or a changed naila.conf: every step is idempotent.
#
# DESTDIR=/some/root installs under that root instead: the venv is created there (python3 and pip
# from PATH), and apt-get, useradd/usermod, chown and systemctl are printed, not run (packaging,
# tests). --dry-run prints every step, runs nothing and writes nothing but still checks CONF.
set -euo pipefail

die() { echo "install-pi-os: $*" >&2; exit 1; }
say() { echo "install-pi-os: $*"; }
usage() { sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//' >&2; exit 2; }

camera=0
mode=live
conf=
while [ $# -gt 0 ]; do
  case "$1" in
    --camera) camera=1 ;;
    --dry-run) mode=dry ;;
    -h|--help) usage ;;
    -*) echo "install-pi-os: unknown option $1" >&2; usage ;;
    *) [ -z "$conf" ] || usage; conf=$1 ;;
  esac
  shift
done

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
dest=${DESTDIR:-}
if [ "$mode" = live ] && [ -n "$dest" ]; then mode=destdir; fi
venv=/opt/naila/venv
unit=naila-device.service

if [ "$mode" = live ]; then
  [ "$(id -u)" -eq 0 ] || die "run as root: sudo $0 $* (or set DESTDIR, or --dry-run)"
  [ -e /usr/bin/raspi-config ] || [ -e /etc/rpi-issue ] \
    || say "warning: this does not look like Raspberry Pi OS (no raspi-config); carrying on"
fi

# A command that changes the running system: only on a live install.
sys_run() {
  if [ "$mode" = live ]; then "$@"; else say "would run: $*"; fi
}

# The venv and pip: live and under DESTDIR, printed by --dry-run.
venv_run() {
  if [ "$mode" = dry ]; then say "would run: $*"; else "$@"; fi
}

# install_file SOURCE MODE OWNER:GROUP TARGET; owners only on a live system.
install_file() {
  local src=$1 perm=$2 owner=$3 target=$4
  if [ "$mode" = dry ]; then say "would install $target ($perm $owner)"; return; fi
  if [ "$mode" = live ]; then
    install -D -m "$perm" -o "${owner%:*}" -g "${owner#*:}" "$src" "$dest$target"
  else
    install -D -m "$perm" "$src" "$dest$target"
  fi
  say "$target ($perm $owner)"
}

# --- the configuration first: a wrong naila.conf stops the install before it changes anything.
conf_file=
if [ -n "$conf" ]; then
  if [ -d "$conf" ]; then conf_file=$conf/naila.conf; else conf_file=$conf; fi
  [ -f "$conf_file" ] || die "$conf_file: no such file (give the devices/<id> folder that naila init wrote, or a naila.conf)"
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
render_env() {
  # With the agent installed its settings table and `naila config --check` judge the values too.
  local cli=()
  [ ! -x "$dest$venv/bin/naila" ] || [ "$mode" = dry ] || cli=(--cli "$dest$venv/bin/naila")
  python3 "$here/scripts/device_env_from_conf.py" "$conf_file" "$work/device.env" "${cli[@]}" \
    || die "$conf_file has the problems above: fix them and run this again (nothing installed from it)"
}
[ -z "$conf_file" ] || render_env

# --- system packages.
packages=(python3-venv libopus0 libspeexdsp1 libportaudio2 alsa-utils python3-lgpio)
[ "$camera" -eq 0 ] || packages+=(python3-picamera2)
sys_run apt-get update
# No recommends: python3-picamera2 would otherwise bring a desktop's worth of Qt and OpenGL.
sys_run apt-get install -y --no-install-recommends "${packages[@]}"

# --- the service user; audio (ALSA), video (V4L2, libcamera), gpio (push-to-talk button).
if [ "$mode" != live ] || ! id naila >/dev/null 2>&1; then
  sys_run useradd --system --user-group --home-dir /var/lib/naila --no-create-home --shell /usr/sbin/nologin naila
fi
groups=audio,video
if [ "$mode" != live ] || getent group gpio >/dev/null; then groups+=,gpio; fi
sys_run usermod -a -G "$groups" naila

# --- the venv: it must see apt's picamera2 and libcamera, so it is made with the system's site.
if [ ! -x "$dest$venv/bin/python" ] || ! grep -qx 'include-system-site-packages = true' "$dest$venv/pyvenv.cfg" 2>/dev/null; then
  venv_run python3 -m venv --clear --system-site-packages "$dest$venv"
fi
pins=()
[ "$camera" -eq 0 ] || pins=('numpy<2')
venv_run "$dest$venv/bin/pip" install --disable-pip-version-check "${here}[device]" "${pins[@]}"
if [ "$mode" = live ] && [ "$camera" -eq 1 ]; then
  # An earlier `pip install '.[device,camera]'` left PyPI's picamera2 in the venv: it shadows apt's.
  if "$venv/bin/pip" show -f picamera2 2>/dev/null | grep -q "^Location: $venv/"; then
    "$venv/bin/pip" uninstall -y picamera2
  fi
  where=$("$venv/bin/python" -c 'import picamera2; print(picamera2.__file__)' 2>&1) \
    || die "picamera2 does not import in $venv: $where"
  case "$where" in
    /usr/lib/python3/dist-packages/*) say "picamera2 from apt: $where" ;;
    *) die "picamera2 comes from $where, not apt's python3-picamera2" ;;
  esac
fi

# --- configuration files.
if [ "$mode" = dry ]; then say "would create /etc/naila (0755 root:root)"
elif [ "$mode" = live ]; then install -d -m 0755 -o root -g root "$dest/etc/naila"
else install -d -m 0755 "$dest/etc/naila"
fi
have_env=0
if [ -n "$conf_file" ]; then
  ca=$(dirname "$conf_file")/naila-ca.crt
  [ ! -f "$ca" ] || install_file "$ca" 0644 root:root /etc/naila/ca.crt
  # systemd reads it as root; the agent's `naila config` reads it as naila.
  install_file "$work/device.env" 0640 root:naila /etc/naila/device.env
  have_env=1
elif [ -f "$dest/etc/naila/device.env" ]; then
  say "keeping /etc/naila/device.env (give CONF to replace it)"
  have_env=1
fi

# --- the unit.
install_file "$here/device_agent/$unit" 0644 root:root "/etc/systemd/system/$unit"
install_file "$here/deploy/systemd/$unit.d/50-pi-os.conf" 0644 root:root "/etc/systemd/system/$unit.d/50-pi-os.conf"
sys_run systemctl daemon-reload
sys_run systemctl enable "$unit"
if [ "$have_env" -eq 1 ]; then
  sys_run systemctl restart "$unit"
  say "done: journalctl -u $unit -f shows the agent connecting to its hub"
else
  say "done, but no configuration yet: run this again with the device's folder from naila init,"
  say "or write /etc/naila/device.env (docs/configuration.md) and systemctl start $unit"
fi
