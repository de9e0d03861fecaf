"""`moodlens bench`: a tiny run writes the documented JSON keys, a table and a plot; bad options are
refused with one sentence."""

from __future__ import annotations

import json

import pytest

from moodlens.realtime.app.bench import percentiles
from moodlens.realtime.cli import main as cli_main

BACKEND_KEYS = {"backend", "available", "reason", "device", "build_s", "builds", "max_abs_diff_vs_eager",
                "latency_ms", "cpu_ms",
                "iterations", "throughput"}
PIPELINE_KEYS = {"media", "pace", "backend", "duration_s", "wall_s", "real_time_factor", "windows",
                 "windows_dropped", "windows_merged", "frames_dropped", "stage_ms",
                 "end_of_utterance_to_score_ms", "end_of_utterance_to_score_ms_by_third", "cpu_percent",
                 "rss_mb", "speech_end_to_score_ms", "speech_end_to_score_ms_by_third", "stages_ms",
                 "speculation", "interims", "rss_slope_mb_per_min", "per_window"}


def test_percentiles_are_ordered():
    p = percentiles([5.0, 1.0, 3.0, 100.0, 2.0])
    assert p["min"] <= p["p50"] <= p["p95"] <= p["p99"] <= p["max"] == 100.0
    assert p["p50"] == 3.0


@pytest.mark.e2e
def test_bench_json_has_the_documented_keys(tmp_path, tts, capsys):
    speech = tts("I really love this wonderful day.")
    out, png, stages = tmp_path / "bench.json", tmp_path / "bench.png", tmp_path / "stages.png"
    code = cli_main(["bench", "--model", "hcrl_mfd", "--backends", "eager,tensorrt", "--iterations", "5",
                     "--warmup", "1", "--batch-sizes", "2", "--throughput-iterations", "2",
                     "--media", str(speech), "--pace", "fast", "--pipeline-backend", "eager",
                     "--json", str(out), "--plot", str(png), "--stage-plot", str(stages)])
    assert code == 0
    report = json.loads(out.read_text())
    assert report["schema"] == "moodlens-bench/2"
    assert {"machine", "command", "model", "window", "backends", "pipeline"} <= set(report)
    assert report["window"]["audio_frames"] == 75 and report["window"]["vision_frames"] == 45  # 3 s at 25/15 fps
    eager, trt = report["backends"]
    assert BACKEND_KEYS <= set(eager) and eager["available"]
    lat = eager["latency_ms"]
    assert 0 < lat["p50"] <= lat["p95"] <= lat["p99"]
    assert eager["cpu_ms"]["p50"] > 0
    assert eager["max_abs_diff_vs_eager"] == 0.0
    assert eager["throughput"][0]["batch"] == 2 and eager["throughput"][0]["samples_per_s"] > 0
    assert trt["available"] is False and trt["reason"].startswith("unavailable: install")
    (pipe,) = report["pipeline"]
    assert PIPELINE_KEYS <= set(pipe)
    assert pipe["pace"] == "fast" and pipe["windows"] >= 1
    assert pipe["duration_s"] > 1 and pipe["real_time_factor"] > 0
    assert pipe["end_of_utterance_to_score_ms"]["p50"] > 0
    assert {"asr", "features", "model"} <= set(pipe["stage_ms"])
    assert pipe["rss_mb"]["peak"] >= pipe["rss_mb"]["start"] > 0
    # Speech end -> score: the window-close figure plus the VAD's decision time, stage by stage.
    felt, eou = pipe["speech_end_to_score_ms"], pipe["end_of_utterance_to_score_ms"]
    assert felt["p50"] >= eou["p50"] > 0 and felt["p50"] <= felt["p95"] <= felt["max"]
    assert {"vad", "queue", "asr", "asr_wait", "features", "model"} <= set(pipe["stages_ms"])
    spec = pipe["speculation"]
    assert spec["emitted"] == spec["used"] + spec["discarded"] + spec["skipped"]
    assert pipe["interims"]["emitted"] >= 0 and pipe["interims"]["every_s"] == 1.0
    assert spec["fires_after_s"] == pytest.approx(max(spec["speculative_silence_s"], pipe["vad"]["pad_s"]))
    # Every scored utterance's steps, ms after its speech end, in the order they happen.
    assert len(pipe["per_window"]) == pipe["windows"]
    for w in pipe["per_window"]:
        assert w["final_chunk"] <= w["final_routed"] <= w["ready"] + 1
        assert all(kind in ("preview", "speculative", "final") and start <= end for kind, start, end in w["jobs"])
    for image in (png, stages):
        assert image.stat().st_size > 5000 and image.read_bytes()[:4] == b"\x89PNG"
    table = capsys.readouterr().out
    assert "Model-only latency" in table and "Whole pipeline" in table


def test_bench_refuses_unknown_backend_and_empty_run(capsys):
    assert cli_main(["bench", "--backends", "eager,warp", "--skip-pipeline"]) == 2
    assert "Unknown backend 'warp'" in capsys.readouterr().err
    assert cli_main(["bench", "--skip-model", "--skip-pipeline"]) == 2
    assert "leave nothing to benchmark" in capsys.readouterr().err


@pytest.mark.parametrize("argv, words", [
    (["--min-silence", "-1"], "--min-silence: must be zero or positive"),
    (["--speculative-silence", "-0.2"], "--speculative-silence: must be zero or positive"),
    (["--asr-threads", "0"], "--asr-threads: must be a whole number of at least 1"),
])
def test_bench_pipeline_overrides_are_range_checked_before_anything_loads(argv, words, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli_main(["bench", "--skip-model", *argv])
    assert exit_.value.code == 2
    assert words in " ".join(capsys.readouterr().err.split())
