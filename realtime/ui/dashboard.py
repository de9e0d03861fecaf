"""The full-screen terminal dashboard (rich): sentiment over time, the current window, the engine.

    ┌ header: source · media clock · state · backend/device ───────────────────────┐
    │ Sentiment over time: fused bars (−3…+3) and T/A/V sparkline strips, on one     │
    │ time axis; colour runs from red (negative) through amber to green (positive)   │
    ├ Now: transcript, fused gauge, T/A/V ────────┬ Pipeline: p50/p95 per stage, ────┤
    │ scores, present modalities, history         │ fps, drops, merges                │
    └─────────────────────────────────────────────┴───────────────────────────────────┘

Everything is drawn from plain state (events + a `StatsSnapshot`), so it renders the same in a
terminal (`rich.live`, redrawn a few times a second, sized to the terminal) and in a test
(`Console(record=True)`); it works down to 80×24.
"""

from __future__ import annotations

import bisect
import functools
import io
import math
import threading
import time
from dataclasses import dataclass
from typing import Callable

from rich.color import Color
from rich.console import Console, ConsoleOptions, Group, RenderResult
from rich.layout import Layout
from rich.live import Live
from rich.panel import Panel
from rich.style import Style
from rich.table import Table
from rich.text import Text

from moodlens.core.errors import ConfigError
from moodlens.core.options import Options
from moodlens.core.schema import MODALITIES
from moodlens.realtime.engine.events import WindowEvent
from moodlens.realtime.engine.stats import StatsSnapshot

SCALE = 3.0                                   # scores live in [-3, +3]
SPARK = "▁▂▃▄▅▆▇█"
LABEL_W = 3                                   # y-axis label column of the chart
SECONDS_PER_COLUMN = (0.1, 0.2, 0.25, 0.5, 1.0)
PRESENT_WORDS = {"text": ("speech", "no speech"), "audio": ("voice", "silence"), "vision": ("face", "no face")}
SHORT = {"text": "T", "audio": "A", "vision": "V"}
_RED, _AMBER, _GREEN = (220, 50, 47), (205, 180, 90), (46, 184, 92)
DIM = Style(color="grey42")
UNTRAINED = Style(color="grey62", italic=True)


@dataclass
class DashboardOptions(Options):
    refresh_per_second: float = 4.0   # redraws per second (each costs ~10-20 ms of CPU)
    hold_s: float = 3.0               # the final screen stays this long after a file ends
    max_events: int = 5000            # events kept for the timeline (older ones scroll away anyway)
    max_seconds_per_column: float = 1.0  # past this the timeline scrolls instead of squeezing

    def check(self, where: str = "dashboard options") -> None:
        if self.refresh_per_second <= 0 or self.hold_s < 0:
            raise ConfigError(f"{where}: refresh_per_second must be positive and hold_s not negative.")


def _mix(a: tuple[int, int, int], b: tuple[int, int, int], f: float) -> tuple[int, int, int]:
    return tuple(int(round(x + (y - x) * f)) for x, y in zip(a, b))  # type: ignore[return-value]


def sentiment_rgb(score: float) -> tuple[int, int, int]:
    """Red at −3, amber at 0, green at +3."""
    f = max(-1.0, min(1.0, score / SCALE))
    return _mix(_AMBER, _GREEN, f) if f >= 0 else _mix(_AMBER, _RED, -f)


def sentiment_style(score: float | None, bold: bool = False) -> Style:
    if score is None:
        return DIM
    # Quantized to 0.05 and cached: the chart asks for thousands of cells per redraw.
    return _style_for(round(max(-SCALE, min(SCALE, float(score))) * 20), bold)


@functools.lru_cache(maxsize=512)
def _style_for(twentieths: int, bold: bool) -> Style:
    return Style(color=Color.from_rgb(*sentiment_rgb(twentieths / 20)), bold=bold)


class _Row:
    """Builds a Text from cells, joining runs of one style into one span (fast to render)."""

    def __init__(self, label: str, label_style: Style | str):
        self.text = Text(label, style=label_style)
        self._chars: list[str] = []
        self._style: Style | None = None

    def add(self, ch: str, style: Style | None = None) -> None:
        if style is not self._style and self._chars:
            self.text.append("".join(self._chars), style=self._style)
            self._chars = []
        self._style = style
        self._chars.append(ch)

    def done(self) -> Text:
        if self._chars:
            self.text.append("".join(self._chars), style=self._style)
        self.text.no_wrap = True
        self.text.overflow = "crop"
        return self.text


