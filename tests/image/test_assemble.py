"""image/lib/assemble.sh on a tiny tree: partition table, labels, contents, reproducibility.

No root, no loop devices: the same mkfs.ext4 -d / mkfs.vfat + mcopy / sfdisk / dd path as the
real build, on a few files (about a second). Skipped where the tools are not installed.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

pytestmark = [
    pytest.mark.unit,
    pytest.mark.skipif(
        any(shutil.which(t) is None for t in ("mkfs.ext4", "mkfs.vfat", "mcopy", "sfdisk", "debugfs", "dumpe2fs")),
        reason="needs e2fsprogs, dosfstools, mtools, fdisk",
    ),
]

REPO = Path(__file__).resolve().parents[2]
SDE = 1700000000


def make_tree(root: Path) -> None:
    (root / "boot/firmware/overlays").mkdir(parents=True)
    (root / "boot/firmware/config.txt").write_text("arm_64bit=1\n")
    (root / "boot/firmware/naila.conf").write_text("DEVICE_ID=\n")
    (root / "boot/firmware/overlays/x.dtbo").write_bytes(b"\0" * 3000)
    (root / "etc").mkdir()
    (root / "etc/with space").write_text("spaces\n")
    (root / "etc/hostname").write_text("naila\n")
    (root / "etc/link").symlink_to("hostname")
    for p in root.rglob("*"):
        os.utime(p, (SDE - 100, SDE - 100), follow_symlinks=False)
    os.utime(root, (SDE - 100, SDE - 100))


def assemble(tree: Path, work: Path, img: Path) -> None:
    script = f"""
set -euo pipefail
HERE={REPO}/image
. "$HERE/config.sh"; . "$HERE/lib/common.sh"; . "$HERE/lib/assemble.sh"
VERSION=test SDE={SDE} BOOT_SIZE_MIB=64 ROOT_HEADROOM_MIB=16
assemble_image "{tree}" "{work}" "{img}"
"""
    env = {**os.environ, "TZ": "UTC", "SOURCE_DATE_EPOCH": str(SDE), "LC_ALL": "C.UTF-8"}
    r = subprocess.run(["bash", "-c", script], capture_output=True, text=True, env=env, check=False)
    assert r.returncode == 0, r.stderr


def sha256(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def test_assemble_is_reproducible_and_laid_out_for_the_pi(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    tree.mkdir()
    make_tree(tree)
    a, b = tmp_path / "a.img", tmp_path / "b.img"
    assemble(tree, tmp_path / "w", a)
    (tree / "etc/hostname").chmod(0o644)  # new ctime, same content
    (tree / "etc/hostname").read_text()  # new atime
    time.sleep(1.1)  # a clock-dependent field would now differ
    assemble(tree, tmp_path / "w", b)
    assert sha256(a) == sha256(b)
    # The boot files are back in the tree afterwards.
    assert (tree / "boot/firmware/config.txt").exists()

    table = json.loads(subprocess.run(["sfdisk", "-J", str(a)], capture_output=True, check=True).stdout)
    parts = table["partitiontable"]["partitions"]
    assert table["partitiontable"]["label"] == "dos"  # the Pi 3 boot ROM needs MBR
    assert [p["type"] for p in parts] == ["c", "83"]
    assert parts[0]["start"] == 4 * 2048 and parts[0]["size"] == 64 * 2048

    fat = f"{a}@@{parts[0]['start'] * 512}"
    env = {**os.environ, "MTOOLS_SKIP_CHECK": "1"}
    info = subprocess.run(["minfo", "-i", fat, "::"], capture_output=True, text=True, env=env, check=True).stdout
    assert "RASPIFIRM" in info
    cfg = subprocess.run(["mtype", "-i", fat, "::/config.txt"], capture_output=True, text=True, env=env, check=True)
    assert cfg.stdout == "arm_64bit=1\n"
    subprocess.run(["mtype", "-i", fat, "::/overlays/x.dtbo"], capture_output=True, env=env, check=True)

    ext4 = tmp_path / "root.ext4"
    with a.open("rb") as src, ext4.open("wb") as dst:
        src.seek(parts[1]["start"] * 512)
        dst.write(src.read(parts[1]["size"] * 512))
    header = subprocess.run(["dumpe2fs", "-h", str(ext4)], capture_output=True, text=True, check=True).stdout
    assert "Filesystem volume name:   RASPIROOT" in header
    stamps = [line.split(":", 1)[1].strip() for line in header.splitlines() if line.startswith("Last write time")]
    created = [line.split(":", 1)[1].strip() for line in header.splitlines() if line.startswith("Filesystem created")]
    assert stamps == created  # both SOURCE_DATE_EPOCH

    def debugfs(cmd: str) -> str:
        return subprocess.run(["debugfs", "-R", cmd, str(ext4)], capture_output=True, text=True, check=True).stdout

    assert debugfs('cat "/etc/with space"') == "spaces\n"
    assert "Fast link dest" in debugfs("stat /etc/link")
    assert debugfs("ls /boot/firmware").split()[:2]  # the mount point exists ...
    assert "config.txt" not in debugfs("ls /boot/firmware")  # ... and is empty
    stat = debugfs("stat /etc/hostname")
    assert f"ctime: {SDE:#x}" in stat and f"atime: {SDE:#x}" in stat
