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

`--text C.pt` (session 5) then takes the *words-only path* from C, a checkpoint of another lineage (its own
stages 1-2): every tensor the text strip s_T reads (TEXT_PREFIXES: the encoder, projection, core text encoder,
fusion MLP and the absent-modality embeddings it is fed, plus the training-only text parts). Refused unless each
of those tensors exists in C with the same shape and dtype, and the text fields of both configs are equal. The
paper model's own fused output with voice or face present then mixes lineages; the product's outputs never read
it (late fusion: s_T, the pooled voice head with MLP_A on core.audio, the pooled face head).
    python scripts/combine_checkpoints.py --vision A.pt --audio B.pt --base BASE.pt --text C.pt --out OUT.pt
    # no new branch: --vision default --audio default --base default
`--xz` writes it xz-compressed, as models/weights/default.pt is shipped (read_checkpoint reads either).
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
TEXT_PREFIXES = ("text_encoder.", "text_proj.", "core.text.", "redundant.text.", "to_shared.text.",
                 "unimodal_heads.text.", "fusion.", "absent.")
TEXT_CONFIG_KEYS = ("text_encoder", "text_max_len", "text_encoder_trainable_layers")
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


def take_text(out: dict, c: dict, *, names=("combined", "C")) -> dict:
    """`out` with every TEXT_PREFIXES tensor replaced by checkpoint C's (C of the same model and text config)."""
    nout, nc = names
    if c.get("model_name") != out.get("model_name"):
        raise CombineError(f"The text checkpoint {nc} holds model '{c.get('model_name')}', not "
                           f"'{out.get('model_name')}'.")
    for kind in ("model_config", "featurizer_config"):
        for key in TEXT_CONFIG_KEYS:
            if key in out[kind] and _norm(out[kind][key]) != _norm(c[kind].get(key)):
                raise CombineError(f"The {kind.replace('_', ' ')} key '{key}' differs: {nout} has "
                                   f"{out[kind][key]!r}, the text checkpoint {nc} {c[kind].get(key)!r}.")
    state, sc = dict(out["state_dict"]), c["state_dict"]
    taken = 0
    for key in sorted(state):
        if not key.startswith(TEXT_PREFIXES):
            continue
        if key not in sc or sc[key].shape != state[key].shape or sc[key].dtype != state[key].dtype:
            how = "lacks" if key not in sc else f"has {tuple(sc[key].shape)} {sc[key].dtype}"
            raise CombineError(f"The text checkpoint {nc} {how} the text tensor '{key}' "
                               f"({tuple(state[key].shape)} {state[key].dtype} in {nout}).")
        state[key] = sc[key]
        taken += 1
    extra = sorted(k for k in sc if k.startswith(TEXT_PREFIXES) and k not in state)
    if extra:
        raise CombineError(f"The text checkpoint {nc} has the text tensor '{extra[0]}', which {nout} lacks.")
    if not taken:
        raise CombineError(f"{nout} has no text tensors to replace.")
    result = dict(out, state_dict=state)
    result["metrics"] = {**out.get("metrics", {}), "text_checkpoint_metrics": c.get("metrics", {})}
    result["combined_from"] = {**out.get("combined_from", {}), "text": nc}
    return result


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def main(argv=None) -> int:
    from moodlens.models.checkpoint import model_from_payload, read_checkpoint, write_payload

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--vision", required=True, help="checkpoint A: its vision branch is taken")
    p.add_argument("--audio", required=True, help="checkpoint B: its audio branch is taken")
    p.add_argument("--base", required=True, help="the checkpoint both were trained from")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--vision-key", action="append", default=[], help="a model- or featurizer-config key to take from A")
    p.add_argument("--xz", action="store_true", help="write the result xz-compressed (the shipped default weights)")
    p.add_argument("--text", help="checkpoint C: its words-only path (TEXT_PREFIXES) replaces the result's")
    args = p.parse_args(argv)
    payloads, names = [], []
    for path in (args.vision, args.audio, args.base):
        payload, resolved = read_checkpoint(path)
        payloads.append(payload)
        names.append(f"{resolved} (sha256 {_sha(resolved)})")
    try:
        out = combine(*payloads, vision_keys=tuple(args.vision_key), names=tuple(names))
        if args.text:
            text_payload, text_path = read_checkpoint(args.text)
            names.append(f"{text_path} (sha256 {_sha(text_path)})")
            out = take_text(out, text_payload, names=("the combined checkpoint", names[-1]))
    except CombineError as err:
        print(f"error: {err}")
        return 1
    model_from_payload(out, args.out)              # refuses a payload that does not build and load
    write_payload(args.out, out, compress=args.xz)
    counts = {part: sum(branch(k) == part for k in out["state_dict"]) for part in ("vision", "audio", "other")}
    print(f"wrote {args.out}: {counts['vision']} vision tensors from {names[0]}, {counts['audio']} audio tensors "
          f"from {names[1]}, {counts['other']} others identical in all three")
    if args.text:
        n_text = sum(k.startswith(TEXT_PREFIXES) for k in out["state_dict"])
        print(f"  then {n_text} text-path tensors from {names[-1]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
