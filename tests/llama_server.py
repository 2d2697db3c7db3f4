"""llama-cpp-python's own OpenAI-compatible server as a real LLM service for tests: started on a
free port with a given GGUF, its output in a log file (a file: a full pipe would stall it), and
stopped again. One home for what the tool-call, prompt-cache and shared-LLM tests all need."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from tests.conftest import free_port


@contextlib.contextmanager
def llama_cpp_server(model: Path, log: Path, *extra: str, threads: int = 1, start_s: float = 120.0) -> Iterator[str]:
    """Yields the server's ``/v1`` base URL once ``/v1/models`` answers; ``extra`` are more server
    arguments (``--model_alias``, ``--verbose true``, ...)."""
    port = free_port()
    args = ["--model", str(model), "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "2048",
            "--n_threads", str(threads), "--n_threads_batch", str(threads), *extra]
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "llama_cpp.server", *args], stdout=out,
                                stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + start_s  # loading the model on a busy 2-core machine
        while True:  # waiting for a process to come up, not timing logic
            if proc.poll() is not None:
                raise RuntimeError(f"llama_cpp.server exited: {log.read_text()[-2000:]}")
            with contextlib.suppress(OSError):
                urllib.request.urlopen(f"{url}/models", timeout=2).close()
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"llama_cpp.server did not answer within {start_s:.0f} s")
            time.sleep(0.25)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
