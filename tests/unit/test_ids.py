"""shared.ids: the one id rule, and every place that must follow it agrees with it."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from shared.config import AIServerSettings, DeviceSettings, HubSettings
from shared.ids import ID_RULE, MAX_ID_LEN, check_id, is_safe_id
from shared.mqtt import MessageError, check_segment, is_safe_segment

pytestmark = pytest.mark.unit

BOOTCONFIG = Path(__file__).resolve().parents[2] / "image/rootfs/usr/local/lib/naila/bootconfig.py"

TABLE = [
    ("kitchen-1", True),
    ("a" * 64, True),
    ("pi_2.local", True),
    ("...", True),
    (".hidden", True),
    ("..", False),
    (".", False),
    ("a" * 65, False),
    ("a/b", False),
    ("", False),
    ("kitchen pi", False),
    ("kitchen\n", False),
    ("küche", False),
    ("a+b", False),
]


def _bootconfig() -> ModuleType:
    # The image's first-boot check is a standalone script (standard library only), not a package.
    spec = importlib.util.spec_from_file_location("naila_image_bootconfig_ids", BOOTCONFIG)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


bootconfig = _bootconfig()


@pytest.mark.parametrize(("value", "ok"), TABLE)
def test_the_rule(value: str, ok: bool) -> None:
    assert is_safe_id(value) is ok
    assert is_safe_segment(value) is ok
    assert bootconfig.is_safe_id(value) is ok


def test_check_id_names_the_field_and_the_rule() -> None:
    assert check_id("kitchen", "device id") == "kitchen"
    with pytest.raises(ValueError, match=r"device id must be 1-64 characters .* got '\.\.'"):
        check_id("..", "device id")
    with pytest.raises(MessageError, match="zone must be"):
        check_segment("a/b", "zone")
    assert str(MAX_ID_LEN) in ID_RULE


def test_non_strings_are_not_ids() -> None:
    assert not is_safe_id(None)
    assert not is_safe_id(12)


@given(st.text(alphabet="ab.-_/ \n", max_size=70))
def test_bootconfig_copy_agrees(value: str) -> None:
    assert bootconfig.is_safe_id(value) is is_safe_id(value)


@pytest.mark.parametrize(("value", "ok"), TABLE)
def test_settings_follow_the_rule(value: str, ok: bool) -> None:
    """DEVICE_ID, HUB_ID and the AI server's VISION_ZONES device ids: `..` used to pass the first two."""
    for group, field in ((DeviceSettings, "device_id"), (HubSettings, "hub_id"), (AIServerSettings, "vision_zones")):
        given_value: object = {value: {}} if field == "vision_zones" else value
        if ok:
            group.model_validate({field: given_value})
        else:
            with pytest.raises(ValidationError):
                group.model_validate({field: given_value})
