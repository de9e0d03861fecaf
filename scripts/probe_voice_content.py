"""Does the voice head generalize past RAVDESS's two sentences? (issue 10, session 5 `voicegen`)

RAVDESS has two sentences ("Kids are talking by the door", "Dogs are sitting by the door"), so the directions of
the Whisper encoder states that carry *what is said* never vary in training, and a linear head on their
utterance mean+std may put arbitrary weight on them: any new sentence or language then moves the voice score.
This probe tests remedies on the pooled voice head alone (scripts/probe_pooled_heads.py's form: linear on the
standardised mean+std of the 40 ms Whisper tiny.en states, dropout 0.2, + and - drawn equally often).

    python scripts/probe_voice_content.py synth [--out DIR]     # espeak-ng sentences -> pooled statistics (npz)
    python scripts/probe_voice_content.py clips [--out DIR]     # the 3 real clips in ../shared/data/clips
    python scripts/probe_voice_content.py cv [--out DIR] [--seed-base 0]   # the decision table (never the test actors)
    python scripts/probe_voice_content.py ship [--candidate TAG] # on GO: the voice pooled head into stage 5's weights
    python scripts/probe_voice_content.py held CKPT [CKPT ...]   # the whole voice output on the HELD set (report)

Candidates (all on the pooled head's input statistics, fitted inside each training fold):
- `nap k`: nuisance-attribute projection (Solomonoff, Campbell & Boardman 2005, speaker verification): the top-k
  principal directions of *between-sentence* variation of the statistics of espeak-ng speech whose emotion is
  constant and whose words vary (the FIT set: MOSI train transcripts, lower-cased, 8 espeak voice/rate/pitch
  settings speaking the same sentences), after removing each voice's own mean (so voice identity is not what is
  removed), in the space standardised by the fold's training clips; those k directions are projected out of
  every utterance's standardised statistics before the head (train and score alike). k in {4, 8, 16, 32}.
- `aug w`: the FIT sentences added to the head's training with audio label 0 (neutral), drawn with total
  probability w / (1 + w) against RAVDESS's draws.
- `pen l`: a penalty l * (variance of the head's output across the FIT sentences of one voice, averaged over
  voices) added to the loss: the head may not move with the words of one voice.
Baseline: the shipped form (clean + channel copies, 10 passes), features from runs/voice_v4 (cv_full: the 792
clips of actors 01-18 clean, copied and through the six probe channels; 15 s input, audio_level none).

Protocol (the test actors 19-22 are never read by any mode):
- clean CV: 6 grouped folds over actors 01-18 (probe_pooled_heads.group_folds), 3 seeds averaged; balanced
  Acc-2 out of fold, the mean over the six channels (held-out actors' clips through each channel), neutral mean.
- statement transfer: inside the same folds, train on statement 1 of the training actors (clean + copies), score
  statement 2 of the held-out actors; and the reverse; the mean of the two balanced Acc-2.
- synthetic lean, chosen on (FIT, out of voice): leave one FIT voice out (NAP / augmentation / penalty from the
  other 7, head on all of 01-18), score the left-out voice's sentences: mean |score| over the 8 voices.
- held-out synthetic (HELD set: MOSI dev transcripts, 4 espeak voice settings not in FIT, no sentence of FIT):
  the head on all of 01-18, remedies from all of FIT: mean score and share negative (neutral by construction).
- real clips (the 3 Mandarin clips, whole clip = one window, as `moodlens run` sees them): scores, report only.

GO rule (fixed in the task before any number was read):
  the chosen candidate GOes if, against the baseline, clean CV balanced Acc-2 drops <= 1.5 points, the channels
  mean drops <= 1.5, statement transfer does not drop, and the held-out synthetic |mean score| falls >= 50 %.
Choice of the candidate (fixed before the numbers, not on the HELD set): among all candidates that pass the three
RAVDESS conditions, the one with the smallest FIT out-of-voice mean |score|; ties (within 0.02) to the simpler
(NAP smallest k, then aug smallest w). The HELD set and the real clips are read for every row but choose nothing.

Result (00:10 UTC, seeds 0-2, one thread, load ~3, 6.5 min; /work/runs_keep/voicegen/model_card_section.md has the
table): baseline clean 0.846, channels 0.839, statement 0.770, FIT |mean| 0.26 (sd in voice 1.72), HELD +0.53 (sd
1.55); aug 0.05 0.854 / 0.838 / 0.777 / 0.24 (0.99) / +0.15 (1.33): chosen, GO (HELD |mean| -73 %). NAP k 4-32 keeps
RAVDESS but not statement transfer (0.740-0.760) and leaves HELD's sd at 1.60; the penalty costs 1.2-3 clean points.
Checked afterwards with `--seed-base 3` and `6` (report only): the HELD lean of this head is seed noise (baseline
+0.03 / -0.08, aug 0.05 +0.06 / +0.12: the lean condition would fail), while the RAVDESS gains and the content sd
(FIT 1.7 -> 1.0, HELD 1.5 -> 1.3) hold on every seed set. `ship` wrote /work/runs_keep/voicegen/stage6_voice.pt
(cross-fitted offset -0.272); its whole voice output on HELD (`held`): -0.99 -> -0.49 against stage 5.
"""

