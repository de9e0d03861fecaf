"""One scored-window record for live events and recordings: a windows.jsonl line is the live event's
`to_dict()` plus `seq`/`recorded_t`, read back into the same `WindowEvent` (schema v2, and v1 lines)."""

from __future__ import annotations

import csv
import io
import json

from helpers.sessions import record_synthetic
from moodlens.realtime.engine.events import WindowEvent
from moodlens.realtime.sessions.export import to_csv, to_document
from moodlens.realtime.sessions.reader import open_session
from moodlens.realtime.sessions.replay import replay_events


def _rewrite(folder, change):
    path = folder / "windows.jsonl"
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    change(lines)
    path.write_text("".join(json.dumps(d) + "\n" for d in lines))
    return lines


def test_a_recorded_window_is_the_live_record_and_round_trips_byte_for_byte(tmp_path):
    record_synthetic(tmp_path / "s", seconds=2.1, video="none")
    session = open_session(tmp_path / "s")
    lines = (tmp_path / "s" / "windows.jsonl").read_text().splitlines()
    assert len(session.windows) == len(lines) >= 3
    origin = session.origin_t
    for w, line in zip(session.windows, lines):
        assert isinstance(w, WindowEvent) and w.seq is not None and w.recorded_t is not None
        d = json.loads(line)
        back = WindowEvent.from_dict(d)        # the media clock, as the pipeline emitted it
        assert abs(w.start - (back.start - origin)) < 1e-9
        rewritten = {**back.to_dict(), "seq": d["seq"], "recorded_t": d["recorded_t"]}
        assert json.dumps(rewritten, ensure_ascii=False) == line


def test_the_cut_flag_of_schema_v2_reaches_reader_export_and_replay(tmp_path):
    record_synthetic(tmp_path / "s", seconds=2.1, video="none")
    _rewrite(tmp_path / "s", lambda lines: lines[1].update(cut=True))
    session = open_session(tmp_path / "s")
    assert [w.cut for w in session.windows[:3]] == [False, True, False]
    assert not any(w.interim for w in session.windows)       # finals only: a recording holds no previews
    rows = list(csv.DictReader(io.StringIO(to_csv(session))))
    assert [r["cut"] for r in rows[:3]] == ["0", "1", "0"]
    assert [d["cut"] for d in to_document(session)["windows"][:3]] == [False, True, False]
    assert [e.cut for e in replay_events(session, speed=0)][:3] == [False, True, False]


def test_a_version_1_recording_reads_its_interim_flag_as_cut(tmp_path):
    record_synthetic(tmp_path / "s", seconds=2.1, video="none")

    def to_v1(lines):
        for i, d in enumerate(lines):
            for key in ("v", "speech_end", "ready_at", "cut", "speculative"):
                d.pop(key, None)
            d["latency_ms"] = {k: d["latency_ms"][k] for k in ("asr", "features", "model", "total")}
            d["interim"] = i == 0              # version 1: "interim" meant cut at max_utterance_s

    _rewrite(tmp_path / "s", to_v1)
    session = open_session(tmp_path / "s")
    assert session.windows[0].cut and not session.windows[0].interim
    assert not session.windows[1].cut
    replayed = list(replay_events(session, speed=0))
    assert replayed[0].cut and not replayed[0].interim     # the dashboard must not take it for a preview
