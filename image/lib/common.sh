# shellcheck shell=bash
# Helpers shared by build.sh and boot_test.sh: logging, timing, checks.

_t0=$(date +%s)

log() { printf '[%5ss] %s\n' "$(( $(date +%s) - _t0 ))" "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# time_stage NAME CMD...: run CMD, log and record its duration in $TIMINGS (if set).
time_stage() {
  local name=$1; shift
  local start end
  start=$(date +%s)
  log "== $name"
  "$@"
  end=$(date +%s)
  log "== $name done in $(( end - start )) s"
  if [ -n "${TIMINGS:-}" ]; then
    printf '%s\t%s\n' "$name" "$(( end - start ))" >>"$TIMINGS"
  fi
}

need_cmds() {
  local missing=() c
  for c in "$@"; do
    command -v "$c" >/dev/null 2>&1 || missing+=("$c")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    die "missing commands: ${missing[*]} (on Debian: apt-get install $HOST_PACKAGES)"
  fi
}

# Debian packages the build host needs (bookworm or newer).
HOST_PACKAGES="mmdebstrap qemu-user-static binfmt-support arch-test dosfstools mtools fdisk e2fsprogs zstd python3 python3-venv git"

# Make arm64 binaries runnable through qemu-user-static (binfmt_misc), as root.
ensure_binfmt() {
  if [ ! -e /proc/sys/fs/binfmt_misc/status ]; then
    mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc \
      || die "cannot mount binfmt_misc (needs root, or a privileged container)"
  fi
  if [ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]; then
    update-binfmts --enable qemu-aarch64 >/dev/null 2>&1 || true
  fi
  arch-test arm64 >/dev/null 2>&1 \
    || die "arm64 binaries do not run here: install qemu-user-static binfmt-support and run update-binfmts --enable qemu-aarch64"
}

# sha256 of stdin, hex only
sha256_stdin() { sha256sum | cut -c1-64; }
