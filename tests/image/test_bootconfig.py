"""The SD image's first-boot configuration check (image/rootfs/usr/local/lib/naila/bootconfig.py).

Pure logic plus run() against a temporary root directory: no systemd, no root needed.
"""

from __future__ import annotations

import base64
import importlib.util
import os
import stat
import sys
from pathlib import Path
from types import ModuleType

import pytest

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "image/rootfs/usr/local/lib/naila/bootconfig.py"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("naila_image_bootconfig", SCRIPT)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


bc = _load()


def ed25519_key(comment: str = "me@laptop") -> str:
    kind = b"ssh-ed25519"
    blob = len(kind).to_bytes(4, "big") + kind + (32).to_bytes(4, "big") + bytes(range(32))
    return f"ssh-ed25519 {base64.b64encode(blob).decode()} {comment}"


def check(text: str, stored: dict[str, str] | None = None, known: set[str] | None = None):  # type: ignore[no-untyped-def]
    entries, problems = bc.parse_conf(text)
    return bc.validate(entries, stored or {}, known, problems)


def messages(result) -> list[str]:  # type: ignore[no-untyped-def]
    return [str(p) for p in result.problems]


MINIMAL = "DEVICE_ID=kitchen\nHUB_URL=http://192.168.1.10:8080\n"


# --------------------------------------------------------------------------- parsing


def test_parse_comments_quotes_crlf_bom_and_case() -> None:
    text = "\ufeff# comment\r\n\r\ndevice_id = kitchen \r\nDEVICE_ROOM=\"  Living room \"\r\nX='a=b'\r\n"
    entries, problems = bc.parse_conf(text)
    assert problems == []
    assert entries["DEVICE_ID"].value == "kitchen"
    assert entries["DEVICE_ID"].line == 3
    assert entries["DEVICE_ROOM"].value == "  Living room "
    assert entries["X"].value == "a=b"


def test_parse_reports_bad_lines_and_duplicates() -> None:
    entries, problems = bc.parse_conf("DEVICE_ID=a\njust words\nDEVICE_ID=b\n1BAD=x\n")
    assert entries["DEVICE_ID"].value == "a"
    assert [str(p) for p in problems] == [
        "line 2: expected KEY=VALUE (or a # comment)",
        "line 3: DEVICE_ID: given twice (also on line 1)",
        "line 4: expected KEY=VALUE (or a # comment)",
    ]


# --------------------------------------------------------------------------- validation


def test_minimal_config_is_valid_and_defaults_the_broker_to_the_hub_host() -> None:
    r = check(MINIMAL)
    assert r.problems == []
    assert r.env == {
        "DEVICE_ID": "kitchen",
        "DEVICE_HUB_URL": "http://192.168.1.10:8080",
        "MQTT_HOST": "192.168.1.10",
        "MQTT_PORT": "1883",
        "MQTT_TLS": "false",
    }
    assert any("MQTT_URL not set" in w for w in r.warnings)
    assert r.hostname == "kitchen"
    assert r.unattended_upgrades is True
    assert r.wifi is None and r.ssh_keys == [] and r.wipe == []


def test_the_shipped_template_only_lacks_the_two_required_values() -> None:
    r = check((REPO / "image/naila.conf.example").read_text())
    assert messages(r) == [
        f"line {r.problems[0].line}: DEVICE_ID: is required (it is empty)",
        f"line {r.problems[1].line}: HUB_URL: is required (it is empty)",
    ]


