# shellcheck shell=bash
# Turn the base Debian tree into the NAILA device rootfs (sourced by build.sh).
# Uses: HERE REPO WORK SDE VERSION SUITE MIRROR SNAPSHOT IMAGE_MIRROR IMAGE_SECURITY_MIRROR
#       COMPONENTS BOOT_LABEL ROOT_LABEL, log/die from common.sh.

# /proc and a minimal /dev (tmpfs, never a bind of the host's /dev) for the chroot.
chroot_mount() {
  local r=$1
  mount -t proc proc "$r/proc"
  mount -t tmpfs -o mode=0755,size=1m devtmp "$r/dev"
  mknod -m 0666 "$r/dev/null" c 1 3
  mknod -m 0666 "$r/dev/zero" c 1 5
  mknod -m 0666 "$r/dev/full" c 1 7
  mknod -m 0666 "$r/dev/random" c 1 8
  mknod -m 0666 "$r/dev/urandom" c 1 9
  mknod -m 0666 "$r/dev/tty" c 5 0
  ln -s /proc/self/fd "$r/dev/fd"
}

chroot_umount() {
  local r=$1 m
  for m in dev proc; do
    if mountpoint -q "$r/$m"; then umount "$r/$m" || umount -l "$r/$m"; fi
  done
}

in_chroot() {
  chroot "$CHROOT" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LC_ALL=C.UTF-8 \
    SOURCE_DATE_EPOCH="$SDE" DEBIAN_FRONTEND=noninteractive PIP_DISABLE_PIP_VERSION_CHECK=1 "$@"
}

