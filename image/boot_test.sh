#!/usr/bin/env bash
# Boot the built SD image in QEMU (-M virt, cortex-a72, emulated) and check on the serial
# console what a Pi would do at first boot:
#
#   shipped     the image as built (naila.conf not filled in): naila-config reports the
#               missing values clearly and the agent waits (skipped by its condition).
#   configured  a valid naila.conf with secrets is put on the boot partition first:
#               naila-config accepts it, moves the secrets off the FAT partition and
#               naila-device.service starts.
#   bad         a naila.conf with a wrong value: reported, agent waits, secrets still moved.
#
#   bash image/boot_test.sh [IMAGE(.img|.img.zst)] [--scenarios shipped,configured]
#                           [--timeout SECONDS] [--out DIR] [--keep] [--no-hub]
#
# The kernel and initrd are the image's own (copied out of its FAT partition with mtools);
# the image is the virtio disk, so root=LABEL=RASPIROOT, fstab, /boot/firmware and the
# first-boot units run as on the card. Only the consoles differ (ttyAMA0), and the journal
# is forwarded to the console (systemd.journald.forward_to_console=1: a test-only kernel
# argument, the image is not changed) so the agent's own messages are visible. An emulated
# HD-audio card (silent) stands in for the Pi's USB speakerphone, so the agent can open ALSA.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$HERE")
# shellcheck source=image/lib/common.sh
. "$HERE/lib/common.sh"

IMAGE=""
SCENARIOS="shipped,configured"
TIMEOUT=600
AGENT_WAIT=${AGENT_WAIT:-120}  # configured: seconds to watch the agent after it started
OUTDIR="$HERE/out/boot-test"
KEEP=0
WITH_HUB=1
while [ $# -gt 0 ]; do
  case "$1" in
    --scenarios) SCENARIOS=$2; shift 2 ;;
    --timeout) TIMEOUT=$2; shift 2 ;;
    --out) OUTDIR=$2; shift 2 ;;
    --keep) KEEP=1; shift ;;
    --no-hub) WITH_HUB=0; shift ;;
    -h|--help) sed -n '2,25p' "$0"; exit 0 ;;
    -*) die "unknown option $1" ;;
    *) IMAGE=$1; shift ;;
  esac
done
if [ -z "$IMAGE" ]; then
  IMAGE=$(find "$HERE/out" -maxdepth 1 -name 'naila-device-*-arm64.img' -printf '%T@ %p\n' 2>/dev/null \
    | sort -n | tail -n1 | cut -d' ' -f2-)
  [ -n "$IMAGE" ] || die "no image given and none in $HERE/out: run image/build.sh first"
fi
[ -f "$IMAGE" ] || die "no such image: $IMAGE"
need_cmds qemu-system-aarch64 mcopy mdir sfdisk python3 zstd

mkdir -p "$OUTDIR"
OUTDIR=$(cd "$OUTDIR" && pwd)
TMP=$(mktemp -d "${TMPDIR:-/tmp}/naila-boot-test.XXXXXX")
QEMU_PID=""
MOSQ_PID=""
cleanup() {
  [ -n "$QEMU_PID" ] && kill "$QEMU_PID" 2>/dev/null || true
  [ -n "$MOSQ_PID" ] && kill "$MOSQ_PID" 2>/dev/null || true
  [ -n "$HUB_PID" ] && kill "$HUB_PID" 2>/dev/null || true
  [ "$KEEP" -eq 1 ] || rm -rf "$TMP"
}
trap cleanup EXIT

log "image: $IMAGE"
if [[ "$IMAGE" == *.zst ]]; then
  zstd -q -d "$IMAGE" -o "$TMP/pristine.img"
else
  cp --sparse=always "$IMAGE" "$TMP/pristine.img"
fi

