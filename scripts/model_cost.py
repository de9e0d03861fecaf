"""Parameters and multiply-adds of a model's inference path (what `forward` runs), per sample.

    python scripts/model_cost.py hcrl_mfd --bert-base --audio-dim 5 --vision-dim 20 --lengths 50 375 500
    python scripts/model_cost.py tecafn --set replace_prob=0.7

--bert-base builds the BERT-base-uncased architecture (hidden 768, 12 layers) without its weights, so the
count needs no download. Parameters: those of every module the eval-mode forward calls (training-only
heads such as HCRL-MFD's redundant encoders are left out). Multiply-adds: torch's FlopCounterMode on one
sample (matmuls, convolutions, attention; an LSTM's recurrences are not counted by it), divided by 2.
Latency: median of --repeat forward passes at batch 1 on this machine's CPU.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

BERT_BASE = {"model_type": "bert", "hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
             "intermediate_size": 3072, "vocab_size": 30522, "max_position_embeddings": 512,
             "type_vocab_size": 2, "layer_norm_eps": 1e-12, "pad_token_id": 0}


def inference_parameters(model, batch) -> int:
    called = set()
    hooks = [m.register_forward_hook(lambda mod, a, o: called.add(id(mod))) for m in model.modules()]
    with torch.no_grad():
        model(*batch.tensors())
    for h in hooks:
        h.remove()
    seen, total = set(), 0
    for m in model.modules():
        if id(m) in called or m is model:
            for p in m.parameters(recurse=False):
                if id(p) not in seen:
                    seen.add(id(p))
                    total += p.numel()
    return total


def main() -> None:
    from torch.utils.flop_counter import FlopCounterMode

    from moodlens.models import build_model

    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    parser.add_argument("--bert-base", action="store_true")
    parser.add_argument("--audio-dim", type=int)
    parser.add_argument("--vision-dim", type=int)
    parser.add_argument("--lengths", type=int, nargs=3, default=[50, 375, 500], metavar=("TEXT", "AUDIO", "VISION"))
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--repeat", type=int, default=10)
    args = parser.parse_args()
    overrides: dict = {}
    for pair in args.set:
        key, value = pair.split("=", 1)
        overrides[key] = json.loads(value) if value[:1].isdigit() or value[:1] in "-[{tf" else value
    for key, value in (("audio_dim", args.audio_dim), ("vision_dim", args.vision_dim)):
        if value:
            overrides[key] = value
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        if args.bert_base:
            (Path(tmp) / "config.json").write_text(json.dumps(BERT_BASE))
            overrides.update(text_encoder=tmp, text_dim=768)
        torch.manual_seed(0)
        model = build_model(args.model, overrides, load_text_weights=not args.bert_base).eval()
    lt, la, lv = args.lengths
    batch = model.example_inputs(1, text_len=lt, audio_len=la, vision_len=lv)
    batch = batch.replace(text_mask=torch.ones_like(batch.text_mask), audio_mask=torch.ones_like(batch.audio_mask),
                          vision_mask=torch.ones_like(batch.vision_mask))
    params = inference_parameters(model, batch)
    for p in model.parameters():   # FlopCounterMode's module tracker trips on no_grad + grad-requiring params
        p.requires_grad_(False)
    counter = FlopCounterMode(display=False)
    with counter:
        model(*batch.tensors())
    times = []
    with torch.no_grad():
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            model(*batch.tensors())
            times.append(time.perf_counter() - t0)
    print(json.dumps({"model": args.model, "bert_base": args.bert_base, "lengths": args.lengths,
                      "audio_dim": model.config.audio_dim, "vision_dim": model.config.vision_dim,
                      "total_parameters": sum(p.numel() for p in model.parameters()),
                      "inference_parameters": params, "inference_macs": counter.get_total_flops() // 2,
                      "cpu_ms_median_batch1": round(1000 * statistics.median(times), 1)}))


if __name__ == "__main__":
    main()
