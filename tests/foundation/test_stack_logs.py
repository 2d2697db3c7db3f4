"""naila.stack keeps a restarted part's earlier log: a test failing after Stack.restart needs it."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from naila.stack import Stack

pytestmark = pytest.mark.unit


def test_a_restarted_part_appends_to_its_log_and_a_new_stack_starts_it_afresh(tmp_path: Path) -> None:
    def run(stack: Stack, text: str) -> None:
        part = stack._spawn("hub", [sys.executable, "-c", f"print({text!r})"])
        assert part.proc.wait(30) == 0

    first = Stack(workdir=tmp_path, progress=lambda _: None)
    run(first, "before the restart")
    run(first, "after the restart")
    assert (tmp_path / "hub.log").read_text().split() == ["before", "the", "restart", "after", "the", "restart"]

    run(Stack(workdir=tmp_path, progress=lambda _: None), "a new stack")
    assert (tmp_path / "hub.log").read_text().split() == ["a", "new", "stack"]
