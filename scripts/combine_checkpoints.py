"""One checkpoint from two retrains of one base: the vision branch of A, the audio branch of B (issue 10).

    python scripts/combine_checkpoints.py --vision A.pt --audio B.pt --base BASE.pt --out models/weights/default.pt
    # BASE: the common parent, e.g. stage 4: git show 10baca7:models/weights/default.pt > /tmp/stage4.pt

Session 4 retrains the vision branch (engineer facecnn, A) and the audio branch (engineer voicechan, B) from the
same stage-4 weights, each with everything else loaded and frozen. The result takes A's vision tensors and B's
audio tensors (VISION_PREFIXES / AUDIO_PREFIXES below) and refuses, in one sentence naming the first offender,
unless
  * every other tensor is bit-identical (dtype and values) in A, B and BASE (what both froze),
  * A differs from BASE only in vision tensors and B only in audio tensors (neither changed the other's branch),
  * the featurizer configs agree field by field outside their own keys: vision_* from A; audio_*, whisper_input
    from B; every other field the same in A, B (and BASE for those neither branch owns),
  * likewise the model configs: keys naming vision (+ VISION_MODEL_KEYS) from A, keys naming audio from B,
    the rest equal.
`--vision-key KEY` counts one more model-config or featurizer-config key as A's (a vision setting whose name
does not say so, e.g. a face model's hash).
The output is loaded back as a model before it is written (scripts/probe_voice_lean.py frozen checks it too).
"""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

VISION_PREFIXES = ("vision_proj.", "vision_encoder.", "core.vision.", "redundant.vision.", "to_shared.vision.",
                   "unimodal_heads.vision.", "pooled_heads.vision.")
AUDIO_PREFIXES = ("audio_offset", "audio_proj.", "audio_encoder.", "core.audio.", "redundant.audio.",
                  "to_shared.audio.", "unimodal_heads.audio.", "pooled_heads.audio.")
AUDIO_FEATURE_KEYS = ("whisper_input",)           # featurizer fields of the audio branch without the audio_ prefix
VISION_MODEL_KEYS = ("pooled_mirror", "pooled_mirror_training")
INFORMATIONAL = ("versions", "audio_frame_rate", "text_encoder")   # featurizer fields never refused on


class CombineError(Exception):
    """The two checkpoints cannot be combined (one sentence why)."""


def branch(key: str) -> str:
    if key.startswith(VISION_PREFIXES):
        return "vision"
    if key.startswith(AUDIO_PREFIXES):
        return "audio"
    return "other"


def _same(a, b) -> bool:
    import torch

    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)


def _owner_feature(key: str, vision_keys=()) -> str:
    if key.startswith("vision_") or key in vision_keys:
        return "vision"
    if key.startswith("audio_") or key in AUDIO_FEATURE_KEYS:
        return "audio"
    return "other"


def _owner_model(key: str, vision_keys) -> str:
    if "vision" in key or key in VISION_MODEL_KEYS or key in vision_keys:
        return "vision"
    if "audio" in key:
        return "audio"
    return "other"


def _merge(kind: str, a: dict, b: dict, base: dict, owner, skip=()) -> dict:
    out = {}
    for key in sorted(set(a) | set(b) | set(base)):
        who = owner(key)
        if who == "vision":
            if key in a:
                out[key] = a[key]
            continue
        if who == "audio":
            if key in b:
                out[key] = b[key]
            continue
        if key in skip:
            out[key] = b.get(key, a.get(key))
            continue
        missing = object()
        va, vb, vbase = a.get(key, missing), b.get(key, missing), base.get(key, missing)
        if va is missing or vb is missing or _norm(va) != _norm(vb):
            raise CombineError(f"The {kind} key '{key}' belongs to neither branch and differs between the vision "
                               f"checkpoint ({_show(va, missing)}) and the audio checkpoint ({_show(vb, missing)}).")
        if vbase is not missing and _norm(vbase) != _norm(va):
            raise CombineError(f"The {kind} key '{key}' belongs to neither branch and both checkpoints changed it "
                               f"from the base ({_show(vbase, missing)} -> {_show(va, missing)}).")
        out[key] = va
    return out


def _norm(v):
    return tuple(_norm(x) for x in v) if isinstance(v, (list, tuple)) else v


def _show(v, missing) -> str:
    return "absent" if v is missing else repr(v)[:60]


