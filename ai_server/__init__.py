"""NAILA ai_server."""