@pytest.mark.parametrize(
    ("line", "needle"),
    [
        ("DEVICE_ID=kitchen pi", "DEVICE_ID: 'kitchen pi': must be 1-64 of letters"),
        ("DEVICE_ID=" + "a" * 65, "DEVICE_ID:"),
        ("HUB_URL=htp://hub:8080", "HUB_URL: 'htp://hub:8080' must start with http:// or https://"),
        ("HUB_URL=http://user:pw@hub", "must not contain a user name or password"),
        ("HUB_URL=http://hub:99999", "HUB_URL: 'http://hub:99999' is not a valid URL"),
        ("HUB_URL=http://", "has no host name"),
        ("HUB_URL=http://hub/x?y=1", "must not have a ?query"),
        ("MQTT_URL=tcp://broker", "must start with mqtt:// or mqtts://"),
        ("MQTT_URL=mqtt://u:p@broker", "use MQTT_USERNAME and MQTT_PASSWORD"),
        ("MQTT_URL=mqtt://broker/topic", "must not have a path"),
        ("MQTT_PASSWORD=pw", "MQTT_PASSWORD: is set but MQTT_USERNAME is not"),
        ("WIFI_SSID=" + "x" * 33, "WIFI_SSID: must be 1-32 bytes"),
        ("WIFI_COUNTRY=Germany", "WIFI_COUNTRY: 'GERMANY': must be a two-letter country code"),
        ("WIFI_PASSPHRASE=longenough", "WIFI_PASSPHRASE: is set but WIFI_SSID is not"),
        ("HOSTNAME=-bad-", "HOSTNAME: '-bad-': 1-63 of a-z"),
        ("UNATTENDED_UPGRADES=maybe", "UNATTENDED_UPGRADES: 'maybe': must be yes or no"),
        ("ALSA_CARD=my card", "ALSA_CARD: must be a card index or name"),
        ("SSH_AUTHORIZED_KEY=ssh-ed25519", "expected 'TYPE BASE64 [comment]'"),
        ("SSH_AUTHORIZED_KEY=ssh-ed25519 AAAA!! me", "not valid base64"),
        ("SSH_AUTHORIZED_KEY=ssh-rsa " + ed25519_key().split()[1], "does not match its type"),
        ("SSH_AUTHORIZED_KEY=-----BEGIN OPENSSH PRIVATE KEY----- abc", "this is a PRIVATE key"),
        ("SSH_AUTHORIZED_KEY=ssh-dss AAAA", "unknown key type 'ssh-dss'"),
        ("DEVICE_HUB_URL=http://hub", "DEVICE_HUB_URL: set HUB_URL instead"),
        ("MQTT_HOST=broker", "MQTT_HOST: set MQTT_URL instead"),
        ("HUB_ULR=http://hub", "HUB_ULR: unknown setting (did you mean HUB_URL?)"),
        ("FOO=1", "FOO: unknown setting"),
    ],
)
def test_bad_values_are_reported_with_line_and_key(line: str, needle: str) -> None:
    lines = MINIMAL.splitlines()
    key = line.partition("=")[0]
    at = next((i for i, x in enumerate(lines) if x.startswith(key + "=")), len(lines))
    lines[at : at + 1] = [line]
    r = check("\n".join(lines) + "\n")
    found = [m for m in messages(r) if needle in m]
    assert found, messages(r)
    assert found[0].startswith(f"line {at + 1}: ")
    assert not r.ok()


def test_problems_are_sectioned_so_valid_system_settings_still_apply() -> None:
    r = check("DEVICE_ID=x\nHUB_URL=htp://nope\nSSH_AUTHORIZED_KEY=" + ed25519_key() + "\n")
    assert not r.ok() and not r.ok("agent")
    assert r.ok("ssh") and r.ok("wifi") and r.ok("hostname")
    assert r.ssh_keys == [ed25519_key()]
    r2 = check("garbage line\n" + MINIMAL)
    assert not r2.ok("ssh")  # a malformed file blocks everything


def test_mqtt_url_forms() -> None:
    r = check(MINIMAL + "MQTT_URL=mqtts://broker.lan\nMQTT_USERNAME=pi\n")
    assert (r.env["MQTT_HOST"], r.env["MQTT_PORT"], r.env["MQTT_TLS"]) == ("broker.lan", "8883", "true")
    assert r.env["MQTT_USERNAME"] == "pi"
    r = check(MINIMAL + "MQTT_URL=mqtt://[fd00::5]:1884/\n")
    assert (r.env["MQTT_HOST"], r.env["MQTT_PORT"], r.env["MQTT_TLS"]) == ("fd00::5", "1884", "false")
    assert not r.warnings


