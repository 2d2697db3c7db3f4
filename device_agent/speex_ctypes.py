"""A thin ctypes binding to libspeexdsp: the MDF echo canceller and the preprocessor.

Why not only the ``speexdsp`` PyPI package: its SWIG wrapper exposes the echo canceller but not
the preprocessor, and it hides the echo state pointer, so speex's residual-echo suppressor
(``SPEEX_PREPROCESS_SET_ECHO_STATE``) and its noise suppressor cannot be used with it. Its sdist
also needs swig + headers to build (there is no wheel), while this binding only needs the
runtime library that Debian ships as ``libspeexdsp1``. The package is still used when present,
as a cross-check (tests assert both give bit-identical output).

All calls take and return int16 numpy arrays of exactly one frame.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
from typing import Final

import numpy as np
import numpy.typing as npt

Int16Array = npt.NDArray[np.int16]

# speex_echo.h
SPEEX_ECHO_SET_SAMPLING_RATE: Final = 24
SPEEX_ECHO_GET_SAMPLING_RATE: Final = 25
# speex_preprocess.h
SPEEX_PREPROCESS_SET_DENOISE: Final = 0
SPEEX_PREPROCESS_SET_AGC: Final = 2
SPEEX_PREPROCESS_SET_VAD: Final = 4
SPEEX_PREPROCESS_SET_DEREVERB: Final = 8
SPEEX_PREPROCESS_SET_NOISE_SUPPRESS: Final = 18
SPEEX_PREPROCESS_SET_ECHO_SUPPRESS: Final = 20
SPEEX_PREPROCESS_SET_ECHO_SUPPRESS_ACTIVE: Final = 22
SPEEX_PREPROCESS_SET_ECHO_STATE: Final = 24

_lib: ctypes.CDLL | None = None


class SpeexUnavailable(RuntimeError):
    """libspeexdsp cannot be loaded (apt-get install libspeexdsp1)."""


def load_library() -> ctypes.CDLL:
    """Load libspeexdsp once and declare the prototypes we use."""
    global _lib
    if _lib is not None:
        return _lib
    names = ["libspeexdsp.so.1", ctypes.util.find_library("speexdsp"), "libspeexdsp.dylib"]
    last: OSError | None = None
    for name in names:
        if not name:
            continue
        try:
            lib = ctypes.CDLL(name)
            break
        except OSError as exc:
            last = exc
    else:
        raise SpeexUnavailable(f"libspeexdsp not found ({last}); install libspeexdsp1")

    lib.speex_echo_state_init.argtypes = [ctypes.c_int, ctypes.c_int]
    lib.speex_echo_state_init.restype = ctypes.c_void_p
    lib.speex_echo_state_destroy.argtypes = [ctypes.c_void_p]
    lib.speex_echo_state_destroy.restype = None
    lib.speex_echo_state_reset.argtypes = [ctypes.c_void_p]
    lib.speex_echo_state_reset.restype = None
    # Buffers are passed as raw addresses (ndarray.ctypes.data): cheaper than data_as() per call.
    lib.speex_echo_cancellation.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
    lib.speex_echo_cancellation.restype = None
    lib.speex_echo_ctl.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p]
    lib.speex_echo_ctl.restype = ctypes.c_int

    lib.speex_preprocess_state_init.argtypes = [ctypes.c_int, ctypes.c_int]
    lib.speex_preprocess_state_init.restype = ctypes.c_void_p
    lib.speex_preprocess_state_destroy.argtypes = [ctypes.c_void_p]
    lib.speex_preprocess_state_destroy.restype = None
    lib.speex_preprocess_run.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
    lib.speex_preprocess_run.restype = ctypes.c_int
    lib.speex_preprocess_ctl.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p]
    lib.speex_preprocess_ctl.restype = ctypes.c_int
    _lib = lib
    return lib


def _ptr(x: Int16Array) -> int:
    return int(x.ctypes.data)


class EchoState:
    """``SpeexEchoState``: frame-by-frame MDF adaptive filter (mono mic, mono speaker)."""

    def __init__(self, frame_size: int, filter_length: int, sample_rate: int) -> None:
        self._lib = load_library()
        self.frame_size = frame_size
        handle = self._lib.speex_echo_state_init(frame_size, filter_length)
        if not handle:
            raise SpeexUnavailable("speex_echo_state_init failed")
        self.handle: int = handle
        rate = ctypes.c_int(sample_rate)
        self._lib.speex_echo_ctl(self.handle, SPEEX_ECHO_SET_SAMPLING_RATE, ctypes.byref(rate))
        self._out = np.zeros(frame_size, dtype=np.int16)

    def cancel(self, mic: Int16Array, ref: Int16Array) -> Int16Array:
        """One frame: ``mic`` (near end + echo), ``ref`` (what the speaker played) -> echo removed."""
        mic = np.ascontiguousarray(mic, dtype=np.int16)
        ref = np.ascontiguousarray(ref, dtype=np.int16)
        if mic.size != self.frame_size or ref.size != self.frame_size:
            raise ValueError(f"speex echo frames must be {self.frame_size} samples")
        out = np.empty(self.frame_size, dtype=np.int16)
        self._lib.speex_echo_cancellation(self.handle, _ptr(mic), _ptr(ref), _ptr(out))
        return out

    def reset(self) -> None:
        self._lib.speex_echo_state_reset(self.handle)

    def close(self) -> None:
        if self.handle:
            self._lib.speex_echo_state_destroy(self.handle)
            self.handle = 0

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # interpreter shutdown
            self.close()


class Preprocessor:
    """``SpeexPreprocessState``: noise suppression and, linked to an echo state, residual-echo suppression."""

    def __init__(self, frame_size: int, sample_rate: int) -> None:
        self._lib = load_library()
        self.frame_size = frame_size
        handle = self._lib.speex_preprocess_state_init(frame_size, sample_rate)
        if not handle:
            raise SpeexUnavailable("speex_preprocess_state_init failed")
        self.handle: int = handle

    def _set_int(self, request: int, value: int) -> None:
        v = ctypes.c_int(value)
        self._lib.speex_preprocess_ctl(self.handle, request, ctypes.byref(v))

    def configure(
        self,
        *,
        denoise: bool,
        noise_suppress_db: int = -15,
        agc: bool = False,
        vad: bool = False,
        dereverb: bool = False,
    ) -> None:
        self._set_int(SPEEX_PREPROCESS_SET_DENOISE, int(denoise))
        self._set_int(SPEEX_PREPROCESS_SET_NOISE_SUPPRESS, noise_suppress_db)
        self._set_int(SPEEX_PREPROCESS_SET_AGC, int(agc))
        if vad:  # speexdsp prints a warning to stderr whenever the (hacked) VAD is configured
            self._set_int(SPEEX_PREPROCESS_SET_VAD, 1)
        self._set_int(SPEEX_PREPROCESS_SET_DEREVERB, int(dereverb))

    def link_echo(
        self, echo: EchoState | None, suppress_db: int = -40, suppress_active_db: int = -15
    ) -> None:
        """Use ``echo``'s residual-echo estimate (None unlinks). Levels are attenuations in dB (<= 0)."""
        self._lib.speex_preprocess_ctl(
            self.handle, SPEEX_PREPROCESS_SET_ECHO_STATE, ctypes.c_void_p(echo.handle if echo else None)
        )
        if echo is not None:
            self._set_int(SPEEX_PREPROCESS_SET_ECHO_SUPPRESS, suppress_db)
            self._set_int(SPEEX_PREPROCESS_SET_ECHO_SUPPRESS_ACTIVE, suppress_active_db)

    def run(self, frame: Int16Array) -> Int16Array:
        """Process one frame in a copy; returns the processed frame."""
        if frame.size != self.frame_size:
            raise ValueError(f"speex preprocess frames must be {self.frame_size} samples")
        x = np.array(frame, dtype=np.int16, copy=True)
        self._lib.speex_preprocess_run(self.handle, _ptr(x))
        return x

    def close(self) -> None:
        if self.handle:
            self._lib.speex_preprocess_state_destroy(self.handle)
            self.handle = 0

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # interpreter shutdown
            self.close()
