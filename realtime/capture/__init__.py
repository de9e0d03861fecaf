"""Capture: timestamped sources (media files, webcam, microphone, synthetic) -> VideoFrame/AudioChunk."""
