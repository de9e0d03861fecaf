"""The dashboard renders every panel at 80×24 and 120×40 (rich Console(record=True) capture)."""

from __future__ import annotations

import pytest
from rich.console import Console

from moodlens.realtime.ui.dashboard import Dashboard, TimelineChart, gauge, render_to_text, sentiment_rgb, sentiment_style
from moodlens.realtime.engine.events import WindowEvent
from moodlens.realtime.engine.stats import StatsSnapshot


def event(i, start, end, fused, text="", t=None, a=None, v=None):
    present = {"text": t is not None, "audio": a is not None, "vision": v is not None}
    return WindowEvent(id=i, start=start, end=end, text=text, fused=fused, text_score=t, audio_score=a,
                       vision_score=v, present=present,
                       latency_ms={"asr": 300.0, "features": 10.0, "model": 4.0, "total": 420.0}, backend="onnxruntime")


EVENTS = [
    event(0, 0.5, 4.0, 2.4, "I love this, it is wonderful.", t=2.6, a=0.4, v=1.1),
    event(1, 5.0, 8.5, -2.2, "This is terrible and I hate it.", t=-2.5, a=-0.3, v=0.2),
    event(2, 9.5, 12.0, 0.1, "The meeting is on Tuesday.", t=0.1, a=0.0, v=None),
    event(3, 13.0, 15.0, -0.4, "", t=None, a=-0.4, v=None),
]
SNAP = StatsSnapshot(elapsed_s=16.0, media_s=15.5, duration_s=27.0, frames_in=390, frames_dropped=3,
                     faces_processed=230, faces_found=200, video_fps=25.0, face_fps=15.0, windows_scored=4,
                     windows_merged=1, latency_p50={"asr": 312.0, "features": 11.0, "model": 4.2, "total": 402.0,
                                                    "face": 17.0},
                     latency_p95={"asr": 455.0, "features": 14.0, "model": 6.1, "total": 533.0}, face_now=True,
                     audio_db=-20.0)


def dashboard(events=EVENTS, snap=SNAP) -> Dashboard:
    d = Dashboard("demo.mp4", backend="onnxruntime", device="cpu", stats=lambda: snap)
    for e in events:
        d.add(e)
    return d


@pytest.mark.parametrize("width,height", [(80, 24), (120, 40)])
def test_every_panel_renders_and_fits(width, height):
    text = render_to_text(dashboard(), width, height)
    lines = text.splitlines()
    assert len(lines) == height
    assert all(len(line) <= width for line in lines)
    for needle in ("moodlens", "demo.mp4", "onnxruntime", "cpu", "Sentiment over time", "Now", "Pipeline",
                   "p50", "p95", "asr", "model", "total", "fps", "dropped 3", "merged 1",
                   "+3", "-3", " 0 "):
        assert needle in text, f"{needle!r} missing at {width}x{height}:\n{text}"
    # Latest window: its scores and what is absent (no speech, no face).
    assert "-0.40" in text and "no speech" in text and "no face" in text
    assert "312" in text and "533" in text                       # p50 asr, p95 total
    assert "♪▮▮▮▯▯" in text                                  # -20 dBFS on a -60…0 meter
    strips = {line.strip("│ ")[:1] for line in lines if line.startswith("│T ") or line.startswith("│A ")
              or line.startswith("│V ")}
    assert strips == {"T", "A", "V"}


def test_bigger_terminal_shows_earlier_transcripts():
    small = render_to_text(dashboard(), 80, 24)
    big = render_to_text(dashboard(), 120, 40)
    assert "I love this, it is wonderful." in big
    assert "I love this, it is wonderful." not in small   # no room at 80×24: only the latest window


def chart_rows(events, now, width=60, height=13):
    console = Console(width=width, height=height, force_terminal=True)
    options = console.options.update(width=width, height=height)
    lines = console.render_lines(TimelineChart(events, now), options)
    return ["".join(seg.text for seg in line) for line in lines]