def test_hostname_defaults_from_device_id() -> None:
    assert check("DEVICE_ID=Kitchen_Pi.1\nHUB_URL=http://h\n").hostname == "kitchen-pi-1"
    assert check("DEVICE_ID=___\nHUB_URL=http://h\n").hostname == "naila"
    assert check(MINIMAL + "HOSTNAME=Naila-Kitchen\n").hostname == "naila-kitchen"


def test_unattended_upgrades_flag() -> None:
    assert check(MINIMAL + "UNATTENDED_UPGRADES=no\n").unattended_upgrades is False
    assert check(MINIMAL + "UNATTENDED_UPGRADES=Yes\n").unattended_upgrades is True


def test_pass_through_settings_and_typos_against_the_agents_variables() -> None:
    known = {"AUDIO_NOISE_SUPPRESSION", "DEVICE_ROOM", "DEVICE_CAMERA", "MQTT_KEEPALIVE_S"}
    text = MINIMAL + "AUDIO_NOISE_SUPPRESSION=false\nDEVICE_ROOM=Living room\nDEVICE_CAMERA=\n"
    r = check(text, known=known)
    assert r.problems == []
    assert r.env["AUDIO_NOISE_SUPPRESSION"] == "false"
    assert r.env["DEVICE_ROOM"] == "Living room"
    assert "DEVICE_CAMERA" not in r.env  # empty = the agent's default
    r = check(MINIMAL + "AUDIO_NOISE_SUPRESSION=false\n", known=known)
    assert messages(r) == ["line 3: AUDIO_NOISE_SUPRESSION: unknown setting (did you mean AUDIO_NOISE_SUPPRESSION?)"]
    # Without the agent's list (agent not installed) the prefix decides.
    assert check(MINIMAL + "AUDIO_NOISE_SUPRESSION=false\n").problems == []


# --------------------------------------------------------------------------- secrets


def test_secrets_are_stored_and_marked_for_wiping_and_never_echoed() -> None:
    text = MINIMAL + (
        "HUB_TOKEN=tok-SECRET\nMQTT_USERNAME=pi\nMQTT_PASSWORD=pw-SECRET\nWIFI_SSID=Home\nWIFI_PASSPHRASE=wifi-SECRET\n"
    )
    r = check(text)
    assert r.problems == []
    assert r.wipe == ["WIFI_PASSPHRASE", "MQTT_PASSWORD", "HUB_TOKEN"]
    assert r.secrets == {"HUB_TOKEN": "tok-SECRET", "MQTT_PASSWORD": "pw-SECRET", "WIFI_PASSPHRASE": "wifi-SECRET"}
    assert r.env["DEVICE_HUB_TOKEN"] == "tok-SECRET" and r.env["MQTT_PASSWORD"] == "pw-SECRET"
    assert "WIFI_PASSPHRASE" not in r.env  # the agent never sees the Wi-Fi key
    assert r.wifi == bc.Wifi("Home", "wifi-SECRET", None)


def test_empty_secret_keeps_the_stored_one_and_dash_deletes_it() -> None:
    stored = {"MQTT_PASSWORD": "old", "HUB_TOKEN": "tok", "WIFI_PASSPHRASE": "wifi-pass"}
    r = check(MINIMAL + "MQTT_USERNAME=pi\nMQTT_PASSWORD=\nHUB_TOKEN=-\nWIFI_SSID=Home\n", stored)
    assert r.problems == []
    assert r.env["MQTT_PASSWORD"] == "old"
    assert "DEVICE_HUB_TOKEN" not in r.env
    assert r.secrets == {"MQTT_PASSWORD": "old", "WIFI_PASSPHRASE": "wifi-pass"}
    assert r.wipe == ["HUB_TOKEN"]  # the "-" is removed from the file too
    assert r.wifi is not None and r.wifi.passphrase == "wifi-pass"


