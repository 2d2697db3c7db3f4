"""The shipped broker config (deploy/mosquitto/) enforced by a real mosquitto: who may publish and read what.

The broker runs from deploy/mosquitto/mosquitto.conf with only its listener ports and file paths
rewritten, the ACL file used as shipped, and users created by scripts/mqtt-users.sh, so a
change to any of the three that opens (or closes) a door fails here.

How a refusal is observed, so that every test can fail:

* MQTT 5 clients get reason code 0x87 (not authorised) in the PUBACK of a refused QoS 1
  publish: the write matrix checks every (user, topic) pair that way, in a few hundred ms.
* MQTT 3.1.1 clients (what MqttLink speaks) are refused silently: the message is just not
  delivered. Those tests publish the forbidden messages, then a sentinel that is allowed, and
  read until the sentinel: mosquitto delivers one subscriber's messages in the order it accepted
  them (and a QoS 1 publish is accepted by the time its PUBACK arrives), so anything that got
  through would have arrived first. No test waits for "nothing happened".
* mosquitto 2.0 grants every SUBSCRIBE and checks "read" per delivered message, so reading is
  tested by delivery (everyone subscribes to ``naila/#``), not by SUBACK codes.

The harness at the top (a broker from the shipped files, users, clients) is also used by
test_mqtt_link.py and test_mqtt_tls.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiomqtt
import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from naila import pki
from shared.config import MqttSettings, load
from shared.mqtt import topics
from shared.mqtt.limits import UPLOAD_MAX_PAYLOAD_BYTES
from tests.conftest import free_port

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

REPO_ROOT = Path(__file__).resolve().parents[2]
DEPLOY_DIR = REPO_ROOT / "deploy" / "mosquitto"
SHIPPED_CONF = DEPLOY_DIR / "mosquitto.conf"
SHIPPED_ACL = DEPLOY_DIR / "acl"
USERS_SCRIPT = REPO_ROOT / "scripts" / "mqtt-users.sh"

HUB, AI, APP = "naila-hub", "naila-ai-server", "naila-app"
DEV, OTHER = "dev-a", "dev-b"  # the device under test and another device
USERS = (DEV, OTHER, HUB, AI, APP)
WAIT_S = 10.0  # every wait on the broker is bounded by this (a busy 2-core CI runner needs the margin)


# ---- Harness: a broker from the shipped files -------------------------------------------------


@dataclass(frozen=True)
class TlsFiles:
    """PEM files for the TLS listeners (see test_mqtt_tls.py, which makes them)."""

    ca: Path
    cert: Path
    key: Path


@dataclass(frozen=True)
class Ports:
    plain: int
    tls: int | None = None
    cert_auth: int | None = None


def provision_users(workdir: Path, devices: Sequence[str] = (DEV, OTHER)) -> tuple[Path, dict[str, str]]:
    """Run scripts/mqtt-users.sh for the service users and ``devices``; return the password file and passwords."""
    passwd, creds = workdir / "passwd", workdir / "credentials"
    subprocess.run(
        ["bash", str(USERS_SCRIPT), "-f", str(passwd), "-o", str(creds), "-s", *devices],
        check=True,
        capture_output=True,
        timeout=30,
    )
    passwords: dict[str, str] = {}
    for env in creds.glob("*.env"):
        values = dict(line.split("=", 1) for line in env.read_text().splitlines())
        passwords[values["MQTT_USERNAME"]] = values["MQTT_PASSWORD"]
    return passwd, passwords


def _uncomment_block(lines: list[str], begin: str, end: str) -> list[str]:
    """Enable the ``#directive`` lines between two marker comments (prose comments stay)."""
    out, inside, seen = [], False, False
    for line in lines:
        if line.strip() == begin:
            inside, seen = True, True
        elif line.strip() == end:
            inside = False
        elif inside and re.match(r"#[a-z]", line):
            line = line[1:]
        out.append(line)
    assert seen, f"{begin!r} not found in {SHIPPED_CONF}"
    return out