def test_chart_puts_positive_bars_above_and_negative_below_zero():
    rows = chart_rows([EVENTS[0], EVENTS[1]], now=10.0)
    zero = next(i for i, r in enumerate(rows) if r.startswith(" 0 "))
    chart = TimelineChart([EVENTS[0], EVENTS[1]], 10.0)
    start, spc, cols = chart.layout(60)
    col_pos = 3 + int((2.0 - start) / spc)       # inside event 0 (positive)
    col_neg = 3 + int((7.0 - start) / spc)       # inside event 1 (negative)
    assert rows[zero - 1][col_pos] == "█" and rows[zero + 1][col_pos] == " "
    assert rows[zero + 1][col_neg] == "█" and rows[zero - 1][col_neg] == " "
    # +2.4 reaches 4/5 of the way up (4 rows a side): the top row stays empty, the next is filled.
    assert rows[0][col_pos] == " " and rows[1][col_pos] in "█▄"
    silence = 3 + int((4.6 - start) / spc)       # between the windows: nothing drawn
    assert all(r[silence] in " ─" for r in rows[:zero + 5])


def test_strips_mark_absent_modalities():
    rows = chart_rows([EVENTS[2]], now=12.5)
    chart = TimelineChart([EVENTS[2]], 12.5)
    start, spc, _ = chart.layout(60)
    col = 3 + int((11.0 - start) / spc)
    strip = {r[0]: r for r in rows if r[:1] in "TAV" and r[1:3] == "  "}
    assert strip["V"][col] == "·"                      # no face in that window
    assert strip["T"][col] in "▁▂▃▄▅▆▇█" and strip["A"][col] in "▁▂▃▄▅▆▇█"


def test_colour_runs_from_red_to_green():
    red, mid, green = sentiment_rgb(-3), sentiment_rgb(0), sentiment_rgb(3)
    assert red[0] > red[1] and green[1] > green[0]
    assert sentiment_rgb(-10) == red and sentiment_rgb(10) == green        # clamped
    greens = [sentiment_rgb(x)[1] - sentiment_rgb(x)[0] for x in (-3, -1.5, 0, 1.5, 3)]
    assert greens == sorted(greens)                                         # monotone hue shift
    assert sentiment_style(None).color.name == "grey42"


def test_gauge_fills_from_the_centre():
    assert gauge(3.0, 21).plain == "─" * 10 + "│" + "█" * 10
    assert gauge(-1.5, 21).plain == "─" * 5 + "█" * 5 + "│" + "─" * 10
    assert gauge(0.0, 21).plain == "─" * 10 + "│" + "─" * 10


def test_empty_dashboard_waits_and_long_sessions_scroll():
    text = render_to_text(dashboard(events=[], snap=StatsSnapshot(face_now=False)), 80, 24)
    assert "waiting for the first utterance" in text and "no face" in text
    # A live session (no duration) longer than the screen scrolls: the newest window stays visible.
    many = [event(i, 2.0 * i, 2.0 * i + 1.5, (-1) ** i * 2.0, f"utterance {i}", t=1.0, a=0.0)
            for i in range(200)]
    chart = TimelineChart(many, now_s=400.0, max_seconds_per_column=1.0)
    start, spc, cols = chart.layout(80)
    assert spc == 1.0 and start == pytest.approx(400.0 - cols) and start > 0
    text = render_to_text(dashboard(events=many, snap=StatsSnapshot(media_s=400.0)), 80, 24)
    assert "utterance 199" in text and "6:" in text     # axis labels in minutes past 60 s


def test_missing_streams_are_named():
    silent = StatsSnapshot(has_audio=False, face_now=True)
    text = render_to_text(dashboard(events=[event(0, 0, 3, 0.2, "", v=0.2)], snap=silent), 80, 24)
    assert "no sound" in text and "✓ face" in text and "silence" not in text
    blind = StatsSnapshot(has_video=False, audio_db=-20.0)
    text = render_to_text(dashboard(events=[event(0, 0, 3, 0.2, "hello", t=0.2, a=0.1)], snap=blind), 80, 24)
    assert "no video" in text and "✓ speech" in text and "♪▮▮▮▯▯" in text


def test_cut_and_merged_windows_are_marked():
    latest = event(5, 16.0, 31.0, 1.0, "a long monologue", t=1.0, a=0.5)
    latest.cut, latest.merged = True, 2
    text = render_to_text(dashboard(events=EVENTS + [latest]), 80, 24)
    assert "(cut)" in text and "(2 merged)" in text


def test_summary_lists_every_window():
    console = Console(width=120, record=True, file=None)
    console.begin_capture()
    console.print(dashboard().summary())
    out = console.end_capture()
    for e in EVENTS:
        assert (e.text or "(no speech)") in out
    assert "+2.40" in out and "-2.20" in out


