"""The gate every inbound MQTT message passes: rate limit, size, schema, topic/payload agreement.

Why one place: the reasons a message is refused must be named the same way everywhere (they are
metric labels), each refusal is counted, and the log must not become the attack (a flood of bad
messages is logged a few lines per reason and interval, the rest only counted).

Reasons (``Rejected.reason`` and the ``naila_ai_mqtt_rejected{reason}`` label):

================== ==========================================================================
unknown_topic      not a topic of the NAILA tree (or an id in it is unsafe)
rate_limited       the device / session is over its message rate (spec §15.2), or all sessions
                   together are over the chat / upload rate (ids are the sender's choice)
oversized          the payload, or its decoded media, is over the configured limit
malformed          not JSON, or not the topic's payload model
unauthorised       the payload names another device / session / media type than its topic
unsupported_format the media format is not in the MEDIA_SUPPORTED_*_FORMATS whitelist
content_mismatch   the bytes are not what the declared format says (magic numbers)
corrupt            the format matches but the file cannot be read (e.g. an image header)
unmatched          a reply whose request_id nobody is waiting for (late, or not for us)
busy               too much work queued already (chat / upload answers), or the received-message
                   queue is full (bytes)
over_quota         an unsolicited device recording beyond AI_RECORDING_QUOTA_BYTES_PER_H
================== ==========================================================================
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from ai_server.control.errors import Rejected
from ai_server.control.metrics import ControlMetrics
from shared.mqtt import (
    MODEL_FOR_KIND,
    MessageError,
    NailaMessage,
    ParsedTopic,
    TopicKind,
    check_consistent,
    decode,
)
from shared.rate_limit import RateLimiter

log = logging.getLogger(__name__)


def rate_key(parsed: ParsedTopic) -> str:
    """Whose budget a message spends: its device's, else its session's, else the topic kind's."""
    if parsed.device_id is not None:
        return f"device:{parsed.device_id}"
    if parsed.session_id is not None:
        return f"session:{parsed.session_id}"
    return f"kind:{parsed.kind.value}"


class InboundGuard:
    """Rate limits per device / session, decodes with limits, and accounts for every refusal.

    Device topics are bound to the device's MQTT user by the broker ACL (``%u``), so the device
    key is the authenticated sender. Chat and upload topics carry a session id the client makes
    up (and MQTT does not tell a subscriber who published), so those kinds also share one bucket
    per kind (``kind_rates``): rotating session ids gets a flood no further than that.
    """

    def __init__(
        self,
        metrics: ControlMetrics,
        *,
        rate_per_s: float,
        burst: float,
        max_media_bytes: int,
        kind_rates: dict[TopicKind, float] | None = None,
        clock: Callable[[], float] = time.monotonic,
        log_every_s: float = 10.0,
    ) -> None:
        self.metrics = metrics
        self.max_media_bytes = max_media_bytes
        self.limiter = RateLimiter(rate_per_s, burst, clock=clock)
        self.kind_limiters = {
            kind: RateLimiter(rate, burst, clock=clock, max_keys=1) for kind, rate in (kind_rates or {}).items()
        }
        # A few lines per reason, then one per log_every_s: enough to diagnose, too few to flood.
        self._log_budget = RateLimiter(1.0 / log_every_s, 3, clock=clock)
        self.logs_suppressed = 0

    def admit(self, parsed: ParsedTopic) -> None:
        """Spend one message of the sender's budget; raises :class:`Rejected` when it is empty."""
        key = rate_key(parsed)
        # The sender's own bucket first: one flooding session is refused without spending the
        # budget everyone shares.
        if not self.limiter.allow(key):
            raise Rejected("rate_limited", f"{key} is sending faster than allowed")
        shared = self.kind_limiters.get(parsed.kind)
        if shared is not None and not shared.allow(parsed.kind.value):
            raise Rejected("rate_limited", f"{parsed.kind.value} messages of all sessions together are over "
                           f"{shared.rate_per_s:g}/s")

    def decode(self, parsed: ParsedTopic, payload: bytes) -> NailaMessage:
        """The topic's model from ``payload``, checked against the topic; raises :class:`Rejected`."""
        model = MODEL_FOR_KIND[parsed.kind]
        limit = model.payload_limit(self.max_media_bytes)
        if len(payload) > limit:
            raise Rejected("oversized", f"{model.__name__} payload is {len(payload)} bytes, over {limit}")
        try:
            message = decode(model, payload, max_media_bytes=self.max_media_bytes)
        except MessageError as exc:
            # The base64 check in shared.mqtt.fields reports an over-limit blob on the "data" field.
            too_big = model.carries_media and exc.field == "data" and "media limit" in str(exc)
            raise Rejected("oversized" if too_big else "malformed", str(exc)) from None
        try:
            check_consistent(parsed, message)
        except MessageError as exc:
            raise Rejected("unauthorised", str(exc)) from None
        return message

    def refused(self, topic: str, err: Rejected) -> None:
        """Count a refusal and log it, within the log budget of its reason."""
        self.metrics.reject(err.reason)
        if self._log_budget.allow(err.reason):
            suppressed = f" ({self.logs_suppressed} similar lines suppressed so far)" if self.logs_suppressed else ""
            log.warning("MQTT message on %.200s refused, %s: %s%s", topic, err.reason, err.detail, suppressed)
        else:
            self.logs_suppressed += 1
