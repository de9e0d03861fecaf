"""Recompute the default audio normalization statistics of the featurizer config from espeak-ng speech.

    .venv/bin/python scripts/recompute_audio_stats.py          # rewrites the block in features/config.py
    .venv/bin/python scripts/recompute_audio_stats.py --print  # only prints them

The statistics come from `compute_speech_audio_stats` (the library keeps the function); this script
writes them between the `# BEGIN AUDIO STATS` / `# END AUDIO STATS` markers of
realtime/perception/features/config.py. Re-run it (and re-featurize, retrain) only when the audio
features change: a config carries its own statistics, so old datasets and checkpoints keep theirs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

CONFIG = Path(__file__).resolve().parents[1] / "realtime" / "perception" / "features" / "config.py"


def stats_block(mean: list[float], std: list[float]) -> str:
    def tuple_lines(name, values):
        body = "".join(f"    {v!r},\n" for v in values)
        return f"{name}: tuple[float, ...] = (\n{body})\n"

    return tuple_lines("DEFAULT_AUDIO_MEAN", mean) + tuple_lines("DEFAULT_AUDIO_STD", std)


def rewrite(text: str, mean: list[float], std: list[float]) -> str:
    """`text` (the config module) with the block between the markers replaced."""
    begin = text.index("# BEGIN AUDIO STATS")
    begin = text.index("\n", begin) + 1
    end = text.index("# END AUDIO STATS")
    return text[:begin] + stats_block(mean, std) + text[end:]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--print", action="store_true", help="print the statistics instead of rewriting the file")
    args = parser.parse_args(argv)
    from moodlens.realtime.perception.features.config import compute_speech_audio_stats

    mean, std = compute_speech_audio_stats()
    if args.print:
        print(stats_block(mean, std), end="")
        return 0
    CONFIG.write_text(rewrite(CONFIG.read_text(), mean, std))
    print(f"wrote {len(mean)} means and stds into {CONFIG}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
