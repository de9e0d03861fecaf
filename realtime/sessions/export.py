"""Export a recorded session: csv (for annotation), srt (subtitles), json (everything), html (a report).

    moodlens export SESSION_DIR --format html --out report.html

The csv has one row per window and an empty `label` column: fill it with the true sentiment
(-3..+3) and the file becomes training labels (`moodlens train --data SESSION_DIR --labels FILE`).
The html report is one self-contained file (inline SVG and CSS, no script, no external address).
"""

from __future__ import annotations

import csv
import html
import io
import json
import math
import statistics
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from moodlens.core.errors import ConfigError, DataError
from moodlens.core.schema import MODALITIES
from moodlens.realtime.sessions.reader import RecordedSession, open_session

EXPORT_FORMATS = ("csv", "srt", "json", "html")
SCORE_KEYS = ("text", "audio", "vision", "fused")
CSV_COLUMNS = ("session", "id", "start", "end", "text",
               "text_score", "audio_score", "vision_score", "fused_score",
               "text_present", "audio_present", "vision_present", "cut", "label")
# Windows whose fused score is within this of 0 count as neutral in the summary.
NEUTRAL_BAND = 0.5
EXPORT_FORMAT_ID = "moodlens-session-export/1"


def export_session(session: RecordedSession | str | Path, fmt: str, out: str | Path) -> Path:
    """Write `session` in format `fmt` to `out` and return the path written."""
    if fmt not in EXPORT_FORMATS:
        raise ConfigError(f"Export format '{fmt}' is unknown; choose one of: {', '.join(EXPORT_FORMATS)}.")
    if not isinstance(session, RecordedSession):
        session = open_session(session)
    text = {"csv": to_csv, "srt": to_srt, "json": to_json, "html": to_html}[fmt](session)
    out = Path(out).expanduser()
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f".{out.name}.tmp")
        tmp.write_text(text, encoding="utf-8", newline="")
        tmp.replace(out)
    except OSError as err:
        raise DataError(f"Cannot write the export {out}: {err.strerror or err}.") from None
    return out


# ---- csv --------------------------------------------------------------------------------------

def _score_cell(x: float | None) -> str:
    return "" if x is None else f"{x:.4f}"


def csv_rows(session: RecordedSession) -> list[dict[str, str]]:
    rows = []
    for w in session.windows:
        rows.append({
            "session": session.name, "id": str(w.id), "start": f"{w.start:.3f}", "end": f"{w.end:.3f}",
            "text": w.text,
            **{f"{k}_score": _score_cell(w.scores.get(k)) for k in SCORE_KEYS},
            **{f"{m}_present": str(int(bool(w.present.get(m)))) for m in MODALITIES},
            "cut": str(int(w.cut)), "label": "",
        })
    return rows


def to_csv(session: RecordedSession) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(csv_rows(session))
    return buf.getvalue()


# ---- srt --------------------------------------------------------------------------------------

def srt_time(seconds: float) -> str:
    ms = max(0, int(round(seconds * 1000)))
    h, ms = divmod(ms, 3_600_000)
    m, ms = divmod(ms, 60_000)
    s, ms = divmod(ms, 1000)
    return f"{h:02d}:{m:02d}:{s:02d},{ms:03d}"


def polarity(score: float | None) -> str:
    if score is None:
        return "unknown"
    if score >= NEUTRAL_BAND:
        return "positive"
    if score <= -NEUTRAL_BAND:
        return "negative"
    return "neutral"


def to_srt(session: RecordedSession) -> str:
    cues = []
    for n, w in enumerate(session.windows, 1):
        end = max(w.end, w.start + 0.001)  # a cue must not end before it starts
        transcript = " ".join(w.text.split()) or "[no speech recognized]"
        fused = w.scores.get("fused")
        mood = f"sentiment {fused:+.2f} ({polarity(fused)})" if fused is not None else "sentiment unknown"
        cues.append(f"{n}\n{srt_time(w.start)} --> {srt_time(end)}\n{transcript}\n[{mood}]\n")
    return "\n".join(cues)


# ---- summary ----------------------------------------------------------------------------------

@dataclass
class ModalitySummary:
    windows: int
    mean: float | None
    minimum: float | None
    maximum: float | None