def deployed_conf(workdir: Path, passwd: Path, ports: Ports, tls: TlsFiles) -> str:
    """The shipped mosquitto.conf with test ports and paths; every other line is kept as is."""
    lines = SHIPPED_CONF.read_text().splitlines()
    if ports.cert_auth is not None:
        lines = _uncomment_block(lines, "# BEGIN CERT AUTH", "# END CERT AUTH")
    replaced: dict[str, int] = {}

    def sub(directive: str, value: str) -> str:
        replaced[directive] = replaced.get(directive, 0) + 1
        return f"{directive} {value}"

    out = []
    for line in lines:
        directive = line.split(" ", 1)[0] if line and not line.startswith("#") else ""
        if line == "listener 1883 127.0.0.1":
            line = sub("listener", f"{ports.plain} 127.0.0.1")
        elif line == "listener 8883":
            line = sub("listener", f"{ports.tls} 127.0.0.1")
        elif line == "listener 8884" and ports.cert_auth is not None:
            line = sub("listener", f"{ports.cert_auth} 127.0.0.1")
        elif directive == "password_file":
            line = sub(directive, str(passwd))
        elif directive == "acl_file":
            line = sub(directive, str(SHIPPED_ACL))
        elif directive == "persistence_location":
            line = sub(directive, f"{workdir}/")
        elif directive in ("cafile", "certfile", "keyfile"):
            line = sub(directive, str({"cafile": tls.ca, "certfile": tls.cert, "keyfile": tls.key}[directive]))
        out.append(line)
    listeners = 2 + (ports.cert_auth is not None)
    assert replaced.get("listener") == listeners, f"the shipped conf's listeners changed: {replaced}"
    for directive in ("password_file", "acl_file", "persistence_location"):
        assert replaced.get(directive) == 1, f"{directive} not found once in {SHIPPED_CONF}"
    if os.geteuid() == 0:
        # As root, mosquitto switches to the user "mosquitto", which cannot read the test's
        # private temp dir; under systemd it starts as root and does switch (README.md).
        out.append("user root")
    return "\n".join(out) + "\n"


class DeployedBroker:
    """A mosquitto process on 127.0.0.1 that can be killed and restarted on the same ports."""

    def __init__(self, workdir: Path, conf: str, ports: Ports) -> None:
        self.ports = ports
        self.conf_path = workdir / "mosquitto.conf"
        self.conf_path.write_text(conf)
        self.log_path = workdir / "mosquitto.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def port(self) -> int:
        return self.ports.plain

    def start(self) -> None:
        exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        if not os.path.exists(exe):
            pytest.fail("mosquitto is not installed (apt-get install mosquitto)")
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen([exe, "-c", str(self.conf_path)], stdout=log, stderr=subprocess.STDOUT)
        for port in (self.ports.plain, self.ports.tls, self.ports.cert_auth):
            if port is not None:
                self._wait_listening(port)

    def _wait_listening(self, port: int) -> None:
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited ({self.proc.returncode}):\n{self.log_tail()}")
            with socket.socket() as s:
                s.settimeout(0.2)
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    return
            time.sleep(0.02)
        raise RuntimeError(f"mosquitto not listening on {port} after {WAIT_S} s:\n{self.log_tail()}")

    def kill(self) -> None:
        """SIGKILL: no goodbye to clients, no database save, like a power cut."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(WAIT_S)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(WAIT_S)
            except subprocess.TimeoutExpired:
                self.kill()

    def log_tail(self, lines: int = 30) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


@dataclass
class Deployment:
    """A running broker from the shipped files and the passwords of its users."""

    broker: DeployedBroker
    passwords: dict[str, str]
    workdir: Path

    def settings(self, user: str | None, *, port: int | None = None, **overrides: Any) -> MqttSettings:
        """MqttSettings as a deployable would load them (user None: no credentials)."""
        creds: dict[str, Any] = {} if user is None else {"mqtt_username": user, "mqtt_password": self.passwords[user]}
        return load(
            MqttSettings,
            mqtt_host="127.0.0.1",
            mqtt_port=port or self.broker.port,
            mqtt_keepalive_s=10,
            **{**creds, **overrides},
        )

    @asynccontextmanager
    async def client(self, user: str, **kwargs: Any) -> AsyncIterator[aiomqtt.Client]:
        """An aiomqtt client (MQTT 3.1.1, like MqttLink) logged in as ``user``."""
        kwargs.setdefault("hostname", "127.0.0.1")
        kwargs.setdefault("port", self.broker.port)
        kwargs.setdefault("timeout", WAIT_S)
        async with aiomqtt.Client(
            username=user, password=self.passwords[user], identifier=f"{user}-{uuid.uuid4().hex[:8]}", **kwargs
        ) as c:
            yield c

    def child_env(self, settings: MqttSettings) -> dict[str, str]:
        """Environment for a child process that loads ``settings`` from MQTT_* variables."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("MQTT_")}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
        for name, value in settings.model_dump().items():
            if value is None:
                continue
            if hasattr(value, "get_secret_value"):
                value = value.get_secret_value()
            env[name.upper()] = str(value).lower() if isinstance(value, bool) else str(value)
        return env