from __future__ import annotations

import argparse
import csv
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
OUT = Path("runs/voicegen")   # from the repository root; on the team VM runs/ links to /work/runs_keep
SR = 16_000
# espeak-ng voice settings: (voice+variant, words per minute, pitch 0-99). FIT estimates the remedies; HELD only
# scores (other base voices / variants, other sentences).
FIT_VOICES = [("en-us+m1", 150, 50), ("en-us+f2", 170, 60), ("en-gb+m3", 140, 40), ("en-gb+f4", 160, 70),
              ("en-gb-scotland+m5", 150, 45), ("en-029+f1", 155, 55), ("en-us+Andy", 165, 35),
              ("en-gb-x-rp+Alicia", 145, 65)]
HELD_VOICES = [("en-us-nyc+m2", 175, 50), ("en-gb-x-gbclan+f3", 150, 60), ("en-gb-x-gbcwmd+m4", 135, 40),
               ("en-gb-x-gbcwmd+f5", 180, 55)]
N_FIT_SENTENCES, N_HELD_SENTENCES = 48, 24


def sentences(split: str, n: int, seed: int) -> list[str]:
    """n distinct MOSI transcripts of `split`, lower-cased, 5-25 words, drawn with a fixed seed."""
    with (REPO.parent / "shared/data/mosi_text" / f"{split}.tsv").open() as f:
        texts = [r["text"].strip().lower() for r in csv.DictReader(f, delimiter="\t")]
    texts = sorted({t for t in texts if 5 <= len(t.split()) <= 25})
    rng = np.random.default_rng(seed)
    return [texts[i] for i in rng.choice(len(texts), n, replace=False)]


def speak(text: str, voice: str, rate: int, pitch: int, tmp: Path) -> np.ndarray:
    """espeak-ng -> 16 kHz mono float32 (as tests/helpers/media.synthesize)."""
    import librosa
    import soundfile as sf

    raw = tmp / "s.wav"
    subprocess.run([shutil.which("espeak-ng"), "-v", voice, "-s", str(rate), "-p", str(pitch), "-w", str(raw), text],
                   check=True, capture_output=True)
    audio, sr = sf.read(str(raw), dtype="float32")
    audio = audio.mean(1) if audio.ndim > 1 else audio
    return librosa.resample(audio, orig_sr=sr, target_sr=SR).astype(np.float32)


