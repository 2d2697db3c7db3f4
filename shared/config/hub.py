"""Hub settings: signaling server, VAD thresholds, gRPC link to the AI server, camera motion gate."""

from __future__ import annotations

import ipaddress
import json
import re
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import NoDecode

from shared.config.base import NailaSettings
from shared.ids import check_id

_SIZE = re.compile(r"(\d{2,4})x(\d{2,4})")
MIN_DEVICE_TOKEN_LEN = 24


class HubSettings(NailaSettings):
    hub_host: str = Field("0.0.0.0", description="Address the hub's HTTP server binds")
    hub_port: Annotated[int, Field(ge=1, le=65535)] = Field(8080, description="Hub HTTP port (/connect, /health)")
    hub_ai_server: str = Field(
        "127.0.0.1:50051",
        description="AI server gRPC address host:port, or several comma-separated: each device sticks to one "
        "(rendezvous hashing over those up) and moves to another while its server is down (docs/scale.md)",
    )
    hub_ai_heartbeat_s: Annotated[float, Field(gt=0, le=60)] = Field(
        1.0, description="With several AI servers: a GetStatus to each this often, with this deadline, s "
        "(failure detection; a single AI server keeps a 5 s beat, 3 misses)"
    )
    hub_ai_heartbeat_misses: Annotated[int, Field(ge=1, le=20)] = Field(
        2, description="Missed heartbeats in a row before an AI server counts as down and its devices move "
        "(a silent host: at most misses x 2 x HUB_AI_HEARTBEAT_S; a killed process: at once)"
    )
    hub_device_tokens: Annotated[dict[str, str], NoDecode] = Field(
        default_factory=dict,
        repr=False,  # secrets: never in a repr or a log line
        description='Per-device bearer tokens as JSON {"device_id": "token"} (24+ characters each; "*" = any '
        "other id); empty = /connect is refused unless HUB_ALLOW_UNAUTHENTICATED=true",
    )
    hub_max_body_bytes: Annotated[int, Field(ge=1024, le=10_000_000)] = Field(
        65536, description="Largest /connect body, bytes"
    )
    hub_web_token: SecretStr | None = Field(
        None,
        description="Login token of the web app (device page /, /dashboard, /api), at least 16 characters; "
        "unset = web app off",
    )
    hub_web_session_hours: Annotated[float, Field(gt=0, le=8760)] = Field(
        168.0, description="How long a web login lasts, hours"
    )
    hub_web_upload_timeout_s: Annotated[float, Field(gt=0, le=600)] = Field(
        60.0, description="How long a web image question waits for the AI server's answer, s"
    )
    hub_vad_aggressiveness: Annotated[int, Field(ge=0, le=3)] = Field(
        3, description="webrtcvad mode 0-3 (3 = fewest false positives)"
    )
    hub_vad_onset_frames: Annotated[int, Field(ge=1, le=50)] = Field(
        3, description="Voiced 20 ms frames before START"
    )
    hub_vad_hangover_ms: Annotated[int, Field(ge=20, le=5000)] = Field(
        300, description="Silence after speech before END, ms"
    )
    hub_vad_preroll_ms: Annotated[int, Field(ge=0, le=2000)] = Field(
        200, description="Audio before the onset sent with START, ms"
    )
    # The policy's defaults were picked with bench/end_of_turn.py --grid (docs/benchmarks.md, End of turn).
    hub_end_of_turn_check_ms: Annotated[int, Field(ge=20, le=2000)] = Field(
        120, description="AUDIO_END_OF_TURN=smart_turn: silence after speech before the end-of-turn model is asked, ms"
    )
    hub_end_of_turn_threshold: Annotated[float, Field(gt=0, le=1)] = Field(
        0.95, description="AUDIO_END_OF_TURN=smart_turn: the model's P(turn complete) at which the turn ends at once"
    )
    hub_end_of_turn_hangover_threshold: Annotated[float, Field(ge=0, le=1)] = Field(
        0.1, description="AUDIO_END_OF_TURN=smart_turn: the model's P(turn complete) at which the turn "
        "ends after HUB_VAD_HANGOVER_MS of silence (below it: after HUB_END_OF_TURN_FALLBACK_MS); "
        ">= HUB_END_OF_TURN_THRESHOLD: no such middle tier"
    )
    hub_end_of_turn_fallback_ms: Annotated[int, Field(ge=20, le=10_000)] = Field(
        1000, description="AUDIO_END_OF_TURN=smart_turn: silence that ends the turn whatever the model said, ms"
    )
    hub_model_dir: str = Field(
        "", description="Folder of the hub's ONNX models (Smart Turn, Silero VAD; scripts/setup.sh puts them "
        "there); empty = ~/.cache/naila/models"
    )
    hub_barge_in_frames: Annotated[int, Field(ge=1, le=100)] = Field(
        5, description="Voiced 20 ms frames during TTS playback before INTERRUPT (more = fewer false barge-ins)"
    )
    hub_arbitration_window_ms: Annotated[int, Field(ge=0, le=2000)] = Field(
        200, description="Onsets this close on several devices are compared; the best capture answers; 0 = off"
    )
    hub_dead_peer_timeout_s: Annotated[float, Field(gt=0, le=600)] = Field(
        10.0, description="Close a session after this long without RTP, s"
    )
    hub_device_queue_frames: Annotated[int, Field(ge=10, le=100_000)] = Field(
        500, description="Per-device bounded queue, 20 ms frames"
    )
    hub_grpc_backoff_initial_s: Annotated[float, Field(gt=0, le=60)] = Field(
        0.2, description="First gRPC reconnect delay, s"
    )
    hub_grpc_backoff_max_s: Annotated[float, Field(gt=0, le=600)] = Field(
        5.0, description="Largest gRPC reconnect delay, s"
    )
    hub_jitter_prefetch: Annotated[int, Field(ge=0, le=20)] = Field(
        0, description="aiortc jitter-buffer prefetch, packets (aiortc default 4); "
        "0 = each packet at once, as it arrives in order"
    )
    hub_uvloop: bool = Field(
        False,
        description="Run the hub's event loop on uvloop (pip install uvloop) instead of asyncio's: measured "
        "without a CPU gain per stream here (docs/benchmarks.md, Hub), so off by default",
    )
    hub_id: str = Field("main", description="Hub identity (letters, digits, _ . -); MQTT client id naila-hub-<id>")
    hub_mqtt: bool = Field(
        True,
        description="Also take SDP offers over MQTT (naila/devices/+/signaling/offer) from the MQTT_* broker; "
        "a missing broker is redialled in the background and HTTP /connect is unaffected",
    )
    hub_mqtt_offers_per_min: Annotated[float, Field(gt=0, le=6000)] = Field(
        12.0, description="MQTT offers a device may send per minute on average (more are refused)"
    )
    hub_mqtt_offer_burst: Annotated[int, Field(ge=1, le=1000)] = Field(
        5, description="MQTT offers a device may send back to back before HUB_MQTT_OFFERS_PER_MIN applies"
    )
    hub_vision: bool = Field(
        True,
        description="Motion-gate each device's camera (VIDEO_MOTION_THRESHOLD, VIDEO_PROCESS_EVERY_N_FRAMES) and "
        "send motion frames and refreshes to the AI server's AnalyzeFrames; off = video is read and discarded",
    )
    hub_vision_min_motion_area: Annotated[float, Field(gt=0, le=1)] = Field(
        0.005,
        description="Fraction of a camera's reduced 160x120 frame that must change by VIDEO_MOTION_THRESHOLD "
        "or more to count as motion",
    )
    hub_vision_frame_size: str = Field(
        "320x240", description="Largest WIDTHxHEIGHT of a frame sent to the AI server (aspect kept, never enlarged)"
    )
    hub_vision_jpeg_quality: Annotated[int, Field(ge=1, le=100)] = Field(
        80, description="JPEG quality of frames sent to the AI server (1-100)"
    )
    hub_vision_refresh_s: Annotated[float, Field(gt=0, le=3600)] = Field(
        10.0,
        description="With nothing moving, resend a camera's current frame this often, s (refresh: the AI "
        "server's latest view, no detection)",
    )
    hub_vision_queue_frames: Annotated[int, Field(ge=1, le=1000)] = Field(
        8, description="Frames waiting for the AI server, all cameras together; when full the oldest is dropped"
    )
    hub_vision_max_inflight: Annotated[int, Field(ge=1, le=64)] = Field(
        4,
        description="Frames sent to the AI server and not answered yet (more: bigger YOLO batches across "
        "cameras; fewer: fresher frames when the detector is slow); the rest wait in the queue",
    )

    # --- security (issue 18) -----------------------------------------------------------------
    hub_allow_unauthenticated: bool = Field(
        False, description="Accept /connect from any device id without a token (demo and tests on loopback "
        "only: anyone on the LAN could join as a device)"
    )
    hub_tls_cert: str = Field("", description="PEM certificate for HTTPS (naila init: hub.crt); empty = plain HTTP")
    hub_tls_key: str = Field("", description="PEM private key of HUB_TLS_CERT")
    hub_public_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Host names the hub answers to, comma-separated (DNS-rebinding guard); IP literals, "
        "localhost and this machine's host name are always accepted",
    )
    hub_metrics_token: SecretStr | None = Field(
        None, description="Bearer token for /metrics, /turns and /health?detail=1 (the web login works too); "
        "unset = only the web login"
    )
    hub_trusted_proxies: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Reverse proxies whose X-Forwarded-For / X-Forwarded-Proto are believed, comma-separated "
        "addresses or networks (e.g. 127.0.0.1,10.0.0.0/24); empty = the TCP peer is the client",
    )
    hub_max_sessions: Annotated[int, Field(ge=1, le=10_000)] = Field(
        64, description="Device sessions (WebRTC peers) at once; more /connect are answered 503"
    )
    hub_max_negotiations: Annotated[int, Field(ge=1, le=1000)] = Field(
        16, description="SDP offers being negotiated at once, HTTP and MQTT together"
    )
    hub_connect_per_min: Annotated[float, Field(gt=0, le=60_000)] = Field(
        30.0, description="/connect requests one address may make per minute (429 beyond)"
    )
    hub_auth_failures_per_min: Annotated[float, Field(gt=0, le=60_000)] = Field(
        6.0, description="Refused tokens one address may send per minute before it is refused outright (429)"
    )
    hub_request_timeout_s: Annotated[float, Field(gt=0, le=600)] = Field(
        10.0, description="Deadline to read a request's headers and body, s (slow clients are cut off)"
    )
    hub_max_utterance_s: Annotated[float, Field(gt=0, le=600)] = Field(
        30.0, description="Longest utterance, s: END is sent after this much speech even without silence"
    )
    hub_ai_tls_ca: str = Field("", description="PEM CA that signed the AI server's certificate (naila init: ca.crt)")
    hub_ai_tls_cert: str = Field("", description="PEM client certificate of this hub for mutual TLS (hub-client.crt)")
    hub_ai_tls_key: str = Field("", description="PEM private key of HUB_AI_TLS_CERT")
    hub_ai_tls_server_name: str = Field(
        "", description="Name checked in the AI server's certificate; empty = the host of HUB_AI_SERVER"
    )
    hub_ai_insecure: bool = Field(
        False, description="Allow plaintext gRPC to a non-loopback HUB_AI_SERVER (audio crosses the LAN in clear)"
    )
    # --- assist (issue 19): listening modes and the wake word
    hub_listening_mode: Literal["wake_word", "always", "push_to_talk"] = Field(
        "wake_word",
        description="What starts a turn: wake_word (the wake word, then a follow-up window), always (any speech), "
        "push_to_talk (speech while the page's button is held)",
    )
    hub_listening_modes: Annotated[dict[str, Literal["wake_word", "always", "push_to_talk"]], NoDecode] = Field(
        default_factory=dict,
        description='Per-device listening modes as JSON {"device_id": "mode"}; a mode the device reports (MQTT '
        "status listening_mode, the browser page) overrides it",
    )
    hub_wake_word: Literal["okay_nabu", "hey_jarvis", "hey_mycroft", "alexa"] = Field(
        "okay_nabu", description="Wake word model (pymicro-wakeword's built-in ones)"
    )
    hub_follow_up_s: Annotated[float, Field(ge=0, le=120)] = Field(
        8.0, description="After a reply finishes, speech within this many seconds needs no wake word"
    )
    hub_wake_timeout_s: Annotated[float, Field(gt=0, le=60)] = Field(
        4.0, description="After the wake word, a turn that has not started within this many seconds ends quietly"
    )
    hub_barge_in_plain_speech: bool = Field(
        False, description="In wake_word mode, let plain speech (not only the wake word) interrupt a playing reply"
    )

    @field_validator("hub_ai_server")
    @classmethod
    def _ai_servers(cls, v: str) -> str:
        items = [x.strip() for x in v.split(",")]
        if not all(items):
            raise ValueError("must be host:port, or several comma-separated, with no empty entry")
        if len(set(items)) != len(items):
            raise ValueError("lists an AI server twice")
        return ",".join(items)

    @property
    def ai_servers(self) -> list[str]:
        """HUB_AI_SERVER as a list of addresses (one for a single AI server)."""
        return self.hub_ai_server.split(",")

    @field_validator("hub_listening_modes", mode="before")
    @classmethod
    def _listening_modes(cls, v: object) -> object:
        if isinstance(v, str):
            if not v.strip():
                return {}
            try:
                return json.loads(v)
            except json.JSONDecodeError as exc:
                raise ValueError(f'must be JSON like {{"device_id": "push_to_talk"}} ({exc.msg})') from None
        return v

    @field_validator("hub_public_hosts", mode="before")
    @classmethod
    def _hosts(cls, v: object) -> object:
        if isinstance(v, str):
            return [x.strip().lower() for x in v.split(",") if x.strip()]
        return v

    @field_validator("hub_trusted_proxies", mode="before")
    @classmethod
    def _proxies(cls, v: object) -> object:
        items = [x.strip() for x in v.split(",") if x.strip()] if isinstance(v, str) else v
        if isinstance(items, list):
            for item in items:
                try:
                    ipaddress.ip_network(str(item), strict=False)
                except ValueError:
                    raise ValueError(f"{str(item)[:60]!r} is not an IP address or network") from None
        return items

    @field_validator("hub_vision_frame_size")
    @classmethod
    def _frame_size(cls, v: str) -> str:
        m = _SIZE.fullmatch(v.strip())
        if m is None or not all(16 <= int(g) <= 4096 for g in m.groups()):
            raise ValueError("must look like 320x240 (16-4096 each)")
        return v.strip()

    @property
    def vision_frame_size(self) -> tuple[int, int]:
        """HUB_VISION_FRAME_SIZE as (width, height)."""
        w, h = self.hub_vision_frame_size.split("x")
        return int(w), int(h)

    @field_validator("hub_id")
    @classmethod
    def _safe_id(cls, v: str) -> str:
        # It goes into the MQTT client id; the same rule as device ids keeps it printable and short.
        return check_id(v, "hub id")

    @field_validator("hub_web_token", mode="before")
    @classmethod
    def _web_token(cls, v: object) -> object:
        # An empty HUB_WEB_TOKEN= means "off", not "a login with the empty password".
        if v is None or (isinstance(v, str) and not v.strip()):
            return None
        text = v.get_secret_value() if isinstance(v, SecretStr) else v
        if isinstance(text, str) and len(text.strip()) < 16:
            raise ValueError("must be at least 16 characters (it guards the microphone of every browser device)")
        return v

    @field_validator("hub_device_tokens", mode="before")
    @classmethod
    def _tokens(cls, v: object) -> object:
        if isinstance(v, str):
            if not v.strip():
                return {}
            try:
                return json.loads(v)
            except json.JSONDecodeError as exc:
                raise ValueError(f'must be JSON like {{"device_id": "token"}} ({exc.msg})') from None
        return v

    @field_validator("hub_device_tokens")
    @classmethod
    def _token_rules(cls, v: dict[str, str]) -> dict[str, str]:
        # L5: a short token can be guessed through the per-address limits; the messages name the
        # device, never the value.
        from shared.mqtt.topics import is_safe_segment

        for device_id, token in v.items():
            if device_id != "*" and not is_safe_segment(device_id):
                raise ValueError(f"{device_id[:64]!r} is not a device id (1-64 of A-Z a-z 0-9 _ . -) or \"*\"")
            if len(token.strip()) < MIN_DEVICE_TOKEN_LEN:
                raise ValueError(f"the token of {device_id!r} is shorter than {MIN_DEVICE_TOKEN_LEN} characters "
                                 "(naila init writes 43 random ones)")
        return v