# Partition offsets (bytes) from the MBR.
part_start() {
  sfdisk -J "$TMP/pristine.img" | python3 -c \
    'import json,sys; p=json.load(sys.stdin)["partitiontable"]["partitions"][int(sys.argv[1])]; print(p["start"]*512)' "$1"
}
BOOT_OFF=$(part_start 0)
export MTOOLS_SKIP_CHECK=1
FAT="$TMP/pristine.img@@$BOOT_OFF"
KERNEL=$(mdir -b -i "$FAT" ::/ | sed -n 's#^::/##p' | grep '^vmlinuz-' | sort -V | tail -n1)
INITRD=$(mdir -b -i "$FAT" ::/ | sed -n 's#^::/##p' | grep '^initrd.img-' | sort -V | tail -n1)
[ -n "$KERNEL" ] && [ -n "$INITRD" ] || die "no vmlinuz-*/initrd.img-* on the image's boot partition"
mcopy -n -i "$FAT" "::/$KERNEL" "::/$INITRD" "::/cmdline.txt" "$TMP/"
# The image's own kernel command line, with the Pi consoles replaced by QEMU's PL011.
CMDLINE="console=ttyAMA0,115200 $(tr -d '\r\n' <"$TMP/cmdline.txt" | sed -E 's/(^| )console=[^ ]+//g; s/^ +//') systemd.journald.forward_to_console=1"
log "kernel $KERNEL, initrd $INITRD"
log "cmdline: $CMDLINE"

# An MQTT broker on the host (QEMU user networking: the host is 10.0.2.2 in the guest), if
# mosquitto is installed: shows whether the agent reaches the network and its broker.
MQTT_PORT=""
if command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ]; then
  MQTT_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  printf 'listener %s 127.0.0.1\nallow_anonymous true\npersistence false\n' "$MQTT_PORT" >"$TMP/mosquitto.conf"
  "$(command -v mosquitto || echo /usr/sbin/mosquitto)" -v -c "$TMP/mosquitto.conf" >"$OUTDIR/mosquitto.log" 2>&1 &
  MOSQ_PID=$!
fi

# The real hub on the host (from this checkout's .venv, if it has the hub extra), so the
# configured agent has a peer for WebRTC: its AI server is absent, which the hub tolerates.
HUB_PORT=8080
HUB_PID=""
if [ "$WITH_HUB" -eq 1 ] && [ -x "$REPO/.venv/bin/naila" ] && "$REPO/.venv/bin/python" -c 'import hub.app' 2>/dev/null; then
  HUB_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  HUB_HOST=127.0.0.1 HUB_PORT=$HUB_PORT "$REPO/.venv/bin/naila" hub >"$OUTDIR/hub.log" 2>&1 &
  HUB_PID=$!
  log "hub on the host: http://127.0.0.1:$HUB_PORT (http://10.0.2.2:$HUB_PORT in the guest)"
fi

# A throw-away SSH key: the configured scenario logs in with it (QEMU forwards a host port
# to the guest's port 22) to look at the running system and change naila.conf live.
ssh-keygen -q -t ed25519 -N '' -C boot-test -f "$TMP/id_boot_test"
SSH_TEST_KEY=$(cat "$TMP/id_boot_test.pub")
SSH_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
guest() {
  ssh -q -i "$TMP/id_boot_test" -p "$SSH_PORT" -o BatchMode=yes -o ConnectTimeout=30 \
    -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null root@127.0.0.1 "$@"
}

# check NAME CMD...: run CMD (output into the summary), ok if it exits 0.
check() {
  local name=$1 out rc=0; shift
  out=$("$@" 2>&1) || rc=$?
  if [ "$rc" -eq 0 ]; then echo "  ok   $name"; else echo "  FAIL $name (exit $rc)"; failed=1; fi
  [ -z "$out" ] || printf '%s\n' "$out" | sed 's/^/       | /'
}

