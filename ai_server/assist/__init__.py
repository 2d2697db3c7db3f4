"""Household commands said by code, before the LLM (timers, time, reminders, broadcasts, Home Assistant).

``core`` holds the one seam every feature plugs into: an :class:`~ai_server.assist.core.IntentRegistry`
of handlers by intent name, fed by the hassil recognizer (``intents``) for spoken and typed
requests and by the OpenAI tool calls of a real LLM (``ai_server.assist.tools``), so both run the
same code.
"""
