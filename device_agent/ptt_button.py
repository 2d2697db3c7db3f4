"""A push-to-talk button on a Raspberry Pi GPIO pin (issue 19: listening modes).

gpiozero reads the pin (its default pin factory on a Pi uses lgpio; tests use its MockFactory);
it is imported only when DEVICE_PTT_GPIO is set, so a device without a button never loads it.

Debouncing is ours, not gpiozero's ``bounce_time``: that one drops edges inside the window, so a
bounce on release can leave the button "held" until the next press. Here every edge (re)arms a
settle timer, and when it fires the pin's *current* level is what counts: a state is reported
once it has held for ``debounce_s``, and the final state is never lost.

Edges arrive on gpiozero's thread; they are handed to the asyncio loop, where the state lives.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any, Protocol

log = logging.getLogger(__name__)


class Timer(Protocol):
    def cancel(self) -> None: ...


# (delay_s, callback) -> a cancellable handle; loop.call_later by default, a fake in unit tests.
Scheduler = Callable[[float, Callable[[], None]], Timer]


class PttButton:
    """Calls ``on_change(pressed)`` on the loop once per debounced press and release."""

    def __init__(
        self,
        pin: int,
        on_change: Callable[[bool], None],
        *,
        active_low: bool = True,
        debounce_s: float = 0.02,
        loop: asyncio.AbstractEventLoop | None = None,
        call_later: Scheduler | None = None,
        pin_factory: Any = None,
    ) -> None:
        from gpiozero import Button  # lazy: only a device with a button needs gpiozero (and lgpio)

        self.pin = pin
        self._on_change = on_change
        self._debounce_s = debounce_s
        self._loop = loop or asyncio.get_running_loop()
        self._call_later: Scheduler = call_later or self._loop.call_later
        self._timer: Timer | None = None
        self.pressed = False
        self.presses = 0
        self.bounces = 0  # edges that did not change the settled state (contact bounce)
        # pull_up=True: pressed = pin pulled low. bounce_time=None: see the module doc.
        self._button = Button(pin, pull_up=active_low, bounce_time=None, pin_factory=pin_factory)
        self._button.when_pressed = self._edge
        self._button.when_released = self._edge
        if self._button.is_pressed:  # held at start: settle it like any edge
            self._loop.call_soon(self._on_edge)

    def _edge(self) -> None:
        """gpiozero's thread (or the caller's, with the mock pins): hop to the loop."""
        with contextlib.suppress(RuntimeError):  # loop closed while the agent stops
            self._loop.call_soon_threadsafe(self._on_edge)

    def _on_edge(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._call_later(self._debounce_s, self._settle)

    def _settle(self) -> None:
        self._timer = None
        if self._button.closed:
            return
        pressed = bool(self._button.is_pressed)
        if pressed == self.pressed:
            self.bounces += 1
            return
        self.pressed = pressed
        self.presses += pressed
        log.info("push-to-talk button %s", "pressed" if pressed else "released")
        try:
            self._on_change(pressed)
        except Exception:  # the button must keep working whatever the receiver does
            log.exception("push-to-talk callback failed")

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._button.close()


def make_ptt_button(
    pin: int | None, on_change: Callable[[bool], None], *, active_low: bool, debounce_ms: int
) -> PttButton | None:
    """The button for DEVICE_PTT_GPIO, or None when unset. Raises ValueError (one line) when the pin
    cannot be opened (gpiozero missing, not a Pi, pin busy)."""
    if pin is None:
        return None
    try:
        return PttButton(pin, on_change, active_low=active_low, debounce_s=debounce_ms / 1000)
    except ImportError as exc:
        raise ValueError(
            f"DEVICE_PTT_GPIO={pin}: gpiozero is not installed (pip install 'naila[device]'): {exc}"
        ) from None
    except Exception as exc:  # gpiozero's BadPinFactory, GPIOPinInUse, ... all one line
        raise ValueError(f"DEVICE_PTT_GPIO={pin}: cannot open the button pin ({type(exc).__name__}: {exc})") from None
