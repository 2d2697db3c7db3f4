"""LLM_BACKEND picks one of these engines (a new one: a class with the LLMBackend methods, registered here).

A factory takes the settings and the tools to offer the model (``ai_server.assist.tools.ToolBox``
when LLM_TOOLS is on, else None; an engine that cannot call tools ignores them).

Both modules are cheap to import: llama-cpp-python and httpx are imported by the engines
themselves when they load, so naming one engine never loads the other's library.
"""

from __future__ import annotations

from ai_server.llm import LLMBackend
from ai_server.llm.embedded import EmbeddedLLM
from ai_server.llm.openai_compat import OpenAICompatLLM
from ai_server.llm.tools import Tools
from shared.config import AIServerSettings
from shared.registry import Registry

LLM_ENGINES: Registry[[AIServerSettings, Tools | None], LLMBackend] = Registry("LLM")


@LLM_ENGINES.register("embedded")
def embedded(s: AIServerSettings, tools: Tools | None) -> LLMBackend:  # tools: not offered by this engine
    return EmbeddedLLM(
        s.llm_model_path,
        n_ctx=s.llm_context,
        threads=s.llm_threads,
        first_clause_threads=s.llm_first_clause_threads,
        max_tokens=s.llm_max_tokens,
        temperature=s.llm_temperature,
        embedded_model=s.llm_embedded_model,
        encoding=s.llm_embedded_encoding,
        model_cache=s.llm_model_cache,
        state_cache_mb=s.llm_state_cache_mb,
    )


@LLM_ENGINES.register("openai")
def openai(s: AIServerSettings, tools: Tools | None) -> LLMBackend:
    return OpenAICompatLLM(
        s.llm_base_url,
        s.llm_model,
        api_key=s.llm_api_key,
        max_tokens=s.llm_max_tokens,
        temperature=s.llm_temperature,
        timeout_s=s.llm_timeout_s,
        cache_prompt=s.llm_cache_prompt,
        tools=tools,
    )


def build_llm(s: AIServerSettings, tools: Tools | None = None) -> LLMBackend:
    """The LLM engine LLM_BACKEND names (blocking: the embedded one loads its model; call it in a thread)."""
    return LLM_ENGINES.build(s.llm_backend, s, tools)
