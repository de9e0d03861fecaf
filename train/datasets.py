"""`moodlens featurize`: media files and raw-video datasets -> MMSA-layout feature pickles.

Both paths use the live featurizers (realtime/perception/features), so a model trained on this output sees
the same features live.

One file (`featurize_file`): decoded with PyAV (MediaFileSource, streamed so memory stays flat),
cut into utterance windows with Silero VAD (`split_utterances`), each window transcribed with
Whisper, and written as one flat dict:

    id (list[str]), raw_text (list[str]), start, end (N,) seconds, text_bert (N, 3, L) int64
    [ids, mask, type ids], audio (N, Ta, Da) float32, audio_lengths (N,), audio_mask (N, Ta) bool,
    vision (N, Tv, Dv) float32, vision_lengths (N,), vision_mask (N, Tv) bool (face found in that
    frame), present (N, 3) bool (text, audio, vision), meta = FeaturizerConfig.to_dict();
    with `egemaps` also audio_egemaps (N, T, 25) openSMILE eGeMAPSv02 LLDs and audio_egemaps_lengths.

A raw dataset (`featurize_raw_dataset`) in MMSA-FET's layout (Raw/<video_id>/<clip_id>.mp4 and a
label.csv with video_id, clip_id, text, label, label_T, label_A, label_V, annotation, mode):
one sample per whole clip, written as {"train": {...}, "valid": {...}, "test": {...}, "meta": {...}}
where each split has the keys above plus regression_labels (and regression_labels_T/_A/_V when
the csv has them for every clip of the split) and annotations. The label's text is used instead
of ASR when present (`text_source="asr"` forces Whisper). Clips run in worker processes; each
finished clip is cached in `<out>.cache/`, so an interrupted run resumes where it stopped; clips
that fail are listed in `<out stem>.failed.csv` and never stop the run.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import pickle
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from moodlens.core.errors import ConfigError, DataError, MoodlensError, RunFailed
from moodlens.core.options import Options
from moodlens.core.safeload import safe_pickle_load
from moodlens.core.schema import SPLIT_ALIASES as SPLIT_NAMES
from moodlens.realtime.perception.features.config import FeaturizerConfig
from moodlens.core.types import AUDIO_SAMPLE_RATE, AudioChunk, FaceFeatures, VideoFrame

TEXT_SOURCES = ("auto", "asr", "label")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
MEDIA_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".flv", ".m4v", ".wav", ".mp3", ".flac") + IMAGE_SUFFIXES
STILL_TRACKED_FRAMES = 3   # frames of a still run through the tracker; the rest of the window repeats the last
CACHE_FORMAT = "moodlens-featurize-clip/2"   # /2: npz (arrays) + JSON (the rest); no pickle, no code


@dataclass
class FeaturizeOptions(Options):
    text_source: str = "auto"          # auto: label text when present else ASR; asr: always ASR; label: never ASR
    workers: int = 1                   # worker processes for raw datasets (1 = in this process)
    max_frame_size: int | None = None  # downscale frames whose longer side exceeds this before tracking
    cache: bool = True                 # per-clip cache beside the output (resumable runs)
    progress: bool = True              # rich progress bar
    text_encoder: str | None = None    # BERT-style encoder folder for the token ids (None = all-MiniLM-L6-v2)
    egemaps: bool = False              # add openSMILE eGeMAPSv02 LLDs (non-commercial licence; optional)
    still_window_s: float = 2.0        # a still image is featurized as this long a window of one held face
    vad: dict = field(default_factory=dict)   # VadOptions overrides (file mode)
    asr: dict = field(default_factory=dict)   # AsrOptions overrides

    def __post_init__(self):
        if self.text_source not in TEXT_SOURCES:
            raise ConfigError(f"The featurize text source must be one of {', '.join(TEXT_SOURCES)}, "
                              f"not '{self.text_source}'.")
        if self.workers < 1:
            raise ConfigError(f"The number of featurize workers must be at least 1, not {self.workers}.")
        if not 0 < self.still_window_s <= 60:
            raise ConfigError(f"still_window_s must be in (0, 60] seconds, not {self.still_window_s}.")
        if self.max_frame_size is not None and self.max_frame_size < 64:
            raise ConfigError(f"max_frame_size must be at least 64 pixels, not {self.max_frame_size}.")


# ---- shared helpers ------------------------------------------------------------------------------
class ClipFeaturizer:
    """Featurizer + (lazily) Whisper and VAD, reused across the clips of one process."""

    def __init__(self, config: FeaturizerConfig, options: FeaturizeOptions):
        from moodlens.realtime.perception.features.featurizer import Featurizer

        self.config = config
        self.options = options
        self._transcriber = None
        # Whisper-state audio features share the transcriber's model (one encoder run per clip).
        shared = self.transcriber if config.audio_features == "whisper_encoder" else None
        self.featurizer = Featurizer(config, text_encoder_path=options.text_encoder, transcriber=shared)
        self.egemaps = None
        if options.egemaps:
            from moodlens.realtime.perception.features.audio import EGeMAPSExtractor

            self.egemaps = EGeMAPSExtractor(config.sample_rate)

    @property
    def transcriber(self):
        if self._transcriber is None:
            from moodlens.realtime.perception.asr import AsrOptions, Transcriber

            self._transcriber = Transcriber(AsrOptions.from_dict({"warmup": False, **self.options.asr},
                                                                 "featurize asr options").for_features(self.config))
        return self._transcriber

    def decode(self, path: Path, on_progress=None) -> tuple[np.ndarray, list[FaceFeatures], float, bool, bool]:
        """Stream the file once: 16 kHz audio and face features at the configured rate.
        `on_progress(media_seconds, duration)` is called as decoding goes."""
        from moodlens.realtime.capture.media import MediaFileSource

        vision = self.featurizer.vision
        vision.reset()  # a new stream: forget the previous clip's face and clock
        audio: list[np.ndarray] = []
        faces: list[FaceFeatures] = []
        with MediaFileSource(path, pace="fast", origin=0.0, max_size=self.options.max_frame_size) as source:
            for item in source:
                if isinstance(item, VideoFrame):
                    if vision.wants(item.t):
                        faces.append(vision.process(item))
                elif isinstance(item, AudioChunk):
                    audio.append(item.samples)
                if on_progress is not None:
                    on_progress(item.t, source.duration)
            samples = np.concatenate(audio) if audio else np.zeros(0, np.float32)
            duration = max(source.duration or 0.0, len(samples) / AUDIO_SAMPLE_RATE)
            return samples, faces, duration, source.has_audio, source.has_video

    def transcribe(self, audio: np.ndarray, keep_states: bool = False) -> tuple[str, np.ndarray | None]:
        """Text of the audio (and, when asked, Whisper's encoder states of the same call)."""
        if len(audio) == 0:
            return "", None
        transcript = self.transcriber.transcribe(audio, keep_encoder_states=keep_states)
        return transcript.text.strip(), transcript.encoder_states

    def window_sample(self, audio: np.ndarray, faces: list[FaceFeatures], start: float, end: float,
                      text: str | None):
        from moodlens.realtime.perception.features.featurizer import span_audio

        clip_audio = span_audio(audio, start, end)
        states = None
        if text is None:
            text, states = self.transcribe(clip_audio, keep_states=self.featurizer.wants_encoder_states)
        sample = self.featurizer.span_sample(text, audio, faces, start, end, audio_start=0.0, audio_states=states)
        if self.egemaps is not None:
            sample.extras["audio_egemaps"] = (self.egemaps.extract(clip_audio) if len(clip_audio)
                                              else np.zeros((0, 25), np.float32))
        return sample

    def still_faces(self, path: Path) -> list[FaceFeatures]:
        """A still image as the live tracker sees that face held still for `still_window_s`: frames at
        the config's rate; the first STILL_TRACKED_FRAMES go through the tracker (VIDEO mode, as
        live), the rest repeat the last result (tracking an unchanging frame returns the same values:
        checked, max difference 0 over 15 frames on a muxspace and a CK+ face)."""
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(path) as image:
                rgb = np.asarray(image.convert("RGB"), dtype=np.uint8)
        except (OSError, UnidentifiedImageError, ValueError) as err:
            raise DataError(f"The image {path} cannot be read ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else 'unreadable'}).") from None
        if rgb.ndim != 3 or min(rgb.shape[:2]) < 8:
            raise DataError(f"The image {path} is too small ({rgb.shape[1]}x{rgb.shape[0]}) to hold a face.")
        fps = self.config.vision_fps
        frames = max(1, int(round(self.options.still_window_s * fps)))
        vision = self.featurizer.vision
        vision.reset()
        faces = [vision.process_image(rgb, k / fps) for k in range(min(frames, STILL_TRACKED_FRAMES))]
        last = faces[-1]
        faces += [FaceFeatures(t=k / fps, values=None if last.values is None else last.values.copy(),
                               face_present=last.face_present) for k in range(len(faces), frames)]
        return faces

    def still_sample(self, path: Path):
        """Vision present (the held face), audio and text absent."""
        faces = self.still_faces(path)
        return self.featurizer.sample("", None, faces, start=0.0, end=self.options.still_window_s)

    def close(self):
        self.featurizer.close()


def samples_to_mmsa(samples, ids: list[str], config: FeaturizerConfig, text_len: int | None = None) -> dict:
    """Pad samples into MMSA-layout numpy arrays (one flat dict, without meta)."""
    from moodlens.realtime.perception.features.featurizer import pad_samples

    if not samples:
        dv, da = config.vision_dim, config.audio_dim
        return {"id": [], "raw_text": [], "start": np.zeros(0), "end": np.zeros(0),
                "text_bert": np.zeros((0, 3, 2), np.int64), "audio": np.zeros((0, 2, da), np.float32),
                "audio_lengths": np.zeros(0, np.int64), "audio_mask": np.zeros((0, 2), bool),
                "vision": np.zeros((0, 2, dv), np.float32), "vision_lengths": np.zeros(0, np.int64),
                "vision_mask": np.zeros((0, 2), bool), "present": np.zeros((0, 3), bool)}
    arrays = pad_samples(samples, config, text_len=text_len)
    extras = {}
    for name in sorted({k for s in samples for k in s.extras}):
        parts = [np.asarray(s.extras.get(name, np.zeros((0, 0), np.float32)), np.float32) for s in samples]
        width = max(p.shape[1] for p in parts if p.ndim == 2)
        padded = np.zeros((len(parts), max(max(len(p) for p in parts), 2), width), np.float32)
        for i, p in enumerate(parts):
            if len(p):
                padded[i, :len(p)] = p
        extras[name] = padded
        extras[f"{name}_lengths"] = np.array([len(p) for p in parts], np.int64)
    text_bert = np.stack([arrays["text_ids"], arrays["text_mask"].astype(np.int64),
                          np.zeros_like(arrays["text_ids"])], axis=1)
    return {
        "id": list(ids),
        "raw_text": [s.text for s in samples],
        "start": np.array([s.start for s in samples], np.float64),
        "end": np.array([s.end for s in samples], np.float64),
        "text_bert": text_bert,
        "audio": arrays["audio"],
        "audio_lengths": arrays["audio_lengths"],
        "audio_mask": arrays["audio_mask"],
        "vision": arrays["vision"],
        "vision_lengths": arrays["vision_lengths"],
        "vision_mask": arrays["vision_mask"],
        "present": arrays["present"],
        **extras,
    }


def _write_pickle(data, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    with tmp.open("wb") as f:
        pickle.dump(data, f, protocol=pickle.HIGHEST_PROTOCOL)
    os.replace(tmp, out)


def _check_out(out: Path) -> Path:
    from moodlens.core.paths import check_output_file

    return check_output_file(out, "The featurize output", suffixes=(".pkl",))


# ---- one media file ------------------------------------------------------------------------------
def featurize_file(path: str | Path, out: str | Path | None = None, config: FeaturizerConfig | None = None,
                   options: FeaturizeOptions | None = None) -> dict:
    """One sample per utterance window of `path` (see module docstring); written to `out` if given."""
    from moodlens.realtime.perception.vad import VadOptions, split_utterances

    path = Path(path)
    out = _check_out(out) if out is not None else None
    config = config or FeaturizerConfig()
    options = options or FeaturizeOptions()
    vad_options = VadOptions.from_dict(options.vad, "featurize vad options")
    from moodlens.realtime.capture.media import MediaFileSource

    MediaFileSource(path, pace="fast").close()   # a missing or unreadable file fails before models load
    worker = ClipFeaturizer(config, options)
    try:
        samples = []
        progress = _progress(options.progress)
        with progress:
            decoding = progress.add_task(f"decoding + face tracking {path.name} (media s)", total=None)

            def on_progress(t, duration):
                progress.update(decoding, completed=round(t, 1), total=round(duration, 1) or None)

            audio, faces, duration, has_audio, _ = worker.decode(path, on_progress)
            progress.update(decoding, completed=duration, total=duration)
            if has_audio and len(audio):
                spans = split_utterances(audio, vad_options)
            else:
                spans = [(0.0, duration)]  # no audio: one vision-only window over the whole file
            task = progress.add_task(f"transcribing + featurizing {len(spans)} windows", total=len(spans))
            for start, end in spans:
                samples.append(worker.window_sample(audio, faces, start, end, None))
                progress.advance(task)
    finally:
        worker.close()
    data = samples_to_mmsa(samples, [f"{path.stem}_{i}" for i in range(len(samples))], config)
    data["meta"] = config.to_dict()
    if out is not None:
        _write_pickle(data, out)
    return data


# ---- raw datasets ------------------------------------------------------------------------------
@dataclass
class ClipJob:
    key: str                 # "<video_id>/<clip_id>"
    row: int                 # line of label.csv (the header is line 1)
    video_id: str
    clip_id: str
    path: str | None         # None when the clip file was not found
    text: str | None         # label text to use, or None for ASR
    label: float
    labels_tav: dict
    annotation: str
    split: str


def read_label_csv(labels: Path, raw_dir: Path, options: FeaturizeOptions) -> tuple[list[ClipJob], list[tuple]]:
    """Clip jobs from label.csv, plus rows refused outright (video_id, clip_id, path, reason)."""
    if not labels.is_file():
        raise DataError(f"The label file '{labels}' does not exist.")
    try:
        with labels.open(newline="", encoding="utf-8-sig") as f:
            rows = list(csv.DictReader(f))
    except (UnicodeDecodeError, csv.Error) as err:
        raise DataError(f"The label file '{labels}' is not a readable CSV ({err}).") from None
    if not rows:
        raise DataError(f"The label file '{labels}' has no rows.")
    columns = set(rows[0])
    for needed in ("video_id", "clip_id", "label", "mode"):
        if needed not in columns:
            raise DataError(f"The label file '{labels}' lacks the column '{needed}' (MMSA-FET layout: "
                            "video_id, clip_id, text, label, label_T, label_A, label_V, annotation, mode).")
    jobs, refused, seen = [], [], set()
    for line, row in enumerate(rows, start=2):
        video_id, clip_id = (row.get("video_id") or "").strip(), (row.get("clip_id") or "").strip()
        key = f"{video_id}/{clip_id}"
        path = _clip_path(raw_dir, video_id, clip_id)
        reason = None
        split = SPLIT_NAMES.get((row.get("mode") or "").strip().lower())
        label = _float(row.get("label"))
        if not video_id or not clip_id:
            reason = f"line {line} of {labels.name} has an empty video_id or clip_id"
        elif key in seen:
            reason = f"line {line} of {labels.name} repeats clip {key}"
        elif split is None:
            reason = f"line {line} of {labels.name} has mode '{row.get('mode')}', not train/valid/test"
        elif label is None:
            reason = f"line {line} of {labels.name} has no numeric label"
        elif path is None:
            reason = f"line {line} of {labels.name}: no media file {video_id}/{clip_id}.* under {raw_dir}"
        seen.add(key)
        if reason:
            refused.append((video_id, clip_id, str(path or ""), reason))
            continue
        text = (row.get("text") or "").strip()
        use_text = None if options.text_source == "asr" or (not text and options.text_source == "auto") else text
        # A label_T/_A/_V column that exists but is empty for this clip means "unknown for that head" (NaN);
        # a column the csv lacks altogether is left out of the output.
        labels_tav = {m: (_float(row.get(f"label_{m}")) if f"label_{m}" in columns else None) for m in ("T", "A", "V")}
        labels_tav = {m: (math.nan if v is None and f"label_{m}" in columns else v) for m, v in labels_tav.items()}
        jobs.append(ClipJob(key, line, video_id, clip_id, str(path), use_text, label, labels_tav,
                            (row.get("annotation") or "").strip(), split))
    return jobs, refused


def _float(value) -> float | None:
    try:
        number = float(str(value).strip())
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _clip_path(raw_dir: Path, video_id: str, clip_id: str) -> Path | None:
    folder = raw_dir / video_id
    names = [clip_id]
    if clip_id.isdigit():  # a csv saved through a spreadsheet turns "0001" into "1"
        names += [clip_id.lstrip("0") or "0", clip_id.zfill(4)]
    for name in names:
        for suffix in MEDIA_SUFFIXES:
            candidate = folder / f"{name}{suffix}"
            if candidate.is_file():
                return candidate
    return None


def _cache_name(key: str) -> str:
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", key)[:80]
    return f"{safe}-{hashlib.sha1(key.encode()).hexdigest()[:8]}.npz"


def _fingerprint(job: ClipJob, config: FeaturizerConfig, options: FeaturizeOptions) -> str:
    stat = os.stat(job.path)
    identity = {"config": config.to_dict(), "text": job.text, "asr": options.asr,
                "max_frame_size": options.max_frame_size, "egemaps": options.egemaps,
                "still_window_s": options.still_window_s, "file": [job.path, stat.st_size, stat.st_mtime_ns]}
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()


def _sample_to_dict(sample) -> dict:
    return asdict(sample)


def _sample_from_dict(values: dict):
    from moodlens.realtime.perception.features.featurizer import Sample

    return Sample(**values)


_WORKER: ClipFeaturizer | None = None


def _worker_init(config_dict: dict, options_dict: dict) -> None:
    global _WORKER
    _WORKER = ClipFeaturizer(FeaturizerConfig.from_dict(config_dict), FeaturizeOptions(**options_dict))


def _run_clip(job: ClipJob, cache_dir: str | None, fingerprint: str) -> tuple[str, dict | None, str | None]:
    """Featurize one whole clip in a worker; returns (key, sample dict, error sentence)."""
    try:
        if Path(job.path).suffix.lower() in IMAGE_SUFFIXES:
            sample = _WORKER.still_sample(Path(job.path))
        else:
            audio, faces, duration, has_audio, has_video = _WORKER.decode(Path(job.path))
            if not has_audio and not has_video:
                raise DataError(f"{job.path} holds neither an audio nor a video stream.")
            sample = _WORKER.window_sample(audio, faces, 0.0, duration, job.text)
        values = _sample_to_dict(sample)
        if cache_dir:
            _write_cache(values, fingerprint, Path(cache_dir) / _cache_name(job.key))
        return job.key, values, None
    except MoodlensError as err:
        return job.key, None, str(err)
    except Exception as err:  # a bug or an unexpected library error: report it, keep the run going
        return job.key, None, f"{type(err).__name__}: {err}"


_CACHE_ARRAYS = ("text_ids", "audio", "vision", "vision_mask", "present")


def _write_cache(values: dict, fingerprint: str, path: Path) -> None:
    """One clip's sample as npz: arrays as members, everything else as a JSON member (no pickle,
    so a cache file handed over or planted cannot carry code; see docs/reliability.md)."""
    meta = {"format": CACHE_FORMAT, "fingerprint": fingerprint, "text": values["text"],
            "start": float(values["start"]), "end": float(values["end"]), "extras": sorted(values["extras"])}
    arrays = {k: np.asarray(values[k]) for k in _CACHE_ARRAYS}
    arrays.update({f"extra.{k}": np.asarray(v) for k, v in values["extras"].items()})
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as f:
        np.savez(f, **arrays)
    os.replace(tmp, path)


def _read_cache(path: Path, fingerprint: str) -> dict | None:
    try:
        with np.load(path, allow_pickle=False) as npz:
            meta = json.loads(bytes(npz["meta"]).decode("utf-8"))
            if not isinstance(meta, dict) or meta.get("format") != CACHE_FORMAT \
                    or meta.get("fingerprint") != fingerprint:
                return None
            values = {k: npz[k] for k in _CACHE_ARRAYS}
            values["extras"] = {k: npz[f"extra.{k}"] for k in meta["extras"]}
    except Exception:  # a torn, foreign or object-holding cache file is simply recomputed
        return None
    values.update(text=str(meta["text"]), start=float(meta["start"]), end=float(meta["end"]))
    return values


@dataclass
class RawDatasetReport:
    out: Path
    clips: int               # rows of label.csv
    computed: int
    cached: int
    failed: list[tuple[str, str, str, str]]
    failed_path: Path | None
    split_sizes: dict[str, int]


def featurize_raw_dataset(raw_dir: str | Path, labels: str | Path, out: str | Path,
                          config: FeaturizerConfig | None = None,
                          options: FeaturizeOptions | None = None) -> RawDatasetReport:
    """One sample per clip of an MMSA-FET raw dataset, written to `out` (see module docstring)."""
    raw_dir, labels, out = Path(raw_dir), Path(labels), _check_out(Path(out))
    if not raw_dir.is_dir():
        raise DataError(f"The raw dataset folder '{raw_dir}' does not exist.")
    if (raw_dir / "Raw").is_dir():
        raw_dir = raw_dir / "Raw"
    config = config or FeaturizerConfig()
    options = options or FeaturizeOptions()
    if options.egemaps:
        from moodlens.realtime.perception.features.audio import EGeMAPSExtractor

        EGeMAPSExtractor(config.sample_rate)  # refuses here, not once per worker, when opensmile is absent
    jobs, failed = read_label_csv(labels, raw_dir, options)
    rows = len(jobs) + len(failed)
    cache_dir = out.with_name(out.name + ".cache")
    if options.cache:
        from moodlens.core.paths import check_output_dir

        check_output_dir(cache_dir, "The featurize cache folder")
        cache_dir.mkdir(parents=True, exist_ok=True)

    results: dict[str, dict] = {}
    pending: list[tuple[ClipJob, str]] = []
    for job in list(jobs):
        try:
            fingerprint = _fingerprint(job, config, options)
        except OSError as err:  # the file vanished or became unreadable since label.csv was read
            failed.append((job.video_id, job.clip_id, job.path,
                           f"line {job.row} of {labels.name}: cannot read {job.path} ({err.strerror})"))
            jobs.remove(job)
            continue
        cached = _read_cache(cache_dir / _cache_name(job.key), fingerprint) if options.cache else None
        if cached is not None:
            results[job.key] = cached
        else:
            pending.append((job, fingerprint))
    cached_count = len(results)

    errors: dict[str, str] = {}
    progress = _progress(options.progress)
    with progress:
        task = progress.add_task(f"featurizing {len(jobs)} clips ({cached_count} cached)", total=len(jobs),
                                 completed=cached_count)
        cache_arg = str(cache_dir) if options.cache else None
        for key, values, error in _execute(pending, config, options, cache_arg):
            if error is None:
                results[key] = values
            else:
                errors[key] = error
            progress.advance(task)

    by_key = {job.key: job for job in jobs}
    failed += [(by_key[k].video_id, by_key[k].clip_id, by_key[k].path,
                f"line {by_key[k].row} of {labels.name} ({by_key[k].path}): {reason}") for k, reason in errors.items()]
    failed_path = out.with_name(out.stem + ".failed.csv")
    if failed:
        with failed_path.open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["video_id", "clip_id", "path", "reason"])
            writer.writerows(failed)
    elif failed_path.exists():
        failed_path.unlink()  # a stale list from an earlier run would mislead
    if not results:
        # An empty dataset is no result: say so (exit 1) instead of writing it.
        first = failed[0][3] if failed else "no clips"
        raise RunFailed(f"None of the {rows} clips of {labels} could be featurized, so {out} was not written "
                        f"(the first: {first}); every failure is listed in {failed_path}.")
    data = _dataset_dict(jobs, results, config)
    _write_pickle(data, out)
    return RawDatasetReport(out=out, clips=rows,
                            computed=len(pending) - len(errors), cached=cached_count, failed=failed,
                            failed_path=failed_path if failed else None,
                            split_sizes={k: len(v["id"]) for k, v in data.items() if k != "meta"})


def _execute(pending, config: FeaturizerConfig, options: FeaturizeOptions, cache_dir: str | None):
    """Yield (key, sample dict, error) per pending clip, in worker processes when asked."""
    if not pending:
        return
    options_dict = {**asdict(options), "progress": False}
    if options.workers > 1 and "cpu_threads" not in options.asr:
        # N workers each running Whisper on all cores would oversubscribe the CPU.
        options_dict["asr"] = {**options.asr, "cpu_threads": max(1, (os.cpu_count() or 1) // options.workers)}
    if options.workers == 1 or len(pending) == 1:
        global _WORKER
        previous = _WORKER
        _worker_init(config.to_dict(), options_dict)
        try:
            for job, fingerprint in pending:
                yield _run_clip(job, cache_dir, fingerprint)
        finally:
            _WORKER.close()
            _WORKER = previous
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from concurrent.futures.process import BrokenProcessPool

    # spawn: MediaPipe and ONNX Runtime hold threads that a fork would copy half-alive.
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=min(options.workers, len(pending)), mp_context=context,
                             initializer=_worker_init, initargs=(config.to_dict(), options_dict)) as pool:
        futures = {pool.submit(_run_clip, job, cache_dir, fp): job for job, fp in pending}
        for future in as_completed(futures):
            job = futures[future]
            try:
                yield future.result()
            except BrokenProcessPool:
                yield job.key, None, ("a featurize worker process died (out of memory or a crash in a native library); "
                                     "run again to retry the clips it left")
            except Exception as err:
                yield job.key, None, f"{type(err).__name__}: {err}"


def _dataset_dict(jobs: list[ClipJob], results: dict[str, dict], config: FeaturizerConfig) -> dict:
    data: dict = {}
    for split in ("train", "valid", "test"):
        chosen = [j for j in jobs if j.split == split and j.key in results]
        samples = [_sample_from_dict(results[j.key]) for j in chosen]
        part = samples_to_mmsa(samples, [j.key for j in chosen], config)
        part["regression_labels"] = np.array([j.label for j in chosen], np.float32)
        for m in ("T", "A", "V"):  # per-modality labels (CH-SIMS layout); NaN = unknown for that head
            values = [j.labels_tav.get(m) for j in chosen]
            if chosen and any(v is not None for v in values):
                part[f"regression_labels_{m}"] = np.array([np.nan if v is None else v for v in values], np.float32)
        part["annotations"] = [j.annotation for j in chosen]
        if chosen:
            data[split] = part
    data["meta"] = config.to_dict()
    return data


def _progress(enabled: bool):
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                               TimeRemainingColumn)
    from rich.console import Console

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TimeRemainingColumn(), console=Console(stderr=True), disable=not enabled, transient=False)


def load_featurized(path: str | Path) -> dict:
    """Read a featurize pickle back (either layout), refusing foreign or corrupt files."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"The feature file '{path}' does not exist.")
    data = safe_pickle_load(path, f"The feature file '{path}'")
    if not isinstance(data, dict) or "meta" not in data:
        raise DataError(f"The feature file '{path}' was not written by `moodlens featurize` (no 'meta').")
    return data