# The configured guest, logged in over SSH: permissions, security settings, and a change of
# naila.conf on the running device (naila-config.path) that stops and restarts the agent.
ssh_checks() {
  local i
  for i in $(seq 1 30); do guest true 2>/dev/null && break; sleep 4; done
  check "SSH login with the key from naila.conf" guest true
  check "device.env root:naila 0640, secrets root 0600, wpa 0600, no host keys shared" guest '
    stat -c "%n %U:%G %a" /etc/naila/device.env /etc/naila/secrets.env /etc/wpa_supplicant/wpa_supplicant-wlan0.conf
    [ "$(stat -c %U:%G:%a /etc/naila/device.env)" = root:naila:640 ] &&
    [ "$(stat -c %U:%G:%a /etc/naila/secrets.env)" = root:root:600 ] &&
    [ "$(stat -c %a /etc/wpa_supplicant/wpa_supplicant-wlan0.conf)" = 600 ] &&
    ! grep -q wifi-pass /etc/wpa_supplicant/wpa_supplicant-wlan0.conf'
  check "agent user: no login, groups audio+video only" guest '
    id naila; getent passwd naila | cut -d: -f7
    [ "$(id -nG naila | tr " " "\n" | sort | tr "\n" " ")" = "audio naila video " ] &&
    [ "$(getent passwd naila | cut -d: -f7)" = /usr/sbin/nologin ]'
  check "root locked, sshd key-only" guest '
    passwd -S root; sshd -T | grep -E "^(passwordauthentication|kbdinteractiveauthentication|permitrootlogin) "
    passwd -S root | grep -q " L " &&
    sshd -T | grep -qx "passwordauthentication no" && sshd -T | grep -qxE "permitrootlogin (without-password|prohibit-password)"'
  check "password authentication is not offered" sh -c "! ssh -o BatchMode=yes -o PubkeyAuthentication=no \
    -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -p $SSH_PORT root@127.0.0.1 true 2>&1 | grep -qi password"
  check "agent unit state (runs as naila, configured env)" guest '
    systemctl show -p ActiveState -p SubState -p NRestarts -p User naila-device.service
    systemctl show -p User --value naila-device.service | grep -qx naila'
  check "root filesystem grown to the disk" guest 'df -h / | tail -n1; lsblk -n -o NAME,SIZE /dev/vda'
  check "security updates off as configured; hostname from DEVICE_ID" guest '
    cat /etc/apt/apt.conf.d/20auto-upgrades | grep Unattended; hostname
    grep -q "Unattended-Upgrade \"0\"" /etc/apt/apt.conf.d/20auto-upgrades && [ "$(hostname)" = boot-test-pi ]'
  check "live change to a bad HUB_URL: re-checked, agent stopped, device.env removed" guest '
    sed -i "s#^HUB_URL=.*#HUB_URL=ftp://hub#" /boot/firmware/naila.conf
    for i in $(seq 1 60); do [ -e /etc/naila/device.env ] || break; sleep 2; done
    sleep 3; journalctl -b -u naila-config -n 4 -o cat --no-pager
    echo "agent: $(systemctl is-active naila-device.service)"
    [ ! -e /etc/naila/device.env ] && ! systemctl is-active -q naila-device.service'
  check "live fix: agent started again with the stored secrets" guest '
    sed -i "s#^HUB_URL=.*#HUB_URL=http://10.0.2.2:'"$HUB_PORT"'#" /boot/firmware/naila.conf
    for i in $(seq 1 60); do [ -e /etc/naila/device.env ] && break; sleep 2; done
    sleep 3; echo "agent: $(systemctl is-active naila-device.service)"
    grep -c "^MQTT_PASSWORD=mqtt-pass-SECRET-2$" /etc/naila/device.env &&
    systemctl show -p ActiveState --value naila-device.service | grep -qxE "active|activating"'
}

write_conf() {  # scenario -> naila.conf on the test disk's FAT partition
  local disk=$1 scenario=$2 mqtt="mqtt://10.0.2.2:${MQTT_PORT:-1883}"
  case $scenario in
    shipped) return 0 ;;
    configured)
      cat >"$TMP/naila.conf" <<EOF
# boot test: a valid configuration with secrets
DEVICE_ID=boot-test-pi
HUB_URL=http://10.0.2.2:$HUB_PORT
HUB_TOKEN=hub-token-SECRET-1
MQTT_URL=$mqtt
MQTT_USERNAME=pi
MQTT_PASSWORD=mqtt-pass-SECRET-2
WIFI_SSID=HomeNet
WIFI_PASSPHRASE=wifi-pass-SECRET-3
WIFI_COUNTRY=DE
SSH_AUTHORIZED_KEY=$SSH_TEST_KEY
UNATTENDED_UPGRADES=no
EOF
      ;;
    bad)
      cat >"$TMP/naila.conf" <<EOF
