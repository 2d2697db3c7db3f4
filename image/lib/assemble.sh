# shellcheck shell=bash
# Put a customized rootfs tree into a partitioned SD card image without loop devices or
# mounts (sourced by build.sh): /boot/firmware -> FAT32 (mkfs.vfat + mcopy), the rest ->
# ext4 (mkfs.ext4 -d), an MBR (sfdisk) and dd at the partitions' offsets.
# Uses: HERE VERSION SDE BOOT_LABEL ROOT_LABEL BOOT_START_MIB BOOT_SIZE_MIB ROOT_HEADROOM_MIB.

# Stable identifiers derived from the version and SOURCE_DATE_EPOCH (no randomness).
stable_hex() { printf 'naila-image %s %s %s' "$VERSION" "$SDE" "$1" | sha256sum | cut -c1-"$2"; }
stable_uuid() {
  local h; h=$(stable_hex "$1" 32)
  printf '%s-%s-4%s-a%s-%s\n' "${h:0:8}" "${h:8:4}" "${h:13:3}" "${h:17:3}" "${h:20:12}"
}

# Copy a directory tree into a FAT image in sorted order (mtools: no mount needed).
fat_fill() {
  local fat=$1 src=$2 p
  export MTOOLS_SKIP_CHECK=1
  while IFS= read -r -d '' p; do
    p=${p#./}
    if [ -d "$src/$p" ]; then
      mmd -i "$fat" "::/$p"
    else
      mcopy -i "$fat" -m -o "$src/$p" "::/$p"
    fi
  done < <(cd "$src" && find . -mindepth 1 -print0 | LC_ALL=C sort -z)
}

# mke2fs 1.47.0 -d copies each file's ctime and atime from the build tree, which no
# SOURCE_DATE_EPOCH can fix: set both to SOURCE_DATE_EPOCH on every used inode (the root
# directory and inodes from the first non-reserved one on), with debugfs.
ext4_normalize_times() {
  local fs=$1
  dumpe2fs "$fs" 2>/dev/null | python3 -c '
import re, sys
text = sys.stdin.read()
per_group = int(re.search(r"^Inodes per group:\s+(\d+)", text, re.M).group(1))
first = int(re.search(r"^First inode:\s+(\d+)", text, re.M).group(1))
epoch = sys.argv[1]
groups = re.findall(r"^Group (\d+):.*?^\s+Free inodes: ?([^\n]*)", text, re.M | re.S)
for g, free in groups:
    lo = int(g) * per_group + 1
    used = set(range(lo, lo + per_group))
    for part in filter(None, (x.strip() for x in free.split(","))):
        a, _, b = part.partition("-")
        used -= set(range(int(a), int(b or a) + 1))
    for ino in sorted(used):
        if ino == 2 or ino >= first:
            print(f"sif <{ino}> ctime @{epoch}")
            print(f"sif <{ino}> atime @{epoch}")
' "$SDE" >"$fs.times"
  echo "ssv wtime @$SDE" >>"$fs.times"  # debugfs's own write would stamp the current time
  E2FSPROGS_FAKE_TIME=$SDE debugfs -w -f "$fs.times" "$fs" >/dev/null 2>"$fs.times.err" \
    || die "debugfs could not normalize the inode times: $(tail -n3 "$fs.times.err")"
  rm -f "$fs.times" "$fs.times.err"
}

restore_boot_files() {
  find "$1/boot" -mindepth 1 -maxdepth 1 -print0 | xargs -0r mv -t "$2/boot/firmware"
}

assemble_image() {
  local r=$1 w=$2 img=$3
  rm -rf "$w"; mkdir -p "$w/boot"

  # The boot partition's files leave the tree (the empty mount point stays) and come back
  # afterwards, so the tree can be assembled again.
  (cd "$r/boot/firmware" && find . -mindepth 1 -maxdepth 1 -print0 | xargs -0r mv -t "$w/boot")
  # shellcheck disable=SC2064
  trap "restore_boot_files '$w' '$r'" EXIT
  touch --date="@$SDE" "$r/boot/firmware"  # the moves changed its mtime

  local boot_used root_kib root_mib files inodes
  boot_used=$(du -s -m "$w/boot" | cut -f1)
  [ "$boot_used" -lt $(( BOOT_SIZE_MIB * 9 / 10 )) ] \
    || die "boot files ($boot_used MiB) do not fit the $BOOT_SIZE_MIB MiB boot partition"
  root_kib=$(du -s -x -k "$r" | cut -f1)
  files=$(find "$r" -xdev | wc -l)
  root_mib=$(( (root_kib * 11 / 10 / 1024 + ROOT_HEADROOM_MIB + 3) / 4 * 4 ))
  inodes=$(( root_mib * 1024 * 1024 / 16384 ))
  if [ "$inodes" -lt $(( files * 3 / 2 )) ]; then
    root_mib=$(( (files * 3 / 2 * 16384 / 1048576 + 3) / 4 * 4 ))
  fi
  log "boot: $boot_used MiB of files in $BOOT_SIZE_MIB MiB FAT32; root: $(( root_kib / 1024 )) MiB, $files files in $root_mib MiB ext4"

  E2FSPROGS_FAKE_TIME=$SDE MKE2FS_CONFIG="$HERE/files/mke2fs.conf" \
    mkfs.ext4 -q -F -t ext4 -L "$ROOT_LABEL" -U "$(stable_uuid root)" \
      -E "hash_seed=$(stable_uuid hash),nodiscard,root_owner=0:0" -m 2 \
      -d "$r" "$w/root.ext4" "${root_mib}M" || die "mkfs.ext4 -d failed"
  ext4_normalize_times "$w/root.ext4"
  e2fsck -fn "$w/root.ext4" >/dev/null || die "the new ext4 filesystem does not pass e2fsck"

  truncate -s "${BOOT_SIZE_MIB}M" "$w/boot.vfat"
  # --invariant: no clock-dependent fields (it also fixes the volume id: 1234-ABCD).
  mkfs.vfat -F 32 -n "$BOOT_LABEL" --invariant "$w/boot.vfat" >/dev/null
  fat_fill "$w/boot.vfat" "$w/boot"
  fsck.vfat -n "$w/boot.vfat" >/dev/null || die "the new FAT filesystem does not pass fsck.vfat"

  local total=$(( BOOT_START_MIB + BOOT_SIZE_MIB + root_mib ))
  rm -f "$img"
  truncate -s "${total}M" "$img"
  sfdisk --quiet --no-reread --no-tell-kernel "$img" <<SFDISK
label: dos
label-id: 0x$(stable_hex disk 8)
unit: sectors
sector-size: 512

start=$(( BOOT_START_MIB * 2048 )), size=$(( BOOT_SIZE_MIB * 2048 )), type=c
start=$(( (BOOT_START_MIB + BOOT_SIZE_MIB) * 2048 )), size=$(( root_mib * 2048 )), type=83
SFDISK
  dd if="$w/boot.vfat" of="$img" bs=1M seek="$BOOT_START_MIB" conv=notrunc,sparse status=none
  dd if="$w/root.ext4" of="$img" bs=1M seek=$(( BOOT_START_MIB + BOOT_SIZE_MIB )) conv=notrunc,sparse status=none
  rm -f "$w/boot.vfat" "$w/root.ext4"
  restore_boot_files "$w" "$r"
  touch --date="@$SDE" "$r/boot/firmware"
  trap - EXIT
  touch --date="@$SDE" "$img"
  log "image: $img ($total MiB)"
}