def household_tls(workdir: Path) -> TlsFiles:
    """A broker certificate for 127.0.0.1 and localhost from a fresh household CA (naila/pki.py)."""
    ca = pki.new_ca()
    server = pki.issue(ca, "broker", dns_names=["localhost"], ip_addresses=["127.0.0.1"])
    files = TlsFiles(workdir / "ca.crt", workdir / "server.crt", workdir / "server.key")
    files.ca.write_bytes(ca.cert_pem)
    files.cert.write_bytes(server.cert_pem)
    files.key.write_bytes(server.key_pem)
    files.key.chmod(0o600)
    return files


@contextlib.contextmanager
def deployment(workdir: Path, *, ports: Ports | None = None, tls: TlsFiles | None = None) -> Iterator[Deployment]:
    """The shipped config as shipped: TLS on (a throwaway CA unless ``tls``), plain MQTT on loopback."""
    passwd, passwords = provision_users(workdir)
    ports = ports or Ports(free_port())
    if ports.tls is None:
        ports = Ports(ports.plain, free_port(), ports.cert_auth)
    tls = tls or household_tls(workdir)
    broker = DeployedBroker(workdir, deployed_conf(workdir, passwd, ports, tls), ports)
    broker.start()
    try:
        yield Deployment(broker, passwords, workdir)
    finally:
        broker.stop()


async def wait_until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {WAIT_S} s")
        await asyncio.sleep(0.01)


async def next_message(c: aiomqtt.Client) -> aiomqtt.Message:
    async with asyncio.timeout(WAIT_S):
        return await anext(aiter(c.messages))


def payload_bytes(msg: aiomqtt.Message) -> bytes:
    p = msg.payload
    return p if isinstance(p, bytes) else str(p).encode() if p is not None else b""


async def read_until(c: aiomqtt.Client, topic: str, payload: bytes) -> list[tuple[str, bytes]]:
    """Every (topic, payload) received before the sentinel ``payload`` on ``topic``."""
    seen: list[tuple[str, bytes]] = []
    try:
        async with asyncio.timeout(WAIT_S):
            async for msg in c.messages:
                got = (msg.topic.value, payload_bytes(msg))
                if got == (topic, payload):
                    return seen
                seen.append(got)
    except TimeoutError:
        pytest.fail(f"sentinel {payload!r} on {topic} never arrived; received before it: {seen}")
    raise AssertionError("unreachable")


