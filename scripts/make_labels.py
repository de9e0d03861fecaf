"""Turn the RAVDESS or faces labels.csv into an MMSA-FET label.csv with per-modality valence labels.

    python scripts/make_labels.py ravdess ../shared/data/ravdess_speech --out runs/data/ravdess/label.csv
    python scripts/make_labels.py faces ../shared/data/faces --out runs/data/faces/label.csv

See moodlens/train/unimodal_labels.py for the columns and the speaker/subject-independent splits, and
configs/valence/emotion_valence_v1.yaml for the emotion -> valence mapping.
"""

from __future__ import annotations

import argparse
import sys


def main(argv=None) -> int:
    from moodlens.core.errors import MoodlensError
    from moodlens.train.unimodal_labels import MAKERS, load_valence_map

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("corpus", choices=sorted(MAKERS))
    parser.add_argument("src", help="the corpus folder holding labels.csv")
    parser.add_argument("--out", required=True, help="label.csv to write")
    parser.add_argument("--valence", default=None, help="mapping name or YAML (default emotion_valence_v1)")
    parser.add_argument("--text", choices=["statement", "asr"], default="statement",
                        help="RAVDESS: write the known statement as text, or leave it to Whisper")
    args = parser.parse_args(argv)
    try:
        valence = load_valence_map(args.valence)
        kwargs = {"text": args.text} if args.corpus == "ravdess" else {}
        report = MAKERS[args.corpus](args.src, args.out, valence, **kwargs)
    except MoodlensError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for sentence in report.refused:
        print(f"skipped: {sentence}", file=sys.stderr)
    print(f"wrote {report.written} rows to {report.out}: "
          + ", ".join(f"{s} {n} ({report.groups[s]} groups)" for s, n in sorted(report.splits.items()))
          + (f"; dropped as ambiguous: {report.dropped}" if report.dropped else ""))
    return 0 if report.written else 2


if __name__ == "__main__":
    raise SystemExit(main())
