"""Fast static checks of the SD image build (image/): the image itself is built and
boot-tested by hand (image/build.sh, image/boot_test.sh: ~20 min), not in CI."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
IMAGE = REPO / "image"
OVERLAY = IMAGE / "rootfs"
UNITS = OVERLAY / "etc/systemd/system"
BASH_SCRIPTS = sorted([*IMAGE.glob("*.sh"), *IMAGE.glob("lib/*.sh")])


def unit(path: Path) -> dict[str, list[tuple[str, str]]]:
    """A systemd unit file: section -> [(key, value), ...] in order (keys may repeat)."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current = None
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = line.strip("[]")
            sections.setdefault(current, [])
            continue
        assert current is not None, f"{path}: {line!r} outside a section"
        key, sep, value = line.partition("=")
        assert sep, f"{path}: {line!r} is not Key=Value"
        sections[current].append((key.strip(), value.strip()))
    return sections


def values(u: dict[str, list[tuple[str, str]]], section: str, key: str) -> list[str]:
    return [v for k, v in u.get(section, []) if k == key]


def config_array(name: str) -> list[str]:
    out = subprocess.run(
        ["bash", "-c", f'. "$1"; printf "%s\\n" "${{{name}[@]}}"', "-", str(IMAGE / "config.sh")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return out.split()


def config_value(name: str) -> str:
    return subprocess.run(
        ["bash", "-c", f'. "$1"; printf "%s" "${name}"', "-", str(IMAGE / "config.sh")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout


# --------------------------------------------------------------------------- scripts


@pytest.mark.parametrize("script", BASH_SCRIPTS, ids=lambda p: str(p.relative_to(REPO)))
def test_bash_scripts_parse(script: Path) -> None:
    subprocess.run(["bash", "-n", str(script)], check=True)


def test_posix_sh_scripts_parse() -> None:
    sh = shutil.which("dash") or shutil.which("sh")
    assert sh
    for script in [OVERLAY / "usr/local/sbin/naila-growfs"]:
        assert script.read_text().startswith("#!/bin/sh\n")
        assert os.access(script, os.X_OK), f"{script} must be executable (git mode 755)"
        subprocess.run([sh, "-n", str(script)], check=True)


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck not installed")
def test_shellcheck_warnings() -> None:
    scripts = [str(p.relative_to(REPO)) for p in BASH_SCRIPTS] + ["image/rootfs/usr/local/sbin/naila-growfs"]
    r = subprocess.run(
        ["shellcheck", "-x", "-S", "warning", *scripts], cwd=REPO, capture_output=True, text=True, check=False
    )
    assert r.returncode == 0, r.stdout


@pytest.mark.parametrize("script", ["build.sh", "boot_test.sh"])
def test_help_works_without_root(script: str) -> None:
    r = subprocess.run(["bash", str(IMAGE / script), "--help"], capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stderr
    assert "--out" in r.stdout


def test_validator_is_standalone_python() -> None:
    src = (OVERLAY / "usr/local/lib/naila/bootconfig.py").read_text()
    assert src.startswith("#!/usr/bin/python3\n")
    imports = set(re.findall(r"^(?:from|import) ([A-Za-z_.]+)", src, re.MULTILINE))
    assert not {i.split(".")[0] for i in imports} & {"shared", "naila", "device_agent", "pydantic"}


# --------------------------------------------------------------------------- units


def test_agent_dropin_waits_for_valid_config_and_runs_unprivileged() -> None:
    u = unit(UNITS / "naila-device.service.d/50-image.conf")
    assert values(u, "Unit", "ConditionPathExists") == ["/etc/naila/device.env"]
    assert "naila-config.service" in " ".join(values(u, "Unit", "After"))
    assert values(u, "Service", "User") == ["naila"]
    assert values(u, "Service", "Group") == ["naila"]
    assert values(u, "Service", "SupplementaryGroups") == ["audio video"]
    assert values(u, "Service", "EnvironmentFile") == ["/etc/naila/device.env"]
    assert values(u, "Service", "ExecStart") == ["", "/opt/naila/venv/bin/naila device"]
    # `naila device` exits 2 on a configuration error: no restart loop on it.
    assert values(u, "Service", "RestartPreventExitStatus") == ["2"]


def test_fallback_agent_unit_is_installable_and_sandboxed() -> None:
    u = unit(IMAGE / "files/naila-device.service")
    assert values(u, "Install", "WantedBy") == ["multi-user.target"]
    assert values(u, "Service", "ExecStart") == ["/opt/naila/venv/bin/naila device"]
    assert values(u, "Service", "NoNewPrivileges") == ["yes"]
    assert values(u, "Service", "CapabilityBoundingSet") == [""]
    # The privacy switches' state file sits in the unit's own writable state folder.
    assert values(u, "Service", "Environment") == ["DEVICE_STATE_FILE=/var/lib/naila/device-state.json"]
    assert values(u, "Service", "StateDirectory") == ["naila"]


def test_agent_unit_from_the_package_if_present() -> None:
    shipped = REPO / "device_agent/naila-device.service"
    if not shipped.exists():
        pytest.skip("device_agent/naila-device.service not written yet (the image uses its fallback)")
    u = unit(shipped)
    assert values(u, "Install", "WantedBy"), "the image enables the unit: it needs [Install] WantedBy="
    assert any("naila device" in v for v in values(u, "Service", "ExecStart"))
    # The image relies on these: its drop-in sets the same user and file.
    assert values(u, "Service", "User") in ([], ["naila"])
    assert values(u, "Service", "EnvironmentFile") in ([], ["/etc/naila/device.env"], ["-/etc/naila/device.env"])
    assert values(u, "Service", "NoNewPrivileges") == ["yes"]


def test_config_unit_runs_early_every_boot_and_on_change() -> None:
    svc = unit(UNITS / "naila-config.service")
    assert values(svc, "Service", "Type") == ["oneshot"]
    (exec_start,) = values(svc, "Service", "ExecStart")
    assert exec_start == "/usr/bin/python3 /usr/local/lib/naila/bootconfig.py"
    assert (OVERLAY / exec_start.split()[1].lstrip("/")).exists()
    before = " ".join(values(svc, "Unit", "Before"))
    assert "naila-device.service" in before and "network-pre.target" in before and "ssh.service" in before
    assert values(svc, "Install", "WantedBy") == ["multi-user.target"]
    path = unit(UNITS / "naila-config.path")
    assert values(path, "Path", "PathChanged") == ["/boot/firmware/naila.conf"]
    assert values(path, "Path", "Unit") == ["naila-config.service"]
    assert values(path, "Install", "WantedBy") == ["multi-user.target"]


def test_first_boot_units() -> None:
    grow = unit(UNITS / "naila-growfs.service")
    assert values(grow, "Unit", "ConditionPathExists") == ["!/var/lib/naila-image/rootfs-grown"]
    assert values(grow, "Service", "ExecStart") == ["/usr/local/sbin/naila-growfs"]
    keys = unit(UNITS / "naila-ssh-hostkeys.service")
    assert values(keys, "Unit", "ConditionPathExistsGlob") == ["!/etc/ssh/ssh_host_*_key"]
    assert values(keys, "Unit", "Before") == ["ssh.service"]


def test_units_enabled_by_the_build_exist() -> None:
    text = (IMAGE / "lib/customize.sh").read_text()
    enabled = re.search(r"systemctl enable --quiet (.*?)\n\s*systemd-timesyncd", text, re.DOTALL)
    assert enabled
    for name in re.findall(r"(naila-[a-z-]+\.(?:service|path))", enabled.group(1)):
        assert (UNITS / name).exists(), name


# --------------------------------------------------------------------------- security and layout


def test_ssh_is_key_only_and_root_is_locked() -> None:
    conf = (OVERLAY / "etc/ssh/sshd_config.d/50-naila.conf").read_text()
    for line in (
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "PermitEmptyPasswords no",
        "PermitRootLogin prohibit-password",
    ):
        assert re.search(rf"^{line}$", conf, re.MULTILINE), line
    assert "/etc/naila/ssh/%u" in conf
    customize = (IMAGE / "lib/customize.sh").read_text()
    assert "passwd --lock root" in customize
    assert "systemctl mask --quiet systemd-firstboot.service" in customize  # no console prompt
    assert 'rm -f "$r"/etc/ssh/ssh_host_*' in customize
    assert "--shell /usr/sbin/nologin" in customize and "-G audio,video naila" in customize


def test_runtime_packages() -> None:
    agent = config_array("PACKAGES_AGENT")
    for pkg in ("libopus0", "libspeexdsp1", "libportaudio2", "alsa-utils", "python3", "python3-venv"):
        assert pkg in agent
    boot = config_array("PACKAGES_BOOT")
    for pkg in ("raspi-firmware", "linux-image-arm64", "firmware-brcm80211"):
        assert pkg in boot
    system = config_array("PACKAGES_SYSTEM") + config_array("PACKAGES_NETWORK")
    for pkg in ("openssh-server", "unattended-upgrades", "wpasupplicant", "cloud-guest-utils"):
        assert pkg in system
    assert config_value("SUITE") == "bookworm"  # Python 3.11; trixie (3.13) is NAILA_IMAGE_SUITE=trixie


def test_labels_agree_between_partitions_fstab_and_cmdline() -> None:
    boot, root = config_value("BOOT_LABEL"), config_value("ROOT_LABEL")
    fstab = (OVERLAY / "etc/fstab").read_text()
    assert re.search(rf"^LABEL={root}\s+/\s+ext4", fstab, re.MULTILINE)
    assert re.search(rf"^LABEL={boot}\s+/boot/firmware\s+vfat\s+\S*nofail", fstab, re.MULTILINE)
    assert "root=LABEL=$ROOT_LABEL" in (IMAGE / "lib/customize.sh").read_text()


def test_alsa_default_device() -> None:
    conf = (OVERLAY / "etc/asound.conf").read_text()
    assert "pcm.!default" in conf and "plughw" in conf


def test_wheelhouse_targets_the_image_python() -> None:
    build = (IMAGE / "build.sh").read_text()
    assert '--python-version "$IMAGE_PYTHON"' in build and "--only-binary=:all:" in build
    config = (IMAGE / "config.sh").read_text()
    assert "bookworm) IMAGE_PYTHON=3.11 IMAGE_GLIBC_MINOR=36" in config
    assert "trixie) IMAGE_PYTHON=3.13 IMAGE_GLIBC_MINOR=41" in config
    assert "manylinux2014_aarch64" in build
    assert "pip wheel" in build and "--no-deps" in build
    assert "--no-index" in (IMAGE / "lib/customize.sh").read_text()
    assert "SOURCE_DATE_EPOCH" in build


def test_template_keys_are_all_understood() -> None:
    template = (IMAGE / "naila.conf.example").read_text()
    keys = re.findall(r"^([A-Z_]+)=", template, re.MULTILINE)
    src = (OVERLAY / "usr/local/lib/naila/bootconfig.py").read_text()
    for key in keys:
        assert f'"{key}"' in src or key.startswith(("DEVICE_", "AUDIO_")), key


@pytest.mark.parametrize("suite", ["bookworm", "trixie"])
def test_the_image_python_is_one_pyproject_supports(suite: str) -> None:
    from packaging.specifiers import SpecifierSet

    r = subprocess.run(
        ["bash", "-c", '. "$1"; printf "%s %s" "$IMAGE_PYTHON" "$IMAGE_GLIBC_MINOR"', "-", str(IMAGE / "config.sh")],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "NAILA_IMAGE_SUITE": suite},
    )
    python, glibc = r.stdout.split()
    spec = SpecifierSet(tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["requires-python"])
    assert f"{python}.0" in spec and int(glibc) >= 36
