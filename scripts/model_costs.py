"""Parameter counts and multiply-adds of a zoo model's inference path (one sample).

    python scripts/model_costs.py                       # every model in models.MODEL_NAMES
    python scripts/model_costs.py dashfusion --text-len 39 --audio-len 400 --vision-len 55 \
        --audio-dim 33 --vision-dim 709 --part fusion  # DashFusion's HBF on a CH-SIMS-sized input

Multiply-adds are counted with torch.utils.flop_counter.FlopCounterMode (matrix products and
attention; element-wise ops, norms and softmax are not counted, as in the usual MAdds figures)
and halved from its FLOPs. `--part` restricts the count to one sub-module (dotted attribute path).
The text encoder is built with random weights (`load_text_weights=False`): costs do not depend on
the weights. Prints one JSON object per model.
"""

from __future__ import annotations

import argparse
import json

import torch
from torch.utils.flop_counter import FlopCounterMode

from moodlens.models import MODEL_NAMES, build_model


def model_costs(name: str, text_len: int = 50, audio_len: int = 375, vision_len: int = 500,
                part: str | None = None, overrides: dict | None = None) -> dict:
    """{'model', 'parameters', 'parameters_without_text_encoder', 'madds', 'part', 'part_madds', ...}"""
    torch.manual_seed(0)
    model = build_model(name, overrides or None, load_text_weights=False).eval()
    batch = model.example_inputs(1, text_len=text_len, audio_len=audio_len, vision_len=vision_len)
    # full-length sequences: example_inputs draws ragged lengths, a cost figure wants the stated ones
    batch = batch.replace(text_mask=torch.ones_like(batch.text_mask), audio_mask=torch.ones_like(batch.audio_mask),
                          vision_mask=torch.ones_like(batch.vision_mask))
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(*batch.tensors())
    total = counter.get_total_flops() // 2
    result = {
        "model": name,
        "input": {"text_len": text_len, "audio_len": audio_len, "vision_len": vision_len,
                  "audio_dim": model.config.audio_dim, "vision_dim": model.config.vision_dim},
        "parameters": sum(p.numel() for p in model.parameters()),
        "parameters_without_text_encoder": sum(p.numel() for n, p in model.named_parameters()
                                               if not n.startswith("text_encoder.")),
        "madds": int(total),
        "madds_without_text_encoder": int(total - _module_flops(counter, "text_encoder") // 2),
    }
    if part:
        result["part"] = part
        result["part_madds"] = int(_module_flops(counter, part) // 2)
        result["part_parameters"] = sum(p.numel() for p in _submodule(model, part).parameters())
    return result


def _submodule(model, path: str):
    for attr in path.split("."):
        model = getattr(model, attr)
    return model


def _module_flops(counter: FlopCounterMode, path: str) -> int:
    """FLOPs counted inside sub-module `path` (FlopCounterMode keys modules by their dotted name
    under the root module's class name)."""
    counts = counter.get_flop_counts()
    for key, ops in counts.items():
        if key.split(".", 1)[-1] == path and "." in key:
            return int(sum(ops.values()))
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="*", default=list(MODEL_NAMES))
    parser.add_argument("--text-len", type=int, default=50)
    parser.add_argument("--audio-len", type=int, default=375)
    parser.add_argument("--vision-len", type=int, default=500)
    parser.add_argument("--audio-dim", type=int, help="override the model's audio feature size")
    parser.add_argument("--vision-dim", type=int, help="override the model's vision feature size")
    parser.add_argument("--part", help="also count one sub-module, e.g. fusion")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="model config override")
    args = parser.parse_args()
    import yaml

    overrides = {k: yaml.safe_load(v) for k, v in (s.split("=", 1) for s in args.set)}
    if args.audio_dim:
        overrides["audio_dim"] = args.audio_dim
    if args.vision_dim:
        overrides["vision_dim"] = args.vision_dim
    for name in args.models:
        print(json.dumps(model_costs(name, args.text_len, args.audio_len, args.vision_len, args.part, overrides)))


if __name__ == "__main__":
    main()