def statistics_of(audio_list, tr) -> np.ndarray:
    """PooledHead.statistics (mean, std of the 40 ms Whisper frames) via the Transcriber the features use:
    Transcriber.encoder_states -> pool_states, as `moodlens featurize --no-asr` and probe_voice_channel cv-states."""
    import torch
    from moodlens.models.hcrl_mfd import PooledHead
    from moodlens.realtime.perception.features.whisper_states import pool_states

    head = PooledHead(384, True, 0, 0.0)
    out = []
    for y in audio_list:
        frames = torch.from_numpy(np.nan_to_num(pool_states(tr.encoder_states(y))))[None]
        out.append(head.statistics(frames, torch.ones(1, len(frames[0]), dtype=torch.bool))[0].numpy())
    return np.stack(out)


def transcriber():
    from moodlens.realtime.perception.asr import AsrOptions, Transcriber

    return Transcriber(AsrOptions(warmup=False, whisper_input="15s", audio_level="none", cpu_threads=1))


def synth_main(out: Path) -> None:
    import tempfile

    tr = transcriber()
    out.mkdir(parents=True, exist_ok=True)
    for name, voices, split, n, seed in (("fit", FIT_VOICES, "train", N_FIT_SENTENCES, 0),
                                         ("held", HELD_VOICES, "dev", N_HELD_SENTENCES, 1)):
        path = out / f"synth_{name}.npz"
        if path.exists():
            continue
        texts, start = sentences(split, n, seed), time.time()
        stats, voice_of, sentence_of = [], [], []
        with tempfile.TemporaryDirectory() as tmp:
            for v, (voice, rate, pitch) in enumerate(voices):
                audio = [speak(t, voice, rate, pitch, Path(tmp)) for t in texts]
                stats.append(statistics_of(audio, tr))
                voice_of += [v] * len(texts)
                sentence_of += list(range(len(texts)))
                print(f"{name} {voice} s{rate} p{pitch}: {len(texts)} sentences, "
                      f"{np.mean([len(a) for a in audio]) / SR:.1f} s mean, {time.time() - start:.0f} s", flush=True)
        np.savez(path, x=np.concatenate(stats), voice=np.array(voice_of), sentence=np.array(sentence_of),
                 texts=np.array(texts), voices=np.array([f"{v} s{r} p{p}" for v, r, p in voices]))


def clips_main(out: Path) -> None:
    from moodlens.realtime.capture.media import read_media

    tr = transcriber()
    paths = sorted((REPO.parent / "shared/data/clips").glob("*.mp4"))
    audio = [read_media(p).audio for p in paths]
    np.savez(out / "clips.npz", x=statistics_of(audio, tr), names=np.array([p.stem for p in paths]))
    print(f"{len(paths)} clips: " + ", ".join(f"{p.stem} {len(a) / SR:.2f} s" for p, a in zip(paths, audio)))


# ---- the decision table ------------------------------------------------------------------------------------------
CV_WORK = Path("runs/voice_v4/cv_full")   # probe_voice_channel cv-states / cv-import, audio_level none
CHANNELS = ("gain_-12", "phone", "noise_20", "noise_10", "reverb", "laptop")
STATEMENTS = {"kids are talking by the door": 1, "dogs are sitting by the door": 2}
CANDIDATES = [("baseline", {}), ("nap 4", {"nap": 4}), ("nap 8", {"nap": 8}), ("nap 16", {"nap": 16}),
              ("nap 32", {"nap": 32}), ("aug 0.05", {"aug": 0.05}), ("aug 0.2", {"aug": 0.2}),
              ("pen 1", {"pen": 1.0}), ("pen 10", {"pen": 10.0})]
PASSES, SEEDS = 10, 3


def nap_basis(x_train: np.ndarray, synth: np.ndarray, voice: np.ndarray, k: int):
    """(mean, scale, U): the training clips' standardisation and the top-k directions (k, D) of between-sentence
    variation of `synth` in that standardised space, each voice's own mean removed first (Solomonoff et al.
    2005's nuisance-attribute projection, the nuisance here being the words)."""
    mean, scale = x_train.mean(0), x_train.std(0) + 1e-8
    z = (synth - mean) / scale
    for v in np.unique(voice):
        z[voice == v] -= z[voice == v].mean(0)
    return mean, scale, np.linalg.svd(z, full_matrices=False)[2][:k]


