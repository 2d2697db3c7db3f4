"""Scale-out test kit: real AI server processes (tests/scale/ai_process.py) that a test can kill and restart."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hub.server import Hub, run_hub
from shared.audio import Int16Array, espeak
from shared.config import HubSettings, WebRTCSettings, load
from tests.conftest import free_port

REPO_ROOT = Path(__file__).resolve().parents[2]


async def hub_for(*servers: AiProcess) -> Hub:
    """An in-process hub with a stream to each of ``servers`` (HUB_AI_SERVER in that order), every
    device let in, always listening, no MQTT, quick redials."""
    settings = load(
        HubSettings,
        hub_host="127.0.0.1",
        hub_ai_server=",".join(s.address for s in servers),
        hub_allow_unauthenticated=True,
        hub_device_tokens={},
        hub_listening_mode="always",
        hub_mqtt=False,
        hub_grpc_backoff_initial_s=0.05,
        hub_grpc_backoff_max_s=0.5,
    )
    return await run_hub(settings, WebRTCSettings(webrtc_ice_servers=[]), port=0)


class AiProcess:
    """One AI server process on a fixed port (so a restart is the same HUB_AI_SERVER entry)."""

    def __init__(
        self,
        name: str,
        data: Path,
        mqtt: str = "",
        llm_base_url: str = "",
        share_group: str = "naila-ai",
        stt_file: Path | None = None,
    ) -> None:
        self.name, self.data, self.mqtt, self.llm_base_url = name, data, mqtt, llm_base_url
        self.share_group = share_group
        self.stt_file = stt_file
        self.port = free_port()
        self.proc: subprocess.Popen[str] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, within_s: float = 60.0) -> None:
        cmd = [
            sys.executable,
            "-m",
            "tests.scale.ai_process",
            "--name",
            self.name,
            "--port",
            str(self.port),
            "--mqtt",
            self.mqtt,
            "--data",
            str(self.data),
        ]
        if self.llm_base_url:
            cmd += ["--llm-base-url", self.llm_base_url]
        if self.stt_file is not None:
            cmd += ["--stt-file", str(self.stt_file)]
        env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
        self.proc = subprocess.Popen(cmd, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        deadline = time.monotonic() + within_s
        line = self.proc.stdout.readline()  # blocks until "ready <port>" (or EOF if it died)
        if not line.startswith("ready") or time.monotonic() > deadline:
            self.proc.kill()
            raise AssertionError(f"AI server {self.name} did not start: {line!r}")

    def kill(self) -> None:
        """SIGKILL: no goodbye, no clean stream close (the host is gone)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def freeze(self) -> None:
        """SIGSTOP: the host hangs or is cut off; its sockets stay open, so only keep-alives notice."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGSTOP)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


@pytest.fixture
def ai_processes(tmp_path: Path) -> Iterator[list[AiProcess]]:
    """A list the test appends AiProcess objects to; all are stopped at the end."""
    procs: list[AiProcess] = []
    yield procs
    for p in procs:
        p.stop()


@pytest.fixture(scope="session")
def phrase() -> Int16Array:
    """About 1.4 s of espeak-ng speech at 48 kHz (as tests/hub's)."""
    return espeak("turn on the kitchen light", rate=48_000)
