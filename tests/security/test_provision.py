"""`naila init` (naila/provision.py): what it writes, with which modes, how a re-run and a
revocation change it, and that the broker it configures really runs with TLS and passwords."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import ssl
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import aiomqtt
import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from naila import broker, provision
from naila.pki import Issued
from shared.config import AIServerSettings, HubSettings, MqttSettings, load
from tests.conftest import free_port

REPO = Path(__file__).resolve().parents[2]
HUB_NAMES = "naila-hub.local,192.168.1.10"
WAIT_S = 10.0


def init(out: Path, *args: str) -> int:
    return provision.main(["-o", str(out), *args])


def first_init(out: Path, *args: str) -> None:
    assert init(out, "--hub", HUB_NAMES, "--ai-server", "gpu.local,192.168.1.20",
                "--device", "kitchen=Kitchen", "--device", "hall=Front hall", *args) == 0


def mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def env_of(p: Path) -> dict[str, str]:
    return provision.read_env(p.read_text())


def snapshot(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def sans(cert: x509.Certificate) -> set[str]:
    ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return set(ext.get_values_for_type(x509.DNSName)) | {str(a) for a in ext.get_values_for_type(x509.IPAddress)}


@pytest.fixture
def out(tmp_path: Path) -> Path:
    return tmp_path / "household"


# ---- files, modes, contents -----------------------------------------------------------------------


def test_files_modes_and_secrets(out: Path) -> None:
    first_init(out)
    assert mode(out) == 0o700
    assert all(mode(d) == 0o700 for d in out.rglob("*") if d.is_dir())
    secret = [
        "household.json", "ca/ca.key", "hub/hub.key", "hub/hub-client.key", "hub/hub.env", "ai-server/ai-server.key",
        "ai-server/ai-server.env", "broker/passwd", "broker/certs/server.key", "app/app.env",
        "devices/kitchen/naila.conf", "devices/hall/naila.conf",
    ]
    for name in secret:
        assert mode(out / name) == 0o600, name
    for name in ("ca/ca.crt", "hub/ca.crt", "hub/hub.crt", "broker/mosquitto.conf", "broker/acl",
                 "devices/kitchen/naila-ca.crt"):
        assert mode(out / name) == 0o644, name
    # Nothing else is lying around (no temporary files).
    public = {n for n in snapshot(out) if n not in secret}
    assert not [n for n in public if n.rsplit("/", 1)[-1].startswith(".")]

    hub, ai = env_of(out / "hub/hub.env"), env_of(out / "ai-server/ai-server.env")
    kitchen, hall = env_of(out / "devices/kitchen/naila.conf"), env_of(out / "devices/hall/naila.conf")
    tokens = json.loads(hub["HUB_DEVICE_TOKENS"])
    assert tokens == {"kitchen": kitchen["HUB_TOKEN"], "hall": hall["HUB_TOKEN"]}
    every_secret = [*tokens.values(), hub["HUB_WEB_TOKEN"], hub["HUB_METRICS_TOKEN"], hub["MQTT_PASSWORD"],
                    ai["MQTT_PASSWORD"], kitchen["MQTT_PASSWORD"], hall["MQTT_PASSWORD"]]
    assert len(set(every_secret)) == len(every_secret) and min(map(len, every_secret)) >= 24
    assert kitchen["HUB_URL"] == "https://naila-hub.local:8443"
    assert kitchen["MQTT_URL"] == "mqtts://naila-hub.local:8883"
    rooms = (kitchen["MQTT_USERNAME"], kitchen["DEVICE_ROOM"], hall["DEVICE_ROOM"])
    assert rooms == ("kitchen", "Kitchen", "Front hall")
    assert hub["HUB_AI_SERVER"] == "gpu.local:50051" and hub["HUB_PUBLIC_HOSTS"] == "naila-hub.local"
    assert ai["AI_SERVER_HOST"] == "0.0.0.0" and ai["AI_MEDIA_DIR"] == "/var/lib/naila/media"
    assert (out / "devices/kitchen/naila-ca.crt").read_bytes() == (out / "ca/ca.crt").read_bytes()

    # Certificates: chained to the CA, named as asked, for the right purpose.
    ca = x509.load_pem_x509_certificate((out / "ca/ca.crt").read_bytes())

    def leaf(name: str) -> x509.Certificate:
        cert = Issued((out / f"{name}.crt").read_bytes(), (out / f"{name}.key").read_bytes()).cert
        cert.verify_directly_issued_by(ca)
        return cert

    def usages(c: x509.Certificate) -> list[x509.ObjectIdentifier]:
        return list(c.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)

    assert {"naila-hub.local", "192.168.1.10"} <= sans(leaf("hub/hub"))
    assert {"gpu.local", "192.168.1.20"} <= sans(leaf("ai-server/ai-server"))
    assert {"naila-hub.local", "192.168.1.10"} <= sans(leaf("broker/certs/server"))
    assert usages(leaf("hub/hub-client")) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert usages(leaf("ai-server/ai-server")) == [ExtendedKeyUsageOID.SERVER_AUTH]


def test_env_files_load_into_the_real_settings(out: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first_init(out)
    for k, v in env_of(out / "hub/hub.env").items():
        monkeypatch.setenv(k, v)
    hub, mqtt = load(HubSettings), load(MqttSettings)
    assert set(hub.hub_device_tokens) == {"kitchen", "hall"} and not hub.hub_allow_unauthenticated
    assert (mqtt.mqtt_tls, mqtt.mqtt_port, mqtt.mqtt_username) == (True, 8883, "naila-hub")
    for k, v in env_of(out / "ai-server/ai-server.env").items():
        monkeypatch.setenv(k, v)
    ai = load(AIServerSettings)
    assert ai.ai_server_tls_client_ca == "/etc/naila/ca.crt" and ai.ai_server_tls_cert == "/etc/naila/ai-server.crt"


def test_shipped_broker_files_are_what_naila_init_writes() -> None:
    """deploy/mosquitto/ is the generated default: edit naila/broker.py and regenerate, never one alone."""
    assert (REPO / "deploy/mosquitto/mosquitto.conf").read_text() == broker.mosquitto_conf()
    assert (REPO / "deploy/mosquitto/acl").read_text() == broker.ACL


def test_password_file_is_what_mosquitto_passwd_writes(tmp_path: Path) -> None:
    """Same $7$ PBKDF2-SHA512 format: a line from the real tool verifies with our check, and back."""
    exe = shutil.which("mosquitto_passwd")
    if exe is None:
        pytest.skip("mosquitto_passwd not installed")
    pw = tmp_path / "pw"
    subprocess.run([exe, "-c", "-b", str(pw), "dev-a", "s3cret"], check=True, timeout=30)
    line = pw.read_text().strip()
    assert broker.passwd_matches(line, "dev-a", "s3cret") and not broker.passwd_matches(line, "dev-a", "wrong")
    assert broker.passwd_matches(broker.passwd_line("dev-a", "s3cret"), "dev-a", "s3cret")


# ---- re-run, add, revoke --------------------------------------------------------------------------


def test_rerun_changes_nothing_and_adding_a_device_keeps_the_others(
    out: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first_init(out)
    before = snapshot(out)
    capsys.readouterr()
    assert init(out) == 0
    assert snapshot(out) == before
    assert "wrote" not in capsys.readouterr().out

    assert init(out, "--add-device", "garage=Garage") == 0
    after = snapshot(out)
    changed = {n for n in before if before[n] != after.get(n)}
    assert changed == {"household.json", "hub/hub.env", "broker/passwd"}
    assert {n for n in after if n not in before} == {"devices/garage/naila.conf", "devices/garage/naila-ca.crt"}
    old_lines, new_lines = (set(s["broker/passwd"].decode().splitlines()) for s in (before, after))
    assert old_lines < new_lines and len(new_lines - old_lines) == 1  # existing hashes kept byte for byte
    tokens = json.loads(env_of(out / "hub/hub.env")["HUB_DEVICE_TOKENS"])
    old_tokens = json.loads(provision.read_env(before["hub/hub.env"].decode())["HUB_DEVICE_TOKENS"])
    assert {k: tokens[k] for k in old_tokens} == old_tokens and "garage" in tokens
    out_text = capsys.readouterr().out
    assert f"wrote {out / 'devices/garage/naila.conf'}" in out_text


def test_revoke_removes_the_token_the_user_and_the_card(out: Path) -> None:
    first_init(out)
    kitchen = env_of(out / "devices/kitchen/naila.conf")
    hall_before = (out / "devices/hall/naila.conf").read_bytes()
    assert init(out, "--revoke-device", "kitchen") == 0
    assert not (out / "devices/kitchen").exists()
    hub = env_of(out / "hub/hub.env")
    assert set(json.loads(hub["HUB_DEVICE_TOKENS"])) == {"hall"}
    assert kitchen["HUB_TOKEN"] not in (out / "hub/hub.env").read_text()
    users = {line.split(":", 1)[0] for line in (out / "broker/passwd").read_text().splitlines()}
    assert users == {"hall", *broker.SERVICE_USERS}
    assert (out / "devices/hall/naila.conf").read_bytes() == hall_before
    # Added again later, it gets new credentials (the old card stays useless).
    assert init(out, "--add-device", "kitchen") == 0
    assert env_of(out / "devices/kitchen/naila.conf")["HUB_TOKEN"] != kitchen["HUB_TOKEN"]


def test_a_new_hub_address_reissues_only_the_hub_certificate(out: Path) -> None:
    first_init(out)
    before = snapshot(out)
    assert init(out, "--hub", "naila-hub.local,192.168.1.11", "--broker", HUB_NAMES) == 0
    after = snapshot(out)
    assert before["hub/hub.key"] != after["hub/hub.key"]
    assert "192.168.1.11" in sans(x509.load_pem_x509_certificate(after["hub/hub.crt"]))
    for same in ("ca/ca.key", "ca/ca.crt", "ai-server/ai-server.crt", "broker/certs/server.crt", "hub/hub-client.crt"):
        assert before[same] == after[same], same


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--device", "bad/id"], "device id"),
        (["--device", "naila-hub"], "service"),
        (["--device", "web-tablet"], "web-"),
        (["--revoke-device", "nobody"], "no such device"),
        (["--hub", "not a host!"], "--hub"),
    ],
)
def test_bad_input_is_one_clear_line(
    out: Path, capsys: pytest.CaptureFixture[str], args: list[str], needle: str
) -> None:
    first_init(out)
    before = snapshot(out)
    capsys.readouterr()
    assert init(out, *args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("naila init: ") and needle in err and "\n" not in err
    assert snapshot(out) == before


def test_first_run_needs_the_hosts(out: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert init(out, "--device", "kitchen") == 2
    assert "--hub and --ai-server" in capsys.readouterr().err


# ---- the generated broker runs ----------------------------------------------------------------------


class Mosquitto:
    def __init__(self, conf: Path) -> None:
        exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        if not os.path.exists(exe):
            pytest.fail("mosquitto is not installed (apt-get install mosquitto)")
        self.log = conf.with_name("mosquitto.log")
        self.conf = conf
        with self.log.open("ab") as fh:
            self.proc = subprocess.Popen([exe, "-c", str(conf)], stdout=fh, stderr=subprocess.STDOUT)

    def wait_port(self, port: int) -> None:
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log.read_text()
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    return
            time.sleep(0.02)
        raise AssertionError(f"mosquitto not listening on {port}: {self.log.read_text()}")

    def reload(self) -> None:
        """SIGHUP: mosquitto rereads the password file and the ACL (systemctl reload mosquitto)."""
        self.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + WAIT_S
        while "Reloading config" not in self.log.read_text():
            assert time.monotonic() < deadline, self.log.read_text()
            time.sleep(0.02)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(WAIT_S)


def runnable_conf(out: Path) -> Path:
    """The generated conf, as is; as root mosquitto would switch to the user "mosquitto", which
    cannot read a test's private folder (under systemd the installed files are group mosquitto)."""
    conf = out / "broker/mosquitto.conf"
    if os.geteuid() == 0:
        with conf.open("a") as fh:
            fh.write("user root\n")
    return conf