def nap_apply(x: np.ndarray, mean, scale, basis) -> np.ndarray:
    """x with the basis directions (of the standardised space) projected out: x - scale * U^T U (x - mean) / scale."""
    z = (x - mean) / scale
    return (x - scale * ((z @ basis.T) @ basis)).astype(np.float32)


def fit(x_train, y_train, x_test, seed, *, synth=None, voice=None, aug=0.0, pen=0.0, nap=0, return_head=False):
    """The pooled voice head (probe_pooled_heads.fit_predict: linear, dropout 0.2, 10 passes, + and - drawn
    equally often) with a candidate remedy; `synth` / `voice`: the FIT statistics the remedy may use.
    `return_head`: the fitted PooledHead instead of scores (ship)."""
    import torch
    from moodlens.models.hcrl_mfd import PooledHead
    from probe_pooled_heads import draw_weights, fit_predict

    if nap:
        m, sc, u = nap_basis(x_train, synth, voice, nap)
        x_train, x_test = nap_apply(x_train, m, sc, u), nap_apply(x_test, m, sc, u)
    if not aug and not pen and not return_head:
        return fit_predict(x_train, y_train, x_test, "audio", 0, 0.2, PASSES, seed=seed)
    torch.manual_seed(seed)
    head = PooledHead(384, True, 0, 0.2, 1)
    head.statistics = lambda x, mask: x[:, 0]
    optimizer = torch.optim.Adam(head.parameters(), lr=1e-3)
    n, p = len(y_train), draw_weights(y_train)
    xt, yt = np.asarray(x_train, np.float32), np.asarray(y_train, np.float32)
    if aug:   # FIT sentences as neutral voices: total draw probability aug / (1 + aug)
        xt, yt = np.concatenate([xt, synth.astype(np.float32)]), np.concatenate([yt, np.zeros(len(synth), np.float32)])
        p = np.concatenate([p / (1 + aug), np.full(len(synth), aug / (1 + aug) / len(synth))])
    xt, yt = torch.tensor(xt)[:, None], torch.tensor(yt)
    rng = np.random.default_rng(seed)
    voices = np.unique(voice) if voice is not None else []
    by_voice = [np.nonzero(voice == v)[0] for v in voices]
    s_t = torch.tensor(synth, dtype=torch.float32) if synth is not None else None
    head.train()
    ones = lambda b: (torch.ones(len(b), 1, dtype=torch.bool), torch.ones(len(b), dtype=torch.bool))
    for _ in range(PASSES):
        rows = rng.choice(len(yt), n, p=p)
        for s in range(0, n - 1, 32):
            b = rows[s:s + 32]
            loss = (head.member_outputs(xt[b], *ones(b)).mean(0) - yt[b]).pow(2).mean()
            if pen:   # output variance across sentences of one voice (4 voices x 8 sentences a step; no stats update)
                z = (s_t - head.stat_mean) * torch.exp(-head.stat_log_std)
                var = []
                for v in rng.choice(len(by_voice), min(4, len(by_voice)), replace=False):
                    idx = rng.choice(by_voice[v], 8, replace=False)
                    var.append(head.members[0](head.drop(z[idx])).squeeze(-1).var())
                loss = loss + pen * torch.stack(var).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    head.eval()
    if return_head:   # ship: the fitted head itself (its statistics are the inputs: no statistics() needed)
        return head
    with torch.no_grad():
        xs = torch.tensor(np.asarray(x_test, np.float32))[:, None]
        return head(xs, *ones(xs)).numpy()


