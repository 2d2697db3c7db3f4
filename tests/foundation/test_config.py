from __future__ import annotations

from pathlib import Path

import pytest

from shared.config import ALL_GROUPS, ConfigError, HubSettings, MediaSettings, VideoSettings, load
from shared.config.doc import BEGIN, DOC_PAGE, END, render, update
from shared.config.doc import main as doc_main

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[2]


def test_defaults_load_for_every_group() -> None:
    for group in ALL_GROUPS:
        load(group)


def test_spec_variables_exist_with_spec_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    video = load(VideoSettings)
    assert (video.video_resolution, video.video_max_fps) == ("640x480", 15)
    assert (video.video_motion_threshold, video.video_process_every_n_frames) == (25, 3)
    media = load(MediaSettings)
    assert media.media_max_upload_size == 52428800
    assert media.media_snapshot_timeout_ms == 5000
    assert media.media_supported_image_formats == ["jpeg", "png", "webp", "gif"]
    monkeypatch.setenv("MEDIA_SUPPORTED_VIDEO_FORMATS", "mp4, WEBM")
    assert load(MediaSettings).media_supported_video_formats == ["mp4", "webm"]


@pytest.mark.parametrize(
    ("group", "var", "value"),
    [
        (HubSettings, "HUB_PORT", "eighty"),
        (HubSettings, "HUB_VAD_AGGRESSIVENESS", "7"),
        (VideoSettings, "VIDEO_RESOLUTION", "big"),
        (MediaSettings, "MEDIA_MAX_UPLOAD_SIZE", "-1"),
    ],
)
def test_bad_value_is_one_line_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, group: type, var: str, value: str
) -> None:
    monkeypatch.setenv(var, value)
    with pytest.raises(ConfigError) as err:
        load(group)
    msg = str(err.value)
    assert var in msg and "\n" not in msg


def test_the_configuration_page_holds_the_table_generated_from_the_models() -> None:
    page = ROOT / "docs" / "configuration.md"
    assert page == DOC_PAGE
    assert render() in page.read_text(), (
        "docs/configuration.md's table is stale: run `python -m shared.config.doc --update`"
    )


def test_doc_update_and_check_rewrite_only_between_the_markers(tmp_path: Path) -> None:
    page = tmp_path / "configuration.md"
    page.write_text(f"# Settings\nintro\n{BEGIN}\n| stale |\n{END}\nafter\n")
    assert doc_main(["--check", str(page)]) == 1
    assert doc_main(["--update", str(page)]) == 0
    assert page.read_text() == f"# Settings\nintro\n{render()}\nafter\n"
    assert doc_main(["--check", str(page)]) == 0
    assert update(page) is False  # nothing left to change
    (tmp_path / "bare.md").write_text("no markers\n")
    assert doc_main(["--check", str(tmp_path / "bare.md")]) == 2


# -- secrets never echoed in config errors (finding L1) --------------------------------------------


@pytest.mark.parametrize(
    ("var", "value", "secret"),
    [
        ("HUB_WEB_TOKEN", "hunter2-short", "hunter2-short"),  # a SecretStr, refused by its validator
        ("HUB_DEVICE_TOKENS", '{"kitchen": "tiny-token-1"}', "tiny-token-1"),  # a dict of tokens
        ("HUB_DEVICE_TOKENS", '{"kitchen": "oops-not-json', "oops-not-json"),
    ],
)
def test_a_bad_secret_is_named_but_never_shown(
    monkeypatch: pytest.MonkeyPatch, var: str, value: str, secret: str
) -> None:
    monkeypatch.setenv(var, value)
    with pytest.raises(ConfigError) as err:
        load(HubSettings)
    msg = str(err.value)
    assert var in msg and secret not in msg and "\n" not in msg
    assert "(secret, not shown)" in msg


def test_a_validator_quoting_a_secret_is_masked_and_plain_values_still_show() -> None:
    from pydantic import SecretStr, field_validator

    from shared.config.base import NailaSettings, is_secret_field

    class Demo(NailaSettings):
        demo_password: SecretStr = SecretStr("x")
        demo_api_key: str = ""
        demo_max_tokens: int = 1
        demo_port: int = 1

        @field_validator("demo_api_key")
        @classmethod
        def _key(cls, v: str) -> str:
            raise ValueError(f"key {v!r} is not one the server knows")

    with pytest.raises(ConfigError) as err:
        load(Demo, demo_api_key="sk-live-123456", demo_port="eighty")
    msg = str(err.value)
    assert "sk-live-123456" not in msg and "DEMO_API_KEY=(secret, not shown): Value error, key '***'" in msg
    assert "DEMO_PORT='eighty'" in msg  # not a secret: shown as before
    assert is_secret_field(Demo, "demo_password") and not is_secret_field(Demo, "demo_max_tokens")
