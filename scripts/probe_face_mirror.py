"""Check `models.hcrl_mfd.mirror_face` against the live featurizer: featurize real faces and their
horizontally flipped copies and compare features(flipped) with features(face) before and after the
mirror mapping (docs/model_card.md, second face round, quotes its output).

    python scripts/probe_face_mirror.py [--faces ../shared/data/faces] [--count 12]
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np


def main(argv=None) -> int:
    import torch
    from PIL import Image

    from moodlens.models.hcrl_mfd import mirror_face
    from moodlens.realtime.perception.features.config import VISION_FEATURE_NAMES
    from moodlens.realtime.perception.features.vision import VisionFeaturizer

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faces", type=Path, default=Path("../shared/data/faces"))
    parser.add_argument("--count", type=int, default=12)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    with (args.faces / "labels.csv").open() as f:
        rows = list(csv.DictReader(f))
    rng = np.random.default_rng(args.seed)

    def featurize(image):
        with VisionFeaturizer() as featurizer:   # a fresh tracker per image: the face held still for 5 frames
            return [featurizer.process_image(image, k / 15) for k in range(5)][-1].values

    raw, mapped = [], []
    for row in (rows[i] for i in rng.choice(len(rows), args.count, replace=False)):
        image = np.asarray(Image.open(args.faces / row["path"]).convert("RGB"))
        a, b = featurize(image), featurize(np.ascontiguousarray(image[:, ::-1]))
        if a is None or b is None:
            print(f"{row['path']:45s} no face found")
            continue
        m = mirror_face(torch.tensor(a)).numpy()
        raw.append(np.abs(a - b))
        mapped.append(np.abs(m - b))
        print(f"{row['path']:45s} |face - flipped| {raw[-1].mean():.4f}   |mirror(face) - flipped| "
              f"{mapped[-1].mean():.4f}")
    found = len(raw)
    raw, mapped = np.mean(raw, 0), np.mean(mapped, 0)
    print(f"mean over {found} faces: {raw.mean():.4f} -> {mapped.mean():.4f} after the mapping")
    print("largest gains:")
    for i in np.argsort(-(raw - mapped))[:8]:
        print(f"  {VISION_FEATURE_NAMES[i]:28s} {raw[i]:.4f} -> {mapped[i]:.4f}")
    print("largest left after the mapping (the landmarker's own asymmetry):")
    for i in np.argsort(-mapped)[:8]:
        print(f"  {VISION_FEATURE_NAMES[i]:28s} {raw[i]:.4f} -> {mapped[i]:.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