def perceived_but_unscored(i, start, end, fused, text):
    """What the scorer returns for a text-only checkpoint: audio and face perceived, scored null."""
    e = event(i, start, end, fused, text, t=fused)
    e.present.update(audio=True, vision=True)
    return e


@pytest.mark.parametrize("width,height", [(80, 24), (120, 40)])
def test_untrained_branches_are_named_not_shown_as_absent(width, height):
    events = [perceived_but_unscored(0, 0.5, 4.0, 2.3, "I love this."),
              perceived_but_unscored(1, 5.0, 8.0, -2.5, "I hate this.")]
    d = Dashboard("demo.mp4", backend="onnxruntime", device="cpu", stats=lambda: SNAP,
                  untrained=("vision", "audio"))
    for e in events:
        d.add(e)
    text = render_to_text(d, width, height)
    lines = text.splitlines()
    assert len(lines) == height and all(len(line) <= width for line in lines)
    strips = {line[1]: line for line in lines if line[1:2] in "TAV" and line[2:4] == "  "}
    assert "untrained in this checkpoint" in strips["A"] and "untrained in this checkpoint" in strips["V"]
    assert "untrained" not in strips["T"] and any(ch in strips["T"] for ch in "▁▂▃▄▅▆▇█")
    assert "A/V untrained" in text and "T -2.50" in text
    # What was perceived is still said: a face and a voice were found, so never "no face" / "silence".
    assert "✓ face" in text and "✓ voice" in text and "no face" not in text and "silence" not in text
    # A checkpoint trained on every modality shows no such label.
    full = render_to_text(dashboard(), width, height)
    assert "untrained" not in full


def test_untrained_branches_are_noted_under_the_summary():
    d = Dashboard("demo.mp4", stats=lambda: SNAP, untrained=("audio", "vision"))
    d.add(perceived_but_unscored(0, 0.5, 4.0, 2.3, "I love this."))
    console = Console(width=120, record=True, file=None)
    console.begin_capture()
    console.print(d.summary())
    out = console.end_capture()
    assert "audio and vision: branches untrained in this checkpoint" in " ".join(out.split())


@pytest.mark.parametrize("width,height", [(80, 24), (120, 40)])
def test_a_recorder_failure_is_shown_above_the_dashboard(width, height):
    sentence = ("Recording to /data/sessions/today stopped while writing audio: No space left on device; "
                "live scoring continues and what was recorded so far stays readable.")
    failure: list[str] = []
    d = dashboard()
    d.alert = lambda: failure[0] if failure else None
    before = render_to_text(d, width, height)
    assert "Recording to" not in before                       # nothing shown until it fails
    failure.append(sentence)
    text = render_to_text(d, width, height)
    lines = text.splitlines()
    assert len(lines) == height and all(len(line) <= width for line in lines)
    assert sentence in " ".join(line.strip() for line in lines[:4])   # the whole sentence, under the header
    for needle in ("Sentiment over time", "Now", "Pipeline", "p95", "-0.40"):
        assert needle in text, f"{needle!r} pushed off the screen at {width}x{height}"


def test_interim_sentence_grows_and_its_final_replaces_it():
    d = dashboard()
    partial = event(4, 16.0, 18.0, 0.8, "so far I think", t=0.8)
    partial.interim = True
    d.add(partial)
    text = render_to_text(d, 120, 40)
    assert "so far I think" in text and "…" in text
    assert len(d.events) == len(EVENTS)                          # an interim is not a window of the timeline
    final = event(4, 16.0, 19.5, 1.1, "so far I think it works", t=1.1)
    final.latency_ms["speech_end"] = 480.0
    d.add(final)
    text = render_to_text(d, 120, 40)
    assert d.partial is None and "“so far I think it works”" in text and "480 ms" in text


def test_latency_panel_shows_speech_end_to_score():
    snap = StatsSnapshot(**{**SNAP.__dict__, "latency_p50": {**SNAP.latency_p50, "speech_end": 777.0},
                            "latency_p95": {**SNAP.latency_p95, "speech_end": 888.0},
                            "spec_emitted": 4, "spec_used": 3, "interims_emitted": 5})
    for width, height in ((80, 24), (120, 40)):
        text = render_to_text(dashboard(snap=snap), width, height)
        assert "speech" in text and "777" in text and "888" in text, text
        if height >= 40:                                          # 80x24 has no room for this line
            assert "3/4 used" in text and "interim 5" in text
        assert all(len(line) <= width for line in text.splitlines())