def cv_main(args) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from probe_pooled_heads import balanced_acc_2, group_folds
    from probe_voice_channel import cv_rows

    rows = cv_rows(REPO / "runs/data_v2/ravdess/label.csv")
    seeds = range(args.seed_base, args.seed_base + SEEDS)   # --seed-base: the same table with other seeds (a check)
    y = np.array([float(r["label_A"]) for r in rows])
    groups = np.array([r["group"] for r in rows])
    emotion = np.array([r["annotation"].split("/")[0] for r in rows])
    statement = np.array([STATEMENTS[r["text"].strip().lower()] for r in rows])
    x = {v: np.load(CV_WORK / f"{v}_none.npz")["x"].astype(np.float32) for v in ("clean", "copy") + CHANNELS}
    ids = np.load(CV_WORK / "copy_none.npz")["ids"]
    assert list(ids) == [f"{r['video_id']}/{r['clip_id']}" for r in rows]
    fit_set, held = np.load(args.out / "synth_fit.npz"), np.load(args.out / "synth_held.npz")
    clips = np.load(args.out / "clips.npz")
    folds = group_folds(groups, 6)
    every = np.arange(len(y))
    only = set(args.only.split(",")) if args.only else None
    print(f"{len(y)} clips (actors 01-18), {len(folds)} grouped folds, {SEEDS} seeds averaged, {PASSES} passes, "
          f"clean + copies; FIT {len(fit_set['x'])} espeak clips ({len(fit_set['voices'])} voices x "
          f"{len(fit_set['texts'])} MOSI train sentences), HELD {len(held['x'])} ({len(held['voices'])} other voices x "
          f"{len(held['texts'])} MOSI dev sentences)", flush=True)

    def train_on(index):   # clean + copies of these clips, unlabelled rows dropped
        keep = index[np.isfinite(y[index])]
        return np.concatenate([x["clean"][keep], x["copy"][keep]]), np.concatenate([y[keep], y[keep]])

    print("| candidate | clean CV | channels mean | neutral mean | statement 1->2 / 2->1 (mean) | FIT out-of-voice "
          "|mean| (sd in voice) | HELD mean (share neg., sd in voice) | real clips | s |")
    print("|---" * 9 + "|")
    results = {}
    for tag, opt in CANDIDATES:
        if only and tag not in only:
            continue
        start = time.time()
        kw = dict(opt, synth=fit_set["x"], voice=fit_set["voice"])
        oof = {v: np.zeros((SEEDS, len(y))) for v in ("clean",) + CHANNELS}
        st = np.zeros((SEEDS, len(y)))
        for j, seed in enumerate(seeds):
            for train, test in folds:
                xt, yt = train_on(train)
                out = fit(xt, yt, np.concatenate([x[v][test] for v in oof]), seed, **kw)
                for k, v in enumerate(oof):
                    oof[v][j, test] = out[k * len(test):(k + 1) * len(test)]
                for s in (1, 2):   # train on statement s, score the other statement of the held-out actors
                    xt, yt = train_on(train[statement[train] == s])
                    other = test[statement[test] != s]
                    st[j, other] = fit(xt, yt, x["clean"][other], seed, **kw)
        known = np.isfinite(y)
        clean = balanced_acc_2(oof["clean"].mean(0)[known], y[known])
        chan = np.mean([balanced_acc_2(oof[v].mean(0)[known], y[known]) for v in CHANNELS])
        neutral = oof["clean"].mean(0)[emotion == "neutral"].mean()
        st_acc = [balanced_acc_2(st.mean(0)[known & (statement == s)], y[known & (statement == s)]) for s in (2, 1)]
        xt, yt = train_on(every)
        # FIT out of voice: remedies from the other voices, the head on all of 01-18
        lean, spread = [], []
        for v in np.unique(fit_set["voice"]):
            rest = fit_set["voice"] != v
            sub = dict(kw, synth=fit_set["x"][rest], voice=fit_set["voice"][rest])
            if not opt:   # the baseline uses no FIT clip: one head serves every voice
                sub = kw
            pred = np.mean([fit(xt, yt, fit_set["x"][~rest], seed, **sub) for seed in seeds], 0)
            lean.append(abs(pred.mean()))
            spread.append(pred.std())
        scored = np.mean([fit(xt, yt, np.concatenate([held["x"], clips["x"]]), seed, **kw) for seed in seeds], 0)
        h, c = scored[:len(held["x"])], scored[len(held["x"]):]
        h_sd = np.mean([h[held["voice"] == v].std() for v in np.unique(held["voice"])])
        results[tag] = {"clean": clean, "chan": chan, "neutral": neutral, "st": np.mean(st_acc), "lean": np.mean(lean),
                        "held": h.mean(), "held_neg": (h < 0).mean(), "clips": c}
        print(f"| {tag} | {clean:.3f} | {chan:.3f} | {neutral:+.2f} | {st_acc[0]:.3f} / {st_acc[1]:.3f} "
              f"({np.mean(st_acc):.3f}) | {np.mean(lean):.2f} ({np.mean(spread):.2f}) | {h.mean():+.2f} "
              f"({(h < 0).mean():.2f}, {h_sd:.2f}) | " + " / ".join(f"{v:+.2f}" for v in c)
              + f" | {time.time() - start:.0f} |", flush=True)
        per_voice = ", ".join(f"{name} {h[held['voice'] == v].mean():+.2f}" for v, name in enumerate(held["voices"]))
        print(f"    HELD per voice: {per_voice}", flush=True)
    decide(results)


