"""Export formats parse with independent readers: csv (csv module), srt (a parser written here),
json, and the html report rendered by headless Chromium (screenshot checked for content) with no
external references."""

from __future__ import annotations

import csv
import json
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from helpers.cli import run_cli
from helpers.sessions import record_synthetic


@pytest.fixture(scope="module")
def session_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("export") / "talk"
    record_synthetic(folder, seconds=6.1, video="none")
    return folder


@pytest.fixture(scope="module")
def session(session_dir):
    from moodlens.realtime.sessions.reader import open_session

    s = open_session(session_dir)
    assert len(s.windows) == 12
    return s




def test_csv_one_row_per_window_with_empty_label(session, session_dir, tmp_path):
    out = tmp_path / "talk.csv"
    code, err = run_cli("export", str(session_dir), "--format", "csv", "--out", str(out))
    assert code == 0, err
    with out.open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(session.windows)
    assert list(rows[0]) == ["session", "id", "start", "end", "text", "text_score", "audio_score", "vision_score",
                             "fused_score", "text_present", "audio_present", "vision_present", "cut", "label"]
    for row, w in zip(rows, session.windows):
        assert int(row["id"]) == w.id and row["text"] == w.text and row["label"] == ""
        assert float(row["start"]) == pytest.approx(w.start, abs=1e-3)
        assert float(row["fused_score"]) == pytest.approx(w.scores["fused"], abs=1e-4)
        assert row["vision_present"] == str(int(w.present["vision"]))
        assert (row["vision_score"] == "") == (w.scores["vision"] is None)


SRT_TIME = r"(\d\d):(\d\d):(\d\d),(\d\d\d)"


def parse_srt(text: str) -> list[dict]:
    """A strict SubRip reader: numbered cues, `HH:MM:SS,mmm --> HH:MM:SS,mmm`, text, blank line."""
    cues = []
    for block in text.strip("\n").split("\n\n"):
        lines = block.split("\n")
        assert len(lines) >= 3, f"cue too short: {block!r}"
        index = int(lines[0])
        m = re.fullmatch(f"{SRT_TIME} --> {SRT_TIME}", lines[1])
        assert m, f"bad timing line {lines[1]!r}"
        g = [int(x) for x in m.groups()]
        start = g[0] * 3600 + g[1] * 60 + g[2] + g[3] / 1000
        end = g[4] * 3600 + g[5] * 60 + g[6] + g[7] / 1000
        cues.append({"index": index, "start": start, "end": end, "lines": lines[2:]})
    return cues


def test_srt_cues_carry_transcript_and_sentiment(session, session_dir, tmp_path):
    from moodlens.realtime.sessions.export import export_session

    out = export_session(session_dir, "srt", tmp_path / "talk.srt")
    cues = parse_srt(out.read_text())
    assert [c["index"] for c in cues] == list(range(1, len(session.windows) + 1))
    for cue, w in zip(cues, session.windows):
        assert cue["start"] == pytest.approx(w.start, abs=1e-3) and cue["end"] > cue["start"]
        assert cue["lines"][0] == (w.text or "[no speech recognized]")
        score = float(re.search(r"sentiment ([+-]\d+\.\d\d)", cue["lines"][1]).group(1))
        assert score == pytest.approx(w.scores["fused"], abs=0.006)
    assert [c["start"] for c in cues] == sorted(c["start"] for c in cues)


def test_json_holds_everything(session, session_dir, tmp_path):
    from moodlens.realtime.engine.events import check_event_dict
    from moodlens.realtime.sessions.export import export_session

    doc = json.loads(export_session(session_dir, "json", tmp_path / "talk.json").read_text())
    assert doc["session"]["session_id"] == session.info["session_id"]
    assert len(doc["windows"]) == len(session.windows)
    for d in doc["windows"]:
        check_event_dict(d)
    summary = doc["summary"]
    fused = np.array([w.scores["fused"] for w in session.windows])
    durations = np.array([w.duration for w in session.windows])
    assert summary["scores"]["fused"]["mean"] == pytest.approx(np.average(fused, weights=durations), abs=1e-4)
    assert sum(summary["polarity_counts"].values()) == len(session.windows)
    assert summary["modality_present"]["vision"] == sum(w.present["vision"] for w in session.windows)
    assert summary["most_negative"]["score"] == pytest.approx(fused.min(), abs=1e-4)


@pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian chromium is needed to render the report")
def test_html_report_is_self_contained_and_renders(session, session_dir, tmp_path):
    from PIL import Image

    from moodlens.realtime.sessions.export import export_session

    out = export_session(session_dir, "html", tmp_path / "talk.html")
    page = out.read_text()
    # Self-contained: no address anywhere, nothing loaded from outside.
    assert not re.search(r"https?:|//[a-z0-9]|<link|<script|@import|url\(|src=", page, re.IGNORECASE)
    svg = page[page.index("<svg"): page.index("</svg>") + len("</svg>")]
    root = ET.fromstring(svg)                        # well-formed
    circles = [c for c in root.iter("circle")]
    n_scores = sum(1 for w in session.windows for v in w.scores.values() if v is not None)
    assert len(circles) == n_scores
    assert len([p for p in root.iter("polyline")]) >= 4  # fused + three modalities
    for w in session.windows:
        if w.text:
            assert w.text in page
    png = tmp_path / "shot.png"
    profile = tmp_path / "chromium-profile"
    proc = subprocess.run(
        ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
         f"--screenshot={png}", "--window-size=1200,900", out.as_uri()],
        capture_output=True, timeout=120)
    assert png.exists(), proc.stderr.decode()[-2000:]
    image = np.asarray(Image.open(png).convert("RGB"))
    assert image.shape[:2] == (900, 1200)
    non_white = (image < 240).any(-1).mean()
    assert non_white > 0.03, f"screenshot looks blank ({non_white:.3%} non-white pixels)"
    # The fused line's colour (#1f2937) and the text line's (#2563eb) are drawn.
    for rgb in ((0x1F, 0x29, 0x37), (0x25, 0x63, 0xEB)):
        assert (np.abs(image.astype(int) - rgb).sum(-1) < 30).sum() > 50


def test_bad_requests_get_one_sentence(session_dir, tmp_path):
    code, err = run_cli("export", str(tmp_path / "nowhere"), "--format", "csv", "--out", str(tmp_path / "x.csv"))
    assert code == 2 and "does not exist" in err and "Traceback" not in err
    code, err = run_cli("export", str(session_dir), "--out", str(tmp_path / "x.docx"))
    assert code == 2 and "--format" in err
    code, err = run_cli("export", str(tmp_path), "--format", "json", "--out", str(tmp_path / "x.json"))
    assert code == 2 and "not a recorded session" in err
