"""The systemd units (deploy/systemd/) and scripts/install-service.sh, without a running systemd:
the units pass `systemd-analyze verify` and keep their sandboxing, and the install script puts
each machine's files from `naila init` in place with the right modes (DESTDIR root)."""

from __future__ import annotations

import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from naila import provision

REPO = Path(__file__).resolve().parents[2]
UNITS = REPO / "deploy/systemd"
SCRIPT = REPO / "scripts/install-service.sh"
SANDBOX = ("NoNewPrivileges=yes", "ProtectSystem=strict", "ProtectHome=yes", "PrivateTmp=yes", "StateDirectory=naila",
           "CapabilityBoundingSet=", "User=naila", "Restart=always", "SystemCallFilter=~@privileged")


def unit_lines(name: str) -> list[str]:
    return [ln.strip() for ln in (UNITS / name).read_text().splitlines() if ln.strip() and not ln.startswith("#")]


@pytest.mark.parametrize(("name", "machine"), [("naila-hub.service", "hub"), ("naila-ai-server.service", "ai-server")])
def test_units_are_sandboxed_and_read_their_env_file(name: str, machine: str) -> None:
    lines = unit_lines(name)
    for directive in SANDBOX:
        assert directive in lines, f"{name}: {directive}"
    assert f"EnvironmentFile=/etc/naila/{machine}.env" in lines
    assert f"ExecStart=/opt/naila/venv/bin/naila {machine}" in lines
    if machine == "hub":
        assert "LimitNOFILE=65536" in lines and "DevicePolicy=closed" in lines


@pytest.mark.parametrize("name", ["naila-hub.service", "naila-ai-server.service"])
def test_units_pass_systemd_analyze_verify(tmp_path: Path, name: str) -> None:
    exe = shutil.which("systemd-analyze")
    if exe is None:
        pytest.skip("systemd-analyze not installed")
    # The venv path of a real install does not exist here: point ExecStart at this interpreter.
    text = (UNITS / name).read_text().replace("/opt/naila/venv/bin/naila", sys.executable)
    (tmp_path / name).write_text(text)
    result = subprocess.run([exe, "verify", str(tmp_path / name)], capture_output=True, text=True, timeout=60)
    problems = [ln for ln in (result.stdout + result.stderr).splitlines() if name in ln]
    assert result.returncode == 0 and not problems, result.stdout + result.stderr


def install(machine: str, src: Path, root: Path) -> str:
    result = subprocess.run(["bash", str(SCRIPT), machine, str(src)],
                            env={"DESTDIR": str(root), "PATH": "/usr/bin:/bin"},
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout


def modes(root: Path) -> dict[str, int]:
    return {"/" + str(p.relative_to(root)): stat.S_IMODE(p.stat().st_mode) for p in root.rglob("*") if p.is_file()}


def test_install_puts_each_machine_in_place(tmp_path: Path) -> None:
    out = tmp_path / "household"
    assert provision.main(["-o", str(out), "--hub", "naila-hub.local", "--ai-server", "gpu.local",
                           "--device", "kitchen"]) == 0
    hub_root, ai_root, broker_root = tmp_path / "nuc", tmp_path / "gpu", tmp_path / "broker"
    said = install("hub", out / "hub", hub_root)
    assert "would run: systemctl enable naila-hub.service" in said
    assert modes(hub_root) == {
        "/etc/naila/hub.env": 0o600, "/etc/naila/hub.key": 0o600, "/etc/naila/hub-client.key": 0o600,
        "/etc/naila/ca.crt": 0o644, "/etc/naila/hub.crt": 0o644, "/etc/naila/hub-client.crt": 0o644,
        "/etc/systemd/system/naila-hub.service": 0o644,
    }
    assert (hub_root / "etc/naila/hub.env").read_bytes() == (out / "hub/hub.env").read_bytes()
    install("ai-server", out / "ai-server", ai_root)
    assert modes(ai_root) == {
        "/etc/naila/ai-server.env": 0o600, "/etc/naila/ai-server.key": 0o600, "/etc/naila/ai-server.crt": 0o644,
        "/etc/naila/ca.crt": 0o644, "/etc/systemd/system/naila-ai-server.service": 0o644,
    }
    install("broker", out / "broker", broker_root)
    assert modes(broker_root) == {
        "/etc/mosquitto/mosquitto.conf": 0o644, "/etc/mosquitto/naila/acl": 0o644,
        "/etc/mosquitto/naila/passwd": 0o640, "/etc/mosquitto/naila/certs/server.key": 0o640,
        "/etc/mosquitto/naila/certs/ca.crt": 0o644, "/etc/mosquitto/naila/certs/server.crt": 0o644,
    }
    # Every path the env files and the broker config name is where the script put it.
    for root, env in ((hub_root, out / "hub/hub.env"), (ai_root, out / "ai-server/ai-server.env")):
        for value in provision.read_env(env.read_text()).values():
            if value.startswith("/etc/"):
                assert (root / value.lstrip("/")).is_file(), value
    conf = (broker_root / "etc/mosquitto/mosquitto.conf").read_text().splitlines()
    for line in conf:
        key, _, value = line.partition(" ")
        if key in ("cafile", "certfile", "keyfile", "password_file", "acl_file"):
            assert (broker_root / value.lstrip("/")).is_file(), line


def test_install_refuses_a_wrong_folder(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    result = subprocess.run(["bash", str(SCRIPT), "hub", str(tmp_path / "empty")],
                            env={"DESTDIR": str(tmp_path / "root"), "PATH": "/usr/bin:/bin"},
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and "hub.env is missing" in result.stderr
    result = subprocess.run(["bash", str(SCRIPT), "toaster", str(tmp_path / "empty")],
                            env={"DESTDIR": str(tmp_path / "root"), "PATH": "/usr/bin:/bin"},
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and "unknown machine" in result.stderr