@pytest.fixture
def running(out: Path) -> Iterator[tuple[Mosquitto, int]]:
    port = free_port()
    first_init(out, "--broker", "localhost,127.0.0.1", "--mqtt-port", str(port), "--mqtt-local-port", "0",
               "--in-place")
    m = Mosquitto(runnable_conf(out))
    try:
        m.wait_port(port)
        yield m, port
    finally:
        m.stop()


async def test_generated_broker_takes_tls_and_passwords_only(out: Path, running: tuple[Mosquitto, int]) -> None:
    _, port = running
    hub = env_of(out / "hub/hub.env")
    assert hub["MQTT_HOST"] == "localhost" and hub["MQTT_PORT"] == str(port)
    tls = aiomqtt.TLSParameters(ca_certs=hub["MQTT_CA_FILE"], cert_reqs=ssl.CERT_REQUIRED)

    def client(**kw: object) -> aiomqtt.Client:
        return aiomqtt.Client("localhost", port, timeout=WAIT_S, **kw)  # type: ignore[arg-type]

    async with client(username="naila-hub", password=hub["MQTT_PASSWORD"], tls_params=tls) as c:
        await c.publish("naila/uploads/s1/image", b"x", qos=1)
    kitchen = env_of(out / "devices/kitchen/naila.conf")
    async with client(username="kitchen", password=kitchen["MQTT_PASSWORD"], tls_params=tls):
        pass
    for creds in ({}, {"username": "naila-hub", "password": "wrong"}, {"username": "nobody", "password": "x"},
                  {"username": "hall", "password": kitchen["MQTT_PASSWORD"]}):
        with pytest.raises(aiomqtt.MqttCodeError) as err:
            async with client(tls_params=tls, **creds):
                pass
        assert err.value.rc == 135, creds  # not authorised
    # Plaintext on the TLS port: no MQTT session (the broker sees garbage instead of a handshake).
    with pytest.raises(aiomqtt.MqttError):
        async with aiomqtt.Client("localhost", port, timeout=2, username="naila-hub", password=hub["MQTT_PASSWORD"]):
            pass
    # The only listener is the TLS one.
    assert [ln for ln in (out / "broker/mosquitto.conf").read_text().splitlines() if ln.startswith("listener")] == [
        f"listener {port}"]


async def test_a_revoked_device_is_refused_after_a_reload(out: Path, running: tuple[Mosquitto, int]) -> None:
    m, port = running
    tls = aiomqtt.TLSParameters(ca_certs=str(out / "broker/certs/ca.crt"))
    kitchen = env_of(out / "devices/kitchen/naila.conf")
    async with aiomqtt.Client("localhost", port, username="kitchen", password=kitchen["MQTT_PASSWORD"],
                              tls_params=tls, timeout=WAIT_S):
        pass
    assert init(out, "--revoke-device", "kitchen") == 0
    m.reload()
    with pytest.raises(aiomqtt.MqttCodeError) as err:
        async with aiomqtt.Client("localhost", port, username="kitchen", password=kitchen["MQTT_PASSWORD"],
                                  tls_params=tls, timeout=WAIT_S):
            pass
    assert err.value.rc == 135
    hall = env_of(out / "devices/hall/naila.conf")
    async with aiomqtt.Client("localhost", port, username="hall", password=hall["MQTT_PASSWORD"],
                              tls_params=tls, timeout=WAIT_S):
        pass
