"""scripts/install-pi-os.sh, the one command that puts the device agent on Raspberry Pi OS, run
here under a DESTDIR root: the files, modes and unit it installs, the device.env it derives from
`naila init`'s naila.conf (with the SD image's checks, then the real agent's `naila config
--check`), and the system commands it would run. The boundary fake is `python3 -m venv` + pip (no
PyPI here): a python3 on PATH that records the call and makes a venv whose pip records its
arguments and whose `naila` is this checkout's; every other python3 call is the real one."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from naila import provision

pytestmark = pytest.mark.unit
REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts/install-pi-os.sh"
VENV = "opt/naila/venv"
REAL_NAILA = Path(sys.executable).parent / "naila"

FAKE_PYTHON = """#!/bin/bash
# python3 -m venv [--clear] --system-site-packages DIR: a venv whose pip and naila record their calls.
if [ "$1 $2" = "-m venv" ]; then
  echo "python3 $*" >> "$LOG"
  dir=${!#}
  mkdir -p "$dir/bin"
  ln -sf "$REAL_PYTHON" "$dir/bin/python"
  site=false; case " $* " in *" --system-site-packages "*) site=true ;; esac
  echo "include-system-site-packages = $site" > "$dir/pyvenv.cfg"
  printf '#!/bin/bash\\necho "pip $*" >> "$LOG"\\nln -sf "$NAILA_WRAPPER" "%s/bin/naila"\\n' "$dir" > "$dir/bin/pip"
  chmod +x "$dir/bin/pip"
  exit 0
