"""A stereo-only sound card through the real PortAudio and ALSA (issue 22), no sound card needed:
an asoundrc ``multi`` device over ALSA's ``null`` plugin has exactly 2 channels, as a stereo-only
USB microphone has. The agent's sound backend opens it (with a plain ``null`` speaker) in a
subprocess whose HOME holds that asoundrc (PortAudio reads ALSA's configuration once, at import).
The null plugin has no clock: blocks come as fast as the callback takes them.

Found with it: PortAudio 19.6's ALSA host API also opens a *mono* stream on such a device (it pads
the host channels and hands over the first), so the backend opens a 2-channel device in stereo
and averages (device_agent/audio_io/card_channels.py). The multi device carries no samples
through the null plugin, so the averaging itself is checked in test_card_channels.py, and so is a
stereo-only speaker (PortAudio runs no duplex stream with a ``multi`` device for playback here).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


ASOUNDRC = """\
# A microphone with exactly 2 channels (as a stereo-only USB mic has) and a speaker, over ALSA's
# null plugin: no sound card needed.
pcm.mic_null { type null }
pcm.speaker_null { type null }
pcm.stereo_mic {
  type multi
  slaves.a { pcm "mic_null"; channels 2; }
  bindings.0 { slave a; channel 0; }
  bindings.1 { slave a; channel 1; }
}
"""

REAL_BACKEND = textwrap.dedent("""
    import asyncio, json, time
    import numpy as np
    import sounddevice as sd
    from device_agent.audio_io.sounddevice_backend import SoundDeviceBackend

    async def main():
        info = sd.query_devices("stereo_mic", "input")
        blocks = []
        backend = SoundDeviceBackend("stereo_mic", "speaker_null")
        await backend.start(lambda mic: (blocks.append(mic.shape), np.zeros_like(mic))[1])
        deadline = time.monotonic() + 10
        while len(blocks) < 20 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await backend.stop()
        print(json.dumps({"max_in": info["max_input_channels"], "channels": backend.channels,
                          "blocks": len(blocks), "shapes": sorted({str(s) for s in blocks}),
                          "errors": backend.callback_errors}))

    asyncio.run(main())
""")


def test_a_real_alsa_microphone_with_only_two_channels_opens_in_stereo_and_feeds_mono_blocks(tmp_path: Path) -> None:
    pytest.importorskip("sounddevice", reason="PortAudio (libportaudio2) is not installed")
    (tmp_path / ".asoundrc").write_text(ASOUNDRC)  # ALSA reads ~/.asoundrc: HOME is this folder
    env = {**os.environ, "HOME": str(tmp_path), "PYTHONPATH": str(ROOT)}
    env.pop("ALSA_CONFIG_PATH", None)
    r = subprocess.run(
        [sys.executable, "-c", REAL_BACKEND], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert r.returncode == 0, r.stderr[-2000:]
    got = json.loads(r.stdout.strip().splitlines()[-1])
    assert got["max_in"] == 2  # what PortAudio reports for the device
    assert got["channels"] == [2, 1] and got["blocks"] >= 20 and got["errors"] == 0
    assert got["shapes"] == ["(480,)"]  # 10 ms mono blocks at 48 kHz reach the pipeline
