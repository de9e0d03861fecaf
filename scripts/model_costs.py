"""Parameter counts and multiply-adds of a zoo model's inference path (one sample).

    python scripts/model_costs.py                       # every model in models.MODEL_NAMES
    python scripts/model_costs.py dashfusion --text-len 39 --audio-len 400 --vision-len 55 \
        --audio-dim 33 --vision-dim 709 --part fusion  # DashFusion's HBF on a CH-SIMS-sized input

Multiply-adds are counted with torch.utils.flop_counter.FlopCounterMode (matrix products and
attention; element-wise ops, norms and softmax are not counted, as in the usual MAdds figures)
and halved from its FLOPs. `--part` restricts the count to one sub-module (dotted attribute path).
The text encoder is built with random weights (`load_text_weights=False`): costs do not depend on
the weights. Prints one JSON object per model.
--bert-base builds the BERT-base-uncased architecture (hidden 768, 12 layers) with random weights, so the
papers' text encoder is costed without a download. `inference_parameters` counts the parameters of every
module the eval-mode forward calls (training-only heads such as HCRL-MFD's redundant encoders are left
out). `cpu_ms_median_batch1`: median of --repeat forward passes at batch 1, one thread, on this CPU.

    python scripts/model_costs.py hcrl_mfd --bert-base --audio-dim 5 --vision-dim 20 --set text_hidden=0
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
import json

import torch
from torch.utils.flop_counter import FlopCounterMode

from moodlens.models import MODEL_NAMES, build_model

BERT_BASE = {"model_type": "bert", "hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
             "intermediate_size": 3072, "vocab_size": 30522, "max_position_embeddings": 512,
             "type_vocab_size": 2, "layer_norm_eps": 1e-12, "pad_token_id": 0}


def model_costs(name: str, text_len: int = 50, audio_len: int = 375, vision_len: int = 500,
                part: str | None = None, overrides: dict | None = None, *, bert_base: bool = False,
                repeat: int = 10) -> dict:
    """{'model', 'parameters', 'parameters_without_text_encoder', 'madds', 'part', 'part_madds', ...}"""
    overrides = dict(overrides or {})
    with tempfile.TemporaryDirectory() as tmp:
        if bert_base:   # an architecture folder only: config.json, no weights
            (Path(tmp) / "config.json").write_text(json.dumps(BERT_BASE))
            overrides.update(text_encoder=tmp, text_dim=768)
        torch.manual_seed(0)
        model = build_model(name, overrides or None, load_text_weights=False).eval()
    batch = model.example_inputs(1, text_len=text_len, audio_len=audio_len, vision_len=vision_len)
    # full-length sequences: example_inputs draws ragged lengths, a cost figure wants the stated ones
    batch = batch.replace(text_mask=torch.ones_like(batch.text_mask), audio_mask=torch.ones_like(batch.audio_mask),
                          vision_mask=torch.ones_like(batch.vision_mask))
    called_parameters = inference_parameters(model, batch)
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(*batch.tensors())
    total = counter.get_total_flops() // 2
    times = []
    with torch.no_grad():
        for _ in range(repeat):
            start = time.perf_counter()
            model(*batch.tensors())
            times.append(time.perf_counter() - start)
    result = {
        "model": name,
        "input": {"text_len": text_len, "audio_len": audio_len, "vision_len": vision_len,
                  "audio_dim": model.config.audio_dim, "vision_dim": model.config.vision_dim},
        "parameters": sum(p.numel() for p in model.parameters()),
        "parameters_without_text_encoder": sum(p.numel() for n, p in model.named_parameters()
                                               if not n.startswith("text_encoder.")),
        "inference_parameters": called_parameters,
        "bert_base": bert_base,
        "madds": int(total),
        "madds_without_text_encoder": int(total - _module_flops(counter, "text_encoder") // 2),
    }
    result["cpu_ms_median_batch1"] = round(1000 * statistics.median(times), 1) if times else None
    if part:
        result["part"] = part
        result["part_madds"] = int(_module_flops(counter, part) // 2)
        result["part_parameters"] = sum(p.numel() for p in _submodule(model, part).parameters())
    return result


def inference_parameters(model, batch) -> int:
    """Parameters of the modules an eval-mode forward actually calls."""
    called = set()
    hooks = [m.register_forward_hook(lambda mod, a, o: called.add(id(mod))) for m in model.modules()]
    with torch.no_grad():
        model(*batch.tensors())
    for hook in hooks:
        hook.remove()
    seen, total = set(), 0
    for module in model.modules():
        if id(module) in called or module is model:
            for p in module.parameters(recurse=False):
                if id(p) not in seen:
                    seen.add(id(p))
                    total += p.numel()
    return total


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
    parser.add_argument("--bert-base", action="store_true", help="cost the papers' BERT-base text encoder")
    parser.add_argument("--repeat", type=int, default=10, help="timed forward passes (0: no timing)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="model config override")
    args = parser.parse_args()
    import yaml

    overrides = {k: yaml.safe_load(v) for k, v in (s.split("=", 1) for s in args.set)}
    if args.audio_dim:
        overrides["audio_dim"] = args.audio_dim
    if args.vision_dim:
        overrides["vision_dim"] = args.vision_dim
    torch.set_num_threads(1)
    for name in args.models:
        print(json.dumps(model_costs(name, args.text_len, args.audio_len, args.vision_len, args.part, overrides,
                                     bert_base=args.bert_base, repeat=args.repeat)))


if __name__ == "__main__":
    main()
