#!/usr/bin/env bash
# Build the flashable Raspberry Pi (3/4, arm64) SD image with the NAILA device agent.
#
#   sudo bash image/build.sh [--version X] [--out DIR] [options]
#
# Output in DIR (default image/out): naila-device-<version>-arm64.img, .img.zst, .sha256,
# .manifest.txt (Debian packages + wheels in the image) and .timings.txt.
#
# How: mmdebstrap (arm64 through qemu-user-static) -> customize the tree in a chroot (offline
# venv from an aarch64 wheelhouse prepared on this host) -> mkfs.ext4 -d / mkfs.vfat + mcopy
# -> sfdisk + dd. No loop devices, no mounts of the image: runs in containers and CI runners
# where losetup/kpartx are not available. Needs root (chroot, mknod) and a Debian host.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$HERE")
# shellcheck source=image/config.sh
. "$HERE/config.sh"
# shellcheck source=image/lib/common.sh
. "$HERE/lib/common.sh"

usage() {
  cat <<EOF
usage: bash image/build.sh [options]

  --version X             image version (default: the version in pyproject.toml)
  --out DIR               output directory (default: image/out)
  --cache DIR             cache for the base rootfs, source-built wheels, work tree
                          (default: image/.cache)
  --mirror URL            Debian mirror for the build (default: $MIRROR)
  --security-mirror URL   Debian security mirror (default: $SECURITY_MIRROR)
  --snapshot STAMP        build from snapshot.debian.org at STAMP (e.g. 20250520T000000Z):
                          pins every Debian package for a reproducible rebuild
  --source-date-epoch N   timestamps in the image (default: \$SOURCE_DATE_EPOCH, else the
                          last git commit's time)
  --refresh               rebuild the cached base rootfs and source-built wheels
  --keep-work             keep the customized rootfs tree in the cache after assembling
  --base-tar FILE         development: use this base rootfs tarball (an earlier build's
                          image/.cache/base-*.tar) instead of building or looking one up
  --stages LIST           development: run only these stages (comma-separated) of
                          wheelhouse,source-wheels,base-rootfs,customize,assemble,compress
  -h, --help              this help

The first build takes ~15-20 min on 2 cores (arm64 emulated); later builds reuse the
cached base rootfs (keyed by suite, mirrors, package list and SOURCE_DATE_EPOCH).
EOF
}

VERSION=""
OUT="$HERE/out"
CACHE="$HERE/.cache"
SNAPSHOT=""
SDE="${SOURCE_DATE_EPOCH:-}"
REFRESH=0
KEEP_WORK=0
BASE_TAR=""
STAGES="wheelhouse,source-wheels,base-rootfs,customize,assemble,compress"
while [ $# -gt 0 ]; do
  case "$1" in
    --version) VERSION=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --cache) CACHE=$2; shift 2 ;;
    --mirror) MIRROR=$2; shift 2 ;;
    --security-mirror) SECURITY_MIRROR=$2; shift 2 ;;
    --snapshot) SNAPSHOT=$2; shift 2 ;;
    --source-date-epoch) SDE=$2; shift 2 ;;
    --refresh) REFRESH=1; shift ;;
    --keep-work) KEEP_WORK=1; shift ;;
    --base-tar) BASE_TAR=$(realpath "$2"); shift 2 ;;
    --stages) STAGES=$2; KEEP_WORK=1; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; die "unknown option: $1" ;;
  esac
done

[ "$(id -u)" -eq 0 ] || die "run as root (mmdebstrap --mode=root, chroot, mkfs with root-owned files)"
need_cmds mmdebstrap arch-test update-binfmts mkfs.ext4 mkfs.vfat mcopy mmd sfdisk zstd python3 tar sha256sum
ensure_binfmt

if [ -n "$SNAPSHOT" ]; then
  [[ "$SNAPSHOT" =~ ^[0-9]{8}T[0-9]{6}Z$ ]] || die "--snapshot wants YYYYMMDDTHHMMSSZ, got '$SNAPSHOT'"
  MIRROR="http://snapshot.debian.org/archive/debian/$SNAPSHOT"
  SECURITY_MIRROR="http://snapshot.debian.org/archive/debian-security/$SNAPSHOT"
fi
if [ -z "$VERSION" ]; then
  VERSION=$(python3 -c 'import sys,tomllib; print(tomllib.load(open(sys.argv[1],"rb"))["project"]["version"])' "$REPO/pyproject.toml")