# boot test: a wrong hub URL, a typo, and a secret that must still leave the card
DEVICE_ID=boot-test-pi
HUB_URL=htp://10.0.2.2:8080
MQTT_USERNAME=pi
MQTT_PASSWORD=mqtt-pass-SECRET-2
WIFI_SIDD=HomeNet
EOF
      ;;
    *) die "unknown scenario $scenario" ;;
  esac
  mcopy -o -i "$disk@@$BOOT_OFF" "$TMP/naila.conf" ::/naila.conf
}

# expect SCENARIO: the console lines that must appear (extended regexps), in any order.
expect() {
  case $1 in
    shipped) printf '%s\n' \
      'naila-config: CONFIGURATION PROBLEM' \
      'naila-config: +line [0-9]+: DEVICE_ID: is required' \
      'naila-device.service.*(unmet condition|ConditionPathExists=/etc/naila/device.env)' \
      'naila-growfs: root partition' ;;
    configured) printf '%s\n' \
      'naila-config: moved WIFI_PASSPHRASE, MQTT_PASSWORD, HUB_TOKEN off the boot partition' \
      'naila-config: configuration OK: device boot-test-pi' \
      'naila-config: SSH: 1 authorized key' \
      'Started naila-device.service' \
      'naila-growfs: root partition' ;;
    bad) printf '%s\n' \
      'naila-config: moved MQTT_PASSWORD off the boot partition' \
      'naila-config: +line [0-9]+: HUB_URL: .htp://10.0.2.2:8080. must start with http:// or https://' \
      'naila-config: +line [0-9]+: WIFI_SIDD: unknown setting \(did you mean WIFI_SSID\?\)' \
      'naila-device.service.*(unmet condition|ConditionPathExists=/etc/naila/device.env)' ;;
  esac
}

SUMMARY="$OUTDIR/summary.txt"
: >"$SUMMARY"
failed=0

