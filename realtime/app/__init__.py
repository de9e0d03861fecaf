"""App: the live config, the session runner shared by demo/live/run/replay, and the benchmark."""
