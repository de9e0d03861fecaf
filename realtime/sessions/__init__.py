"""Sessions: the recorded-session format, its writer (a pipeline sink), reader, replay and export."""