def _weighted_mean(values: list[tuple[float, float]]) -> float | None:
    total = sum(w for _, w in values)
    if not values:
        return None
    if total <= 0:
        return statistics.fmean(v for v, _ in values)
    return sum(v * w for v, w in values) / total


def summarize(session: RecordedSession) -> dict[str, Any]:
    """Summary statistics: duration-weighted mean scores, extremes, polarity counts, latency."""
    windows = session.windows
    per_key: dict[str, ModalitySummary] = {}
    for key in SCORE_KEYS:
        pairs = [(w.scores[key], max(w.duration, 0.0)) for w in windows if w.scores.get(key) is not None]
        values = [v for v, _ in pairs]
        per_key[key] = ModalitySummary(len(values), _round(_weighted_mean(pairs)),
                                       _round(min(values)) if values else None,
                                       _round(max(values)) if values else None)
    fused = [w.scores["fused"] for w in windows if w.scores.get("fused") is not None]
    counts = {p: sum(1 for x in fused if polarity(x) == p) for p in ("positive", "neutral", "negative")}
    latencies = [w.latency_ms.get("total") for w in windows if w.latency_ms.get("total") is not None]
    most = {}
    if fused:
        best = max(windows, key=lambda w: w.scores["fused"] if w.scores.get("fused") is not None else -math.inf)
        worst = min(windows, key=lambda w: w.scores["fused"] if w.scores.get("fused") is not None else math.inf)
        most = {"most_positive": {"id": best.id, "start": round(best.start, 3), "score": best.scores["fused"],
                                  "text": best.text},
                "most_negative": {"id": worst.id, "start": round(worst.start, 3), "score": worst.scores["fused"],
                                  "text": worst.text}}
    return {
        "windows": len(windows),
        "duration_s": round(session.duration, 3),
        "speech_s": round(sum(max(w.duration, 0.0) for w in windows), 3),
        "words": sum(len(w.text.split()) for w in windows),
        "scores": {k: vars(v) for k, v in per_key.items()},
        "fused_std": _round(statistics.pstdev(fused)) if len(fused) > 1 else None,
        "polarity_counts": counts,
        "neutral_band": NEUTRAL_BAND,
        "modality_present": {m: sum(1 for w in windows if w.present.get(m)) for m in MODALITIES},
        "latency_ms": {"mean": _round(statistics.fmean(latencies), 1) if latencies else None,
                       "max": _round(max(latencies), 1) if latencies else None},
        "backends": sorted({w.backend for w in windows if w.backend}),
        **most,
    }


def _round(x: float | None, digits: int = 4) -> float | None:
    return None if x is None else round(float(x), digits)


# ---- json -------------------------------------------------------------------------------------

def to_document(session: RecordedSession) -> dict[str, Any]:
    windows = []
    for w in session.windows:
        d = w.to_dict()
        d["seq"] = w.seq
        windows.append(d)
    return {"format": EXPORT_FORMAT_ID, "session": session.info, "notes": list(session.notes),
            "summary": summarize(session), "windows": windows}


def to_json(session: RecordedSession) -> str:
    return json.dumps(to_document(session), indent=2, ensure_ascii=False) + "\n"


# ---- html -------------------------------------------------------------------------------------

COLORS = {"fused": "#1f2937", "text": "#2563eb", "audio": "#d97706", "vision": "#059669"}