def decide(results: dict) -> None:
    """The GO rule of the module docstring, applied to the table."""
    if "baseline" not in results or len(results) < 2:
        return
    b = results["baseline"]
    passing = [t for t, r in results.items() if t != "baseline" and r["clean"] >= b["clean"] - 0.015
               and r["chan"] >= b["chan"] - 0.015 and r["st"] >= b["st"]]
    print(f"passing the RAVDESS conditions: {', '.join(passing) or 'none'}")
    if not passing:
        print("NOGO: no candidate keeps clean CV, the channels and statement transfer")
        return
    best = min(r["lean"] for t, r in results.items() if t in passing)
    chosen = next(t for t in passing if results[t]["lean"] <= best + 0.02)   # CANDIDATES order: simpler first
    r = results[chosen]
    fall = 1 - abs(r["held"]) / max(abs(b["held"]), 1e-9)
    print(f"chosen on FIT out of voice: {chosen} (|mean| {r['lean']:.2f} vs baseline {b['lean']:.2f}); HELD |mean| "
          f"{abs(b['held']):.2f} -> {abs(r['held']):.2f} ({100 * fall:+.0f} % fall; the rule asks >= 50 %)")
    print("GO" if fall >= 0.5 else "NOGO: the held-out synthetic lean does not fall by half")


# ---- ship: the chosen candidate into the stage-5 checkpoint (only on GO) -------------------------------------------
STAGE5 = Path("runs/voice_v4/stage5_voice.pt")
FOLDS = Path("runs/voice_v4/folds")   # the stage-5 recipe's 3 grouped folds (probe_voice_lean makefolds)


def pickle_statistics(pkl: Path, split: str):
    """PooledHead.statistics of a featurize pickle's split (as probe_voice_channel cv-import) and label_A."""
    import torch
    from moodlens.core.safeload import safe_pickle_load
    from moodlens.models.hcrl_mfd import PooledHead

    part = safe_pickle_load(str(pkl))[split]
    x = PooledHead(384, True, 0, 0.0).statistics(torch.tensor(part["audio"]), torch.tensor(part["audio_mask"]))
    y = np.asarray(part["regression_labels_A"], np.float64)
    keep = np.isfinite(y) & np.asarray(part["present"])[:, 1].astype(bool)
    return x.numpy()[keep], y[keep]


