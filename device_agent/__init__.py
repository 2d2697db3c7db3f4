"""NAILA device_agent."""
