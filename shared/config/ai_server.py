"""AI server settings: gRPC listener, STT, LLM, TTS, and the MQTT control plane."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from shared.config.base import NailaSettings

DEFAULT_SYSTEM_PROMPT = (
    "You are NAILA, a friendly voice assistant in the user's home. "
    "Always answer in English, in one or two short spoken sentences. No lists, no markdown."
)


class AIServerSettings(NailaSettings):
    ai_server_host: str = Field("0.0.0.0", description="Address the gRPC server binds")
    ai_server_port: Annotated[int, Field(ge=1, le=65535)] = Field(50051, description="gRPC port")
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
        100, description="Quiet tail after speech that starts a transcription before END, ms; 0 = off"
    )
    llm_context: Annotated[int, Field(ge=256, le=131072)] = Field(
        2048, description="Context window of the embedded llama.cpp model, tokens"
    )
    llm_follow_user_s: Annotated[float, Field(ge=0, le=3600)] = Field(
        90.0, description="A voice turn on another device this soon after one continues that conversation, s; 0 = off"
    )
    llm_preemptive: bool = Field(
        True, description="Start the reply during the hub's VAD hangover, held until END (needs STT_SPECULATIVE_MS)"
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
        description="Media store directory (SQLite index + files) for uploads, clips and alert snapshots; "
        "empty = a temporary directory removed at exit (no media persistence by default)",
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
