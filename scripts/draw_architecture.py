"""Draw docs/img/window_path.svg: the path of one window from camera to dashboard, from the real modules.

    .venv/bin/python scripts/draw_architecture.py          # rewrites the SVG
    .venv/bin/python scripts/draw_architecture.py --check  # exit 1 when the SVG is out of date

Each box names a file and a function or class of it; tests/test_architecture_doc.py checks that every
one exists and that the SVG is what this script draws, so the picture cannot drift from the code.
Hand-written SVG (no plotting library): boxes in the order a window flows, coloured by stage.
"""

from __future__ import annotations

import sys
from html import escape
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "docs" / "img" / "window_path.svg"

STAGE_COLOURS = {
    "capture": "#dbeafe", "perception": "#dcfce7", "scoring": "#fef9c3", "engine": "#fde2e4",
    "sessions": "#ede9fe", "ui": "#e0f2fe", "app": "#f3f4f6", "models": "#ffedd5", "core": "#ffffff",
}

# (stage, file, qualified name, what happens there) in the order one window flows.
STEPS = [
    ("capture", "realtime/capture/devices.py", "WebcamSource._capture_loop", "camera thread: VideoFrame(t, image)"),
    ("capture", "realtime/capture/devices.py", "MicrophoneSource._callback", "PortAudio: AudioChunk(t, 512 samples)"),
    ("capture", "realtime/capture/streams.py", "BoundedQueue.put", "bounded; policy drop_oldest when full"),
    ("capture", "realtime/capture/devices.py", "LiveSource.__iter__", "both streams in time order"),
    ("engine", "realtime/engine/pipeline.py", "Pipeline._capture_stage", "sinks see every item; frames at the face fps"),
    ("capture", "realtime/capture/streams.py", "FrameRate.keep", "the pipeline picks frames to track"),
    ("perception", "realtime/perception/features/vision.py", "VisionFeaturizer.process", "MediaPipe -> FaceFeatures (64-d)"),
    ("perception", "realtime/perception/vad.py", "UtteranceWindower.push_audio", "Silero VAD closes an utterance"),
    ("perception", "realtime/perception/vad.py", "SileroVad.__call__", "speech probability per 32 ms frame"),
    ("engine", "realtime/engine/streams.py", "window_queue", "policy merge: merge or drop when Whisper is behind"),
    ("perception", "realtime/perception/asr.py", "Transcriber.transcribe", "faster-whisper -> text"),
    ("engine", "realtime/engine/pipeline.py", "Pipeline._score", "up to score_batch windows together"),
    ("perception", "realtime/perception/features/featurizer.py", "Featurizer.span_sample",
     "features of the span (same in training)"),
    ("models", "models/batch.py", "MultimodalBatch", "the 7-tensor contract"),
    ("scoring", "realtime/scoring/scorer.py", "Scorer.score", "ScoredBatch; the one place a score is nulled"),
    ("scoring", "realtime/scoring/backends.py", "Backend.__call__", "pad to a bucket; eager/compile/ONNX/TensorRT"),
    ("models", "models/base.py", "SentimentModel.forward", "one of the five paper models"),
    ("engine", "realtime/engine/events.py", "WindowEvent", "scores, presence, latencies"),
    ("sessions", "realtime/sessions/writer.py", "SessionRecorder.on_event", "a sink: WAV, MP4, windows.jsonl"),
    ("app", "realtime/app/session.py", "run_dashboard", "Pipeline.events() on the caller's thread"),
    ("ui", "realtime/ui/dashboard.py", "Dashboard.add", "timeline, Now panel"),
    ("engine", "realtime/engine/stats.py", "PipelineStats.snapshot", "what the dashboard's header shows"),
    ("ui", "realtime/ui/dashboard.py", "Dashboard.render", "rich.Live redraws 4x a second"),
]

BOX_W, BOX_H, GAP_Y, COLS, COL_GAP, MARGIN = 330, 58, 18, 2, 70, 24


def draw() -> str:
    rows = (len(STEPS) + COLS - 1) // COLS
    width = MARGIN * 2 + COLS * BOX_W + (COLS - 1) * COL_GAP
    legend_h = 40
    height = MARGIN * 2 + legend_h + rows * (BOX_H + GAP_Y)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" font-family="DejaVu Sans, Arial, sans-serif">',
           '<defs><marker id="a" markerWidth="8" markerHeight="8" refX="7" refY="4" orient="auto">'
           '<path d="M0,0 L8,4 L0,8 z" fill="#555"/></marker></defs>',
           f'<rect width="{width}" height="{height}" fill="#fcfcfc"/>',
           f'<text x="{MARGIN}" y="{MARGIN + 4}" font-size="15" font-weight="bold">'
           'One window, camera to dashboard (moodlens live)</text>']
    x = MARGIN
    for stage in ("capture", "perception", "engine", "scoring", "models", "sessions", "app", "ui"):
        out.append(f'<rect x="{x}" y="{MARGIN + 14}" width="14" height="14" fill="{STAGE_COLOURS[stage]}" '
                   f'stroke="#888"/><text x="{x + 19}" y="{MARGIN + 26}" font-size="12">{stage}</text>')
        x += 19 + 9 * len(stage) + 14
    centres = []
    for i, (stage, path, name, note) in enumerate(STEPS):
        col, row = divmod(i, rows)
        bx = MARGIN + col * (BOX_W + COL_GAP)
        by = MARGIN + legend_h + row * (BOX_H + GAP_Y)
        centres.append((bx, by))
        out.append(f'<rect x="{bx}" y="{by}" width="{BOX_W}" height="{BOX_H}" rx="6" '
                   f'fill="{STAGE_COLOURS[stage]}" stroke="#666"/>')
        out.append(f'<text x="{bx + 8}" y="{by + 18}" font-size="13" font-weight="bold">{i + 1}. {escape(name)}</text>')
        out.append(f'<text x="{bx + 8}" y="{by + 34}" font-size="11" fill="#333" font-family="DejaVu Sans Mono, '
                   f'monospace">{escape(path)}</text>')
        out.append(f'<text x="{bx + 8}" y="{by + 50}" font-size="11" fill="#555">{escape(note)}</text>')
    for (ax, ay), (bx, by) in zip(centres, centres[1:]):
        if bx == ax:   # next box below
            out.append(f'<line x1="{ax + BOX_W / 2}" y1="{ay + BOX_H}" x2="{bx + BOX_W / 2}" y2="{by - 2}" '
                       f'stroke="#555" marker-end="url(#a)"/>')
        else:          # from the bottom of one column to the top of the next
            out.append(f'<path d="M{ax + BOX_W},{ay + BOX_H / 2} C{ax + BOX_W + COL_GAP},{ay + BOX_H / 2} '
                       f'{bx - COL_GAP},{by + BOX_H / 2} {bx - 2},{by + BOX_H / 2}" fill="none" stroke="#555" '
                       f'marker-end="url(#a)"/>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def main(argv: list[str]) -> int:
    svg = draw()
    if "--check" in argv:
        return 0 if OUT.exists() and OUT.read_text() == svg else 1
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(svg)
    print(f"wrote {OUT.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