fi
exec "$REAL_PYTHON" "$@"
"""

# The image's checks run `naila config` with a clean environment: the paths are written in.
NAILA_WRAPPER = """#!/bin/bash
echo "naila $*" >> {log}
exec {naila} "$@"
"""


@pytest.fixture(scope="module")
def household(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("hh") / "household"
    assert (
        provision.main(
            [
                "-o",
                str(out),
                "--hub",
                "naila-hub.local,192.168.1.10",
                "--ai-server",
                "gpu.local",
                "--device",
                "kitchen=Kitchen",
            ]
        )
        == 0
    )
    return out


@pytest.fixture
def fakes(tmp_path: Path) -> dict[str, str]:
    bin_dir = tmp_path / "fakebin"
    bin_dir.mkdir()
    (bin_dir / "python3").write_text(FAKE_PYTHON)
    (tmp_path / "naila-wrapper").write_text(NAILA_WRAPPER.format(log=tmp_path / "calls.log", naila=REAL_NAILA))
    for p in (bin_dir / "python3", tmp_path / "naila-wrapper"):
        p.chmod(0o755)
    return {
        "PATH": f"{bin_dir}:/usr/bin:/bin",
        "LOG": str(tmp_path / "calls.log"),
        "REAL_PYTHON": sys.executable,
        "NAILA_WRAPPER": str(tmp_path / "naila-wrapper"),
        "DESTDIR": str(tmp_path / "root"),
    }


def install(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=300, check=False
    )


def calls(env: dict[str, str]) -> list[str]:
    log = Path(env["LOG"])
    return log.read_text().splitlines() if log.exists() else []


def files(root: Path) -> dict[str, int]:
    """Every installed file outside the venv, with its mode."""
    return {
        "/" + str(p.relative_to(root)): stat.S_IMODE(p.stat().st_mode)
        for p in root.rglob("*")
        if p.is_file() and not str(p.relative_to(root)).startswith(VENV)
    }


def test_camera_device_from_its_naila_init_folder(household: Path, fakes: dict[str, str]) -> None:
    root = Path(fakes["DESTDIR"])
    r = install(fakes, "--camera", str(household / "devices/kitchen"))
    assert r.returncode == 0, r.stderr
    assert files(root) == {
        "/etc/naila/device.env": 0o640,
        "/etc/naila/ca.crt": 0o644,
        "/etc/systemd/system/naila-device.service": 0o644,
        "/etc/systemd/system/naila-device.service.d/50-pi-os.conf": 0o644,
    }
    assert (root / "etc/systemd/system/naila-device.service").read_bytes() == (
        REPO / "device_agent/naila-device.service"
    ).read_bytes()
    assert (root / "etc/naila/ca.crt").read_bytes() == (household / "devices/kitchen/naila-ca.crt").read_bytes()

    env = provision.read_env((root / "etc/naila/device.env").read_text())
    conf = provision.read_env((household / "devices/kitchen/naila.conf").read_text())
    assert env["DEVICE_ID"] == "kitchen" and env["DEVICE_ROOM"] == "Kitchen"
    assert env["DEVICE_HUB_URL"] == "https://naila-hub.local:8443"
    assert env["DEVICE_HUB_TOKEN"] == conf["HUB_TOKEN"] and env["MQTT_PASSWORD"] == conf["MQTT_PASSWORD"]
    assert (env["MQTT_HOST"], env["MQTT_PORT"], env["MQTT_TLS"], env["MQTT_USERNAME"]) == (
        "naila-hub.local",
        "8883",
        "true",
        "kitchen",
    )
    # The CA file both TLS clients check against is where the script put it.
    assert env["DEVICE_HUB_CA"] == env["MQTT_CA_FILE"] == "/etc/naila/ca.crt"
    # The household folder is not a card: its naila.conf keeps its secrets.
    assert conf["HUB_TOKEN"]

    said = r.stdout
    assert (
        "would run: apt-get install -y --no-install-recommends python3-venv libopus0 libspeexdsp1 "
        "libportaudio2 alsa-utils python3-lgpio python3-picamera2"
    ) in said
    assert "would run: useradd --system --user-group --home-dir /var/lib/naila" in said
    assert "would run: usermod -a -G audio,video,gpio naila" in said
    for step in ("daemon-reload", "enable naila-device.service", "restart naila-device.service"):
        assert f"would run: systemctl {step}" in said
    venv = root / VENV
    assert calls(fakes) == [
        f"python3 -m venv --clear --system-site-packages {venv}",
        f"pip install --disable-pip-version-check {REPO}[device] numpy<2",
    ]

    # Again (a git pull, a changed naila.conf): the venv stays, pip runs again, same files, and now
    # the installed agent judges the settings (its table catches typos, then `naila config --check`).
    Path(fakes["LOG"]).unlink()
    before = {p: (root / p.lstrip("/")).read_bytes() for p in files(root)}
    r = install(fakes, "--camera", str(household / "devices/kitchen"))
    assert r.returncode == 0, r.stderr
    assert {p: (root / p.lstrip("/")).read_bytes() for p in files(root)} == before
    again = calls(fakes)
    assert not any(c.startswith("python3 -m venv") for c in again)
    assert "naila config" in again and "naila config --check" in again
    assert again[-1] == f"pip install --disable-pip-version-check {REPO}[device] numpy<2"


def test_without_camera_or_configuration_the_unit_waits(fakes: dict[str, str]) -> None:
    root = Path(fakes["DESTDIR"])
    r = install(fakes)
    assert r.returncode == 0, r.stderr
    assert "python3-picamera2" not in r.stdout
    assert calls(fakes)[-1] == f"pip install --disable-pip-version-check {REPO}[device]"
    assert "/etc/naila/device.env" not in files(root)
    assert "would run: systemctl enable naila-device.service" in r.stdout
    assert "restart" not in r.stdout and "no configuration yet" in r.stdout
    # The drop-in makes the enabled unit wait for device.env instead of failing.
    dropin = (root / "etc/systemd/system/naila-device.service.d/50-pi-os.conf").read_text()
    assert "ConditionPathExists=/etc/naila/device.env" in dropin.splitlines()


def test_a_wrong_naila_conf_stops_before_anything_changes(tmp_path: Path, fakes: dict[str, str]) -> None:
    conf = tmp_path / "naila.conf"
    conf.write_text("DEVICE_ID=kitchen sink\nMQTT_PORT=1883\n")
    r = install(fakes, str(conf))
    assert r.returncode == 1
    assert f"{conf}: line 1: DEVICE_ID: 'kitchen sink': must be 1-64 of letters" in r.stderr
    assert f"{conf}: line 2: MQTT_PORT: set MQTT_URL instead in naila.conf" in r.stderr
    assert f"{conf}: HUB_URL: is required" in r.stderr
    assert "fix them and run this again" in r.stderr
    assert not Path(fakes["DESTDIR"]).exists() and not calls(fakes)
    assert "apt-get" not in r.stdout


def test_a_typo_is_caught_by_the_installed_agent(tmp_path: Path, fakes: dict[str, str]) -> None:
    assert install(fakes).returncode == 0  # the agent is installed (its naila is this checkout's)
    conf = tmp_path / "naila.conf"
    conf.write_text("DEVICE_ID=kitchen\nHUB_URL=http://naila-hub.local:8080\nDEVICE_CAMRA=v4l2\n")
    r = install(fakes, str(conf))
    assert r.returncode == 1
    assert "line 3: DEVICE_CAMRA: unknown setting (did you mean DEVICE_CAMERA?)" in r.stderr
    assert not (Path(fakes["DESTDIR"]) / "etc/naila/device.env").exists()


def test_dry_run_writes_nothing(household: Path, fakes: dict[str, str]) -> None:
    r = install({**fakes, "DESTDIR": ""}, "--dry-run", "--camera", str(household / "devices/kitchen"))
    assert r.returncode == 0, r.stderr
    assert "would install /etc/naila/device.env (0640 root:naila)" in r.stdout
    assert "would run: python3 -m venv --clear --system-site-packages /opt/naila/venv" in r.stdout
    assert not Path(fakes["DESTDIR"]).exists() and not calls(fakes)


def test_unit_and_dropin_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    exe = shutil.which("systemd-analyze")
    if exe is None:
        pytest.skip("systemd-analyze not installed")
    unit = tmp_path / "naila-device.service"
    unit.write_text(
        (REPO / "device_agent/naila-device.service").read_text().replace("/opt/naila/venv/bin/naila", sys.executable)
    )
    (tmp_path / "naila-device.service.d").mkdir()
    shutil.copy(REPO / "deploy/systemd/naila-device.service.d/50-pi-os.conf", tmp_path / "naila-device.service.d")
    result = subprocess.run(
        [exe, "verify", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "SYSTEMD_UNIT_PATH": f"{tmp_path}:"},
        check=False,
    )
    problems = [ln for ln in (result.stdout + result.stderr).splitlines() if "naila-device" in ln]
    assert result.returncode == 0 and not problems, result.stdout + result.stderr


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck not installed")
def test_shellcheck_clean() -> None:
    r = subprocess.run(["shellcheck", "-x", str(SCRIPT)], capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stdout
