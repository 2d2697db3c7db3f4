"""Issue 18's "done when": a household provisioned by `naila init` runs end to end, every link authenticated.

`naila init` writes a CA, the three machines' files and two devices' naila.conf into a temporary
folder (--in-place, loopback names, free ports). Then, as processes: mosquitto from the generated
broker/ folder, the AI server from ai-server.env (mutual TLS), the hub from hub.env (HTTPS, device
tokens, mTLS client, MQTT over TLS). Two in-process device agents take their settings from their
naila.conf through the SD image's own bootconfig.py (the path a real Pi takes). Only the listen
addresses are narrowed to 127.0.0.1 for the test.

Checked: the first device asks a spoken question and gets the answer on its speaker; both devices
are connected with their tokens; a wrong token and, after `naila init --revoke-device`, the revoked
device are refused by the hub and the broker; a client without the hub's certificate cannot use the
AI server.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import aiomqtt
import grpc
import pytest
from aiortc import RTCPeerConnection

from device_agent.agent import DeviceAgent
from device_agent.audio_io.memory import MemoryAudioBackend
from naila import provision
from naila.harness import SimDevice, speech_seconds
from naila.stack import Part, free_port, new_workdir, port_open, wait_until
from shared.config import AudioSettings, DeviceSettings, MqttSettings, WebRTCSettings, load
from shared.gen.naila.v1 import naila_pb2, naila_pb2_grpc

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(600)]

REPO = Path(__file__).resolve().parents[2]
NAMES = "localhost,127.0.0.1"


def _bootconfig() -> ModuleType:
    spec = importlib.util.spec_from_file_location("naila_image_bootconfig_e2e",
                                                  REPO / "image/rootfs/usr/local/lib/naila/bootconfig.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


bc = _bootconfig()


@dataclass
class Household:
    out: Path
    parts: dict[str, Part]
    hub_url: str
    ca: Path
    mqtt_port: int

    def env(self, name: str) -> dict[str, str]:
        return provision.read_env((self.out / name).read_text())

    def ssl(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca))

    def get(self, path: str, token: str | None = None) -> tuple[int, bytes]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        req = urllib.request.Request(self.hub_url + path, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=5, context=self.ssl()) as r:
                return r.status, bytes(r.read())
        except urllib.error.HTTPError as e:
            return e.code, bytes(e.read())

    def connect_status(self, device_id: str, token: str, sdp: str) -> int:
        """POST /connect as ``device_id`` with ``token`` and a well-formed offer (refused before any peer)."""
        body = json.dumps({"device_id": device_id, "sdp": sdp}).encode()
        req = urllib.request.Request(self.hub_url + "/connect", data=body, method="POST", headers={
            "Authorization": f"Bearer {token}", "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=5, context=self.ssl()) as r:
                return int(r.status)
        except urllib.error.HTTPError as e:
            return int(e.code)

    def turns(self) -> list[dict[str, Any]]:
        status, body = self.get("/turns", self.env("hub/hub.env")["HUB_METRICS_TOKEN"])
        assert status == 200, body
        data = json.loads(body)
        return list(data["turns"] if isinstance(data, dict) else data)


def spawn(workdir: Path, name: str, argv: list[str], env_file: Path, **overrides: str) -> Part:
    """A process with only its machine's env file (plus the test's listen address) on top of PATH etc."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HUB_", "AI_", "MQTT_", "DEVICE_", "VISION_"))}
    env.update(provision.read_env(env_file.read_text()) if env_file.suffix == ".env" else {})
    env.update(overrides)
    log_path = workdir / f"{name}.log"
    with log_path.open("wb") as fh:
        proc = subprocess.Popen(argv, stdout=fh, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    return Part(name, proc, log_path)


def start_hub(h: Household, workdir: Path) -> None:
    hub_env = h.env("hub/hub.env")
    # The device asks a plain question (no wake word): this test is about provisioning, not listening modes.
    part = spawn(workdir, "hub", [sys.executable, "-m", "naila", "hub"], h.out / "hub/hub.env", HUB_HOST="127.0.0.1",
                 HUB_LISTENING_MODE="always")
    h.parts["hub"] = part
    token = hub_env["HUB_METRICS_TOKEN"]

    def grpc_up() -> bool:
        try:
            status, body = h.get("/health?detail=1", token)
        except OSError:
            return False
        return status in (200, 503) and bool(json.loads(body).get("grpc_connected"))

    wait_until(grpc_up, 90, "hub with its mTLS link to the AI server", part.proc)


@pytest.fixture(scope="module")
def household() -> Iterator[Household]:
    workdir = new_workdir("naila-household-e2e-")
    out = workdir / "household"
    hub_port, ai_port, mqtt_port = free_port(), free_port(), free_port()
    assert provision.main([
        "-o", str(out), "--hub", NAMES, "--ai-server", NAMES, "--broker", NAMES,
        "--device", "kitchen=Kitchen", "--device", "hall=Hall", "--hub-port", str(hub_port),
        "--ai-port", str(ai_port), "--mqtt-port", str(mqtt_port), "--mqtt-local-port", "0", "--in-place",
    ]) == 0
    h = Household(out, {}, f"https://localhost:{hub_port}", out / "ca/ca.crt", mqtt_port)
    conf = out / "broker/mosquitto.conf"
    if os.geteuid() == 0:  # mosquitto would drop to the user "mosquitto", which cannot read the temp folder
        conf.write_text(conf.read_text() + "user root\n")
    try:
        h.parts["mosquitto"] = spawn(workdir, "mosquitto", ["mosquitto", "-c", str(conf)], conf)
        wait_until(lambda: port_open("127.0.0.1", mqtt_port), 10, "mosquitto", h.parts["mosquitto"].proc)
        ai = spawn(workdir, "ai-server", [sys.executable, "-m", "naila", "ai-server"], out / "ai-server/ai-server.env",
                   AI_SERVER_HOST="127.0.0.1", VISION_ENABLED="false")
        h.parts["ai-server"] = ai
        wait_until(lambda: port_open("127.0.0.1", ai_port), 240, "AI server", ai.proc)
        start_hub(h, workdir)
        yield h
    except Exception:
        for name, part in h.parts.items():
            print(f"--- {name} ---\n{part.tail(60)}")
        raise
    finally:
        for name in ("hub", "ai-server", "mosquitto"):
            if name in h.parts:
                h.parts[name].stop()


def device_settings(h: Household, device_id: str) -> tuple[DeviceSettings, MqttSettings]:
    """What the Pi's agent would load: naila.conf through bootconfig, the CA where the card has it."""
    card = h.out / "devices" / device_id
    entries, problems = bc.parse_conf((card / "naila.conf").read_text())
    result = bc.validate(entries, {}, None, problems, str(card / "naila-ca.crt"))
    assert result.problems == [], result.problems
    env = {k.lower(): v for k, v in result.env.items()}
    device = load(DeviceSettings, **{k: v for k, v in env.items() if k in DeviceSettings.model_fields},
                  device_audio_backend="file")
    mqtt = load(MqttSettings, **{k: v for k, v in env.items() if k in MqttSettings.model_fields})
    return device, mqtt


async def start(h: Household, device_id: str) -> SimDevice:
    device, mqtt = device_settings(h, device_id)
    assert device.device_hub_url == h.hub_url and mqtt.mqtt_tls and device.device_hub_token
    backend = MemoryAudioBackend()
    agent = DeviceAgent(device, audio_backend=backend, audio=load(AudioSettings), mqtt=mqtt,
                        webrtc=load(WebRTCSettings))
    await agent.start()
    if not await agent.wait_connected(30):
        await agent.stop()
        raise AssertionError(f"{device_id} did not connect with its token")
    return SimDevice(agent, backend, h.hub_url)


async def wait_turn(h: Household, device_id: str, after: int, within_s: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        turns = [t for t in await asyncio.to_thread(h.turns) if t.get("device_id") == device_id]
        if len(turns) > after:
            return turns[after]
        await asyncio.sleep(0.2)
    raise TimeoutError(f"{device_id}: no turn after {within_s:.0f}s")


async def offer_sdp() -> str:
    """A real audio offer, as a device makes it, so that only the token can be what is refused."""
    pc = RTCPeerConnection()
    pc.addTransceiver("audio", direction="sendrecv")
    await pc.setLocalDescription(await pc.createOffer())
    sdp = pc.localDescription.sdp
    await pc.close()
    return sdp


async def mqtt_login(h: Household, user: str, password: str) -> None:
    tls = aiomqtt.TLSParameters(ca_certs=str(h.ca))
    async with aiomqtt.Client("localhost", h.mqtt_port, username=user, password=password, tls_params=tls, timeout=10):
        pass


async def test_two_devices_one_answer_and_every_refusal(household: Household, loopback_ice: None) -> None:
    h = household
    kitchen = await start(h, "kitchen")
    hall = await start(h, "hall")
    try:
        # Both in, each with its own token (start() waited for each WebRTC link).
        assert await kitchen.agent.wait_connected(1) and await hall.agent.wait_connected(1)
        before = len([t for t in h.turns() if t.get("device_id") == "kitchen"])
        said = time.monotonic()
        kitchen.say("How many legs does a spider have?")
        turn = await wait_turn(h, "kitchen", before)
        assert "spider" in turn["transcript"].lower() or "legs" in turn["transcript"].lower(), turn
        assert turn.get("reply_text"), turn
        await kitchen.wait_speaker_quiet(said, within_s=60)
        assert speech_seconds(kitchen.speaker_audio(said), kitchen.backend.rate) > 0.5  # the answer was played
    finally:
        await asyncio.gather(kitchen.stop(), hall.stop())

    hall_conf = h.env("devices/hall/naila.conf")
    # A wrong token, for a known device and for an unknown one: the same refusal.
    sdp = await offer_sdp()
    assert h.connect_status("kitchen", "x" * 43, sdp) == 401
    assert h.connect_status("garage", hall_conf["HUB_TOKEN"], sdp) == 401
    # Data endpoints need the token too.
    assert h.get("/turns")[0] == 401

    # A client that is not the hub (no client certificate) cannot use the AI server; the hub's can.
    ai_env = h.env("ai-server/ai-server.env")
    target = f"localhost:{ai_env['AI_SERVER_PORT']}"
    ca = h.ca.read_bytes()
    anonymous = grpc.secure_channel(target, grpc.ssl_channel_credentials(root_certificates=ca))
    with pytest.raises(grpc.RpcError) as err:
        naila_pb2_grpc.NailaAIStub(anonymous).GetStatus(naila_pb2.StatusRequest(), timeout=10)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    anonymous.close()
    hub_creds = grpc.ssl_channel_credentials(ca, (h.out / "hub/hub-client.key").read_bytes(),
                                             (h.out / "hub/hub-client.crt").read_bytes())
    with grpc.secure_channel(target, hub_creds) as ok:
        naila_pb2_grpc.NailaAIStub(ok).GetStatus(naila_pb2.StatusRequest(), timeout=10)

    # Revoke the hall device: re-run naila init, reinstall (restart the hub, reload the broker).
    await mqtt_login(h, "hall", hall_conf["MQTT_PASSWORD"])
    assert provision.main(["-o", str(h.out), "--revoke-device", "hall"]) == 0
    conf = h.out / "broker/mosquitto.conf"
    if os.geteuid() == 0:
        conf.write_text(conf.read_text() + "user root\n")
    h.parts["mosquitto"].proc.send_signal(1)  # SIGHUP: systemctl reload mosquitto
    h.parts.pop("hub").stop()
    start_hub(h, h.parts["mosquitto"].log_path.parent)
    assert h.connect_status("hall", hall_conf["HUB_TOKEN"], sdp) == 401
    deadline = time.monotonic() + 10
    while True:  # the reload is asynchronous: wait until the broker has forgotten the user
        try:
            await mqtt_login(h, "hall", hall_conf["MQTT_PASSWORD"])
        except aiomqtt.MqttCodeError as exc:
            assert exc.rc == 135
            break
        assert time.monotonic() < deadline, "the broker still takes the revoked device's password"
        await asyncio.sleep(0.1)
    kitchen_conf = h.env("devices/kitchen/naila.conf")
    await mqtt_login(h, "kitchen", kitchen_conf["MQTT_PASSWORD"])  # the others keep working
    kitchen = await start(h, "kitchen")
    await kitchen.stop()
