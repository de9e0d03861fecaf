"""Helpers shared by the test modules (media, sessions, the CLI, a tiny model): imported as
`from helpers.media import ...` (tests/ is on sys.path under pytest and when a test file runs as a script)."""
