"""Perception: voice activity (vad), speech to text (asr) and the featurizers (features/)."""
