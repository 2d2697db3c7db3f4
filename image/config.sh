# shellcheck shell=bash
# shellcheck disable=SC2034  # variables used by build.sh, which sources this file
# Defaults for image/build.sh. Every value can be overridden from the environment
# (NAILA_IMAGE_<NAME>) or, where noted, from the command line.

# Debian release. The agent runs on the release's python3 (pyproject: >=3.11,<3.14): bookworm has
# 3.11, trixie 3.13. The wheelhouse is downloaded for that Python and glibc (below).
SUITE="${NAILA_IMAGE_SUITE:-bookworm}"
case "$SUITE" in
  bookworm) IMAGE_PYTHON=3.11 IMAGE_GLIBC_MINOR=36 ;;
  trixie) IMAGE_PYTHON=3.13 IMAGE_GLIBC_MINOR=41 ;;
  *) IMAGE_PYTHON="${NAILA_IMAGE_PYTHON:?set NAILA_IMAGE_PYTHON for suite $SUITE}"
     IMAGE_GLIBC_MINOR="${NAILA_IMAGE_GLIBC_MINOR:?set NAILA_IMAGE_GLIBC_MINOR for suite $SUITE}" ;;
esac
ARCH=arm64
COMPONENTS="main non-free-firmware"

# Mirrors used for the build (--mirror / --security-mirror / --snapshot override them).
MIRROR="${NAILA_IMAGE_MIRROR:-http://deb.debian.org/debian}"
SECURITY_MIRROR="${NAILA_IMAGE_SECURITY_MIRROR:-http://deb.debian.org/debian-security}"
# Mirrors written into the image's /etc/apt/sources.list (what the device updates from).
IMAGE_MIRROR="${NAILA_IMAGE_IMAGE_MIRROR:-http://deb.debian.org/debian}"
IMAGE_SECURITY_MIRROR="${NAILA_IMAGE_IMAGE_SECURITY_MIRROR:-http://deb.debian.org/debian-security}"

# Debian packages in the image (no Recommends). Sorted within each group.
PACKAGES_BOOT=(
  firmware-brcm80211   # Pi 3/4 Wi-Fi firmware (non-free-firmware)
  initramfs-tools
  linux-image-arm64    # Debian's kernel (6.1): Pi 3 and 4 device trees
  raspi-firmware       # GPU boot firmware + the hook that fills /boot/firmware
  zstd                 # initramfs compression
)
PACKAGES_SYSTEM=(
  cloud-guest-utils    # growpart: grow the root partition at first boot
  dbus
  dosfstools
  e2fsprogs
  fdisk
  iproute2
  kmod
  less
  nano
  netbase
  procps
  systemd-sysv
  udev
  unattended-upgrades  # security updates; on/off with UNATTENDED_UPGRADES in naila.conf
)
PACKAGES_NETWORK=(
  ca-certificates
  iputils-ping
  iw
  openssh-server
  systemd-resolved     # DNS + mDNS (<hostname>.local)
  systemd-timesyncd    # the Pi has no RTC
  wireless-regdb
  wpasupplicant
)
PACKAGES_AGENT=(
  alsa-utils
  libopus0             # opuslib (ctypes)
  libportaudio2        # sounddevice
  libspeexdsp1         # the echo canceller (device_agent/speex_ctypes.py binds it with ctypes)
  python3              # IMAGE_PYTHON
  python3-venv
)

# Packages for the throw-away arm64 chroot that compiles requirements with no aarch64 wheel.
BUILDER_PACKAGES=(libspeexdsp-dev python3-dev python3-pip python3-setuptools python3-wheel swig)
# Requirements of the device extra that have no aarch64 wheel on PyPI: built from the sdist
# in that chroot. None today (the speexdsp sdist was the last; the agent binds libspeexdsp1 with ctypes).
SOURCE_BUILD="${NAILA_IMAGE_SOURCE_BUILD:-}"

# Disk layout: MBR (the Pi 3 boot ROM cannot read GPT), 4 MiB aligned.
BOOT_LABEL=RASPIFIRM     # same labels as Debian's raspi images
ROOT_LABEL=RASPIROOT
BOOT_START_MIB=4
BOOT_SIZE_MIB="${NAILA_IMAGE_BOOT_SIZE_MIB:-256}"
# Free space left in the root filesystem of the image; it grows to the card at first boot.
ROOT_HEADROOM_MIB="${NAILA_IMAGE_ROOT_HEADROOM_MIB:-384}"

ZSTD_LEVEL="${NAILA_IMAGE_ZSTD_LEVEL:-12}"