customize_rootfs() {
  CHROOT=$1
  local wheelhouse=$2 r=$1
  chroot_mount "$r"
  # shellcheck disable=SC2064
  trap "chroot_umount '$r'" EXIT

  log "overlay: image/rootfs -> /"
  (cd "$HERE/rootfs" && find . -type d -print0 | xargs -0 -I{} install -d -m 0755 -o root -g root "$r/{}")
  (cd "$HERE/rootfs" && find . -type f -print0 | LC_ALL=C sort -z) | while IFS= read -r -d '' f; do
    local mode=0644
    [ -x "$HERE/rootfs/$f" ] && mode=0755
    install -m "$mode" -o root -g root "$HERE/rootfs/$f" "$r/$f"
  done
  install -d -m 0755 "$r/etc/naila" "$r/etc/naila/ssh" "$r/usr/local/share/naila" "$r/boot/firmware"
  install -m 0644 "$HERE/naila.conf.example" "$r/usr/local/share/naila/naila.conf.example"
  install -m 0644 "$HERE/naila.conf.example" "$r/boot/firmware/naila.conf"
  install -m 0644 "$HERE/README.md" "$r/usr/local/share/naila/README.md"
  install -d -m 0755 "$r/opt/naila"
  install -m 0644 "$REPO/README.md" "$r/opt/naila/README.md"  # the agent unit's Documentation=

  log "user naila (audio, video), root locked, no SSH host keys"
  in_chroot useradd --system --user-group --home-dir /var/lib/naila --create-home \
    --shell /usr/sbin/nologin --comment "NAILA device agent" naila
  in_chroot usermod -a -G audio,video naila
  chmod 0750 "$r/var/lib/naila"
  in_chroot passwd --lock root >/dev/null
  rm -f "$r"/etc/ssh/ssh_host_*

  log "agent venv /opt/naila/venv from the aarch64 wheelhouse (offline)"
  rm -rf "$r/tmp/wheelhouse"
  cp -r "$wheelhouse" "$r/tmp/wheelhouse"
  in_chroot python3 -m venv /opt/naila/venv
  in_chroot /opt/naila/venv/bin/pip install --quiet --no-index --no-cache-dir \
    --find-links /tmp/wheelhouse 'naila[device]' \
    || die "offline install of naila[device] in the arm64 chroot failed (wheelhouse incomplete?)"
  rm -rf "$r/tmp/wheelhouse"
  # The agent's native dependencies load against the image's Debian libraries (emulated).
  in_chroot /opt/naila/venv/bin/python -c \
    'import aiortc, aiohttp, aiomqtt, numpy, soxr, sounddevice, gpiozero, shared.config
from device_agent.speex_ctypes import EchoState
EchoState(160, 3200, 16000)  # the echo canceller loads the image libspeexdsp1
print("imports ok")' \
    || die "the agent's dependencies do not import on the image"
  if in_chroot /opt/naila/venv/bin/python -c 'import device_agent.app' 2>/dev/null; then
    log "device_agent.app imports"
  else
    log "WARNING: device_agent.app does not import yet (agent unfinished?): the unit will exit with status 2"
  fi
  in_chroot /opt/naila/venv/bin/naila config >/dev/null || die "'naila config' fails on the image"

  local unit
  unit=$(find "$r/opt/naila/venv/lib" -path '*/site-packages/device_agent/naila-device.service' | head -n1)
  if [ -n "$unit" ]; then
    log "agent unit: device_agent/naila-device.service from the naila wheel"
  else
    unit="$HERE/files/naila-device.service"
    log "agent unit: the wheel has no device_agent/naila-device.service yet, using image/files/naila-device.service"
  fi
  install -m 0644 "$unit" "$r/etc/systemd/system/naila-device.service"

  log "enable units"
  in_chroot systemctl enable --quiet naila-config.service naila-config.path naila-growfs.service \
    naila-ssh-hostkeys.service ssh.service systemd-networkd.service systemd-resolved.service \
    systemd-timesyncd.service
  if ! in_chroot systemctl enable --quiet naila-device.service; then
    log "naila-device.service has no usable [Install] section: wanting it from multi-user.target"
    mkdir -p "$r/etc/systemd/system/multi-user.target.wants"
    ln -sf /etc/systemd/system/naila-device.service "$r/etc/systemd/system/multi-user.target.wants/"
  fi

  # A headless appliance: systemd-firstboot would stop the first boot at an interactive
  # "Please configure your system!" prompt on the console (machine-id is "uninitialized").
  in_chroot systemctl mask --quiet systemd-firstboot.service

  log "system identity, apt sources, boot partition"
  echo naila >"$r/etc/hostname"
  printf '127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\tnaila\n' >"$r/etc/hosts"
  ln -sfn ../run/systemd/resolve/stub-resolv.conf "$r/etc/resolv.conf"
  printf 'uninitialized\n' >"$r/etc/machine-id"
  rm -f "$r/var/lib/dbus/machine-id" "$r/var/lib/systemd/random-seed"
  cat >"$r/etc/apt/sources.list" <<EOF
deb $IMAGE_MIRROR $SUITE $COMPONENTS
deb $IMAGE_MIRROR $SUITE-updates $COMPONENTS
deb $IMAGE_SECURITY_MIRROR $SUITE-security $COMPONENTS
EOF
  rm -f "$r/etc/apt/apt.conf.d/99mmdebstrap"
  local commit
  commit=$(git -C "$REPO" rev-parse HEAD 2>/dev/null || echo unknown)
  if [ "$commit" != unknown ] && [ -n "$(git -C "$REPO" status --porcelain 2>/dev/null)" ]; then
    commit="$commit-dirty"
  fi
  cat >"$r/etc/naila/image-release" <<EOF
NAILA_IMAGE_VERSION=$VERSION
NAILA_IMAGE_COMMIT=$commit
NAILA_IMAGE_SOURCE_DATE_EPOCH=$SDE
NAILA_IMAGE_DEBIAN=$SUITE
NAILA_IMAGE_MIRROR=$MIRROR
NAILA_IMAGE_SNAPSHOT=${SNAPSHOT:-none}
EOF

  # raspi-firmware's kernel hook filled /boot/firmware (firmware, DTBs, vmlinuz, initrd,
  # config.txt) but, in a chroot, guessed the root device and consoles: set them as a Pi 3/4
  # would get them (the hook rewrites this file on kernel updates, on the device, correctly).
  [ -f "$r/boot/firmware/config.txt" ] || die "raspi-firmware did not populate /boot/firmware"
  ls "$r"/boot/firmware/vmlinuz-* "$r"/boot/firmware/initrd.img-* >/dev/null 2>&1 \
    || die "no kernel/initrd in /boot/firmware"
  echo "console=tty0 console=ttyS1,115200 root=LABEL=$ROOT_LABEL rw fsck.repair=yes net.ifnames=0 rootwait" \
    >"$r/boot/firmware/cmdline.txt"

  log "manifest"
  {
    echo "# NAILA device image $VERSION ($SUITE $ARCH), commit $commit, SOURCE_DATE_EPOCH $SDE"
    echo "# Debian packages"
    in_chroot dpkg-query -W -f '${Package} ${Version} ${Architecture}\n' | LC_ALL=C sort
    echo "# Python packages in /opt/naila/venv"
    in_chroot /opt/naila/venv/bin/python -m pip list --format=freeze | LC_ALL=C sort
    echo "# wheelhouse"
    (cd "$wheelhouse" && sha256sum -- * | LC_ALL=C sort -k2)
  } >"$WORK/manifest.txt"

  log "clean up"
  rm -rf "$r"/var/lib/apt/lists/* "$r"/var/cache/apt/*.bin "$r"/var/cache/apt/archives/*.deb \
    "$r"/var/cache/debconf/*-old "$r"/var/lib/dpkg/*-old "$r"/root/.cache "$r"/tmp/* "$r"/var/tmp/* \
    "$r/var/cache/ldconfig/aux-cache"
  find "$r/var/log" -type f -exec truncate -s 0 {} +
  chroot_umount "$r"
  trap - EXIT
  # Reproducible timestamps: nothing newer than SOURCE_DATE_EPOCH.
  find "$r" -xdev -newermt "@$SDE" -print0 | xargs -0r touch --no-dereference --date="@$SDE"
}
