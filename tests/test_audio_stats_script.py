"""scripts/recompute_audio_stats.py writes the default audio statistics back into the featurizer config."""

from __future__ import annotations

import importlib.util
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("recompute_audio_stats", REPO / "scripts" / "recompute_audio_stats.py")
script = importlib.util.module_from_spec(spec)
spec.loader.exec_module(script)


def test_rewriting_the_shipped_statistics_reproduces_the_config_file():
    from moodlens.realtime.perception.features import config

    text = script.CONFIG.read_text()
    assert script.rewrite(text, list(config.DEFAULT_AUDIO_MEAN), list(config.DEFAULT_AUDIO_STD)) == text


def test_new_statistics_replace_only_the_block(tmp_path):
    from moodlens.realtime.perception.features import config

    text = script.CONFIG.read_text()
    n = len(config.DEFAULT_AUDIO_MEAN)
    new = script.rewrite(text, [1.5] * n, [0.25] * n)
    namespace: dict = {}
    start, end = new.index("# BEGIN AUDIO STATS"), new.index("# END AUDIO STATS")
    exec(new[new.index("\n", start) + 1:end], namespace)
    assert namespace["DEFAULT_AUDIO_MEAN"] == (1.5,) * n and namespace["DEFAULT_AUDIO_STD"] == (0.25,) * n
    assert new[:start] == text[:start] and new[end:] == text[text.index("# END AUDIO STATS"):]
