"""NAILA hub."""
