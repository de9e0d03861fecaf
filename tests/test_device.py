"""One device decision (models/device.py) for scoring, bench, training and evaluation."""

import pytest
import torch

from moodlens.core.errors import BackendError, ConfigError
from moodlens.models.device import resolve_device


def test_auto_follows_what_torch_sees():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    assert resolve_device(None).type == expected


def test_unknown_and_unsupported_devices_are_one_sentence():
    with pytest.raises(ConfigError, match="Unknown device 'gpu0'"):
        resolve_device("gpu0")
    with pytest.raises(ConfigError, match="not supported"):
        resolve_device("meta")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a CUDA GPU")
def test_cuda_without_a_gpu_is_refused():
    with pytest.raises(BackendError, match="no CUDA GPU is visible"):
        resolve_device("cuda")


def test_model_fingerprint_takes_scalar_buffers_and_sees_their_value():
    from moodlens.realtime.scoring.backends import model_fingerprint

    class WithScalar(torch.nn.Module):
        def __init__(self, value):
            super().__init__()
            self.register_buffer("scale", torch.tensor(value))   # a 0-d buffer (a stored statistic)

    assert model_fingerprint(WithScalar(1.0)) != model_fingerprint(WithScalar(2.0))