def head_state(x_train, y_train, opt: dict, synth, voice, members: int = 3) -> dict:
    """The voice pooled head's tensors: `members` heads fitted with seeds 0.. (the CV's seeds, whose mean it
    scored), folded onto one shared standardisation (member k: w_k (s - m_k) / sd_k + b_k == w'_k (s - m) / sd
    + b'_k with m, sd the mean of the members'), so the checkpoint's PooledHead (members averaged) gives the
    mean of the fitted heads."""
    import torch

    if opt.get("nap"):
        raise SystemExit("ship: a NAP candidate needs PooledHead.set_nap in the checkpoint; not built here")
    heads = [fit(x_train, y_train, None, seed, synth=synth, voice=voice, return_head=True, **opt)
             for seed in range(members)]
    m = torch.stack([h.stat_mean for h in heads]).mean(0)
    sd = torch.stack([h.stat_log_std.exp() for h in heads]).mean(0)
    state = {"stat_mean": m, "stat_log_std": sd.log(), "stat_count": heads[0].stat_count.clone()}
    for k, h in enumerate(heads):
        w, b = h.members[0].weight.detach()[0], h.members[0].bias.detach()
        sd_k = h.stat_log_std.exp()
        state[f"members.{k}.weight"] = (w * sd / sd_k)[None]
        state[f"members.{k}.bias"] = b + (w * (m - h.stat_mean) / sd_k).sum()[None]
    return state


def put_head(state_dict: dict, head: dict) -> dict:
    out = dict(state_dict)
    for k, v in head.items():
        key = f"pooled_heads.audio.{k}"
        if key not in out or out[key].shape != v.shape:
            raise SystemExit(f"{key}: not in the checkpoint or another shape")
        out[key] = v.to(out[key].dtype)
    return out


def ship_main(args) -> None:
    import os

    import torch

    tag = args.candidate
    opt = dict(CANDIDATES)[tag]
    fit_set = np.load(args.out / "synth_fit.npz")
    synth, voice = fit_set["x"], fit_set["voice"]
    # (1) the folds, for the cross-fitted offset: each fold's stage-5 last.pt with its voice pooled head refitted
    #     on that fold's training actors (clean + copies) with the candidate; everything else as trained
    for k in range(3):
        xc, yc = pickle_statistics(FOLDS / "clean" / str(k) / "ravdess.pkl", "train")
        xk, yk = pickle_statistics(FOLDS / "copies" / str(k) / "ravdess.pkl", "train")
        head = head_state(np.concatenate([xc, xk]), np.concatenate([yc, yk]), opt, synth, voice)
        src = FOLDS / "clean" / str(k) / "run" / "seed_1111" / "last.pt"
        ckpt = torch.load(src, map_location="cpu", weights_only=False)
        ckpt["model"] = put_head(ckpt["model"], head)
        dst = args.out / "folds" / str(k)
        (dst / "run" / "seed_1111").mkdir(parents=True, exist_ok=True)
        torch.save(ckpt, dst / "run" / "seed_1111" / "last.pt")
        if not (dst / "ravdess.pkl").exists():
            os.symlink(FOLDS / "clean" / str(k) / "ravdess.pkl", dst / "ravdess.pkl")
        print(f"fold {k}: {len(yc)} + {len(yk)} training clips -> {dst}", flush=True)
    # (2) the checkpoint: stage 5's training split (actors 01-16, data_v3 + copies), the voice pooled head only
    xc, yc = pickle_statistics(REPO / "runs/data_v3/ravdess.pkl", "train")
    xk, yk = pickle_statistics(REPO / "runs/voice_v4/copies_none.pkl", "train")
    head = head_state(np.concatenate([xc, xk]), np.concatenate([yc, yk]), opt, synth, voice)
    payload = torch.load(STAGE5, map_location="cpu", weights_only=False)
    payload["state_dict"] = put_head(payload["state_dict"], head)
    payload.setdefault("metrics", {})["voice_pooled_head"] = f"probe_voice_content ship {tag!r}"
    out = args.out / "stage6_voice_stage5offset.pt"
    torch.save(payload, out)
    print(f"{len(yc)} + {len(yk)} training clips -> {out} (audio_offset still stage 5's; set it with "
          f"probe_voice_lean.py folds / offset)")