def test_an_invalid_secret_is_still_moved_off_the_card_but_not_stored_or_shown() -> None:
    r = check(MINIMAL + "WIFI_SSID=Home\nWIFI_PASSPHRASE=short\nHUB_TOKEN=has space\n")
    assert r.wipe == ["WIFI_PASSPHRASE", "HUB_TOKEN"]
    assert "WIFI_PASSPHRASE" not in r.secrets and "HUB_TOKEN" not in r.secrets
    text = "\n".join(messages(r))
    assert "must be 8-63 characters" in text and "removed from the card" in text
    assert "short" not in text and "has space" not in text


def test_wifi_psk_matches_the_ieee_802_11i_test_vector() -> None:
    assert bc.wifi_psk("IEEE", "password") == "f42c6fc52df0ebef9ebb4b90b38a5f902e83fe1b135a70e23aed762e9710a12e"
    raw = "AB" * 32
    assert bc.wifi_psk("x", raw) == raw.lower()
    assert bc.check_wifi_passphrase(raw) is None


def test_wpa_config_has_the_derived_key_not_the_passphrase() -> None:
    ssid = 'My "Net"'
    conf = bc.render_wpa(bc.Wifi(ssid, "password", "DE"))
    assert "country=DE" in conf
    assert "ssid=" + ssid.encode().hex() in conf
    assert "psk=" + bc.wifi_psk(ssid, "password") in conf
    assert "password" not in conf.replace("psk=", "")
    assert "key_mgmt=NONE" in bc.render_wpa(bc.Wifi("Cafe", None, None))


def test_wipe_secrets_keeps_everything_else_and_is_idempotent() -> None:
    text = "\ufeff# mine\r\nDEVICE_ID=x\r\n  MQTT_PASSWORD = pw\r\nHUB_TOKEN=-\r\n"
    once = bc.wipe_secrets(text, ["MQTT_PASSWORD", "HUB_TOKEN"])
    assert once.startswith("\ufeff# mine\r\nDEVICE_ID=x\r\n")
    assert "pw" not in once.replace("# MQTT_PASSWORD", "") and "HUB_TOKEN=\r\n" in once
    assert "  MQTT_PASSWORD=\r\n" in once and once.count("stored on the device") == 2
    again = bc.wipe_secrets(once, ["MQTT_PASSWORD"])
    assert again == once


# --------------------------------------------------------------------------- env files


@pytest.mark.parametrize(
    "value",
    ["plain", "", "with space", 'q"uote', "back\\slash", "$HOME", "`cmd`", '["stun:stun.l.google.com:19302"]', "ü"],
)
def test_env_file_round_trip(value: str) -> None:
    text = bc.render_env({"K": value}, "header")
    assert text.startswith("# header\n")
    assert bc.parse_env(text) == {"K": value}
    line = text.splitlines()[1]
    if value and not bc._BARE.fullmatch(value):
        assert line.startswith('K="') and line.endswith('"')


def test_agent_settings_accept_what_the_image_writes(monkeypatch: pytest.MonkeyPatch) -> None:
    """The variables the image derives exist in the agent's settings and load there."""
    from shared.config.base import load
    from shared.config.device import DeviceSettings
    from shared.config.mqtt import MqttSettings

    text = MINIMAL + "MQTT_URL=mqtts://b:8884\nMQTT_USERNAME=pi\nMQTT_PASSWORD=pw\nHUB_TOKEN=t\n"
    r = check(text)
    assert r.problems == []
    fields = set(DeviceSettings.model_fields) | set(MqttSettings.model_fields)
    assert {k.lower() for k in r.env} <= fields
    for k, v in r.env.items():
        monkeypatch.setenv(k, v)
    d = load(DeviceSettings)
    m = load(MqttSettings)
    assert (d.device_id, d.device_hub_url, d.device_hub_token) == ("kitchen", "http://192.168.1.10:8080", "t")
    assert (m.mqtt_host, m.mqtt_port, m.mqtt_tls, m.mqtt_username) == ("b", 8884, True, "pi")
    assert m.mqtt_password is not None and m.mqtt_password.get_secret_value() == "pw"


# --------------------------------------------------------------------------- run() on a tree


