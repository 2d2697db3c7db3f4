"""Start and stop the real NAILA processes on loopback: mosquitto, the AI server and the hub.

Used by ``naila demo``, the end-to-end tests and ``bench/e2e_latency.py``. Each part runs
as its own process (as in production: three machines) on free ports, configured only
through the environment variables of shared.config, and is stopped with SIGTERM (then
SIGKILL) so nothing outlives the caller.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger("naila.stack")

# Hub URL -> the bearer token its data endpoints (/turns, /metrics, /health?detail=1) answer to
# (HUB_METRICS_TOKEN), for helpers handed only the URL (naila.harness).
READ_TOKENS: dict[str, str] = {}
# Hub URL -> the device token its /connect accepts (HUB_DEVICE_TOKENS' "*" entry), for naila.harness.
DEVICE_TOKENS: dict[str, str] = {}


def hub_read(hub_url: str, path: str, timeout: float = 3.0) -> bytes:
    """GET one of the hub's data endpoints with the token the stack started it with."""
    token = READ_TOKENS.get(hub_url)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    with urllib.request.urlopen(urllib.request.Request(hub_url + path, headers=headers), timeout=timeout) as r:
        return bytes(r.read())


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_open(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.2)
        return s.connect_ex((host, port)) == 0


def wait_until(check: Callable[[], bool], timeout: float, what: str, proc: subprocess.Popen[bytes] | None = None,
               ) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what} exited with code {proc.returncode} before it was ready")
        if check():
            return
        time.sleep(0.1)
    raise TimeoutError(f"{what} not ready after {timeout:.0f}s")


@dataclass
class Part:
    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            log.warning("%s did not stop in %.0fs, killing it", self.name, timeout)
            self.proc.kill()
            self.proc.wait(5)

    def tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