def combine(a: dict, b: dict, base: dict, *, vision_keys=(), names=("A", "B", "base")) -> dict:
    """The combined checkpoint dict from the raw dicts of A (vision), B (audio) and their base."""
    na, nb, nbase = names
    if not (a.get("model_name") == b.get("model_name") == base.get("model_name")):
        raise CombineError(f"The checkpoints are of different models ({a.get('model_name')}, {b.get('model_name')}, "
                           f"base {base.get('model_name')}).")
    sa, sb, s0 = a["state_dict"], b["state_dict"], base["state_dict"]
    state = {}
    for key in sorted(set(sa) | set(sb) | set(s0)):
        part = branch(key)
        if part == "vision":
            if key in sb and (key not in s0 or not _same(sb[key], s0[key])):
                raise CombineError(f"The audio checkpoint {nb} changed the vision tensor '{key}' of the base {nbase}.")
            if key in sa:
                state[key] = sa[key]
            continue
        if part == "audio":
            if key in sa and (key not in s0 or not _same(sa[key], s0[key])):
                raise CombineError(f"The vision checkpoint {na} changed the audio tensor '{key}' of the base {nbase}.")
            if key in sb:
                state[key] = sb[key]
            continue
        for name, s in ((na, sa), (nb, sb)):
            if key not in s or key not in s0 or not _same(s[key], s0[key]):
                how = "lacks" if key not in s else ("adds" if key not in s0 else "changed")
                raise CombineError(f"The tensor '{key}' belongs to neither branch and {name} {how} it "
                                   f"(against the base {nbase}): the branches were not trained from one frozen base.")
        state[key] = sa[key]
    for part, src, name in (("vision", sa, na), ("audio", sb, nb)):
        if not any(branch(k) == part for k in src):
            raise CombineError(f"The {part} checkpoint {name} has no {part} tensors.")
    featurizer = _merge("featurizer config", a["featurizer_config"], b["featurizer_config"], base["featurizer_config"],
                        lambda k: _owner_feature(k, vision_keys), skip=INFORMATIONAL)
    model = _merge("model config", a["model_config"], b["model_config"], base["model_config"],
                   lambda k: _owner_model(k, vision_keys))
    out = {k: v for k, v in b.items() if k not in ("state_dict", "featurizer_config", "model_config", "metrics")}
    out.update(state_dict=state, featurizer_config=featurizer, model_config=model,
               metrics={**b.get("metrics", {}), "vision_checkpoint_metrics": a.get("metrics", {})})
    # in the order the checkpoints write it (text, audio, vision), not alphabetical
    found = set(a.get("trained_modalities", [])) | set(b.get("trained_modalities", []))
    tm = [m for m in ("text", "audio", "vision") if m in found] + sorted(found - {"text", "audio", "vision"})
    if tm:
        out["trained_modalities"] = tm
    if a.get("weights_dtype") != b.get("weights_dtype"):
        out["weights_dtype"] = "mixed"
    out["combined_from"] = {"vision": names[0], "audio": names[1], "base": names[2]}
    return out


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def main(argv=None) -> int:
    import torch
    from moodlens.models.checkpoint import model_from_payload, read_checkpoint

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--vision", required=True, help="checkpoint A: its vision branch is taken")
    p.add_argument("--audio", required=True, help="checkpoint B: its audio branch is taken")
    p.add_argument("--base", required=True, help="the checkpoint both were trained from")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--vision-key", action="append", default=[], help="a model- or featurizer-config key to take from A")
    args = p.parse_args(argv)
    payloads, names = [], []
    for path in (args.vision, args.audio, args.base):
        payload, resolved = read_checkpoint(path)
        payloads.append(payload)
        names.append(f"{resolved} (sha256 {_sha(resolved)})")
    try:
        out = combine(*payloads, vision_keys=tuple(args.vision_key), names=tuple(names))
    except CombineError as err:
        print(f"error: {err}")
        return 1
    model_from_payload(out, args.out)              # refuses a payload that does not build and load
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(args.out.suffix + ".tmp")
    torch.save(out, tmp)
    tmp.replace(args.out)
    counts = {part: sum(branch(k) == part for k in out["state_dict"]) for part in ("vision", "audio", "other")}
    print(f"wrote {args.out}: {counts['vision']} vision tensors from {names[0]}, {counts['audio']} audio tensors "
          f"from {names[1]}, {counts['other']} others identical in all three")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
