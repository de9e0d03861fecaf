"""Look for a MOSI text score that beats the default weights' s_T (the paper model's words-only prediction)
on the **valid** split; never reads the test split. docs/model_card.md ("Text round") quotes its output.

    python scripts/probe_text_heads.py [--checkpoint default] [--only reference pooled seeds init pretrained]

Candidates, each alone and blended with s_T (w * candidate + (1 - w) * s_T):
- `reference`: s_T, the paper's MLP_T, and s_T + a constant (a sign-threshold calibration);
- `pooled`: a pooled-statistics head (models.hcrl_mfd.PooledHead, as the voice's) on the frozen fine-tuned
  text-encoder states, 3 members, trained on MOSI train (MSE), 3 seeds;
- `seeds`: a seed ensemble of text heads shaped as the paper's text path after the encoder (core.text's two
  cascaded layers, masked mean, the 3-layer fusion MLP with audio and vision absent), freshly initialised,
  trained on the frozen text_proj states (L1, the paper's L_P), averaged; `init` the same started from the
  checkpoint's own core.text and fusion (only data order and dropout differ);
- `pretrained`: ridge regression on the *package's* MiniLM (not fine-tuned, so its MOSI-train states are not
  fitted to the train labels and 5-fold CV over train is honest for the ridge alpha), mean-pooled after each
  layer (layer 0's output is shared with the fine-tuned encoder: free at inference; the full pass costs a second
  encoder run), with a paired bootstrap of the blend's MAE / Non0 change.
The fine-tuned encoder fits MOSI train almost exactly (s_T: train Non0 97.5, MAE 0.21), so heads trained on its
train-split states learn from features cleaner than any unseen sentence gives: valid is the only fair judge here.
One thread; ~10 min in all on the shared 2-vCPU VM.
"""

from __future__ import annotations

import argparse
import copy

import numpy as np
import torch

PARTS = ("reference", "pooled", "seeds", "init", "pretrained")


