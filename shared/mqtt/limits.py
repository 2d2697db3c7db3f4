"""Size limits for MQTT topics and payloads.

Why limits at all: every payload is parsed in the hub / AI server event loop, so one oversized or
deeply padded message from a misbehaving device (or anyone on the LAN) must be rejected before it
is parsed, not after it has been copied around. The numbers are generous for real traffic.
"""

from __future__ import annotations

from typing import Final

from shared.ids import MAX_ID_LEN

#: Longest id / topic segment (device_id, session_id, zone, alert_type, room), characters.
MAX_SEGMENT_LEN: Final = MAX_ID_LEN

#: Largest control message (status, signaling, commands, alerts, chat...), bytes of JSON.
CONTROL_MAX_PAYLOAD_BYTES: Final = 64 * 1024

#: Largest decoded media blob, bytes: the spec's MEDIA_MAX_UPLOAD_SIZE default (§12.2, 50 MB).
#: Deployments pass ``MediaSettings.media_max_upload_size`` to :func:`decode` to change it.
MEDIA_MAX_UPLOAD_SIZE: Final = 52_428_800


def base64_len(n: int) -> int:
    """Length of the padded standard base64 encoding of ``n`` bytes."""
    return 4 * ((n + 2) // 3)


def media_payload_limit(max_media_bytes: int) -> int:
    """Largest JSON payload carrying a ``max_media_bytes`` blob: its base64 plus a control-sized envelope."""
    return base64_len(max_media_bytes) + CONTROL_MAX_PAYLOAD_BYTES


#: Largest upload / snapshot / recording payload with the default media limit (~66.7 MiB).
#: Note: a broker must allow packets this large (mosquitto ``max_packet_size``).
UPLOAD_MAX_PAYLOAD_BYTES: Final = media_payload_limit(MEDIA_MAX_UPLOAD_SIZE)

#: Largest visual context (§8.11): many detected objects, still well under a megabyte.
VISUAL_CONTEXT_MAX_PAYLOAD_BYTES: Final = 256 * 1024

#: Free text a person typed or a model produced (chat text, upload context, broadcast, description).
MAX_TEXT_LEN: Final = 8192
#: Short identifiers that are not topic segments (request_id, conversation_id, command, event, format).
MAX_TOKEN_LEN: Final = 128
#: Short labels (firmware version, server version, object label, scene type, filename...).
MAX_LABEL_LEN: Final = 255
#: An SDP offer/answer; real ones are 2-15 KB.
MAX_SDP_LEN: Final = 32 * 1024
#: One ICE candidate line.
MAX_CANDIDATE_LEN: Final = 1024
#: An error message in a reply.
MAX_ERROR_LEN: Final = 1024
#: Items in a short list (capabilities, text_detected).
MAX_LIST_ITEMS: Final = 64
#: Detected objects in one visual context.
MAX_OBJECTS: Final = 512