def _root(tmp_path: Path, conf: str | bytes | None) -> Path:
    (tmp_path / "boot/firmware").mkdir(parents=True)
    (tmp_path / "etc").mkdir()
    if conf is not None:
        data = conf.encode() if isinstance(conf, str) else conf
        (tmp_path / "boot/firmware/naila.conf").write_bytes(data)
    return tmp_path


def _run(root: Path) -> int:
    return int(bc.run(bc.Paths(root), bc.Console([]), live=False))


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def test_run_applies_a_valid_file_and_moves_the_secrets(tmp_path: Path) -> None:
    conf = MINIMAL + (
        "MQTT_USERNAME=pi\nMQTT_PASSWORD=pw-SECRET\nWIFI_SSID=Home\nWIFI_PASSPHRASE=wifi-SECRET\n"
        f"SSH_AUTHORIZED_KEY={ed25519_key()}\nUNATTENDED_UPGRADES=no\n"
    )
    root = _root(tmp_path, conf)
    assert _run(root) == 0
    env = root / "etc/naila/device.env"
    assert _mode(env) == 0o640
    values = bc.parse_env(env.read_text())
    assert values["DEVICE_ID"] == "kitchen" and values["MQTT_PASSWORD"] == "pw-SECRET"
    assert _mode(root / "etc/naila/secrets.env") == 0o600
    assert bc.parse_env((root / "etc/naila/secrets.env").read_text())["WIFI_PASSPHRASE"] == "wifi-SECRET"
    on_card = (root / "boot/firmware/naila.conf").read_text()
    assert "SECRET" not in on_card and "MQTT_PASSWORD=\n" in on_card and "DEVICE_ID=kitchen" in on_card
    wpa = root / "etc/wpa_supplicant/wpa_supplicant-wlan0.conf"
    assert _mode(wpa) == 0o600 and "psk=" + bc.wifi_psk("Home", "wifi-SECRET") in wpa.read_text()
    assert (root / "etc/naila/ssh/root").read_text() == ed25519_key() + "\n"
    assert '"0"' in (root / "etc/apt/apt.conf.d/20auto-upgrades").read_text()
    assert (root / "etc/hostname").read_text() == "kitchen\n"
    assert "127.0.1.1\tkitchen" in (root / "etc/hosts").read_text()
    assert "OK: the NAILA device agent is configured" in (root / "boot/firmware/naila-status.txt").read_text()

    # Next boot: same file (secrets now empty) -> same device.env, stored secrets kept.
    before = env.read_text()
    assert _run(root) == 0
    assert env.read_text() == before

    # A wrong value: the agent's env file goes (the agent waits), the status says why.
    (root / "boot/firmware/naila.conf").write_text(on_card.replace("HUB_URL=http://", "HUB_URL=htp://"))
    assert _run(root) == 1
    assert not env.exists()
    status = (root / "boot/firmware/naila-status.txt").read_text()
    assert "NOT OK" in status and "HUB_URL" in status and "SECRET" not in status
    assert (root / "etc/naila/ssh/root").exists()  # still reachable over SSH to fix it

    # Fixed again: the stored secrets come back without being written again.
    (root / "boot/firmware/naila.conf").write_text(on_card)
    assert _run(root) == 0
    assert env.read_text() == before


def test_run_without_a_file(tmp_path: Path) -> None:
    root = _root(tmp_path, None)
    assert _run(root) == 1
    (root / "etc/naila").mkdir()
    (root / "etc/naila/device.env").write_text("DEVICE_ID=x\n")
    assert _run(root) == 0  # keeps the configuration already on the device


def test_run_rejects_non_utf8(tmp_path: Path) -> None:
    root = _root(tmp_path, b"DEVICE_ID=k\xe4che\nHUB_URL=http://h\n")
    assert _run(root) == 1
    assert "not UTF-8" in (root / "boot/firmware/naila-status.txt").read_text()


def test_overwrite_in_place_shrinks_and_keeps_the_inode(tmp_path: Path) -> None:
    p = tmp_path / "naila.conf"
    p.write_text("A=1\nSECRET=" + "x" * 100 + "\n")
    ino = p.stat().st_ino
    bc.overwrite_in_place(p, "A=1\nSECRET=\n")
    assert p.read_text() == "A=1\nSECRET=\n"
    assert p.stat().st_ino == ino