def fmt_score(score: float | None) -> str:
    return "  –  " if score is None else f"{score:+.2f}"


def fmt_clock(seconds: float | None) -> str:
    if seconds is None:
        return "--:--"
    seconds = max(0.0, seconds)
    return f"{int(seconds // 60):02d}:{seconds % 60:04.1f}"


def sentiment_word(score: float) -> str:
    if score >= 1.5:
        return "very positive"
    if score >= 0.5:
        return "positive"
    if score > -0.5:
        return "neutral"
    if score > -1.5:
        return "negative"
    return "very negative"


# ---------------------------------------------------------------------------------------------
# Timeline chart
# ---------------------------------------------------------------------------------------------

class TimelineChart:
    """Fused sentiment as bars above/below a zero line plus one sparkline strip per modality.

    Columns are equal slices of time; a column shows the window that covers its middle (blank
    during silence). Sized from the space rich gives it, so it adapts to the terminal.
    """

    def __init__(self, events: list[WindowEvent], now_s: float, max_seconds_per_column: float = 1.0,
                 duration_s: float | None = None, untrained: tuple[str, ...] = ()):
        self.events = sorted(events, key=lambda e: e.start)
        self.untrained = tuple(untrained)
        self.now_s = max([now_s] + [e.end for e in self.events[-1:]])
        self.max_spc = max_seconds_per_column
        self.duration_s = duration_s
        self._memo: dict[tuple[int, int], list[Text]] = {}

    def layout(self, width: int) -> tuple[float, float, int]:
        """(view start, seconds per column, columns) for a chart `width` cells wide."""
        cols = max(8, width - LABEL_W)
        if self.duration_s and self.duration_s <= cols * self.max_spc:
            return 0.0, max(self.duration_s, self.now_s) / cols, cols   # a file: the whole of it fits
        span = max(self.now_s, 5.0)
        spc = next((s for s in SECONDS_PER_COLUMN if s * cols >= span), SECONDS_PER_COLUMN[-1])
        spc = min(spc, self.max_spc)
        # Scroll by whole columns, so a redraw between two column steps can reuse the last chart.
        start = max(0.0, math.ceil(self.now_s / spc - 1e-9) * spc - spc * cols)
        return start, spc, cols

    def column_events(self, start: float, spc: float, cols: int) -> list[WindowEvent | None]:
        starts = [e.start for e in self.events]
        out: list[WindowEvent | None] = []
        for c in range(cols):
            mid = start + (c + 0.5) * spc
            i = bisect.bisect_right(starts, mid) - 1
            found = None
            # The newest window covering `mid` (windows rarely overlap; merged ones may).
            while i >= 0 and self.events[i].end + spc > mid:
                if self.events[i].start <= mid < self.events[i].end + spc * 0.5:
                    found = self.events[i]
                    break
                i -= 1
            out.append(found)
        return out

    def lines(self, width: int, height: int) -> list[Text]:
        """The chart as `height` lines of `width` cells (memoized per size)."""
        key = (width, height)
        if key not in self._memo:
            self._memo[key] = self._build(width, height)
        return self._memo[key]

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield from (line.copy() for line in self.lines(options.max_width, options.height or 13))

    def _build(self, width: int, height: int) -> list[Text]:
        strips = 3
        per_side = max(1, (height - strips - 2) // 2)     # rows above (and below) the zero line
        start, spc, cols = self.layout(width)
        column = self.column_events(start, spc, cols)
        unit = SCALE / per_side
        lines: list[Text] = []
        for r in range(per_side):                          # positive half, top row first
            level = per_side - 1 - r
            lines.append(self._bar_row(column, "+3 " if r == 0 else "   ", level, unit, positive=True))
        zero = _Row(" 0 ", DIM)
        for e in column:
            zero.add("━" if e is not None else "─", sentiment_style(e.fused) if e else DIM)
        lines.append(zero.done())
        for r in range(per_side):                          # negative half, nearest the zero line first
            lines.append(self._bar_row(column, "-3 " if r == per_side - 1 else "   ", r, unit, positive=False))
        for m in MODALITIES:
            lines.append(self._untrained_strip(column, m) if m in self.untrained else self._strip(column, m))
        lines.append(self._axis(start, spc, cols))
        return lines[:height]

    @staticmethod
    def _bar_row(column, label: str, level: int, unit: float, positive: bool) -> Text:
        row = _Row(label, DIM)
        for e in column:
            if e is None:
                row.add(" ")
                continue
            v = e.fused if positive else -e.fused
            fill = (v - level * unit) / unit
            if fill >= 0.75:
                ch = "█"
            elif fill >= 0.25:
                ch = "▄" if positive else "▀"
            else:
                ch = " "
            row.add(ch, sentiment_style(e.fused) if ch != " " else None)
        return row.done()

    @staticmethod
    def _strip(column, modality: str) -> Text:
        row = _Row(f"{SHORT[modality]}  ", "bold")
        for e in column:
            if e is None:
                row.add(" ")
                continue
            score = e.scores[modality]
            if score is None:
                row.add("·", DIM)
            else:
                level = int(round((max(-SCALE, min(SCALE, score)) + SCALE) / (2 * SCALE) * (len(SPARK) - 1)))
                row.add(SPARK[level], sentiment_style(score))
        return row.done()

    @staticmethod
    def _untrained_strip(column, modality: str) -> Text:
        """A modality the checkpoint never learned: no scores to draw, so the strip says so in words
        (dots still mark the windows where it was perceived)."""
        cells: list[tuple[str, Style | None]] = [
            ("·", DIM) if e is not None and e.present.get(modality) else (" ", None) for e in column]
        label = " untrained in this checkpoint " if len(cells) >= 34 else " untrained "
        for i, ch in enumerate(label[: max(0, len(cells) - 1)]):
            cells[1 + i] = (ch, UNTRAINED)
        row = _Row(f"{SHORT[modality]}  ", "bold")
        for ch, style in cells:
            row.add(ch, style)
        return row.done()

    @staticmethod
    def _axis(start: float, spc: float, cols: int) -> Text:
        # A time label every `step` seconds, at least 7 columns apart.
        step = next((s for s in (1, 2, 5, 10, 15, 30, 60, 120, 300, 600) if s / spc >= 7), 600)
        cells = [" "] * cols
        t = math.ceil(start / step - 1e-9) * step
        while (c := int(round((t - start) / spc))) < cols:
            label = f"{int(t)}s" if t < 60 else f"{int(t // 60)}:{int(t % 60):02d}"
            if c + len(label) <= cols and all(ch == " " for ch in cells[max(0, c - 1):c + len(label)]):
                cells[c:c + len(label)] = label
            t += step
        return Text(" " * LABEL_W + "".join(cells), style=DIM)


def gauge(score: float, width: int) -> Text:
    """A horizontal −3…+3 bar filled from the centre, in the score's colour."""
    half = max(2, (width - 1) // 2)
    filled = int(round(min(1.0, abs(score) / SCALE) * half))
    style = sentiment_style(score)
    text = Text()
    if score < 0:
        text.append("─" * (half - filled), style=DIM)
        text.append("█" * filled, style=style)
    else:
        text.append("─" * half, style=DIM)
    text.append("│", style="bold")
    if score > 0:
        text.append("█" * filled, style=style)
        text.append("─" * (half - filled), style=DIM)
    else:
        text.append("─" * half, style=DIM)
    return text


def pipeline_panel_width(width: int) -> int:
    """The engine panel's width: fixed where there is room, never more than half a narrow screen."""
    return 42 if width >= 110 else min(36, max(24, width // 2))


def level_meter(db: float, cells: int = 5) -> Text:
    """The live audio level, −60…0 dBFS, as a small bar (is the microphone hearing anything?)."""
    f = max(0.0, min(1.0, (db + 60.0) / 60.0))
    filled = int(round(f * cells))
    text = Text("♪", style=DIM)
    text.append("▮" * filled, style="green" if db < -6 else "red")
    text.append("▯" * (cells - filled), style=DIM)
    return text


# ---------------------------------------------------------------------------------------------
# Dashboard
# ---------------------------------------------------------------------------------------------

class Dashboard:
    """State + rendering of the live screen. Use as a context manager to show it full-screen.

    `add(event)` from the thread that iterates the pipeline; `stats()` is called at each redraw.
    """

    def __init__(self, source_label: str, backend: str = "", device: str = "cpu",
                 stats: Callable[[], StatsSnapshot] | None = None, options: DashboardOptions | None = None,
                 console: Console | None = None, model: str = "", untrained: tuple[str, ...] = (),
                 alert: Callable[[], str | None] | None = None):
        self.source_label = source_label
        self.backend = backend
        self.device = device
        self.model = model
        self.stats = stats or StatsSnapshot
        self.options = options or DashboardOptions()
        self.console = console or Console()
        self.events: list[WindowEvent] = []
        self.notice = ""                        # one line under the header (warnings, end of file)
        # Modalities the checkpoint never trained: scored null even when perceived, and labelled so.
        self.untrained = tuple(m for m in MODALITIES if m in set(untrained))
        # Polled at each redraw: a sentence to show above everything (e.g. the recorder's failure).
        self.alert = alert
        self.state = "starting"
        self._lock = threading.Lock()
        self._live: Live | None = None
        self._chart: TimelineChart | None = None
        self._chart_key: tuple | None = None

    # ---- state ------------------------------------------------------------------------------
    def add(self, event: WindowEvent) -> None:
        with self._lock:
            self.events.append(event)
            if len(self.events) > self.options.max_events:
                del self.events[: len(self.events) - self.options.max_events]
            self.state = "running"

    def set_state(self, state: str, notice: str | None = None) -> None:
        self.state = state
        if notice is not None:
            self.notice = notice

    # ---- full-screen -----------------------------------------------------------------------------
    def __enter__(self) -> "Dashboard":
        self._live = Live(console=self.console, screen=True, auto_refresh=True,
                          refresh_per_second=self.options.refresh_per_second,
                          get_renderable=self.render, redirect_stdout=False, redirect_stderr=False)
        self._live.start()
        self.state = "running"
        return self

    def __exit__(self, *exc) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None

    def hold(self, seconds: float | None = None) -> None:
        """Keep the final screen up for a moment (Ctrl-C skips it)."""
        seconds = self.options.hold_s if seconds is None else seconds
        if self._live is not None and seconds > 0:
            self._live.refresh()
            time.sleep(seconds)

    # ---- rendering ----------------------------------------------------------------------------------
    def render(self, width: int | None = None, height: int | None = None) -> Layout:
        width = width or self.console.size.width
        height = height or self.console.size.height
        with self._lock:
            events = list(self.events)
        snap = self.stats()
        latest = events[-1] if events else None
        alert = self._alert_sentence()
        alert_h = min(3, math.ceil((len(alert) + 2) / max(width, 20))) if alert else 0
        body_h = max(height - 1 - alert_h, 10)
        chart_h = max(10, min(body_h - 8, 23))        # 4 to 8 rows each side of zero; the rest is history
        bottom_h = body_h - chart_h
        right_w = pipeline_panel_width(width)
        root = Layout(name="root")
        parts = [Layout(self._header(snap, width), name="header", size=1)]
        if alert:
            parts.append(Layout(Text("⚠ " + alert, style="bold yellow", overflow="ellipsis"), name="alert",
                                size=alert_h))
        parts += [Layout(self._chart_panel(events, snap, chart_h), name="chart", size=chart_h),
                  Layout(name="bottom")]
        root.split_column(*parts)
        root["bottom"].split_row(
            Layout(self._now_panel(latest, events, snap, bottom_h), name="now"),
            Layout(self._pipeline_panel(snap), name="pipeline", size=right_w),
        )
        return root

    def _alert_sentence(self) -> str:
        if self.alert is None:
            return ""
        try:
            return str(self.alert() or "")
        except Exception:  # noqa: BLE001 - a broken alert source must not take the screen down
            return ""

    def _header(self, snap: StatsSnapshot, width: int) -> Table:
        grid = Table.grid(expand=True, padding=0)
        grid.add_column(justify="left", no_wrap=True, overflow="ellipsis", ratio=1)
        grid.add_column(justify="right", no_wrap=True)
        left = Text()
        left.append(" moodlens ", style="bold black on rgb(46,184,92)")
        left.append(f" {self.source_label} ", style="bold")
        clock = fmt_clock(snap.media_s)
        if snap.duration_s:
            clock += f" / {fmt_clock(snap.duration_s)}"
        left.append(clock, style="cyan")
        state_style = {"running": "green", "finished": "bold cyan", "stopping": "yellow"}.get(self.state, "yellow")
        left.append(f"  {self.state}", style=state_style)
        if self.notice:
            left.append(f"  {self.notice}", style="yellow")
        right = Text()
        right.append(f"{self.backend or '?'}", style="bold magenta")
        right.append(f" · {self.device} ", style="magenta")
        if width >= 100:
            right.append(" Ctrl-C quits ", style=DIM)
        grid.add_row(left, right)
        return grid

    def _chart_panel(self, events, snap: StatsSnapshot, height: int) -> Panel:
        chart = TimelineChart(events, snap.media_s, self.options.max_seconds_per_column, snap.duration_s,
                              untrained=self.untrained)
        # Reuse the previous chart (and its rendered lines) while nothing it shows has changed.
        key = (len(events), events[-1].id if events else None, chart.layout(self.console.size.width - 2), height)
        if key == self._chart_key and self._chart is not None:
            chart = self._chart
        else:
            self._chart_key, self._chart = key, chart
        title = Text.assemble(("Sentiment over time", "bold"), ("  fused −3…+3 · T text · A audio · V face", DIM))
        return Panel(chart, title=title, title_align="left", border_style="grey50", padding=(0, 0), height=height)

    def _now_panel(self, latest: WindowEvent | None, events, snap: StatsSnapshot, height: int) -> Panel:
        width = self.console.size.width
        inner_w = max(20, width - pipeline_panel_width(width) - 4)
        rows: list = []
        if latest is None:
            waiting = "waiting for the first utterance…" if snap.has_audio else "waiting for the first window…"
            rows.append(Text(waiting, style="italic grey62"))
            rows.append(self._presence_line(None, snap))
        else:
            head = Text()
            head.append(f"#{latest.id} ", style="bold")
            head.append(f"{latest.start:.1f}–{latest.end:.1f}s ", style="cyan")
            if latest.interim:
                head.append("(cut) ", style="yellow")
            if latest.merged > 1:
                head.append(f"({latest.merged} merged) ", style="yellow")
            if latest.text:
                head.append("“" + latest.text + "”", style="bold white")
            else:
                head.append("(no speech)", style="grey50")
            head.no_wrap = False
            rows.append(head)
            fused = Text("fused ", style="bold")
            fused.append(f"{latest.fused:+.2f} ", style=sentiment_style(latest.fused, bold=True))
            fused.append_text(gauge(latest.fused, min(31, max(9, inner_w - 28))))
            fused.append(f" {sentiment_word(latest.fused)}", style=sentiment_style(latest.fused))
            rows.append(fused)
            scores = Text()
            for m in MODALITIES:
                if m in self.untrained:
                    continue
                scores.append(f"{SHORT[m]} ", style="bold")
                scores.append(fmt_score(latest.scores[m]), style=sentiment_style(latest.scores[m]))
                scores.append("   ")
            if self.untrained:
                # Not "–" (which means absent): these were perceived but the checkpoint cannot score them.
                scores.append("/".join(SHORT[m] for m in self.untrained) + " ", style="bold")
                scores.append("untrained", style=UNTRAINED)
                scores.append("   ")
            scores.append(f"{latest.latency_ms.get('total', 0):.0f} ms", style=DIM)
            rows.append(scores)
            rows.append(self._presence_line(latest, snap))
        # Earlier windows, newest first, as far as the panel has room.
        room = height - 2 - sum(2 if isinstance(r, Text) and len(r.plain) > inner_w else 1 for r in rows)
        for e in reversed(events[:-1]):
            if room <= 0:
                break
            line = Text()
            line.append(f"{e.start:5.1f}s ", style=DIM)
            line.append(f"{e.fused:+.1f} ", style=sentiment_style(e.fused))
            line.append(e.text or "(no speech)", style="grey70" if e.text else DIM)
            line.no_wrap = True
            line.overflow = "ellipsis"
            rows.append(line)
            room -= 1
        title = Text("Now", style="bold")
        return Panel(Group(*rows), title=title, title_align="left", border_style="grey50", padding=(0, 1))

    @staticmethod
    def _presence_line(latest: WindowEvent | None, snap: StatsSnapshot) -> Text:
        line = Text()
        for m in MODALITIES:
            if latest is not None:
                on = latest.present[m]
            elif m == "vision":
                on = snap.face_now if snap.face_now is not None else None
            else:
                on = None
            yes, no = PRESENT_WORDS[m]
            # A missing stream says so rather than "silence" / "no face".
            if m == "vision" and not snap.has_video:
                on, no = False, "no video"
            elif m in ("audio", "text") and not snap.has_audio:
                on, no = False, ("no sound" if m == "audio" else no)
            if on is None:
                line.append(f"· {yes}  ", style=DIM)
            elif on:
                line.append(f"✓ {yes}  ", style="green")
            else:
                line.append(f"✗ {no}  ", style="red")
        if snap.has_audio and snap.audio_db is not None:
            line.append_text(level_meter(snap.audio_db))
        line.no_wrap = True
        line.overflow = "ellipsis"
        return line

    def _pipeline_panel(self, snap: StatsSnapshot) -> Panel:
        table = Table.grid(padding=(0, 1))
        table.add_column(style="bold", no_wrap=True)
        for _ in range(4):
            table.add_column(justify="right", no_wrap=True)
        table.add_row(Text("ms", style=DIM), "asr", "feat", "model", "total")
        for name, values in (("p50", snap.latency_p50), ("p95", snap.latency_p95)):
            cells = []
            for k in ("asr", "features", "model", "total"):
                v = values.get(k)
                cells.append(Text("–" if v is None else f"{v:.0f}", style=self._latency_style(k, v)))
            table.add_row(name, *cells)
        lines = Text()
        lines.append("video ", style="bold")
        lines.append(f"{snap.video_fps:4.1f} fps" if snap.has_video else "none")
        lines.append("  face ", style="bold")
        lines.append(f"{snap.face_fps:4.1f}/s" if snap.has_video else "–")
        lines.append("\n")
        lines.append("dropped ", style="bold")
        dropped = snap.frames_dropped
        lines.append(f"{dropped} frames", style="yellow" if dropped else "")
        if snap.audio_chunks_dropped:
            lines.append(f" {snap.audio_chunks_dropped} audio", style="yellow")
        lines.append("\n")
        lines.append("windows ", style="bold")
        lines.append(f"{snap.windows_scored}")
        lines.append(f"  merged {snap.windows_merged}", style="yellow" if snap.windows_merged else "")
        lines.append(f" lost {snap.windows_dropped}", style="red" if snap.windows_dropped else "")
        if snap.asr_backlog:
            lines.append(f"  queue {snap.asr_backlog}", style="yellow")
        if snap.has_video and snap.faces_processed:
            lines.append("\nface ", style="bold")
            face_ms = snap.latency_p50.get("face")
            lines.append(f"{face_ms:.0f} ms" if face_ms is not None else "–")
            lines.append(f"  found in {100 * snap.faces_found / snap.faces_processed:.0f}%")
        if snap.elapsed_s > 1 and snap.media_s > 0:
            lines.append("\nspeed ", style="bold")
            lines.append(f"{snap.media_s / snap.elapsed_s:.2f}× real time")
        title = Text("Pipeline", style="bold")
        return Panel(Group(table, lines), title=title, title_align="left", border_style="grey50", padding=(0, 1))

    @staticmethod
    def _latency_style(stage: str, ms: float | None) -> Style | str:
        if ms is None or stage != "total":
            return ""
        return "green" if ms <= 800 else ("yellow" if ms <= 1500 else "red")

    # ---- after the full screen ----------------------------------------------------------------------
    def summary(self) -> Table:
        """A plain table of every window, printed once the full screen is gone."""
        table = Table(title=f"moodlens · {self.source_label} · {self.backend} ({self.device})",
                      title_justify="left", expand=False)
        table.add_column("#", justify="right", style="dim")
        table.add_column("time", no_wrap=True)
        table.add_column("text", ratio=1)
        for m in ("fused", *MODALITIES):
            table.add_column(SHORT.get(m, m), justify="right", no_wrap=True)
        if self.untrained:
            names = " and ".join(self.untrained)
            table.caption = (f"{names}: {'branch' if len(self.untrained) == 1 else 'branches'} untrained in this "
                             f"checkpoint, so not scored (–) even where perceived")
            table.caption_justify = "left"
        for e in self.events:
            table.add_row(str(e.id), f"{e.start:.1f}–{e.end:.1f}s", e.text or "(no speech)",
                          *(Text(fmt_score(e.scores[m]), style=sentiment_style(e.scores[m]))
                            for m in ("fused", *MODALITIES)))
        return table


def render_to_text(dashboard: Dashboard, width: int, height: int) -> str:
    """Render one frame of the dashboard at width×height and return the plain text (tests, docs)."""
    console = Console(width=width, height=height, record=True, color_system="truecolor",
                      force_terminal=True, legacy_windows=False, file=io.StringIO())
    dashboard.console = console
    console.print(dashboard.render(width, height))
    return console.export_text()


__all__ = ["Dashboard", "DashboardOptions", "TimelineChart", "gauge", "render_to_text", "sentiment_rgb"]