# A process that holds an MqttLink (loaded from MQTT_* like a deployable) with a last will until
# SIGKILLed: the only way to make the broker see a connection die without a DISCONNECT.
LINK_CHILD = textwrap.dedent(
    """
    import asyncio, sys

    from shared.config import MqttSettings, load
    from shared.mqtt import OutboundMessage
    from shared.mqtt_link import MqttLink

    async def main(will_topic: str, will_payload: str, online_payload: str) -> None:
        async def on_connect(link: MqttLink) -> None:
            if online_payload:
                await link.publish_raw(will_topic, online_payload.encode(), qos=1, retain=True)
            print("connected", flush=True)

        link = MqttLink(
            load(MqttSettings), client_id=f"child-{will_topic}", on_connect=on_connect,
            will=OutboundMessage(will_topic, will_payload.encode(), 1, True),
        )
        await link.start()
        await asyncio.Event().wait()

    asyncio.run(main(*sys.argv[1:4]))
    """
)


@asynccontextmanager
async def link_child(
    dep: Deployment, settings: MqttSettings, will_topic: str, will_payload: bytes, online_payload: bytes = b""
) -> AsyncIterator[asyncio.subprocess.Process]:
    """Start :data:`LINK_CHILD`, wait until its link is connected, SIGKILL it on exit."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        LINK_CHILD,
        will_topic,
        will_payload.decode(),
        online_payload.decode(),
        cwd=REPO_ROOT,
        env=dep.child_env(settings),
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        async with asyncio.timeout(30):  # a cold interpreter importing aiomqtt + pydantic
            line = await proc.stdout.readline()
        assert line.strip() == b"connected", f"child link did not connect (exit {proc.returncode})"
        yield proc
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGKILL)
            await proc.wait()


# ---- What each user may do: written from the roles, independently of the ACL file -------------

SESSION, ZONE = "s1", "kitchen"


@dataclass(frozen=True)
class Access:
    writers: frozenset[str]
    readers: frozenset[str]


def _access(writers: set[str], readers: set[str]) -> Access:
    return Access(frozenset(writers), frozenset(readers))


def expected_access() -> dict[str, Access]:
    """One concrete topic per kind of the tree, with the users allowed to write and to read it.

    Devices publish under their own id only; the hub answers signaling, bridges image questions,
    sends the dashboard's device commands and reads the answers and naila/alerts/all; the AI
    server reads everything and sends commands, media requests, its status, broadcasts, alerts and
    chat replies; the web app uploads and chats and reads alerts.
    """
    table: dict[str, Access] = {}
    for d in (DEV, OTHER):
        table |= {
            topics.device_status(d): _access({d}, {HUB, AI}),
            # The dashboard's privacy / mute controls (issue 24): the hub sends the same commands as voice.
            topics.device_command(d): _access({AI, HUB}, {d, AI}),
            topics.device_command_response(d): _access({d}, {AI, HUB}),
            topics.signaling_offer(d): _access({d}, {HUB, AI}),
            topics.signaling_answer(d): _access({HUB}, {d, AI}),
            # The hub gathers all its candidates before answering: ICE goes device -> hub only.
            topics.signaling_ice(d): _access({d}, {HUB, AI}),
            topics.media_snapshot(d): _access({d}, {AI}),
            topics.media_recording(d): _access({d}, {AI}),
            topics.media_request(d): _access({AI}, {d, AI}),
            topics.device_events(d): _access({d}, {AI}),
        }
    table |= {
        # Every device reads these, and mosquitto can only say "every device" with a pattern line,
        # which every user matches: the hub and the app read them too (nothing secret in them).
        topics.SERVER_STATUS: _access({AI}, set(USERS)),
        topics.SERVER_BROADCAST: _access({AI}, set(USERS)),
        # L4: the hub bridges only the web page's image questions and listens to naila/alerts/all.
        **{topics.upload(SESSION, kind): _access({APP}, {AI}) for kind in topics.UPLOAD_KINDS},
        topics.upload(SESSION, "image"): _access({HUB, APP}, {AI}),
        topics.alert(ZONE, "person"): _access({AI}, {AI, APP}),
        topics.ALERTS_ALL: _access({AI}, {HUB, AI, APP}),
        topics.chat_request(SESSION): _access({APP}, {AI}),
        topics.chat_reply(SESSION): _access({AI}, {HUB, AI, APP}),
        # Issue 21: hubs publish their presence and read each other's (one hub user for all hubs).
        topics.hub_status("main"): _access({HUB}, {HUB, AI}),
        # Issue 21: AI servers' presence and the alarms each owns, replicated among AI servers only.
        topics.server_presence("gpu-1"): _access({AI}, {AI}),
        topics.alarm("gpu-1", "t1"): _access({AI}, {AI}),
    }
    return table


ACCESS = expected_access()


def test_table_covers_every_topic_kind() -> None:
    """A topic kind added to shared/mqtt/topics.py must get a row here (and a line in the ACL)."""
    kinds = {topics.parse_topic(t).kind for t in ACCESS}
    assert kinds == set(topics.TopicKind)


# ---- Fixtures and MQTT 5 probe ------------------------------------------------------------------


@pytest.fixture
def dep(tmp_path: Path) -> Iterator[Deployment]:
    with deployment(tmp_path) as d:
        yield d


@dataclass
class V5Prober:
    """A paho MQTT 5 client that reports the PUBACK reason code of each QoS 1 publish."""

    port: int
    user: str
    password: str
    _acks: dict[int, ReasonCode] = field(default_factory=dict)
    _cond: threading.Condition = field(default_factory=threading.Condition)

    def __post_init__(self) -> None:
        self._client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"probe-{self.user}", protocol=paho.MQTTv5)
        self._client.username_pw_set(self.user, self.password)
        self._client.on_publish = self._on_publish

    def _on_publish(self, _c: paho.Client, _u: object, mid: int, rc: ReasonCode, _p: object) -> None:
        with self._cond:
            self._acks[mid] = rc
            self._cond.notify_all()

    def __enter__(self) -> V5Prober:
        rc = self._client.connect("127.0.0.1", self.port)
        assert rc == paho.MQTT_ERR_SUCCESS
        self._client.loop_start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def publish(self, topic: str) -> ReasonCode:
        info = self._client.publish(topic, b"probe", qos=1)
        with self._cond:
            if not self._cond.wait_for(lambda: info.mid in self._acks, WAIT_S):
                raise AssertionError(f"no PUBACK for {topic} as {self.user}")
            return self._acks.pop(info.mid)


# ---- Tests ----------------------------------------------------------------------------------------


def test_write_matrix_every_user_on_every_topic(dep: Deployment) -> None:
    """MQTT 5 PUBACK codes: each user may publish exactly on the topics the roles give it."""
    wrong: list[str] = []
    for user in USERS:
        with V5Prober(dep.broker.port, user, dep.passwords[user]) as probe:
            for topic, access in ACCESS.items():
                rc = probe.publish(topic)
                allowed = not rc.is_failure  # 0 "success" or 0x10 "no matching subscribers"
                if allowed != (user in access.writers):
                    wrong.append(f"{user} {'may' if allowed else 'may not'} publish {topic} ({rc})")
                elif not allowed:
                    assert rc.value == 0x87, f"{user} on {topic}: expected 'Not authorized', got {rc}"
    assert not wrong, "\n".join(wrong)


async def test_read_matrix_everyone_subscribed_to_everything(dep: Deployment) -> None:
    """Each user subscribes to ``naila/#`` and receives exactly the topics it may read."""
    topic_order = list(ACCESS)
    async with contextlib.AsyncExitStack() as stack:
        readers = {u: await stack.enter_async_context(dep.client(u)) for u in USERS}
        writers = {u: await stack.enter_async_context(dep.client(u)) for u in USERS}
        for c in readers.values():
            await c.subscribe("naila/#", qos=1)
        # Every topic once from an allowed writer, then b"end" on every topic: each reader stops
        # at the last topic it can read, after everything else it could have received.
        for payload in (b"msg", b"end"):
            for topic in topic_order:
                writer = sorted(ACCESS[topic].writers)[0]
                await writers[writer].publish(topic, payload, qos=1)
        wrong: list[str] = []
        for user, c in readers.items():
            readable = [t for t in topic_order if user in ACCESS[t].readers]
            seen = await read_until(c, readable[-1], b"end")
            got = {t for t, p in seen if p == b"msg"}
            if got != set(readable):
                extra, missing = sorted(got - set(readable)), sorted(set(readable) - got)
                wrong.append(f"{user}: reads {extra} it must not; misses {missing}")
        assert not wrong, "\n".join(wrong)