def timeline_svg(session: RecordedSession, width: int = 720, height: int = 300) -> str:
    """Inline SVG: fused and per-modality scores per window over time, on the -3..+3 scale."""
    left, right, top, bottom = 44, 12, 14, 34
    plot_w, plot_h = width - left - right, height - top - bottom
    duration = max(session.duration, max((w.end for w in session.windows), default=0.0), 1.0)

    def x(t: float) -> float:
        return left + plot_w * min(max(t / duration, 0.0), 1.0)

    def y(score: float) -> float:
        return top + plot_h * (3.0 - max(-3.0, min(3.0, score))) / 6.0

    parts = [f'<svg class="timeline" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
             f'role="img" aria-label="Sentiment timeline">']
    parts.append(f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h / 2:.1f}" fill="#ecfdf5"/>')
    parts.append(f'<rect x="{left}" y="{top + plot_h / 2:.1f}" width="{plot_w}" height="{plot_h / 2:.1f}" '
                 f'fill="#fef2f2"/>')
    for v in range(-3, 4):
        parts.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{y(v):.1f}" y2="{y(v):.1f}" '
                     f'stroke="{"#6b7280" if v == 0 else "#e5e7eb"}" stroke-width="1"/>')
        parts.append(f'<text x="{left - 6}" y="{y(v) + 4:.1f}" text-anchor="end" font-size="11" '
                     f'fill="#374151">{v:+d}</text>')
    step = _nice_step(duration)
    t = 0.0
    while t <= duration + 1e-9:
        parts.append(f'<line x1="{x(t):.1f}" x2="{x(t):.1f}" y1="{top}" y2="{top + plot_h}" stroke="#f3f4f6"/>')
        parts.append(f'<text x="{x(t):.1f}" y="{top + plot_h + 14}" text-anchor="middle" font-size="11" '
                     f'fill="#374151">{_clock(t)}</text>')
        t += step
    parts.append(f'<text x="{left + plot_w / 2}" y="{height - 4}" text-anchor="middle" font-size="11" '
                 f'fill="#374151">time (m:ss)</text>')
    for w in session.windows:  # speech spans
        parts.append(f'<rect x="{x(w.start):.1f}" y="{top + plot_h - 4}" width="{max(1.0, x(w.end) - x(w.start)):.1f}" '
                     f'height="4" fill="#9ca3af"/>')
    for key in ("text", "audio", "vision", "fused"):
        # Lines connect consecutive windows where the modality was present; gaps stay gaps.
        segments: list[list[tuple[float, float]]] = [[]]
        for w in session.windows:
            score = w.scores.get(key)
            if score is None:
                if segments[-1]:
                    segments.append([])
                continue
            segments[-1].append((x((w.start + w.end) / 2), y(score)))
        dash = "" if key == "fused" else ' stroke-dasharray="5 3"'
        stroke_w = 3 if key == "fused" else 1.5
        for seg in segments:
            if len(seg) > 1:
                pts = " ".join(f"{px:.1f},{py:.1f}" for px, py in seg)
                parts.append(f'<polyline points="{pts}" fill="none" stroke="{COLORS[key]}" '
                             f'stroke-width="{stroke_w}"{dash}/>')
        for w in session.windows:
            score = w.scores.get(key)
            if score is not None:
                r = 4 if key == "fused" else 2.5
                parts.append(f'<circle cx="{x((w.start + w.end) / 2):.1f}" cy="{y(score):.1f}" r="{r}" '
                             f'fill="{COLORS[key]}"><title>{html.escape(key)} {score:+.2f} at '
                             f'{_clock(w.start)} (window {w.id})</title></circle>')
    parts.append("</svg>")
    return "\n".join(parts)


def _nice_step(duration: float) -> float:
    for step in (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600):
        if duration / step <= 10:
            return float(step)
    return 7200.0


def _clock(seconds: float) -> str:
    seconds = max(0.0, seconds)
    m, s = divmod(int(round(seconds)), 60)
    return f"{m}:{s:02d}" if m < 60 else f"{m // 60}:{m % 60:02d}:{s:02d}"


def _clock_tenths(seconds: float) -> str:
    m, s = divmod(max(0.0, seconds), 60)
    return f"{int(m)}:{s:04.1f}"


def _score_html(score: float | None) -> str:
    if score is None:
        return '<span class="na">–</span>'
    cls = polarity(score)
    return f'<span class="{cls}">{score:+.2f}</span>'


