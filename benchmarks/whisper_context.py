"""How much padding Whisper's encoder needs: transcripts and time per window for each encoder input.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/whisper_context.py [--per-actor 10] [--json out.json]

faster-whisper pads every window to 3000 log-mel frames (30 s) and the encoder's cost grows with
its input, so most of a short window's Whisper time is padding. The policies compared are the ones
`AsrOptions.whisper_input` / the featurizer config's `whisper_input` offer (features/whisper_states.py
`encoder_input_frames`, the one place they are defined, used by transcription and audio features):

- "30s": today's input (3000 frames);
- "15s" / "10s": that fixed input when the window fits, else 30 s;
- "adaptive": the window + ADAPTIVE_MARGIN_S (3 s) of padding, rounded up to ADAPTIVE_BUCKET_S
  (2 s), at least ADAPTIVE_FLOOR_S (6 s);
- "30s, no timestamps": today's input decoded without timestamp tokens, which every cut input is
  (asr.py): it separates the decoding change from the input change.
A smoke run (1 clip per actor, 18:06 UTC) of a first design (margin 1 s, floor 4 s, timestamp tokens
kept) repeated the sentence or emitted ". . ." on 5 of 22 RAVDESS clips and 1 of 5 demo windows; a
look at those 9 windows showed timestamp-free decoding and more padding remove it, so the design
changed to the above before this study (the smoke clips are part of this sample: said in docs).

Windows, with their TRUE words:
- RAVDESS speech (../shared/data/ravdess_speech, the whole clip as `moodlens featurize` uses it):
  `--per-actor` clips of each of the 22 actors, every emotion once then random ones (seed 0);
  the statement from labels.csv is the truth;
- 22 espeak-ng sentences (below, ~1-12 s) in two voices (en-us, en-gb), 0.2 s pad either side
  (the VAD's pad_s);
- the demo clip's windows as the VAD cuts them (truth: realtime/assets/demo.json);
and, without truth, the 3 real clips of ../shared/data/clips (whole clip): changes vs 30 s only.
`--long` instead checks windows of 9.5-14.8 s (two of the sentences joined, both voices) at 30 s
vs 15 s: the longest windows a 15 s input still takes.

Metric: WER vs the truth after lower-casing and dropping punctuation (edit distance over words,
summed over windows / truth words); the paired bootstrap (windows resampled, 2000 times, seed 0) 95 %
CI of WER(policy) - WER(30s); empty outputs and hallucinations (no truth word at all, a word 3 times
in a row, or more than twice the truth's words + 3); median ms per window (Whisper's wall time on
the live options: greedy, no word timestamps, encoder states kept as the pipeline keeps them), every
policy timed window by window in turn (round-robin, so the shared machine's load hits all alike;
`uptime` is printed before and after).

DECISION RULE (written before the final numbers were looked at): the chosen policy is the fastest
(median ms per window over all windows) among those that, on RAVDESS and on espeak each,
(a) are not worse than 30 s beyond the bootstrap noise: the 95 % CI of the WER difference includes
    0 or lies below it, and the point difference is at most +1.0 WER point;
(b) have no more empty + hallucinated outputs than 30 s, plus one;
and (c) keep every demo sentence's words: no demo window loses a truth word that the 30 s
transcript of it has. If no shorter policy passes, 30 s stays (NO-GO).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
# variant -> AsrOptions changes; the first is today's live setting, the reference
VARIANTS = {
    "30s": {"whisper_input": "30s"},
    "30s, no timestamps": {"whisper_input": "30s", "without_timestamps": True},
    "15s": {"whisper_input": "15s"},
    "10s": {"whisper_input": "10s"},
    "adaptive": {"whisper_input": "adaptive"},
}
POLICIES = tuple(VARIANTS)

SENTENCES = [
    "No.",
    "Thank you.",
    "I love it.",
    "That was really bad.",
    "Where did you put my keys?",
    "The train leaves at seven in the morning.",
    "I really love this movie, the acting was great.",
    "Honestly, I don't know what to think about it yet.",
    "That was the worst meal I have ever had, and the service was slow.",
    "The weather is nice today, so we are going to the park after lunch.",
    "My sister bought a new car last week and she drives it to work every day.",
    "He said the package would arrive on Monday, but it still has not come, and nobody answers the phone.",
    "She told me the results were much better than we expected, which made the whole team very happy.",
    "We walked along the river for an hour, talking about our plans for the summer and the places we want to see.",
    "The museum was closed when we got there, so we had coffee in a small cafe across the street and waited.",
    "I can't believe how quickly the year went by; it feels like we only moved into this house a few weeks ago.",
    "After the meeting, the manager asked everyone to send their reports by Friday so that the budget could be "
    "finished on time.",
    "If you follow the road past the old church and turn left at the bakery, you will find the library on your right.",
    "The children played in the garden all afternoon while their parents cooked dinner and talked about the news "
    "of the day.",
    "Every winter we visit my grandparents in the mountains, where the snow is deep and the nights are long and "
    "very quiet.",
    "When the concert finally started, the crowd went silent, and for two hours nobody wanted to be anywhere else "
    "in the world.",
    "Our flight was delayed by three hours because of the storm, so we slept on the floor of the airport and ate "
    "cold sandwiches for breakfast.",
    "The teacher explained the lesson twice, but half of the class was still confused, so she drew a picture on "
    "the board and everyone finally understood what she meant.",
    "I have been thinking about changing jobs for a while now, because the commute takes almost two hours every "
    "day and I would like to spend more time at home with my family.",
]
VOICES = ("en-us", "en-gb")


# ---- text ----------------------------------------------------------------------------------------
def normalise(text: str) -> list[str]:
    text = text.lower().replace("\u2019", "'")
    return re.findall(r"[a-z0-9']+", text)


def edit_distance(ref: list[str], hyp: list[str]) -> int:
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        prev, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (r != h))
    return row[-1]


def hallucinated(hyp: list[str], ref: list[str] | None, raw: str = "") -> bool:
    """A word 3 times in a row, a phrase of 2+ words twice in a row, a run of bare punctuation
    (". . ."), no truth word at all, or more than twice the truth's words + 3."""
    if any(hyp[i] == hyp[i + 1] == hyp[i + 2] for i in range(len(hyp) - 2)):
        return True
    if any(hyp[i:i + n] == hyp[i + n:i + 2 * n] for n in range(2, len(hyp) // 2 + 1) for i in range(len(hyp) - 2 * n + 1)):
        return True
    if re.search(r"(?:[.,!?]\s+){2,}[.,!?]", raw):
        return True
    if ref is None or not hyp:
        return False
    return not (set(hyp) & set(ref)) or len(hyp) > 2 * len(ref) + 3


# ---- windows -------------------------------------------------------------------------------------
def to_16k(audio: np.ndarray, sr: int) -> np.ndarray:
    import librosa

    if audio.ndim > 1:
        audio = audio.mean(1)
    return librosa.resample(audio.astype(np.float32), orig_sr=sr, target_sr=16000).astype(np.float32)


def ravdess_windows(per_actor: int, seed: int = 0) -> list[dict]:
    import soundfile as sf

    folder = SHARED / "ravdess_speech"
    rows = list(csv.DictReader(open(folder / "labels.csv")))
    rng = np.random.default_rng(seed)
    out = []
    for actor in sorted({r["actor"] for r in rows}):
        mine = [r for r in rows if r["actor"] == actor]
        order = rng.permutation(len(mine))
        chosen, seen = [], set()
        for i in order:                                 # every emotion once first
            if mine[i]["emotion"] not in seen:
                seen.add(mine[i]["emotion"])
                chosen.append(i)
        chosen += [i for i in order if i not in chosen][: max(0, per_actor - len(chosen))]
        for i in chosen[:per_actor]:
            audio, sr = sf.read(str(folder / mine[i]["path"]), dtype="float32")
            out.append({"corpus": "ravdess", "id": mine[i]["path"], "audio": to_16k(audio, sr),
                        "truth": mine[i]["statement"], "emotion": mine[i]["emotion"]})
    return out


def espeak_windows(folder: Path) -> list[dict]:
    import soundfile as sf

    out = []
    for voice in VOICES:
        for k, text in enumerate(SENTENCES):
            wav = folder / "s.wav"
            subprocess.run([shutil.which("espeak-ng"), "-v", voice, "-s", "150", "-w", str(wav), text], check=True)
            audio, sr = sf.read(str(wav), dtype="float32")
            audio = np.pad(audio, (int(0.2 * sr), int(0.2 * sr)))
            out.append({"corpus": "espeak", "id": f"{voice}/{k:02d}", "audio": to_16k(audio, sr), "truth": text})
    return out


def demo_windows() -> list[dict]:
    from moodlens.core.assets import DEMO_CLIP, resolve_path
    from moodlens.realtime.capture.media import read_media
    from moodlens.realtime.perception.vad import split_utterances

    path = resolve_path(DEMO_CLIP)
    sentences = json.loads(Path(path).with_suffix(".json").read_text())["sentences"]
    audio = read_media(path).audio
    out = []
    for s, e in split_utterances(audio):
        # the truth is the sentence the window overlaps most
        best = max(sentences, key=lambda x: min(e, x["end"]) - max(s, x["start"]))
        out.append({"corpus": "demo", "id": f"{s:.2f}-{e:.2f}", "audio": audio[int(s * 16000):int(e * 16000)],
                    "truth": best["text"]})
    return out


def clip_windows() -> list[dict]:
    from moodlens.realtime.capture.media import read_media

    return [{"corpus": "clips", "id": p.name, "audio": read_media(p).audio, "truth": None}
            for p in sorted((SHARED / "clips").glob("*.mp4"))]


# ---- statistics ----------------------------------------------------------------------------------
def bootstrap_diff(errors: np.ndarray, base: np.ndarray, words: np.ndarray, n: int = 2000, seed: int = 0):
    """95 % percentile CI of WER(errors) - WER(base), windows resampled with replacement (paired)."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(words), size=(n, len(words)))
    diffs = (errors[idx].sum(1) - base[idx].sum(1)) / np.maximum(words[idx].sum(1), 1)
    return float(np.percentile(diffs, 2.5)), float(np.percentile(diffs, 97.5))


LONG = [(-1, 7), (-2, 4), (-3, 5), (-5, 3)]   # SENTENCES indices joined into one window


def long_check(cpu_threads: int) -> int:
    from moodlens.realtime.perception.asr import AsrOptions, Transcriber

    SENTENCES[:] = [SENTENCES[a] + " " + SENTENCES[b] for a, b in LONG]
    with tempfile.TemporaryDirectory() as tmp:
        windows = espeak_windows(Path(tmp))
    print(uptime())
    trs = {p: Transcriber(AsrOptions(whisper_input=p, word_timestamps=False, cpu_threads=cpu_threads)) for p in ("30s", "15s")}
    errors, words = {p: 0 for p in trs}, 0
    for w in windows:
        ref = normalise(w["truth"])
        words += len(ref)
        for p, tr in trs.items():
            t = tr.transcribe(w["audio"], keep_encoder_states=True)
            e = edit_distance(ref, normalise(t.text))
            errors[p] += e
            print(f"{len(w['audio']) / 16000:.1f} s {p}: {e} word errors, hallucinated "
                  f"{hallucinated(normalise(t.text), ref, t.text)}, {t.elapsed_s * 1000:.0f} ms", flush=True)
    print(f"word errors of {words}: {errors}; {uptime()}")
    return 0


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-actor", type=int, default=10, help="RAVDESS clips per actor")
    parser.add_argument("--cpu-threads", type=int, default=2)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--long", action="store_true", help="only the 9.5-14.8 s windows, 30 s vs 15 s")
    args = parser.parse_args(argv)
    if shutil.which("espeak-ng") is None:
        print("Skipped: espeak-ng is not installed.")
        return 0
    if args.long:
        return long_check(args.cpu_threads)
    from moodlens.realtime.perception.asr import AsrOptions, Transcriber
    from moodlens.realtime.perception.features.whisper_states import content_frames, encoder_input_frames

    with tempfile.TemporaryDirectory() as tmp:
        windows = espeak_windows(Path(tmp))
    windows = ravdess_windows(args.per_actor) + windows + demo_windows() + clip_windows()
    start_load = uptime()
    print(f"{len(windows)} windows; {start_load}", flush=True)
    transcribers = {p: Transcriber(AsrOptions(word_timestamps=False, cpu_threads=args.cpu_threads, **change))
                    for p, change in VARIANTS.items()}
    for w in windows[:3]:                                # warm every policy's input sizes a little
        for tr in transcribers.values():
            tr.transcribe(w["audio"], keep_encoder_states=True)
    t_start = time.time()
    for k, w in enumerate(windows):
        w["text"], w["ms"] = {}, {}
        w["frames"] = {p: encoder_input_frames(content_frames(len(w["audio"])), VARIANTS[p]["whisper_input"])
                       for p in POLICIES}
        for p in (POLICIES if k % 2 == 0 else POLICIES[::-1]):   # alternate the order too
            t = transcribers[p].transcribe(w["audio"], keep_encoder_states=True)
            w["text"][p], w["ms"][p] = t.text, t.elapsed_s * 1000
        if k % 25 == 0:
            print(f"  {k}/{len(windows)} {time.time() - t_start:.0f} s", flush=True)
    end_load = uptime()

    report = {"load_before": start_load, "load_after": end_load, "windows": len(windows),
              "cpu_threads": args.cpu_threads, "corpora": {}, "policies": {}}
    for corpus in ("ravdess", "espeak", "demo", "clips"):
        ws = [w for w in windows if w["corpus"] == corpus]
        dur = [len(w["audio"]) / 16000 for w in ws]
        entry = {"windows": len(ws), "s_min": round(min(dur), 2), "s_median": round(float(np.median(dur)), 2),
                 "s_max": round(max(dur), 2), "policies": {}}
        truth = [normalise(w["truth"]) if w["truth"] else None for w in ws]
        for p in POLICIES:
            hyps = [normalise(w["text"][p]) for w in ws]
            row = {"ms_median": round(float(np.median([w["ms"][p] for w in ws])), 1),
                   "frames": sorted({w["frames"][p] for w in ws}),
                   "empty": sum(not h for h in hyps),
                   "hallucinated": sum(hallucinated(h, r, w["text"][p]) for h, r, w in zip(hyps, truth, ws)),
                   "same_as_30s": sum(w["text"][p] == w["text"]["30s"] for w in ws)}
            if truth[0] is not None:
                errors = np.array([edit_distance(r, h) for r, h in zip(truth, hyps)], float)
                words = np.array([len(r) for r in truth], float)
                row["wer"] = round(float(errors.sum() / words.sum()), 4)
                row["_errors"] = errors
                entry["_words"] = words
            entry["policies"][p] = row
        if truth[0] is not None:
            base = entry["policies"]["30s"]["_errors"]
            for p in POLICIES:
                row = entry["policies"][p]
                row["wer_diff"] = round(float((row["_errors"].sum() - base.sum()) / entry["_words"].sum()), 4)
                lo, hi = bootstrap_diff(row["_errors"], base, entry["_words"])
                row["wer_diff_ci95"] = [round(lo, 4), round(hi, 4)]
        if corpus == "demo":
            for p in POLICIES:
                lost = []
                for w, r in zip(ws, truth):
                    ref_words = set(r)
                    had = ref_words & set(normalise(w["text"]["30s"]))
                    missing = had - set(normalise(w["text"][p]))
                    if missing:
                        lost.append({"window": w["id"], "lost": sorted(missing), "text": w["text"][p]})
                entry["policies"][p]["demo_words_lost"] = lost
        entry["changed"] = [{"id": w["id"], "truth": w["truth"], **{p: w["text"][p] for p in POLICIES}}
                            for w in ws if len({w["text"][p] for p in POLICIES}) > 1]
        report["corpora"][corpus] = entry
    for p in POLICIES:
        report["policies"][p] = {"ms_median_all": round(float(np.median([w["ms"][p] for w in windows])), 1)}

    # the decision rule of the docstring
    def passes(p: str) -> tuple[bool, list[str]]:
        why = []
        for corpus in ("ravdess", "espeak"):
            row, base = report["corpora"][corpus]["policies"][p], report["corpora"][corpus]["policies"]["30s"]
            if row["wer_diff_ci95"][0] > 0 or row["wer_diff"] > 0.01:
                why.append(f"{corpus}: WER {row['wer_diff']:+.4f} CI {row['wer_diff_ci95']}")
            if row["empty"] + row["hallucinated"] > base["empty"] + base["hallucinated"] + 1:
                why.append(f"{corpus}: {row['empty']} empty + {row['hallucinated']} hallucinated")
        if report["corpora"]["demo"]["policies"][p]["demo_words_lost"]:
            why.append("demo words lost")
        return not why, why

    verdicts = {p: passes(p) for p in POLICIES}
    passing = [p for p in POLICIES if verdicts[p][0]]
    chosen = min(passing, key=lambda p: report["policies"][p]["ms_median_all"]) if passing else "30s"
    report["decision"] = {"chosen": chosen, "why_not": {p: v[1] for p, v in verdicts.items() if not v[0]}}

    # printed table
    print(f"\nload: before `{start_load}`\n      after  `{end_load}`\n")
    print("| policy | " + " | ".join(f"{c} WER (Δ vs 30 s, 95 % CI)" for c in ("ravdess", "espeak"))
          + " | demo WER, words lost | clips same as 30 s | empty / halluc. (R, E, D, C) | ms/window median (R, E, all) |")
    print("|---" * 7 + "|")
    for p in POLICIES:
        c = report["corpora"]
        cells = []
        for corpus in ("ravdess", "espeak"):
            row = c[corpus]["policies"][p]
            cells.append(f"{row['wer']:.3f} ({row['wer_diff']:+.3f}, [{row['wer_diff_ci95'][0]:+.3f}, "
                         f"{row['wer_diff_ci95'][1]:+.3f}])")
        d = c["demo"]["policies"][p]
        cells.append(f"{d['wer']:.3f}, {len(d['demo_words_lost'])}")
        cells.append(f"{c['clips']['policies'][p]['same_as_30s']}/{c['clips']['windows']}")
        cells.append(", ".join(f"{c[k]['policies'][p]['empty']}/{c[k]['policies'][p]['hallucinated']}"
                               for k in ("ravdess", "espeak", "demo", "clips")))
        cells.append(f"{c['ravdess']['policies'][p]['ms_median']:.0f}, {c['espeak']['policies'][p]['ms_median']:.0f}, "
                     f"{report['policies'][p]['ms_median_all']:.0f}")
        print(f"| {p} | " + " | ".join(cells) + " |")
    print(f"\ndecision: {json.dumps(report['decision'])}")
    for corpus in ("ravdess", "espeak", "demo", "clips"):
        e = report["corpora"][corpus]
        print(f"{corpus}: {e['windows']} windows, {e['s_min']}-{e['s_max']} s (median {e['s_median']}); "
              f"{len(e['changed'])} with any policy's text different")
    if args.json:
        for e in report["corpora"].values():
            e.pop("_words", None)
            for row in e["policies"].values():
                row.pop("_errors", None)
        report["per_window"] = [{k: w[k] for k in ("corpus", "id", "truth", "text", "ms", "frames")} for w in windows]
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    sys.exit(main())
