"""Paper evaluation protocols, for every model of the zoo.

Missing-rate sweep (DAR §4.2, after LNLN): at each rate r (DAR: 0.0 to 0.9 in steps of 0.1) erase
round(r · n) randomly chosen real positions of every test input, per present modality and with the
same rate for every modality: text tokens become [UNK] (the special tokens [CLS]/[SEP]/[PAD] stay),
audio and vision frames become zeros. Erased positions stay valid (the model sees the zeros and
[UNK]s, as in the paper), absent modalities are untouched. The erasure is seeded (one draw per rate,
the same for every model), so two models are compared on the same erased inputs. Metrics per rate
and their mean over rates, which is what DAR's Table 1 reports (also averaged over 3 seeds).

The erasure itself is DAR's training erasure (`moodlens.models.dar.random_erasure`), so training
and testing erase by the same rule.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import torch

from moodlens.models.dar import SPECIAL_TOKEN_IDS, UNK_TOKEN_ID, random_erasure
from moodlens.core.errors import ConfigError

DAR_RATES = "0.0:0.9:0.1"


def parse_rates(spec: str | list | tuple) -> list[float]:
    """'START:STOP:STEP' (inclusive of STOP, e.g. 0.0:0.9:0.1 -> 10 rates) or a comma list '0,0.3,0.6'."""
    if isinstance(spec, (list, tuple)):
        rates = [float(r) for r in spec]
    else:
        text = str(spec).strip()
        try:
            if ":" in text:
                parts = [float(p) for p in text.split(":")]
                if len(parts) != 3 or parts[2] <= 0:
                    raise ValueError
                start, stop, step = parts
                count = int(math.floor((stop - start) / step + 1e-6)) + 1
                rates = [round(start + i * step, 10) for i in range(max(count, 0))]
            else:
                rates = [float(p) for p in text.split(",") if p.strip()]
        except ValueError:
            raise ConfigError(f"--missing-rates '{spec}' is not START:STOP:STEP (e.g. {DAR_RATES}) "
                              "or a comma-separated list of rates.") from None
    if not rates:
        raise ConfigError(f"--missing-rates '{spec}' gives no rate.")
    bad = [r for r in rates if not 0.0 <= r <= 1.0]
    if bad:
        raise ConfigError(f"--missing-rates '{spec}': rate {bad[0]} is outside 0..1.")
    return rates


def text_token_ids(text_encoder: str | None, text_max_len: int = 50) -> tuple[int, tuple[int, ...]]:
    """([UNK] id, ids never erased) of the model's tokenizer (BERT uncased: 100 and 0/101/102)."""
    from moodlens.train.data import DataOptions, _tokenizer

    tokenizer = _tokenizer(DataOptions(text_encoder=text_encoder, text_max_len=text_max_len)).tokenizer
    unk = tokenizer.token_to_id("[UNK]")
    specials = tuple(i for i in (tokenizer.token_to_id(t) for t in ("[PAD]", "[CLS]", "[SEP]")) if i is not None)
    return (UNK_TOKEN_ID if unk is None else int(unk)), (specials or SPECIAL_TOKEN_IDS)


def rate_generator(seed: int, rate: float) -> torch.Generator:
    """One seeded draw per (seed, rate): the same erased inputs for every model and every run."""
    return torch.Generator().manual_seed(int(seed) * 1_000_003 + int(round(rate * 1000)))


def erase_split(split, rate: float, seed: int = 0, unk_token_id: int = UNK_TOKEN_ID,
                special_ids: tuple[int, ...] = SPECIAL_TOKEN_IDS):
    """A copy of `split` with `rate` of every present modality's real positions erased."""
    if rate <= 0.0:
        return split
    erased, _ = random_erasure(split.batch, rate, unk_token_id, rate_generator(seed, rate), special_ids)
    return replace(split, batch=erased)


def evaluate_missing_rates(model, split, rates, metric_dataset: str = "mosi", batch_size: int = 128,
                           device="cpu", amp: bool = False, seed: int = 0, unk_token_id: int | None = None,
                           special_ids: tuple[int, ...] | None = None) -> dict:
    """{"by_missing_rate": [{"rate": r, <metric>: value, ...}, ...], "mean": {<metric>: mean over rates}}."""
    from moodlens.train.metrics import metric_names
    from moodlens.train.trainer import evaluate_split

    if unk_token_id is None or special_ids is None:
        config = model.config
        found_unk, found_specials = text_token_ids(config.text_encoder, config.text_max_len)
        unk_token_id = found_unk if unk_token_id is None else unk_token_id
        special_ids = found_specials if special_ids is None else special_ids
    names = metric_names(metric_dataset)
    rows = []
    for rate in parse_rates(rates):
        metrics, _ = evaluate_split(model, erase_split(split, rate, seed, unk_token_id, special_ids),
                                    metric_dataset, batch_size, device, amp)
        rows.append({"rate": rate, **{k: metrics[k] for k in names}})
    mean = {k: float(np.nanmean([row[k] for row in rows])) if any(not math.isnan(row[k]) for row in rows)
            else float("nan") for k in names}
    return {"by_missing_rate": rows, "mean": mean, "erasure_seed": seed}


def mean_over_seeds(runs: list[list[dict]]) -> list[dict]:
    """Per-rate mean of several seeds' by_missing_rate lists (same rates in the same order)."""
    out = []
    for rows in zip(*runs):
        out.append({"rate": rows[0]["rate"], **{k: float(np.mean([r[k] for r in rows]))
                                                 for k in rows[0] if k != "rate"}})
    return out