def metrics(pred: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    """Non0 Acc-2 (%), MAE, Corr of scores clamped to the label range, as `moodlens evaluate` reports them."""
    p = np.clip(pred, -3, 3)
    k = y != 0
    return 100 * float(np.mean((p[k] > 0) == (y[k] > 0))), float(np.mean(np.abs(p - y))), float(np.corrcoef(p, y)[0, 1])


def fmt(r) -> str:
    return f"{r[0]:.2f} / {r[1]:.3f} / {r[2]:.3f}"


def spread(rows: list) -> str:
    r = np.array(rows)
    return f"{r[:, 0].mean():.2f} ± {r[:, 0].std():.2f} / {r[:, 1].mean():.3f} / {r[:, 2].mean():.3f}"


def load(checkpoint: str):
    from moodlens.models.checkpoint import load_checkpoint
    from moodlens.train.data import DataOptions, load_dataset

    model = load_checkpoint(checkpoint).model.eval()
    c = model.config
    data = load_dataset("../shared/data/mosi_text", DataOptions(text_encoder=c.text_encoder, text_max_len=c.text_max_len,
                                                                audio_dim=c.audio_dim, vision_dim=c.vision_dim))
    return model, {s: data.split(s) for s in ("train", "valid")}


@torch.no_grad()
def encode(model, split, batch=128) -> dict:
    """Fine-tuned encoder states, text_proj states, s_T and MLP_T for every sample (in split order)."""
    from moodlens.models.layers import masked_mean

    b, out = split.batch, {"enc": [], "proj": [], "s_T": [], "mlp_T": []}
    absent = torch.cat([model.absent["vision"], model.absent["audio"]])   # MODALITIES order: text, vision, audio
    for i in range(0, len(split), batch):
        ids, mask = b.text_ids[i:i + batch], b.text_mask[i:i + batch]
        h = model.text_encoder(ids, mask)
        p = model.text_proj(h)
        core = masked_mean(model.core["text"](p, mask), mask)
        out["enc"].append(h)
        out["proj"].append(p)
        out["s_T"].append(model.fusion(torch.cat([core, absent.expand(len(core), -1)], -1)).squeeze(-1))
        out["mlp_T"].append(model.unimodal_heads["text"](core).squeeze(-1))
    out = {k: torch.cat(v) for k, v in out.items()}
    out["mask"], out["y"] = b.text_mask, split.labels.float()
    return out


def reference(tr, va) -> None:
    y, s_t = va["y"].numpy(), va["s_T"].numpy()
    print(f"s_T (shipped)            valid {fmt(metrics(s_t, y))}   (train {fmt(metrics(tr['s_T'].numpy(), tr['y'].numpy()))})")
    print(f"MLP_T                    valid {fmt(metrics(va['mlp_T'].numpy(), y))}")
    for b in (-0.1, -0.05, 0.05, 0.1):
        print(f"s_T {b:+.2f}                valid {fmt(metrics(s_t + b, y))}")


def pooled(tr, va, seeds=3) -> None:
    from moodlens.models.hcrl_mfd import PooledHead

    y, s_t = va["y"].numpy(), va["s_T"].numpy()
    for use_std in (False, True):
        for hidden, dropout, passes in ((64, 0.2, 10), (64, 0.5, 20), (0, 0.2, 10)):
            rows = {w: [] for w in (1.0, 0.5, 0.25)}
            for seed in range(seeds):
                torch.manual_seed(seed)
                head = PooledHead(tr["enc"].shape[-1], use_std, hidden, dropout, members=3)
                opt = torch.optim.Adam(head.parameters(), lr=3e-4)
                g = torch.Generator().manual_seed(seed)
                on = torch.ones(len(tr["y"]), dtype=torch.bool)
                for _ in range(passes):
                    head.train()
                    for idx in torch.randperm(len(on), generator=g).split(32):
                        loss = (head(tr["enc"][idx], tr["mask"][idx], on[idx]) - tr["y"][idx]).pow(2).mean()
                        opt.zero_grad()
                        loss.backward()
                        opt.step()
                head.eval()
                with torch.no_grad():
                    p = head(va["enc"], va["mask"], torch.ones(len(y), dtype=torch.bool)).numpy()
                for w, scores in rows.items():
                    scores.append(metrics(w * p + (1 - w) * s_t, y))
            tag = f"pooled {'mean+std' if use_std else 'mean'} {'linear' if hidden == 0 else f'MLP-{hidden}'} d{dropout} x{passes}"
            print(f"{tag:40s} " + "   ".join(f"w {w}: {spread(r)}" for w, r in rows.items()), flush=True)


def text_heads(model, tr, va, *, from_checkpoint: bool, members=8, epochs=8) -> None:
    from moodlens.models.hcrl_mfd import CascadedEncoder
    from moodlens.models.layers import MLP, masked_mean

    c = model.config
    y, s_t = va["y"].numpy(), va["s_T"].numpy()
    absent = torch.cat([model.absent["vision"], model.absent["audio"]]).detach()
    preds, singles = [], []
    for seed in range(members):
        torch.manual_seed(1000 + seed)
        if from_checkpoint:
            core, head = copy.deepcopy(model.core["text"]), copy.deepcopy(model.fusion)
        else:
            core = CascadedEncoder(c.text_hidden, c.heads, c.decouple_layers, c.dropout)
            head = MLP(c.text_hidden + len(absent), c.fusion_hidden, 1, 3, c.dropout)

        def run(x, mask, core=core, head=head):
            p = masked_mean(core(x, mask), mask)
            return head(torch.cat([p, absent.expand(len(p), -1)], -1)).squeeze(-1)

        params = list(core.parameters()) + list(head.parameters())
        for p in params:
            p.requires_grad_(True)
        opt = torch.optim.Adam(params, lr=5e-4)
        g = torch.Generator().manual_seed(seed)
        for _ in range(epochs):
            core.train()
            head.train()
            for idx in torch.randperm(len(tr["y"]), generator=g).split(16):
                loss = (run(tr["proj"][idx], tr["mask"][idx]) - tr["y"][idx]).abs().mean()
                opt.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                opt.step()
        core.eval()
        head.eval()
        with torch.no_grad():
            preds.append(run(va["proj"], va["mask"]).numpy())
        singles.append((metrics(preds[-1], y), metrics(0.5 * preds[-1] + 0.5 * s_t, y)))
    tag = "init from checkpoint" if from_checkpoint else "fresh"
    print(f"text heads, {tag}: one head {spread([s[0] for s in singles])}; half with s_T {spread([s[1] for s in singles])}")
    half = members // 2
    for name, group in (("first half", preds[:half]), ("second half", preds[half:]), ("all", preds)):
        a = np.mean(group, 0)
        print(f"  mean of {len(group)} ({name}): {fmt(metrics(a, y))}   w 0.5 with s_T: {fmt(metrics(0.5 * a + 0.5 * s_t, y))}"
              f"   w 0.25: {fmt(metrics(0.25 * a + 0.75 * s_t, y))}", flush=True)


@torch.no_grad()
def pretrained(splits, va_ft, boot=2000) -> None:
    from moodlens.models.layers import masked_mean
    from moodlens.models.text_encoder import TextEncoder
    from sklearn.linear_model import Ridge
    from sklearn.model_selection import KFold

    enc = TextEncoder(None, 0).eval()   # the package's all-MiniLM-L6-v2, as shipped with moodlens
    feats = {}
    for name, split in splits.items():
        b, per = split.batch, [[] for _ in range(len(enc.layers) + 1)]
        for i in range(0, len(split), 128):
            ids, mask = b.text_ids[i:i + 128], b.text_mask[i:i + 128]
            x = enc.embed(ids)
            per[0].append(masked_mean(x, mask))
            for layer in range(len(enc.layers)):
                x = enc.run_layers(x, mask, layer, layer + 1)
                per[layer + 1].append(masked_mean(x, mask))
        feats[name] = [torch.cat(p).numpy() for p in per]
    ytr, y, s_t = splits["train"].labels.numpy(), splits["valid"].labels.numpy(), va_ft["s_T"].numpy()
    best = None
    for layer in range(len(feats["train"])):
        xt, xv = feats["train"][layer], feats["valid"][layer]
        mu, sd = xt.mean(0), xt.std(0) + 1e-6
        xt, xv = (xt - mu) / sd, (xv - mu) / sd
        cv = {}
        for alpha in (30, 100, 300, 1000, 3000):
            oof = np.zeros(len(ytr))
            for a, b in KFold(5, shuffle=True, random_state=0).split(xt):
                oof[b] = Ridge(alpha=alpha).fit(xt[a], ytr[a]).predict(xt[b])
            cv[alpha] = float(np.mean(np.abs(np.clip(oof, -3, 3) - ytr)))
        alpha = min(cv, key=cv.get)
        p = Ridge(alpha=alpha).fit(xt, ytr).predict(xv)
        where = "embeddings" if layer == 0 else f"layer {layer - 1}"
        print(f"pretrained MiniLM after {where:10s} (alpha {alpha} by CV, CV MAE {cv[alpha]:.3f}): alone {fmt(metrics(p, y))}   "
              + "   ".join(f"w {w}: {fmt(metrics(w * p + (1 - w) * s_t, y))}" for w in (0.15, 0.25, 0.4)), flush=True)
        best = p
    rng = np.random.default_rng(0)
    for w in (0.15, 0.25, 0.4):   # the full pretrained pass (last layer): paired bootstrap over valid clips
        q = w * best + (1 - w) * s_t
        d = []
        for _ in range(boot):
            i = rng.integers(0, len(y), len(y))
            a, b = metrics(q[i], y[i]), metrics(s_t[i], y[i])
            d.append((a[1] - b[1], a[0] - b[0]))
        d = np.array(d)
        flips = int(((q > 0) != (s_t > 0))[y != 0].sum())
        print(f"  w {w}: dMAE {d[:, 0].mean():+.3f} [{np.percentile(d[:, 0], 2.5):+.3f}, {np.percentile(d[:, 0], 97.5):+.3f}]  "
              f"dNon0 {d[:, 1].mean():+.2f} [{np.percentile(d[:, 1], 2.5):+.2f}, {np.percentile(d[:, 1], 97.5):+.2f}]  "
              f"signs changed vs s_T: {flips} of {int((y != 0).sum())}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default="default")
    parser.add_argument("--only", nargs="+", choices=PARTS, default=list(PARTS))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    model, splits = load(args.checkpoint)
    tr, va = encode(model, splits["train"]), encode(model, splits["valid"])
    for part in args.only:
        print(f"--- {part}", flush=True)
        if part == "reference":
            reference(tr, va)
        elif part == "pooled":
            pooled(tr, va)
        elif part in ("seeds", "init"):
            text_heads(model, tr, va, from_checkpoint=part == "init", members=8 if part == "seeds" else 6,
                       epochs=8 if part == "seeds" else 4)
        else:
            pretrained(splits, va)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