def test_check_mode_for_a_file_before_flashing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p = tmp_path / "naila.conf"
    p.write_text(MINIMAL)
    assert bc.main(["--check", str(p)]) == 0
    p.write_text("DEVICE_ID=a b\n")
    assert bc.main(["--check", str(p)]) == 1
    out = capsys.readouterr().out
    assert "DEVICE_ID" in out and "HUB_URL: is required" in out
    assert os.access(SCRIPT, os.R_OK)


# --------------------------------------------------------------------------- the household CA (naila init)


def _provisioned_card(tmp_path: Path) -> Path:
    """A boot partition with what `naila init` writes for one device: naila.conf and naila-ca.crt."""
    from naila import provision

    out = tmp_path / "household"
    assert provision.main(["-o", str(out), "--hub", "naila-hub.local,192.168.1.10", "--ai-server", "gpu.local",
                           "--device", "kitchen=Kitchen"]) == 0
    root = _root(tmp_path / "root", None)
    for name in ("naila.conf", "naila-ca.crt"):
        (root / "boot/firmware" / name).write_bytes((out / "devices/kitchen" / name).read_bytes())
    return root


def test_run_installs_the_household_ca_and_points_hub_and_broker_at_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from shared.config.base import load
    from shared.config.device import DeviceSettings
    from shared.config.mqtt import MqttSettings

    root = _provisioned_card(tmp_path)
    card_ca = (root / "boot/firmware/naila-ca.crt").read_bytes()
    token = bc.parse_env((root / "boot/firmware/naila.conf").read_text())["HUB_TOKEN"]
    assert _run(root) == 0
    ca = root / "etc/naila/ca.crt"
    assert ca.read_bytes() == card_ca and _mode(ca) == 0o644
    env = bc.parse_env((root / "etc/naila/device.env").read_text())
    assert env["DEVICE_HUB_CA"] == env["MQTT_CA_FILE"] == bc.CA_PATH
    assert env["DEVICE_HUB_URL"] == "https://naila-hub.local:8443" and env["DEVICE_HUB_TOKEN"] == token
    assert (env["MQTT_HOST"], env["MQTT_PORT"], env["MQTT_TLS"], env["MQTT_USERNAME"]) == (
        "naila-hub.local", "8883", "true", "kitchen")
    assert token not in (root / "boot/firmware/naila.conf").read_text()  # secrets moved off the card
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    d, m = load(DeviceSettings), load(MqttSettings)
    assert (d.device_id, d.device_room) == ("kitchen", "Kitchen")
    assert d.device_hub_ca == m.mqtt_ca_file == bc.CA_PATH
    # Next boot without the card copy: the installed CA stays in use.
    (root / "boot/firmware/naila-ca.crt").unlink()
    assert _run(root) == 0
    assert bc.parse_env((root / "etc/naila/device.env").read_text())["DEVICE_HUB_CA"] == bc.CA_PATH


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        (b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", "PRIVATE KEY"),
        (b"hello", "no -----BEGIN CERTIFICATE-----"),
        (b"\xff\xfe", "binary"),
        (b"-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n", "no -----BEGIN"),
        (b"x" * 70000, "bytes"),
    ],
)
def test_a_wrong_ca_file_stops_the_agent_with_a_clear_problem(tmp_path: Path, data: bytes, needle: str) -> None:
    root = _provisioned_card(tmp_path)
    (root / "boot/firmware/naila-ca.crt").write_bytes(data)
    assert _run(root) == 1
    assert not (root / "etc/naila/device.env").exists() and not (root / "etc/naila/ca.crt").exists()
    status = (root / "boot/firmware/naila-status.txt").read_text()
    assert "naila-ca.crt" in status and needle in status, status


def test_a_token_over_plain_http_is_warned_about() -> None:
    r = check(MINIMAL + "HUB_TOKEN=abc\n")
    assert r.problems == [] and any("clear text" in w for w in r.warnings)
