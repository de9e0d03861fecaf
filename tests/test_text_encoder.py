"""The text encoder is transformers' AutoModel: checkpoints with the hand-written encoder's keys load (the shipped
weights carried over within 4.8e-7 at f4b2289, before they were retrained), any HF encoder folder loads,
the trainer's frozen-layer replay matches a plain forward."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from moodlens.core.errors import AssetError
from moodlens.models import build_model
from moodlens.models.checkpoint import FORMAT, legacy_text_encoder_keys, model_from_payload
from moodlens.models.text_encoder import TextEncoder


def test_checkpoint_with_hand_written_encoder_keys_loads(tmp_path):
    torch.manual_seed(0)
    source = build_model("hcrl_mfd", {"text_encoder_trainable_layers": 2}).eval()
    state = source.checkpoint_state()
    tuned = [k for k in state if k.startswith("text_encoder.")]
    assert tuned and all(k.startswith("text_encoder.model.encoder.layer.") for k in tuned)
    old = {k.replace("text_encoder.model.", "text_encoder.", 1): v for k, v in state.items()}
    assert legacy_text_encoder_keys(old).keys() == state.keys()
    payload = {"format": FORMAT, "model_name": "hcrl_mfd", "model_config": dict(vars(source.config)),
               "featurizer_config": {}, "state_dict": old}
    path = tmp_path / "old.pt"
    torch.save(payload, path)
    from moodlens.models.checkpoint import read_checkpoint

    loaded = model_from_payload(*read_checkpoint(path)).eval()
    batch = source.example_inputs(3)
    with torch.no_grad():
        for a, b in zip(source(*batch.tensors()), loaded(*batch.tensors())):
            assert torch.equal(a, b)


def _tiny_folder(tmp_path, kind: str) -> Path:
    from transformers import AutoModel, BertConfig, DistilBertConfig, RobertaConfig

    config = {"bert": BertConfig, "roberta": RobertaConfig, "distilbert": DistilBertConfig}[kind]
    kwargs = dict(vocab_size=120, max_position_embeddings=40)
    if kind == "distilbert":
        kwargs.update(dim=32, hidden_dim=64, n_layers=3, n_heads=2)
    else:
        kwargs.update(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=2)
    folder = tmp_path / kind
    AutoModel.from_config(config(**kwargs)).save_pretrained(folder)
    return folder


@pytest.mark.parametrize("kind", ["bert", "roberta", "distilbert"])
def test_any_hugging_face_encoder_folder_loads(tmp_path, kind):
    folder = _tiny_folder(tmp_path, kind)
    encoder = TextEncoder(str(folder), trainable_layers=1).eval()
    assert encoder.hidden_size == 32 and len(encoder.layers) == 3
    ids = torch.randint(5, 100, (2, 7))
    mask = torch.tensor([[True] * 7, [True] * 4 + [False] * 3])
    out = encoder(ids, mask)
    assert out.shape == (2, 7, 32) and torch.isfinite(out).all()
    # real tokens do not depend on what sits in the padding
    ids2 = ids.clone()
    ids2[1, 4:] = 7
    assert torch.allclose(encoder(ids2, mask)[1, :4], out[1, :4], atol=1e-5)
    # only the top layer is trainable, and only it is kept in checkpoints
    trainable = {n for n, p in encoder.named_parameters() if p.requires_grad}
    assert trainable and all(f".{encoder._layers_name.split('.')[-1]}.2." in n for n in trainable)
    frozen = tuple(encoder.frozen_prefixes())
    assert {k for k in encoder.state_dict() if not k.startswith(frozen)} == trainable


def test_a_folder_without_weights_is_one_sentence(tmp_path):
    folder = _tiny_folder(tmp_path, "bert")
    for f in folder.glob("model.safetensors"):
        f.unlink()
    with pytest.raises(AssetError, match="no model.safetensors"):
        TextEncoder(str(folder))


def test_frozen_layer_replay_matches_the_plain_forward():
    from moodlens.train.trainer import FrozenTextCache

    encoder = TextEncoder(None, trainable_layers=2).eval()
    ids = torch.randint(1000, 5000, (3, 9))
    mask = torch.arange(9)[None] < torch.tensor([9, 5, 3])[:, None]
    with torch.no_grad():
        plain = encoder(ids, mask)
        with FrozenTextCache(encoder) as cache:
            assert cache.active
            cached = encoder(ids, mask)
            again = encoder(ids, mask)
    for out in (cached, again):
        assert torch.allclose(out[mask], plain[mask], atol=1e-5)


def test_a_tokenizer_without_tokenizer_json_loads_through_autotokenizer(tmp_path):
    """A RoBERTa-style folder (vocab.json + merges.txt only): transformers' AutoTokenizer reads it."""
    from moodlens.realtime.perception.features.text import TextFeaturizer

    folder = _tiny_folder(tmp_path, "roberta")
    symbols = ["<s>", "<pad>", "</s>", "<unk>", "h", "i", "Ġ", "t", "e", "r", "hi", "Ġt", "Ġth", "he", "Ġthe", "th"]
    (folder / "vocab.json").write_text(json.dumps({s: i for i, s in enumerate(symbols)}))
    (folder / "merges.txt").write_text("#version: 0.2\nh i\nĠ t\nĠt h\nh e\nt h\nĠth e\n")
    featurizer = TextFeaturizer(str(folder), max_len=10)
    enc = featurizer.encode(["hi the"])
    ids = enc.ids[0][enc.mask[0]].tolist()
    assert ids[0] == 0 and ids[-1] == 2 and symbols.index("hi") in ids and symbols.index("Ġthe") in ids


def test_loading_prints_nothing(capfd):
    """transformers' progress bar and load report would paint over the dashboard."""
    TextEncoder(None)
    captured = capfd.readouterr()
    assert captured.err == "" and captured.out == ""


@pytest.mark.parametrize("asked", ["bert-base-uncased", "/no/such/models/bert-base-uncased"])
def test_a_missing_configured_encoder_is_named_as_asked_not_as_the_default(asked, monkeypatch):
    """A paper config asks for bert-base-uncased: the sentence names that path, never MiniLM (the default)."""
    monkeypatch.delenv("MOODLENS_TEXT_ENCODER", raising=False)
    with pytest.raises(AssetError) as err:
        build_model("dlf", {"text_encoder": asked})
    message = " ".join(str(err.value).split())
    assert f"'{asked}'" in message and "text encoder" in message
    assert "MiniLM" not in message
    # the environment variable's sentence names the text encoder generically too
    monkeypatch.setenv("MOODLENS_TEXT_ENCODER", asked)
    with pytest.raises(AssetError) as err:
        TextEncoder(None, load_weights=False)
    assert "MiniLM" not in str(err.value) and asked in str(err.value)