fi
[[ "$VERSION" =~ ^[A-Za-z0-9._+-]+$ ]] || die "--version: only letters, digits and . _ + - ('$VERSION')"
if [ -z "$SDE" ]; then
  SDE=$(git -C "$REPO" log -1 --format=%ct 2>/dev/null || true)
  [ -n "$SDE" ] || die "no git history: pass --source-date-epoch N"
fi
[[ "$SDE" =~ ^[0-9]+$ ]] || die "SOURCE_DATE_EPOCH must be an integer ('$SDE')"
export SOURCE_DATE_EPOCH=$SDE
export LC_ALL=C.UTF-8 TZ=UTC
umask 022

NAME="naila-device-$VERSION-$ARCH"
mkdir -p "$OUT" "$CACHE"
OUT=$(cd "$OUT" && pwd)
CACHE=$(cd "$CACHE" && pwd)
WORK="$CACHE/work"
ROOTFS="$WORK/rootfs"
TIMINGS="$OUT/$NAME.timings.txt"
[[ ",$STAGES," == *,wheelhouse,* ]] && : >"$TIMINGS"
log "building $NAME (SOURCE_DATE_EPOCH=$SDE, mirror $MIRROR)"

# --------------------------------------------------------------------------- wheelhouse
HOSTPY="$CACHE/hostpy/bin/python"

host_python() {
  if [ ! -x "$HOSTPY" ]; then
    python3 -m venv "$CACHE/hostpy" || die "python3 -m venv failed (apt-get install python3-venv)"
  fi
}

# Requirements of the core + device extra, one per line (from pyproject.toml).
device_requirements() {
  "$HOSTPY" - "$REPO/pyproject.toml" <<'PY'
import sys, tomllib
p = tomllib.load(open(sys.argv[1], "rb"))["project"]
for r in sorted(set(p["dependencies"]) | set(p["optional-dependencies"]["device"])):
    print(r)
PY
}

req_name() { sed -E 's/[ ]*[<>=!~;\[].*$//' <<<"$1" | tr 'A-Z_' 'a-z-'; }

is_source_build() {
  local n
  n=$(req_name "$1")
  for s in $SOURCE_BUILD; do [ "$n" = "$(req_name "$s")" ] && return 0; done
  return 1
}

# manylinux tags the suite's aarch64 system accepts (bookworm: glibc 2.36, trixie: 2.41).
platform_args() {
  local v
  echo --platform manylinux2014_aarch64
  for v in $(seq 17 "$IMAGE_GLIBC_MINOR"); do echo --platform "manylinux_2_${v}_aarch64"; done
}