# ---- the shipped voice output (pooled head blended with MLP_A, offset) on the HELD synthetic set -----------------
def held_main(args) -> None:
    """`held CKPT ...`: the HELD espeak set written as an audio-only raw dataset (label 0, split test), featurized
    by `moodlens featurize` as a checkpoint's featurizer config says (probe_voice_channel.featurize), and scored
    by each checkpoint's whole voice output: mean, share negative, mean sd across one voice's sentences."""
    import tempfile

    import soundfile as sf
    from moodlens.models.checkpoint import load_checkpoint
    from probe_voice_channel import featurize, score

    root = args.out / "held_raw"
    if not (root / "label.csv").exists():
        rows = []
        with tempfile.TemporaryDirectory() as tmp:
            texts = sentences("dev", N_HELD_SENTENCES, 1)
            for v, (voice, rate, pitch) in enumerate(HELD_VOICES):
                for i, t in enumerate(texts):
                    out = root / "Raw" / f"voice{v}" / f"s{i:02d}.wav"
                    out.parent.mkdir(parents=True, exist_ok=True)
                    sf.write(out, speak(t, voice, rate, pitch, Path(tmp)), SR)
                    rows.append({"video_id": f"voice{v}", "clip_id": f"s{i:02d}", "text": t, "label": 0, "label_T": "",
                                 "label_A": 0, "label_V": "", "annotation": "neutral/espeak/synthetic",
                                 "mode": "test", "group": f"voice{v}"})
        with open(root / "label.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
    with open(root / "label.csv") as f:
        voice_of = np.array([r["video_id"] for r in csv.DictReader(f)])
    for ckpt in args.checkpoints:
        loaded = load_checkpoint(ckpt)
        fc = loaded.featurizer_config
        pkl = featurize(root, 1, fc.get("whisper_input", "30s"), fc.get("audio_level", "none"))
        model = loaded.model.eval()
        shipped = model.config.pooled_share_audio
        for tag, share in (("as shipped", shipped), ("pooled head alone", 1.0), ("MLP_A alone", 0.0)):
            model.config.pooled_share_audio = share
            pred = score(pkl, "test", model)[0]
            sd = np.mean([pred[voice_of == v].std() for v in np.unique(voice_of)])
            per = " ".join(f"{pred[voice_of == v].mean():+.2f}" for v in np.unique(voice_of))
            print(f"{ckpt} {tag} (share {share}): HELD {len(pred)} clips mean {pred.mean():+.2f}, share negative "
                  f"{(pred < 0).mean():.2f}, sd in voice {sd:.2f}; per voice {per}", flush=True)
        model.config.pooled_share_audio = shipped


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("what", choices=["synth", "clips", "cv", "ship", "held"])
    p.add_argument("checkpoints", nargs="*", help="held: checkpoints whose voice output to score")
    p.add_argument("--candidate", default="aug 0.05", help="ship: the CANDIDATES tag the cv table chose")
    p.add_argument("--out", type=Path, default=OUT)
    p.add_argument("--seed-base", type=int, default=0, help="cv: seeds seed_base .. seed_base + 2 (default 0)")
    p.add_argument("--only", help="cv: only these candidates (comma-separated tags)")
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    if args.what == "synth":
        synth_main(args.out)
    elif args.what == "clips":
        clips_main(args.out)
    elif args.what == "held":
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        held_main(args)
    elif args.what == "ship":
        ship_main(args)
    else:
        cv_main(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
