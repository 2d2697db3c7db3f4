"""shared.version.naila_version: the one version every deployable reports."""

from __future__ import annotations

from importlib import metadata

import pytest
from packaging.version import Version

from shared import version
from shared.version import UNKNOWN, naila_version

pytestmark = pytest.mark.unit


def test_the_installed_version_is_reported() -> None:
    assert naila_version() == metadata.version("naila")


def test_an_uninstalled_tree_reports_a_valid_unknown_version(monkeypatch: pytest.MonkeyPatch) -> None:
    def missing(name: str) -> str:
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(version.metadata, "version", missing)
    assert naila_version() == UNKNOWN
    assert Version(UNKNOWN).local == "unknown"  # still a PEP 440 version, visibly not a release