async def test_device_cannot_publish_for_others_or_as_the_server(dep: Deployment) -> None:
    """MQTT 3.1.1 (silently dropped): nothing the device may not write reaches a subscriber or is retained."""
    forbidden = [t for t, a in ACCESS.items() if DEV not in a.writers]
    # The threats the ACL exists for, spelled out so that the table cannot quietly lose them.
    for must in (
        topics.device_status(OTHER),
        topics.device_command_response(OTHER),
        topics.signaling_offer(OTHER),
        topics.signaling_ice(OTHER),
        topics.device_command(OTHER),
        topics.device_command(DEV),
        topics.media_request(DEV),
        topics.signaling_answer(DEV),
        topics.SERVER_STATUS,
        topics.SERVER_BROADCAST,
        topics.ALERTS_ALL,
        topics.alert(ZONE, "person"),
        topics.chat_reply(SESSION),
    ):
        assert must in forbidden
    sentinel = topics.device_command_response(DEV)
    async with dep.client(AI) as observer, dep.client(DEV) as device:
        await observer.subscribe("naila/#", qos=1)
        await device.publish(topics.device_status(DEV), b"own status", qos=1, retain=True)
        for topic in forbidden:
            policy = topics.policy_for(topic)  # as the real publisher would send it (status retained)
            await device.publish(topic, b"forged", qos=policy.qos, retain=policy.retain)
        await device.publish(sentinel, b"sentinel", qos=1)
        seen = await read_until(observer, sentinel, b"sentinel")
        assert seen == [(topics.device_status(DEV), b"own status")]
    # Nothing forged was retained either: a newcomer gets the device's own status only.
    async with dep.client(AI) as newcomer, dep.client(DEV) as device:
        await newcomer.subscribe("naila/#", qos=1)
        await device.publish(sentinel, b"sentinel 2", qos=1)
        seen = await read_until(newcomer, sentinel, b"sentinel 2")
        assert seen == [(topics.device_status(DEV), b"own status")]


