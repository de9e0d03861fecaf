"""How far from 0 does a checkpoint's words-only score s_T (the text strip) read plain, neutral statements?

A MOSI-trained text path learns from opinions: few MOSI clips are neutral, and a factual sentence can read up to
±2 (docs/model_card.md, "Text soup"). With neutral words the fused score should follow voice and face (issue 10
item 3), so a text path that leans on neutral words leans the fused score. This prints s_T on sentence sets that
were never trained on:

- `neutral_v1 dev` / `neutral_v1 test`: the held-out valid / test rows of configs/data/neutral_statements_v1.tsv
  (authored here, label 0; neutral_statements_v1.md says how; its train rows are what a candidate may train on);
- `ravdess`: RAVDESS's two statements (the "neutral words" of scripts/eval_trimodal.py's fused checks);
- `crema_d`: the twelve sentences CREMA-D's actors speak (Cao et al. 2014, IEEE Trans. Affective Computing,
  Table 1): another acted-emotion corpus's lexically neutral sentences, only ever scored here;
- `demo`: the bundled demo clip's neutral sentence.

    python scripts/probe_neutral_text.py [CHECKPOINT ...]     # default: the shipped weights
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
NEUTRAL = ROOT / "configs" / "data" / "neutral_statements_v1.tsv"   # text, label, mode

RAVDESS = ["Kids are talking by the door", "Dogs are sitting by the door"]
CREMA_D = ["It's eleven o'clock", "That is exactly what happened", "I'm on my way to the meeting",
           "I wonder what this is about", "The airplane is almost full", "Maybe tomorrow it will be cold",
           "I would like a new alarm clock", "I think I have a doctor's appointment", "Don't forget a jacket",
           "I think I've seen this before", "The surface is slick", "We'll stop in a couple of minutes"]
DEMO = ["The meeting is on Tuesday at three o'clock in room four."]


def sentence_sets() -> dict[str, list[str]]:
    from moodlens.train.data import read_text_rows

    sets = {f"neutral_v1 {name}": read_text_rows(NEUTRAL, mode, only_mode=mode)[0]
            for name, mode in (("dev", "valid"), ("test", "test"))}
    sets.update(ravdess=RAVDESS, crema_d=CREMA_D, demo=DEMO)
    return sets


@torch.no_grad()
def words_only_scores(model, texts: list[str]) -> np.ndarray:
    """s_T for each sentence (HCRL-MFD's fusion MLP fed the pooled core text features and the absent-modality
    embeddings, clamped to the output range), through the trainer's own text loader (the tokenization training
    used). Computed here, not read from the model's `text` output: without `late_fusion` in its config (every
    stage-1/2 checkpoint) that output is MLP_T, the paper's unimodal text head, not s_T."""
    from moodlens.models.hcrl_mfd import MODALITIES
    from moodlens.models.layers import masked_mean
    from moodlens.train.data import DataOptions, load_dataset

    c = model.config
    with tempfile.TemporaryDirectory() as tmp:
        file = Path(tmp) / "test.tsv"
        file.write_text("text\tlabel\n" + "".join(f"{t}\t0\n" for t in texts), encoding="utf-8")
        data = load_dataset(str(file), DataOptions(text_encoder=c.text_encoder, text_max_len=c.text_max_len,
                                                   audio_dim=c.audio_dim, vision_dim=c.vision_dim))
    batch = data.split("test").batch
    ids, mask = batch.text_ids, batch.text_mask
    core = masked_mean(model.core["text"](model.text_proj(model.text_encoder(ids, mask)), mask), mask)
    pooled = {m: core if m == "text" else model.absent[m].expand(len(core), -1) for m in MODALITIES}
    s_t = model.fusion(torch.cat([pooled[m] for m in MODALITIES], -1)).squeeze(-1)
    return s_t.clamp(-c.output_range, c.output_range).numpy()


def summary(scores: np.ndarray) -> str:
    a = np.abs(scores)
    return (f"mean {scores.mean():+.2f}  mean|s| {a.mean():.2f}  max|s| {a.max():.2f}  "
            f"|s|<0.5 {100 * np.mean(a < 0.5):3.0f} %")


def main(argv=None) -> int:
    from moodlens.models.checkpoint import load_checkpoint

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoints", nargs="*", default=["default"])
    parser.add_argument("--each", action="store_true", help="print every sentence's score")
    args = parser.parse_args(argv)
    sets = sentence_sets()
    for checkpoint in args.checkpoints:
        model = load_checkpoint(checkpoint).model.eval()
        print(f"== {checkpoint}")
        for name, texts in sets.items():
            scores = words_only_scores(model, texts)
            print(f"  {name:16s} n={len(texts):3d}  {summary(scores)}")
            if args.each or len(texts) <= 2:
                for t, s in zip(texts, scores):
                    print(f"      {s:+.2f}  {t}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