HTML_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 24px; color: #111827; }
h1 { font-size: 22px; margin: 0 0 4px 0; }
.meta { color: #4b5563; font-size: 13px; margin-bottom: 16px; }
.layout { display: flex; gap: 24px; align-items: flex-start; }
.left { flex: 0 0 auto; }
.right { flex: 1 1 auto; max-height: 820px; overflow-y: auto; border: 1px solid #e5e7eb; border-radius: 6px; }
table { border-collapse: collapse; font-size: 13px; }
th, td { padding: 4px 8px; border-bottom: 1px solid #f3f4f6; text-align: left; vertical-align: top; }
th { background: #f9fafb; position: sticky; top: 0; }
.stats td:first-child { color: #4b5563; }
.legend span { display: inline-block; margin-right: 14px; font-size: 13px; }
.legend i { display: inline-block; width: 18px; height: 3px; vertical-align: middle; margin-right: 4px; }
.positive { color: #047857; font-weight: 600; }
.negative { color: #b91c1c; font-weight: 600; }
.neutral { color: #374151; }
.na { color: #9ca3af; }
.notes { background: #fffbeb; border: 1px solid #fcd34d; padding: 8px 12px; font-size: 13px; margin-bottom: 12px; }
"""


def to_html(session: RecordedSession) -> str:
    s = summarize(session)
    info = session.info
    esc = html.escape
    created = info.get("created") or ""
    try:
        created = datetime.fromisoformat(created).strftime("%Y-%m-%d %H:%M:%S %Z").strip()
    except ValueError:
        pass
    checkpoint = info.get("checkpoint")
    if isinstance(checkpoint, dict):
        checkpoint = checkpoint.get("path") or checkpoint.get("model_name") or json.dumps(checkpoint)
    meta_bits = [f"recorded {esc(created)}" if created else "",
                 f"duration {_clock(s['duration_s'])}",
                 f"{s['windows']} windows",
                 f"model {esc(str(checkpoint))}" if checkpoint else "",
                 f"backend {esc(', '.join(s['backends']))}" if s["backends"] else "",
                 "" if session.closed_cleanly else "recording cut short"]
    legend = "".join(f'<span><i style="background:{COLORS[k]}"></i>{k}</span>' for k in SCORE_KEYS)

    def fmt(x, digits=2, signed=True):
        if x is None:
            return "–"
        return f"{x:+.{digits}f}" if signed else f"{x:.{digits}f}"

    stats_rows = [
        ("windows", str(s["windows"])),
        ("speech / total", f"{s['speech_s']:.1f} s / {s['duration_s']:.1f} s"),
        ("words", str(s["words"])),
        ("mean fused sentiment", fmt(s["scores"]["fused"]["mean"])),
        ("fused std", fmt(s["fused_std"], signed=False)),
        ("fused range", f"{fmt(s['scores']['fused']['minimum'])} … {fmt(s['scores']['fused']['maximum'])}"),
        *[(f"mean {m} ({s['scores'][m]['windows']} windows)", fmt(s["scores"][m]["mean"])) for m in MODALITIES],
        ("positive / neutral / negative",
         f"{s['polarity_counts']['positive']} / {s['polarity_counts']['neutral']} / "
         f"{s['polarity_counts']['negative']}  (|score| &lt; {NEUTRAL_BAND} is neutral)"),
        ("latency mean / max", f"{fmt(s['latency_ms']['mean'], 0, False)} / "
                               f"{fmt(s['latency_ms']['max'], 0, False)} ms"),
    ]
    if "most_positive" in s:
        for key, label in (("most_positive", "most positive"), ("most_negative", "most negative")):
            m = s[key]
            stats_rows.append((label, f"{m['score']:+.2f} at {_clock(m['start'])}: “{esc(_cut(m['text'], 60))}”"))
    stats_html = "".join(f"<tr><td>{esc(k)}</td><td>{v}</td></tr>" for k, v in stats_rows)
    transcript = "".join(
        f"<tr><td>{_clock_tenths(w.start)}</td><td>{esc(w.text) or '<span class=na>(no speech)</span>'}</td>"
        f"<td>{_score_html(w.scores.get('fused'))}</td>"
        + "".join(f"<td>{_score_html(w.scores.get(m))}</td>" for m in MODALITIES) + "</tr>"
        for w in session.windows)
    notes = ("<div class=\"notes\">" + "<br>".join(esc(n) for n in session.notes) + "</div>"
             if session.notes else "")
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>moodlens session {esc(session.name)}</title>
<style>{HTML_STYLE}</style>
</head>
<body>
<h1>Session {esc(session.name)}</h1>
<div class="meta">{' · '.join(b for b in meta_bits if b)}</div>
{notes}
<div class="layout">
<div class="left">
<div class="legend">{legend}</div>
{timeline_svg(session)}
<h2 style="font-size:16px">Summary</h2>
<table class="stats">{stats_html}</table>
</div>
<div class="right">
<table class="transcript">
<tr><th>time</th><th>transcript</th><th>fused</th><th>text</th><th>audio</th><th>vision</th></tr>
{transcript}
</table>
</div>
</div>
</body>
</html>
"""


def _cut(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"
