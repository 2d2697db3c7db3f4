"""``naila ai-server``: one-line configuration errors, clear model errors, a real start and stop."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import grpc
import pytest

from shared.contract import pb, pb_grpc


def _run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "naila", "ai-server", *args], capture_output=True, text=True,
                          timeout=120, env=dict(os.environ, **env))


@pytest.mark.unit
def test_help() -> None:
    out = _run("--help")
    assert out.returncode == 0 and "--port" in out.stdout and "--metrics-port" in out.stdout


@pytest.mark.unit
def test_bad_config_is_one_line_and_exit_2() -> None:
    out = _run(STT_BEAM_SIZE="many")
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "STT_BEAM_SIZE" in lines[0], out.stderr


@pytest.mark.unit
def test_missing_model_names_the_path_and_exit_1() -> None:
    out = _run(STT_MODEL="/nowhere/whisper-model")
    assert out.returncode == 1
    assert "/nowhere/whisper-model" in out.stderr.strip().splitlines()[-1]


@pytest.mark.unit
def test_numpys_blas_gets_one_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    """OpenBLAS's idle threads spin ~0.1 s after each product: a core taken from the LLM and piper
    after every Whisper feature extraction (shared/threads.py)."""
    from threadpoolctl import threadpool_info, threadpool_limits  # type: ignore[import-untyped]

    from ai_server.app import main

    def blas_threads() -> set[int]:
        return {pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"}

    with threadpool_limits(limits=2, user_api="blas"):  # as numpy starts on 2 cores; restored after
        assert blas_threads() == {2}
        monkeypatch.setenv("STT_BEAM_SIZE", "many")  # main stops at the configuration, before any model
        assert main([]) == 2
        assert blas_threads() == {1}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.integration
@pytest.mark.slow
def test_starts_logs_what_it_loads_serves_status_and_stops_on_sigterm(tmp_path: object) -> None:
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "naila", "ai-server", "--host", "127.0.0.1", "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        lines: list[str] = []
        deadline = time.monotonic() + 180
        assert proc.stdout is not None
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if "listening on" in line:
                break
        log = "".join(lines)
        assert f"listening on 127.0.0.1:{port}" in log, log
        assert "loading STT model tiny.en" in log and "loading LLM" in log and "loading TTS voice" in log
        with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
            status = pb_grpc.NailaAIStub(ch).GetStatus(pb.StatusRequest(), timeout=10)
        assert status.status == "ok" and status.stt_model == "tiny.en"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