stage_wheelhouse() {
  host_python
  rm -rf "$WORK/wheelhouse" "$WORK/sdists" "$WORK/src"
  mkdir -p "$WORK/wheelhouse" "$WORK/sdists" "$WORK/src"
  local binary=() source=() r
  while IFS= read -r r; do
    if is_source_build "$r"; then source+=("$r"); else binary+=("$r"); fi
  done < <(device_requirements)
  log "aarch64 wheels for: ${binary[*]}"
  # shellcheck disable=SC2046
  "$HOSTPY" -m pip download --quiet --disable-pip-version-check --dest "$WORK/wheelhouse" \
    --only-binary=:all: --implementation cp --python-version "$IMAGE_PYTHON" \
    --abi "cp${IMAGE_PYTHON/./}" --abi abi3 --abi none $(platform_args) "${binary[@]}" \
    || die "pip download failed: a requirement has no aarch64 wheel for Python $IMAGE_PYTHON; add it to SOURCE_BUILD in image/config.sh"
  if [ ${#source[@]} -gt 0 ]; then
    log "sdists to build for arm64: ${source[*]}"
    "$HOSTPY" -m pip download --quiet --disable-pip-version-check --dest "$WORK/sdists" \
      --no-deps --no-binary=:all: "${source[@]}"
  fi
  # The project wheel, built from a clean copy of the tree (tracked + untracked, not ignored).
  if git -C "$REPO" rev-parse --git-dir >/dev/null 2>&1; then
    (cd "$REPO" && git ls-files -z --cached --others --exclude-standard \
      | grep -zv '^image/' | tar --null --no-recursion -T - -cf -) | tar -xf - -C "$WORK/src"
  else
    tar -C "$REPO" --exclude=./.venv --exclude=./.git --exclude=./image -cf - . | tar -xf - -C "$WORK/src"
  fi
  "$HOSTPY" -m pip wheel --quiet --disable-pip-version-check --no-deps --wheel-dir "$WORK/wheelhouse" "$WORK/src" \
    || die "building the naila wheel failed (is pyproject.toml valid?)"
  rm -rf "$WORK/src"
}

# Requirements without an aarch64 wheel: compile them in a throw-away arm64 chroot (cached).
stage_source_wheels() {
  local sdists=() f key dest
  for f in "$WORK"/sdists/*; do [ -e "$f" ] && sdists+=("$f"); done
  [ ${#sdists[@]} -gt 0 ] || { log "no source builds needed"; return 0; }
  # The wheels depend on the sdists and the builder, not on this tree: a fixed timestamp
  # (1980-01-01, the earliest a zip can hold) keeps them reproducible across commits.
  local wheel_epoch=315532800
  key=$( { sha256sum "${sdists[@]}" | cut -c1-64; echo "$SUITE $MIRROR ${BUILDER_PACKAGES[*]} $wheel_epoch"; } | sha256_stdin | cut -c1-16)
  dest="$CACHE/srcwheels/$key"
  if [ "$REFRESH" -eq 1 ]; then rm -rf "$dest"; fi
  if [ ! -d "$dest" ]; then
    log "compiling ${sdists[*]##*/} in an arm64 $SUITE chroot (emulated; cached as $dest)"
    rm -rf "$dest.tmp"; mkdir -p "$dest.tmp"
    local inc; inc=$(IFS=,; echo "${BUILDER_PACKAGES[*]}")
    nice -n 10 mmdebstrap --mode=root --variant=buildd --architectures="$ARCH" --include="$inc" \
      --customize-hook='mkdir -p "$1/build/sdist" "$1/build/wheels"' \
      --customize-hook="copy-in ${sdists[*]} /build/sdist" \
      --customize-hook="chroot \"\$1\" env SOURCE_DATE_EPOCH=$wheel_epoch CFLAGS='-O2 -ffile-prefix-map=/build=.' sh -ec 'cd /build; for s in sdist/*; do tar -xf \"\$s\"; done; for d in */; do case \$d in sdist/|wheels/) continue;; esac; python3 -m pip wheel --no-deps --no-build-isolation --no-index --wheel-dir wheels \"./\$d\"; done'" \
      --customize-hook="sync-out /build/wheels $dest.tmp" \
      "$SUITE" /dev/null "deb $MIRROR $SUITE main" \
      || die "compiling the source-only requirements failed"
    mv "$dest.tmp" "$dest"
  else
    log "using cached source-built wheels $dest"
  fi
  cp "$dest"/*.whl "$WORK/wheelhouse/"
}

# --------------------------------------------------------------------------- base rootfs
all_packages() {
  printf '%s\n' "${PACKAGES_BOOT[@]}" "${PACKAGES_SYSTEM[@]}" "${PACKAGES_NETWORK[@]}" "${PACKAGES_AGENT[@]}" | LC_ALL=C sort -u
}

apt_sources() {
  local comp=$COMPONENTS
  printf 'deb %s %s %s\n' "$1" "$SUITE" "$comp" "$1" "$SUITE-updates" "$comp" "$2" "$SUITE-security" "$comp"
}

BASE_DPKGOPTS=(
  --dpkgopt='path-exclude=/usr/share/man/*'
  --dpkgopt='path-exclude=/usr/share/info/*'
  --dpkgopt='path-exclude=/usr/share/doc/*'
  --dpkgopt='path-include=/usr/share/doc/*/copyright'
  --dpkgopt='path-exclude=/usr/share/locale/*'
  --dpkgopt='path-include=/usr/share/locale/locale.alias'
)

# The kernel's postinst and initramfs-tools' trigger would each build the initramfs (the
# slowest step under emulation): divert update-initramfs while packages are installed, then
# build it once. That run's post-update hook (raspi-firmware) fills /boot/firmware.
BASE_HOOKS=(
  --essential-hook='chroot "$1" dpkg-divert --quiet --local --rename --add /usr/sbin/update-initramfs'
  --essential-hook='printf "#!/bin/sh\necho update-initramfs: deferred by image/build.sh\n" >"$1/usr/sbin/update-initramfs"; chmod 0755 "$1/usr/sbin/update-initramfs"'
  --customize-hook='rm "$1/usr/sbin/update-initramfs"; chroot "$1" dpkg-divert --quiet --local --rename --remove /usr/sbin/update-initramfs'
  --customize-hook='chroot "$1" update-initramfs -c -k all'
  --customize-hook='rm -f "$1/etc/resolv.conf" "$1/etc/hostname"'
)

stage_base() {
  if [ -n "$BASE_TAR" ]; then
    [ -f "$BASE_TAR" ] || die "--base-tar: no such file $BASE_TAR"
    log "using the given base rootfs $BASE_TAR"
    return 0
  fi
  local pkgs key
  pkgs=$(all_packages | paste -sd, -)
  key=$( { echo "$SUITE $ARCH $COMPONENTS $pkgs $SDE $SNAPSHOT"; apt_sources "$MIRROR" "$SECURITY_MIRROR"; \
           printf '%s\n' "${BASE_DPKGOPTS[@]}" "${BASE_HOOKS[@]}"; mmdebstrap --version; } | sha256_stdin | cut -c1-16)
  BASE_TAR="$CACHE/base-$SUITE-$ARCH-$key.tar"
  if [ "$REFRESH" -eq 1 ]; then rm -f "$BASE_TAR"; fi
  if [ -f "$BASE_TAR" ]; then
    log "using cached base rootfs $BASE_TAR (--refresh to rebuild)"
    return 0
  fi
  local aptopts=(--aptopt='Acquire::Languages "none"')
  if [ -n "$SNAPSHOT" ]; then aptopts+=(--aptopt='Acquire::Check-Valid-Until "false"'); fi
  log "mmdebstrap $SUITE $ARCH: $(all_packages | wc -l) packages (+ dependencies), emulated: ~15 min"
  nice -n 10 mmdebstrap --mode=root --format=tar --variant=apt --architectures="$ARCH" --components="$COMPONENTS" \
    --include="$pkgs" "${aptopts[@]}" "${BASE_DPKGOPTS[@]}" "${BASE_HOOKS[@]}" \
    "$SUITE" "$BASE_TAR.tmp" - < <(apt_sources "$MIRROR" "$SECURITY_MIRROR") \
    || die "mmdebstrap failed"
  mv "$BASE_TAR.tmp" "$BASE_TAR"
}

# --------------------------------------------------------------------------- customize + assemble
stage_rootfs() {
  # shellcheck source=image/lib/customize.sh
  . "$HERE/lib/customize.sh"
  chroot_umount "$ROOTFS" 2>/dev/null || true
  rm -rf --one-file-system "$ROOTFS"; mkdir -p "$ROOTFS"
  tar --numeric-owner --xattrs --xattrs-include='*' -xpf "$BASE_TAR" -C "$ROOTFS"
  customize_rootfs "$ROOTFS" "$WORK/wheelhouse"
}

stage_assemble() {
  # shellcheck source=image/lib/assemble.sh
  . "$HERE/lib/assemble.sh"
  assemble_image "$ROOTFS" "$WORK/assemble" "$OUT/$NAME.img"
}

stage_compress() {
  rm -f "$OUT/$NAME.img.zst"
  nice -n 10 zstd -q -T0 "-$ZSTD_LEVEL" --long=27 "$OUT/$NAME.img" -o "$OUT/$NAME.img.zst"
  (cd "$OUT" && sha256sum "$NAME.img" "$NAME.img.zst" >"$NAME.sha256")
}

want() { [[ ",$STAGES," == *,$1,* ]]; }
want wheelhouse && time_stage wheelhouse stage_wheelhouse
want source-wheels && time_stage source-wheels stage_source_wheels
if want base-rootfs || want customize; then time_stage base-rootfs stage_base; fi
want customize && time_stage customize stage_rootfs
want assemble && time_stage assemble stage_assemble
want compress || { log "stages $STAGES done (work tree kept in $WORK)"; exit 0; }
time_stage compress stage_compress
cp "$WORK/manifest.txt" "$OUT/$NAME.manifest.txt"
if [ "$KEEP_WORK" -eq 0 ]; then rm -rf "$WORK"; fi

raw=$(stat -c %s "$OUT/$NAME.img")
zst=$(stat -c %s "$OUT/$NAME.img.zst")
printf 'size-raw-bytes\t%s\nsize-zst-bytes\t%s\n' "$raw" "$zst" >>"$TIMINGS"
log "done: $OUT/$NAME.img ($(( raw / 1048576 )) MiB), .img.zst ($(( zst / 1048576 )) MiB)"
cat "$OUT/$NAME.sha256"