async def test_device_cannot_receive_another_devices_commands(dep: Deployment) -> None:
    """Subscribing by name or by wildcard to another device's command topic delivers nothing."""
    async with dep.client(DEV) as device, dep.client(OTHER) as other, dep.client(AI) as server:
        await device.subscribe(topics.device_command(OTHER), qos=1)
        await device.subscribe(topics.ALL_DEVICE_COMMANDS, qos=1)
        await device.subscribe(topics.device_wildcard(OTHER), qos=1)
        await other.subscribe(topics.device_command(OTHER), qos=1)
        await server.publish(topics.device_command(OTHER), b"for dev-b", qos=1)
        await server.publish(topics.media_request(OTHER), b"for dev-b too", qos=1)
        await server.publish(topics.device_command(DEV), b"for dev-a", qos=1)
        # The command was really published: its owner gets it.
        msg = await next_message(other)
        assert (msg.topic.value, payload_bytes(msg)) == (topics.device_command(OTHER), b"for dev-b")
        # The device's own command arrives (through the wildcard), and nothing before it.
        seen = await read_until(device, topics.device_command(DEV), b"for dev-a")
        assert seen == []


async def test_device_cannot_leave_a_will_on_another_devices_status(dep: Deployment) -> None:
    """A will is a publish too: the broker drops one on a topic its owner may not write."""
    own_status, other_status = topics.device_status(DEV), topics.device_status(OTHER)
    async with dep.client(HUB) as hub:
        await hub.subscribe(topics.ALL_DEVICE_STATUS, qos=1)
        settings = dep.settings(DEV)
        async with (
            link_child(dep, settings, other_status, b"dev-b is offline (forged)") as forger,
            link_child(dep, settings, own_status, b"dev-a offline") as honest,
        ):
            # The forger dies first, and the broker has handled that before the honest one dies,
            # so the forged will (were it published) would arrive before the honest one.
            forger.send_signal(signal.SIGKILL)
            await forger.wait()
            gone = f"Client child-{other_status} closed its connection"
            await wait_until(lambda: gone in dep.broker.log_tail())
            honest.send_signal(signal.SIGKILL)
            await honest.wait()
            seen = await read_until(hub, own_status, b"dev-a offline")
        assert seen == []