run_scenario() {
  local scenario=$1 disk="$TMP/$1.img" console="$OUTDIR/console-$1.log"
  cp --sparse=always "$TMP/pristine.img" "$disk"
  truncate -s +1G "$disk"  # a bigger "card": naila-growfs must grow the root partition
  write_conf "$disk" "$scenario"
  : >"$console"
  log "[$scenario] booting (timeout ${TIMEOUT}s)"
  local t0; t0=$(date +%s.%N)
  qemu-system-aarch64 -M virt -cpu cortex-a72 -smp 2 -m 1536 \
    -display none -monitor none -serial "file:$console" -no-reboot \
    -kernel "$TMP/$KERNEL" -initrd "$TMP/$INITRD" -append "$CMDLINE" \
    -drive "if=none,file=$disk,format=raw,id=hd0" -device virtio-blk-pci,drive=hd0 \
    -netdev "user,id=n0,hostfwd=tcp:127.0.0.1:$SSH_PORT-:22" -device virtio-net-pci,netdev=n0 \
    -audiodev none,id=snd0 -device intel-hda -device hda-duplex,audiodev=snd0 \
    -object rng-random,filename=/dev/urandom,id=rng0 -device virtio-rng-pci,rng=rng0 &
  QEMU_PID=$!

  local patterns=() seen=() i done_all=0 now
  mapfile -t patterns < <(expect "$scenario")
  for i in "${!patterns[@]}"; do seen[i]=""; done
  local login_at=""
  while :; do
    now=$(python3 -c "import time; print(f'{time.time() - $t0:.1f}')")
    done_all=1
    for i in "${!patterns[@]}"; do
      if [ -z "${seen[i]}" ]; then
        if grep -Eq -- "${patterns[i]}" "$console"; then seen[i]=$now; else done_all=0; fi
      fi
    done
    if [ -z "$login_at" ] && grep -q 'login:' "$console"; then login_at=$now; fi
    if [ "$done_all" -eq 1 ] && [ -n "$login_at" ]; then
      # configured: give the agent time to start (imports are slow under emulation) and
      # to reach the test broker, so the summary shows what it did.
      if [ "$scenario" != configured ] || [ -z "$MQTT_PORT" ] \
        || { grep -q 'New client connected' "$OUTDIR/mosquitto.log" \
             && { [ -z "$HUB_PID" ] || grep -q 'boot-test-pi' "$OUTDIR/hub.log"; }; } \
        || python3 -c "import sys; sys.exit(0 if $now > ${seen[$(( ${#patterns[@]} - 2 ))]:-0} + $AGENT_WAIT else 1)"; then
        break
      fi
    fi
    if ! kill -0 "$QEMU_PID" 2>/dev/null; then log "[$scenario] qemu exited"; break; fi
    if python3 -c "import sys; sys.exit(0 if $now > $TIMEOUT else 1)"; then log "[$scenario] timeout"; break; fi
    sleep 2
  done
  if [ "$scenario" = configured ] && kill -0 "$QEMU_PID" 2>/dev/null; then
    ssh_checks >"$TMP/ssh-checks.txt"  # not in a pipe: check() sets $failed
    tee -a "$SUMMARY" <"$TMP/ssh-checks.txt"
  fi
  sleep 5  # let the last writes settle (naila-config fsyncs its files)
  kill "$QEMU_PID" 2>/dev/null || true
  wait "$QEMU_PID" 2>/dev/null || true
  QEMU_PID=""

  local ok=1
  {
    echo "== scenario $scenario"
    for i in "${!patterns[@]}"; do
      if [ -n "${seen[i]}" ]; then
        printf '  ok   %6ss  %s\n' "${seen[i]}" "${patterns[i]}"
      else
        printf '  FAIL %7s  %s\n' "-" "${patterns[i]}"; ok=0
      fi
    done
    printf '  info %6ss  login prompt\n' "${login_at:--}"
  } | tee -a "$SUMMARY"

  # The boot partition afterwards: secrets gone from naila.conf, status file written.
  mcopy -n -i "$disk@@$BOOT_OFF" ::/naila.conf "$OUTDIR/naila.conf-after-$scenario" 2>/dev/null || true
  mcopy -n -i "$disk@@$BOOT_OFF" ::/naila-status.txt "$OUTDIR/naila-status-$scenario.txt" 2>/dev/null || true
  if [ "$scenario" != shipped ]; then
    if grep -q 'SECRET' "$OUTDIR/naila.conf-after-$scenario"; then
      echo "  FAIL secrets still in naila.conf on the boot partition" | tee -a "$SUMMARY"; ok=0
    else
      echo "  ok   no secret left in naila.conf on the boot partition" | tee -a "$SUMMARY"
    fi
  fi
  if [ -s "$OUTDIR/naila-status-$scenario.txt" ]; then
    echo "  info naila-status.txt: $(sed -n 3p "$OUTDIR/naila-status-$scenario.txt" | tr -d '\r')" | tee -a "$SUMMARY"
  else
    echo "  FAIL no naila-status.txt on the boot partition" | tee -a "$SUMMARY"; ok=0
  fi
  # What the agent did (informational: it depends on the agent's state of development).
  grep -E 'naila-device|naila\[[0-9]+\]' "$console" | grep -v 'naila-config' | cut -c1-220 | tail -n 12 \
    | sed 's/^/  agent| /' | tee -a "$SUMMARY" || true
  if [ -n "$MQTT_PORT" ] && [ "$scenario" = configured ]; then
    if grep -q 'New client connected' "$OUTDIR/mosquitto.log"; then
      echo "  info the agent connected to the test MQTT broker" | tee -a "$SUMMARY"
    else
      echo "  info the agent did not connect to the test MQTT broker (10.0.2.2:$MQTT_PORT)" | tee -a "$SUMMARY"
    fi
  fi
  if [ -n "$HUB_PID" ] && [ "$scenario" = configured ]; then
    echo "  info hub log lines about the device:" | tee -a "$SUMMARY"
    grep -E 'boot-test-pi|/connect|ICE|peer' "$OUTDIR/hub.log" | cut -c1-200 | tail -n 8 | sed 's/^/  hub| /' | tee -a "$SUMMARY" || true
  fi
  [ "$ok" -eq 1 ] || failed=1
  [ "$KEEP" -eq 1 ] || rm -f "$disk"
}

IFS=, read -r -a scenario_list <<<"$SCENARIOS"
for s in "${scenario_list[@]}"; do run_scenario "$s"; done
log "console logs and summary in $OUTDIR"
if [ "$failed" -ne 0 ]; then
  log "BOOT TEST FAILED"
  exit 1
fi
log "boot test passed"