@dataclass
class Stack:
    """The running processes and their addresses."""

    workdir: Path
    mqtt_host: str = "127.0.0.1"
    mqtt_port: int = 0
    ai_port: int = 0
    hub_port: int = 0
    parts: dict[str, Part] = field(default_factory=dict)
    extra_env: dict[str, str] = field(default_factory=dict)
    progress: Callable[[str], None] = print
    # HUB_METRICS_TOKEN of the hub it starts (unless extra_env names one): /turns and /metrics need it.
    read_token: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    # The hub's /connect is default-deny (issue 18, H1): a real token for the devices it starts or
    # the harness connects, as `naila init` would write (HUB_DEVICE_TOKENS "*" unless extra_env names them).
    device_token: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    # HUB_LISTENING_MODE of the hub it starts: test and bench stacks feed plain questions, so they
    # listen always; the demo passes wake_word (the product default).
    listening_mode: str = "always"
    _started: set[str] = field(default_factory=set)  # parts spawned before (their logs are appended to)

    @property
    def hub_url(self) -> str:
        return f"http://127.0.0.1:{self.hub_port}"

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            MQTT_HOST=self.mqtt_host,
            MQTT_PORT=str(self.mqtt_port),
            AI_SERVER_HOST="127.0.0.1",
            AI_SERVER_PORT=str(self.ai_port),
            HUB_HOST="127.0.0.1",
            HUB_PORT=str(self.hub_port),
            HUB_AI_SERVER=f"127.0.0.1:{self.ai_port}",
            AI_MEDIA_DIR=str(self.workdir / "media"),  # the stack's own, never the user's data folder
        )
        env["HUB_METRICS_TOKEN"] = self.read_token
        env["HUB_DEVICE_TOKENS"] = json.dumps({"*": self.device_token})
        env["DEVICE_HUB_TOKEN"] = self.device_token
        env["HUB_LISTENING_MODE"] = self.listening_mode
        env.update(self.extra_env)
        return env

    def _spawn(self, name: str, argv: list[str]) -> Part:
        log_path = self.workdir / f"{name}.log"
        # A restarted part (Stack.restart) appends: the earlier run's lines stay, which is where a test
        # failing after the restart usually has its cause. A part's first start begins its log afresh.
        fh = log_path.open("ab" if name in self._started else "wb")
        self._started.add(name)
        proc = subprocess.Popen(argv, stdout=fh, stderr=subprocess.STDOUT, env=self.env(),
                                start_new_session=True)
        fh.close()
        part = Part(name, proc, log_path)
        self.parts[name] = part
        return part

    def start_mosquitto(self, external: tuple[str, int] | None = None) -> None:
        if external is not None:
            self.mqtt_host, self.mqtt_port = external
            self.progress(f"[demo] using MQTT broker {self.mqtt_host}:{self.mqtt_port}")
            return
        exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        if not os.path.exists(exe):
            raise RuntimeError("mosquitto is not installed: run scripts/setup.sh (or apt-get install mosquitto)")
        self.mqtt_port = self.mqtt_port or free_port()
        conf = self.workdir / "mosquitto.conf"
        # set_tcp_nodelay: without it Nagle + delayed ACKs add ~40 ms to each QoS 1 hop.
        conf.write_text(
            f"listener {self.mqtt_port} 127.0.0.1\nallow_anonymous true\npersistence false\nset_tcp_nodelay true\n"
        )
        self.progress(f"[demo] starting mosquitto on 127.0.0.1:{self.mqtt_port}")
        part = self._spawn("mosquitto", [exe, "-c", str(conf)])
        wait_until(lambda: port_open("127.0.0.1", self.mqtt_port), 10, "mosquitto", part.proc)

    def start_ai_server(self, timeout: float = 180.0) -> None:
        self.ai_port = self.ai_port or free_port()
        self.progress(f"[demo] starting AI server (loading STT, LLM, TTS) on 127.0.0.1:{self.ai_port}")
        part = self._spawn("ai-server", [sys.executable, "-m", "naila", "ai-server"])
        wait_until(lambda: port_open("127.0.0.1", self.ai_port), timeout, "AI server", part.proc)

    def start_hub(self, timeout: float = 60.0) -> None:
        self.hub_port = self.hub_port or free_port()
        self.progress(f"[demo] starting hub on {self.hub_url}")
        part = self._spawn("hub", [sys.executable, "-m", "naila", "hub"])
        READ_TOKENS[self.hub_url] = self.extra_env.get("HUB_METRICS_TOKEN") or self.read_token
        DEVICE_TOKENS[self.hub_url] = self.extra_env.get("DEVICE_HUB_TOKEN") or self.device_token
        wait_until(lambda: self.health() is not None, timeout, "hub", part.proc)

    def health(self) -> dict[str, object] | None:
        try:
            with urllib.request.urlopen(f"{self.hub_url}/health", timeout=1) as r:
                return dict(json.loads(r.read()))
        except urllib.error.HTTPError as e:  # 503 while the AI server is unreachable still has a body
            with contextlib.suppress(Exception):
                return dict(json.loads(e.read()))
            return None
        except OSError:
            return None

    def wait_grpc_connected(self, timeout: float = 30.0) -> None:
        def ok() -> bool:
            h = self.health()
            return bool(h and h.get("grpc_connected"))

        wait_until(ok, timeout, "hub gRPC link to the AI server", self.parts["hub"].proc)

    def turns(self) -> list[dict[str, object]]:
        data = json.loads(hub_read(self.hub_url, "/turns", timeout=2))
        return list(data["turns"] if isinstance(data, dict) else data)

    def logs(self, n: int = 60) -> str:
        """The last ``n`` lines of each part's log (workdir/<part>.log), for a failing test's message."""
        return "\n".join(f"--- {name} ({part.log_path}) ---\n{part.tail(n)}" for name, part in self.parts.items())

    def restart(self, name: str) -> None:
        part = self.parts.pop(name)
        part.stop()
        {"ai-server": self.start_ai_server, "hub": self.start_hub}[name]()

    def stop(self) -> None:
        for name in ("hub", "ai-server", "mosquitto"):
            part = self.parts.pop(name, None)
            if part is not None:
                part.stop()


def new_workdir(prefix: str = "naila-") -> Path:
    return Path(tempfile.mkdtemp(prefix=prefix))