async def test_anonymous_wrong_password_and_unknown_user_are_refused(dep: Deployment) -> None:
    attempts: list[dict[str, Any]] = [
        {},
        {"username": DEV, "password": "not the password"},
        {"username": DEV},
        {"username": DEV, "password": dep.passwords[OTHER]},  # another device's password
        {"username": "dev-c", "password": dep.passwords[DEV]},
    ]
    for creds in attempts:
        with pytest.raises(aiomqtt.MqttCodeError) as err:
            async with aiomqtt.Client("127.0.0.1", dep.broker.port, timeout=WAIT_S, **creds):
                pass
        assert err.value.rc == 135, f"{creds}: {err.value}"  # CONNACK "not authorised"
    # The same broker lets the right password in: the refusals above were about the credentials.
    async with dep.client(DEV):
        pass


def test_shipped_conf_limits_fit_the_largest_message() -> None:
    """max_packet_size holds the largest upload (plus topic and header); anonymous stays off."""
    conf = dict(
        line.split(" ", 1) for line in SHIPPED_CONF.read_text().splitlines() if line and not line.startswith("#")
    )
    assert conf["allow_anonymous"] == "false"
    assert conf["persistence"] == "true"
    topic = topics.upload("s" * 64, "video")
    header = 1 + 4 + 2 + len(topic) + 2  # fixed header, remaining length, topic length+name, packet id
    assert int(conf["max_packet_size"]) >= UPLOAD_MAX_PAYLOAD_BYTES + header
    # Queued bytes per client: at least one maximal upload, or big uploads would be dropped.
    assert int(conf["max_queued_bytes"]) >= int(conf["max_packet_size"])


def test_users_script_refuses_ids_that_would_escape_their_topics(tmp_path: Path) -> None:
    """A '/', '+' or '#' in a device id (= user name = %u) would reach other topics; service names are taken."""
    for bad in ("dev-b/status", "+", "#", "..", "naila-ai-server", "x" * 65):
        result = subprocess.run(
            ["bash", str(USERS_SCRIPT), "-f", str(tmp_path / "passwd"), "-o", str(tmp_path / "out"), bad],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert result.returncode == 1, f"{bad!r} accepted: {result.stdout}"
    assert not (tmp_path / "passwd").exists()


def test_users_script_keeps_existing_passwords_unless_rotated(tmp_path: Path) -> None:
    def run(*args: str) -> None:
        subprocess.run(
            ["bash", str(USERS_SCRIPT), "-f", str(tmp_path / "passwd"), "-o", str(tmp_path / "out"), *args],
            check=True,
            capture_output=True,
            timeout=30,
        )

    def hashes() -> Mapping[str, str]:
        return dict(line.split(":", 1) for line in (tmp_path / "passwd").read_text().splitlines())

    run(DEV)
    first = hashes()
    assert oct((tmp_path / "passwd").stat().st_mode & 0o777) == "0o640"
    assert oct((tmp_path / "out" / f"{DEV}.env").stat().st_mode & 0o777) == "0o600"
    run(DEV, OTHER)
    assert hashes()[DEV] == first[DEV] and OTHER in hashes()
    run("-r", DEV)
    assert hashes()[DEV] != first[DEV]
    run("-d", OTHER)
    assert OTHER not in hashes()
