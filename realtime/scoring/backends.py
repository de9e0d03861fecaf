"""Scoring backends behind one interface: eager PyTorch, torch.compile, ONNX Runtime, TensorRT.

    backend = create_backend("auto", model, device="cpu")     # prints nothing; see `.reason`
    out = backend(batch)                                      # SentimentOutput of CPU tensors

Every backend takes a `MultimodalBatch` of any batch size and sequence lengths and returns the
model's `SentimentOutput` on the CPU. Backends that build shape-specialised artifacts (compile,
tensorrt) pad lengths up to a few buckets first (masks keep the result exact) so a window reuses
an artifact built for an earlier one; `builds` counts how many artifacts were actually built.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import shutil
import threading
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from moodlens.models.device import resolve_device  # noqa: F401  (re-exported: scorer and bench import it here)
from moodlens.models.batch import MAX_SEQ_LEN, MAX_TEXT_LEN, MultimodalBatch, SentimentOutput
from moodlens.core.options import Options, configs_root, read_yaml
from moodlens.core.errors import BackendError, ConfigError
from moodlens.core.schema import BACKEND_CHOICES, BACKEND_NAMES  # noqa: F401  (BACKEND_CHOICES: public here too)

log = logging.getLogger(__name__)

TENSORRT_INSTALL = "pip install torch-tensorrt --extra-index-url https://pypi.nvidia.com"
# Output names differ from the input names (ONNX forbids a name defined twice).
OUTPUT_NAMES = ("score_fused", "score_text", "score_audio", "score_vision")


# The weight MatMuls of a BERT-like layer, as `int8_float_matmuls` names them, by the module that runs them.
MATMUL_KINDS = {"query": "attention.self.query", "key": "attention.self.key", "value": "attention.self.value",
                "attn_out": "attention.output.dense", "ffn_in": "intermediate.dense", "ffn_out": "output.dense"}


# ---- options ---------------------------------------------------------------------------------
@dataclass
class Buckets:
    batch: list[int] = field(default_factory=lambda: [1, 2, 4, 8, 16, 32, 64])
    text: list[int] = field(default_factory=lambda: [16, 32, 64])
    audio: list[int] = field(default_factory=lambda: [32, 64, 128, 256, 512, 1024])
    vision: list[int] = field(default_factory=lambda: [16, 32, 64, 128, 256, 512])


@dataclass
class TypicalWindow:
    seconds: float = 3.0
    text_tokens: int = 20
    audio_frames_per_second: float = 25.0
    vision_frames_per_second: float = 15.0


@dataclass
class AutoOrder:
    cuda: list[str] = field(default_factory=lambda: ["tensorrt", "compile", "onnxruntime", "eager"])
    cpu: list[str] = field(default_factory=lambda: ["onnxruntime", "compile", "eager"])


@dataclass
class CompileOptions:
    cuda_graphs: bool = True
    freeze_weights_cpu: bool = True


@dataclass
class ShapeDims:
    batch: int = 1
    text: int = 2
    audio: int = 2
    vision: int = 2


@dataclass
class TensorRTOptions:
    fp16: bool = True
    min_shape: ShapeDims = field(default_factory=ShapeDims)
    opt_shape: ShapeDims = field(default_factory=lambda: ShapeDims(1, 32, 128, 64))
    max_shape: ShapeDims = field(default_factory=lambda: ShapeDims(64, 64, 1024, 512))
    workspace_gb: float = 2.0


@dataclass
class OnnxRuntimeOptions:
    opset: int = 23
    # The CUDA execution provider's file: opset 23's Attention node there has not been run (no GPU lent), so
    # CUDA keeps the opset it was written against.
    opset_cuda: int = 18
    # Graph optimizations ONNX Runtime applies when it loads the file: disable | basic | extended | all.
    optimization_level: str = "all"
    # "int8" (CPU execution provider only): dynamic int8 quantization (onnxruntime.quantization, per output
    # channel, activations quantized at run time) of the weight MatMuls of the text encoder only (MiniLM/BERT:
    # 60 % of the model's time, the rest stays float), after SmoothQuant smoothing (int8_smoothing_alpha).
    # Kept only while it stays within `int8_parity` of the float model, checked on a random batch and the
    # typical window when the file is built, then on live windows: the first `int8_shadow_windows` windows
    # and every `int8_recheck_every`-th after them are also run by the float model, whose result is the one
    # returned; one window over the bound switches the session back to the float model for good.
    quantize: str = "int8"
    int8_parity: float = 0.15
    int8_shadow_windows: int = 20
    int8_recheck_every: int = 50
    # SmoothQuant alpha (Xiao et al. 2023, eq. 4; realtime/scoring/smoothing.py) applied to a copy of the
    # text encoder before int8: 0 = no smoothing, else 0 < alpha < 1 (chosen on MOSI train parity).
    int8_smoothing_alpha: float = 0.7
    # Text-encoder MatMuls left float in the int8 file, "<layer>.<kind>" (kind: query, key, value,
    # attn_out, ffn_in, ffn_out), e.g. "1.ffn_out".
    int8_float_matmuls: list[str] = field(default_factory=lambda: ["0.ffn_out", "1.ffn_out", "2.ffn_out"])
    # ONNX Runtime graph rewrites not applied at load (their names, as InferenceSession's
    # disabled_optimizers takes them): SkipLayerNormFusion because its CPU kernel (1.32) took ~35 us per
    # (20, 384) call where Add + LayerNormalization take ~9 (docs/benchmarks.md, session 4).
    disabled_optimizers: list[str] = field(default_factory=lambda: ["SkipLayerNormFusion"])
    # Session config entries (ONNX Runtime's onnxruntime_session_options_config_keys.h), e.g.
    # {"session.intra_op.allow_spinning": "0"}; values are strings.
    session_config: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.optimization_level not in ("disable", "basic", "extended", "all"):
            raise ConfigError(f"onnxruntime.optimization_level must be disable, basic, extended or all, "
                              f"not '{self.optimization_level}'.")
        if self.quantize not in ("none", "int8"):
            raise ConfigError(f"onnxruntime.quantize must be none or int8, not '{self.quantize}'.")
        if not self.int8_parity > 0:
            raise ConfigError(f"onnxruntime.int8_parity must be positive, not {self.int8_parity}.")
        if self.int8_shadow_windows < 0 or self.int8_recheck_every < 0:
            raise ConfigError("onnxruntime.int8_shadow_windows and int8_recheck_every must not be negative.")
        if not (self.int8_smoothing_alpha == 0 or 0 < self.int8_smoothing_alpha < 1):
            raise ConfigError(f"onnxruntime.int8_smoothing_alpha must be 0 (off) or between 0 and 1, "
                              f"not {self.int8_smoothing_alpha}.")
        if not all(isinstance(k, str) and isinstance(v, (str, int, float)) for k, v in self.session_config.items()):
            raise ConfigError("onnxruntime.session_config must map ONNX Runtime config keys to values.")
        for name in self.int8_float_matmuls:
            layer, _, kind = str(name).partition(".")
            if not layer.isdigit() or kind not in MATMUL_KINDS:
                raise ConfigError(f"onnxruntime.int8_float_matmuls entry '{name}' must be <layer>.<kind> with kind one "
                                  f"of {', '.join(MATMUL_KINDS)} (for example '1.ffn_out').")


@dataclass
class BackendOptions(Options):
    """configs/live/backends.yaml as a dataclass (see that file for what each key means)."""

    cache_dir: str | None = None
    cpu_threads: int = 1
    buckets: Buckets = field(default_factory=Buckets)
    typical_window: TypicalWindow = field(default_factory=TypicalWindow)
    warmup_seconds: list[float] = field(default_factory=lambda: [3.0])
    auto_order: AutoOrder = field(default_factory=AutoOrder)
    compile: CompileOptions = field(default_factory=CompileOptions)
    tensorrt: TensorRTOptions = field(default_factory=TensorRTOptions)
    onnxruntime: OnnxRuntimeOptions = field(default_factory=OnnxRuntimeOptions)

    @classmethod
    def load(cls, path: str | Path | None = None) -> "BackendOptions":
        path = Path(path) if path else configs_root() / "live" / "backends.yaml"
        values = read_yaml(path) if path.exists() else {}
        return cls.from_dict(values, str(path))

    def check(self, source: str = "backend options") -> None:
        for f in fields(Buckets):
            sizes = getattr(self.buckets, f.name)
            if not sizes or any(not isinstance(s, int) or s < 1 for s in sizes) or sorted(sizes) != list(sizes):
                raise ConfigError(f"{source}: buckets.{f.name} must be a rising list of positive whole numbers.")
        for device in ("cuda", "cpu"):
            for name in getattr(self.auto_order, device):
                if name not in BACKEND_NAMES:
                    raise ConfigError(f"{source}: auto_order.{device} names unknown backend '{name}' "
                                      f"(known: {', '.join(BACKEND_NAMES)}).")
        t = self.tensorrt
        for f in fields(ShapeDims):
            lo, opt, hi = (getattr(s, f.name) for s in (t.min_shape, t.opt_shape, t.max_shape))
            if not 1 <= lo <= opt <= hi:
                raise ConfigError(f"{source}: tensorrt {f.name} shapes must satisfy 1 <= min <= opt <= max "
                                  f"(got {lo}, {opt}, {hi}).")

    def resolved_cache_dir(self) -> Path:
        if self.cache_dir:
            return Path(self.cache_dir).expanduser()
        env = os.environ.get("MOODLENS_CACHE_DIR")
        if env:
            return Path(env).expanduser()
        return Path.home() / ".cache" / "moodlens" / "engines"


# ---- shape bucketing -------------------------------------------------------------------------
def bucket_size(n: int, sizes: list[int], limit: int) -> int:
    """The smallest bucket >= n; past the last bucket, the next multiple of it (capped at `limit`)."""
    for size in sizes:
        if n <= size:
            return min(size, limit)
    last = sizes[-1]
    return min(-(-n // last) * last, limit)


def pad_to(t: torch.Tensor, dim: int, size: int, value=0) -> torch.Tensor:
    n = t.shape[dim]
    if n == size:
        return t
    if n > size:  # only past the model's positional limit: keep the first `size` steps
        return t.narrow(dim, 0, size)
    pad_shape = list(t.shape)
    pad_shape[dim] = size - n
    return torch.cat([t, torch.full(pad_shape, value, dtype=t.dtype, device=t.device)], dim=dim)


def bucketed_shape(batch: MultimodalBatch, buckets: Buckets) -> tuple[int, int, int, int]:
    return (bucket_size(batch.batch_size, buckets.batch, 1 << 30),
            bucket_size(batch.text_ids.shape[1], buckets.text, MAX_TEXT_LEN),
            bucket_size(batch.audio.shape[1], buckets.audio, MAX_SEQ_LEN),
            bucket_size(batch.vision.shape[1], buckets.vision, MAX_SEQ_LEN))


def pad_batch(batch: MultimodalBatch, shape: tuple[int, int, int, int]) -> MultimodalBatch:
    """Pad `batch` to (B, Lt, La, Lv). Padded steps are masked out; padded rows repeat row 0
    (a valid sample, so no all-empty row can produce NaN) and are dropped from the output."""
    b, lt, la, lv = shape
    padded = MultimodalBatch(
        text_ids=pad_to(batch.text_ids, 1, lt),
        text_mask=pad_to(batch.text_mask, 1, lt, False),
        audio=pad_to(batch.audio, 1, la),
        audio_mask=pad_to(batch.audio_mask, 1, la, False),
        vision=pad_to(batch.vision, 1, lv),
        vision_mask=pad_to(batch.vision_mask, 1, lv, False),
        present=batch.present,
    )
    extra = b - batch.batch_size
    if extra > 0:
        rows = torch.zeros(extra, dtype=torch.long)
        padded = MultimodalBatch.cat([padded, padded.index(rows)])
    return padded


def typical_batch(model: torch.nn.Module, batch_size: int, seconds: float, window: TypicalWindow,
                  audio_fps: float | None = None, vision_fps: float | None = None, seed: int = 0) -> MultimodalBatch:
    """A batch shaped like real utterance windows of `seconds`, all modalities present."""
    audio_fps = audio_fps or window.audio_frames_per_second
    vision_fps = vision_fps or window.vision_frames_per_second
    tokens = max(2, round(window.text_tokens * seconds / max(window.seconds, 1e-6)))
    batch = model.example_inputs(batch_size, text_len=min(tokens, MAX_TEXT_LEN),
                                 audio_len=max(2, round(seconds * audio_fps)),
                                 vision_len=max(2, round(seconds * vision_fps)), seed=seed)
    # example_inputs makes ragged lengths; a typical live window is one full utterance per row.
    full = MultimodalBatch(batch.text_ids, torch.ones_like(batch.text_mask), batch.audio,
                           torch.ones_like(batch.audio_mask), batch.vision, torch.ones_like(batch.vision_mask),
                           batch.present)
    ids = torch.where(full.text_mask, full.text_ids, torch.full_like(full.text_ids, 1000))
    return full.replace(text_ids=ids)


# ---- model identity (cache keys) -------------------------------------------------------------
def model_fingerprint(model: torch.nn.Module) -> str:
    """sha256 over the model's class, config and every weight: the cache key for exported files."""
    h = hashlib.sha256()
    h.update(type(model).__module__.encode() + b"." + type(model).__qualname__.encode())
    config = getattr(model, "config", None)
    if config is not None:
        try:
            import dataclasses

            h.update(json.dumps(dataclasses.asdict(config), sort_keys=True, default=str).encode())
        except TypeError:
            h.update(repr(config).encode())
    for name, tensor in model.state_dict().items():
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")  # reshape: 0-d buffers too
    h.update(torch.__version__.encode())
    return h.hexdigest()[:20]


MAX_CACHED_EXPORTS = 8  # each export is the size of the model (~100 MB for hcrl_mfd)


def prune_cache(folder: Path, pattern: str, keep: int) -> None:
    """Delete all but the `keep` most recently used files matching `pattern` in `folder`."""
    files = sorted(folder.glob(pattern), key=lambda p: p.stat().st_mtime, reverse=True)
    for old in files[keep:]:
        old.unlink(missing_ok=True)


# ---- availability ----------------------------------------------------------------------------
def availability(name: str, device: torch.device) -> tuple[bool, str]:
    """(available, reason). When unavailable, `reason` completes 'unavailable: ...' with what to install."""
    if name == "eager":
        return True, "plain PyTorch always runs"
    if name == "compile":
        if device.type == "cpu":
            compiler = os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++") or shutil.which("clang++")
            if not compiler:
                return False, "install a C++ compiler (e.g. `apt-get install g++`) for torch.compile's CPU code generator"
            return True, f"torch.compile (inductor, C++ via {Path(compiler).name})"
        if importlib.util.find_spec("triton") is None:
            return False, "install triton (`pip install triton`) for torch.compile on CUDA"
        return True, "torch.compile (inductor, triton kernels, CUDA graphs)"
    if name == "onnxruntime":
        if importlib.util.find_spec("onnxruntime") is None:
            return False, "install ONNX Runtime (`pip install onnxruntime`, or onnxruntime-gpu for CUDA)"
        if importlib.util.find_spec("onnxscript") is None:
            return False, "install onnxscript (`pip install onnxscript`), which torch.onnx.export(dynamo=True) needs"
        import onnxruntime as ort

        if device.type == "cuda" and "CUDAExecutionProvider" not in ort.get_available_providers():
            return False, "install onnxruntime-gpu (`pip install onnxruntime-gpu`) for its CUDA execution provider"
        provider = "CUDA" if device.type == "cuda" else "CPU"
        return True, f"ONNX Runtime {ort.__version__} with the {provider} execution provider"
    if name == "tensorrt":
        if importlib.util.find_spec("torch_tensorrt") is None:
            return False, (f"install torch-tensorrt (`{TENSORRT_INSTALL}`) on a machine with an NVIDIA GPU and CUDA")
        if not torch.cuda.is_available():
            return False, "install the CUDA build of PyTorch and run on a machine with an NVIDIA GPU (none is visible)"
        if device.type != "cuda":
            return False, "TensorRT runs only on CUDA; pass --device cuda"
        return True, "torch-tensorrt (dynamo IR, FP16 engine)"
    raise ConfigError(f"Unknown backend '{name}'; choose one of: {', '.join(BACKEND_CHOICES)}.")


def unavailable_sentence(name: str, reason: str) -> str:
    return f"The {name} backend is unavailable: {reason}."


def choose_auto(device: torch.device, options: BackendOptions) -> tuple[str, str]:
    """(backend name, one sentence explaining the choice) for `--backend auto`."""
    order = options.auto_order.cuda if device.type == "cuda" else options.auto_order.cpu
    skipped = []
    for name in order:
        ok, reason = availability(name, device)
        if ok:
            why = (f"auto chose {name} on {device.type}: it is the fastest available backend on {device.type} "
                   f"(order {' > '.join(order)}, measured in docs/benchmarks.md)")
            if skipped:
                why += "; skipped " + "; ".join(skipped)
            return name, why + "."
        skipped.append(f"{name} (unavailable: {reason})")
    return "eager", f"auto fell back to eager on {device.type}: " + "; ".join(skipped) + "."


# ---- backends --------------------------------------------------------------------------------
class Backend:
    """Runs one model. Subclasses build their artifact in `__init__` or lazily per shape bucket."""

    name = "base"
    static_shapes = False  # True: inputs are padded to shape buckets before running

    def __init__(self, model: torch.nn.Module, device: torch.device, options: BackendOptions):
        if device.type == "cpu" and options.cpu_threads > 0 and name_uses_torch_threads(self.name):
            # Process-wide: a batch-1 window is too small to gain from more threads, and spinning
            # worker threads collide with Whisper and the face tracker on a small CPU.
            torch.set_num_threads(options.cpu_threads)
        self.model = model.eval().to(device)
        self.device = device
        self.options = options
        self.builds = 0            # artifacts built (compiled graphs, exports, engines)
        self.build_seconds = 0.0
        self.cache_hits = 0        # artifacts loaded from the disk cache instead of built
        self.reason = ""           # why this backend was chosen (set by create_backend)
        self._lock = threading.Lock()

    def __call__(self, batch: MultimodalBatch) -> SentimentOutput:
        n = batch.batch_size
        if self.static_shapes:
            batch = pad_batch(batch, bucketed_shape(batch, self.options.buckets))
        with self._lock:  # compiled artifacts and ORT sessions are used from one thread at a time
            out = self.run(batch)
        return SentimentOutput(*(t[:n] for t in out))

    def run(self, batch: MultimodalBatch) -> SentimentOutput:
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        return {"backend": self.name, "device": str(self.device), "builds": self.builds,
                "build_s": round(self.build_seconds, 3), "cache_hits": self.cache_hits}


def name_uses_torch_threads(name: str) -> bool:
    return name in ("eager", "compile")


def _to_cpu(out) -> SentimentOutput:
    return SentimentOutput(*(t.detach().float().cpu() for t in out))


class EagerBackend(Backend):
    name = "eager"

    def run(self, batch):
        with torch.inference_mode():
            out = self.model(*batch.to(self.device).tensors())
        return _to_cpu(out)


class CompileBackend(Backend):
    """torch.compile with static shapes per bucket; CUDA graphs on GPU, weight freezing on CPU.
    A counting wrapper around inductor records each real graph build."""

    name = "compile"
    static_shapes = True

    def __init__(self, model, device, options):
        super().__init__(model, device, options)
        import torch._dynamo

        # One graph per bucket combination: let dynamo keep them all rather than fall back to eager.
        torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 256)
        if hasattr(torch._dynamo.config, "accumulated_cache_size_limit"):
            torch._dynamo.config.accumulated_cache_size_limit = max(
                torch._dynamo.config.accumulated_cache_size_limit, 1024)
        patches: dict[str, Any] = {}
        if device.type == "cuda" and options.compile.cuda_graphs:
            patches["triton.cudagraphs"] = True
        if device.type == "cpu" and options.compile.freeze_weights_cpu:
            patches["freezing"] = True
        self._patches = patches
        self.compiled = torch.compile(self.model, backend=self._counting_inductor, dynamic=False, fullgraph=False)

    def _counting_inductor(self, gm, example_inputs):
        from torch._inductor.compile_fx import compile_fx

        self.builds += 1
        return compile_fx(gm, example_inputs, config_patches=dict(self._patches))

    def run(self, batch):
        start = time.perf_counter()
        before = self.builds
        with torch.no_grad():
            out = self.compiled(*batch.to(self.device).tensors())
            if self.device.type == "cuda":
                # CUDA-graph outputs are overwritten by the next replay: copy them out now.
                out = SentimentOutput(*(t.clone() for t in out))
        if self.builds > before:
            self.build_seconds += time.perf_counter() - start
        return _to_cpu(out)


class OnnxRuntimeBackend(Backend):
    """ONNX exported with torch.onnx.export(dynamo=True) and dynamic batch/length dims, cached on
    disk under the model's weight hash, run by ONNX Runtime (CPU or CUDA execution provider)."""

    name = "onnxruntime"

    def __init__(self, model, device, options):
        super().__init__(model, device, options)

        self.path = self.export_path()
        if self.path.exists():
            self.cache_hits += 1
            os.utime(self.path)  # most recently used: kept when the cache is pruned
        else:
            start = time.perf_counter()
            self.export(self.path)
            self.builds += 1
            self.build_seconds += time.perf_counter() - start
        self.quantized = False
        self.parity: float | None = None         # int8 vs float on the check batches
        self.live_parity: float | None = None    # int8 vs float on the shadowed live windows
        self.shadow_checks = 0
        self.int8_rejected: str | None = None
        self.smoothing_float_diff: float | None = None   # smoothed float graph vs the float one
        self.calls = 0
        self.float_path = self.path
        self.session = self._session(self.path)
        self.input_names = [i.name for i in self.session.get_inputs()]
        if options.onnxruntime.quantize == "int8":
            if device.type == "cpu":
                self._use_int8()
            else:   # measured and checked on the CPU execution provider only (docs/benchmarks.md)
                log.info("onnxruntime.quantize int8 applies to the CPU execution provider; float on %s", device)

    def _session(self, path: Path, profile_prefix: str | None = None, optimized_path: Path | None = None):
        """An InferenceSession on `path` with the configured options (`profile_prefix`: ONNX Runtime's
        per-node profile is written there; `optimized_path`: the graph as optimized at load is saved there)."""
        import onnxruntime as ort

        o = self.options.onnxruntime
        so = ort.SessionOptions()
        for key, value in o.session_config.items():
            so.add_session_config_entry(key, str(value))
        if profile_prefix:
            so.enable_profiling, so.profile_file_prefix = True, profile_prefix
        if optimized_path:
            so.optimized_model_filepath = str(optimized_path)
        so.graph_optimization_level = {"disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
                                       "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
                                       "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
                                       "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}[o.optimization_level]
        so.log_severity_level = 3
        if self.device.type == "cpu" and self.options.cpu_threads > 0:
            so.intra_op_num_threads = self.options.cpu_threads
            so.inter_op_num_threads = 1
        providers = (["CUDAExecutionProvider", "CPUExecutionProvider"] if self.device.type == "cuda"
                     else ["CPUExecutionProvider"])
        try:
            return ort.InferenceSession(str(path), sess_options=so, providers=providers,
                                        disabled_optimizers=list(o.disabled_optimizers))
        except Exception as err:  # a corrupt cache file: one sentence, and the path to delete
            detail = str(err).splitlines()[0][-160:] if str(err) else type(err).__name__
            raise BackendError(f"ONNX Runtime could not load {path} ({detail}); "
                               "delete that file to re-export it.") from None

    def _use_int8(self) -> None:
        """Quantize the text encoder (smoothed first when int8_smoothing_alpha > 0; cached beside the
        float file) and switch to it if it keeps parity with the float model."""
        import logging

        o = self.options.onnxruntime
        kept = ("-f" + hashlib.sha256(",".join(sorted(o.int8_float_matmuls)).encode()).hexdigest()[:8]
                if o.int8_float_matmuls else "")
        source = self.path
        if o.int8_smoothing_alpha:
            smoothed = self._smoothed_path(o.int8_smoothing_alpha)
            qpath = smoothed.with_name(smoothed.stem + kept + "-int8text.onnx")
            if not qpath.exists():          # built (and checked) once; the int8 file alone is used after that
                source = self._smoothed_export(smoothed) or self.path
                if source == self.path:
                    qpath = self.path.with_name(self.path.stem + kept + "-int8text.onnx")
        else:
            qpath = self.path.with_name(self.path.stem + kept + "-int8text.onnx")
        if not qpath.exists():
            from onnxruntime.quantization import QuantType, quantize_dynamic

            nodes = text_encoder_matmuls(source, keep_float=o.int8_float_matmuls)
            if not nodes:
                log.warning("%s has no text-encoder MatMul to quantize; using the float model", source.name)
                return
            start = time.perf_counter()
            tmp = qpath.with_suffix(f".{os.getpid()}.tmp.onnx")
            root = logging.getLogger()
            level = root.level
            root.setLevel(logging.ERROR)   # its "consider pre-processing" advice would land on the dashboard
            try:
                quantize_dynamic(str(source), str(tmp), weight_type=QuantType.QInt8, per_channel=True,
                                 nodes_to_quantize=nodes)
                os.replace(tmp, qpath)
            except Exception as err:
                tmp.unlink(missing_ok=True)
                log.warning("int8 quantization of %s failed (%s); using the float model", source.name, err)
                return
            finally:
                root.setLevel(level)
            self.builds += 1
            self.build_seconds += time.perf_counter() - start
        quant = self._session(qpath)
        checks = [self.model.example_inputs(2, text_len=20, audio_len=75, vision_len=45),
                  typical_batch(self.model, 1, self.options.typical_window.seconds, self.options.typical_window)]
        self.parity = max(_max_abs_diff(self.session.run(list(OUTPUT_NAMES), self._feeds(b)),
                                        quant.run(list(OUTPUT_NAMES), self._feeds(b))) for b in checks)
        if self.parity <= o.int8_parity:
            self.float_session, self.session, self.quantized, self.path = self.session, quant, True, qpath
        else:
            log.warning("int8 model differs from the float one by %.3g > int8_parity %.3g; using the float model",
                        self.parity, o.int8_parity)

    def _smoothed_path(self, alpha: float) -> Path:
        """Where the smoothed float file goes: keyed by alpha and the calibration sentences."""
        from moodlens.realtime.scoring import smoothing

        key = hashlib.sha256("\n".join(smoothing.calibration_sentences()).encode()).hexdigest()[:8]
        return self.path.with_name(f"{self.path.stem}-smooth{alpha:g}-{key}.onnx")

    def _smoothed_export(self, path: Path) -> Path | None:
        """Export a SmoothQuant-smoothed copy of the model (realtime/scoring/smoothing.py) to `path`; None
        (int8 then runs unsmoothed, logged) when the encoder has no tokenizer to calibrate with or the
        smoothed graph is not the float model's."""
        from moodlens.core.errors import AssetError
        from moodlens.realtime.scoring import smoothing

        alpha = self.options.onnxruntime.int8_smoothing_alpha
        if not path.exists():
            try:
                batches = smoothing.calibration_batches(self.model)
            except AssetError as err:
                log.warning("int8 runs without smoothing: no calibration text for this encoder (%s)", err)
                return None
            start = time.perf_counter()
            self.export(path, smoothing.smooth_text_encoder(self.model, batches, alpha=alpha))
            self.builds += 1
            self.build_seconds += time.perf_counter() - start
        # An exact identity in real arithmetic: the smoothed float graph must match the float one to rounding.
        smoothed = self._session(path)
        batch = typical_batch(self.model, 1, self.options.typical_window.seconds, self.options.typical_window)
        self.smoothing_float_diff = _max_abs_diff(self.session.run(list(OUTPUT_NAMES), self._feeds(batch)),
                                                  smoothed.run(list(OUTPUT_NAMES), self._feeds(batch)))
        if self.smoothing_float_diff > 1e-3:
            log.warning("the smoothed float model differs from the float one by %.3g; int8 runs without smoothing",
                        self.smoothing_float_diff)
            return None
        return path

    def _feeds(self, batch: MultimodalBatch) -> dict[str, np.ndarray]:
        tensors = dict(zip(MultimodalBatch.FIELDS, batch.tensors()))
        return {name: tensors[name].detach().cpu().numpy() for name in self.input_names}

    def _shadowed(self) -> bool:
        """This call is also run by the float model (the first windows, then every recheck_every-th)."""
        o = self.options.onnxruntime
        n = self.calls
        return n < o.int8_shadow_windows or bool(o.int8_recheck_every and
                                                 (n - o.int8_shadow_windows + 1) % o.int8_recheck_every == 0)

    def opset(self) -> int:
        o = self.options.onnxruntime
        return o.opset_cuda if self.device.type == "cuda" else o.opset

    def export_path(self) -> Path:
        import onnxruntime as ort

        opset = self.opset()
        rewrite = ATTENTION_REWRITE if opset >= 23 else ""
        key = f"{model_fingerprint(self.model)}-opset{opset}{rewrite}-ort{ort.__version__}"
        name = getattr(self.model, "name", type(self.model).__name__)
        return self.options.resolved_cache_dir() / f"{name}-{key}.onnx"

    def export(self, path: Path, model: torch.nn.Module | None = None) -> None:
        """Export `model` (default: this backend's) to `path`."""
        import warnings

        path.parent.mkdir(parents=True, exist_ok=True)
        model = model or self.model
        # Distinct lengths >= 3 so no dim is specialised to a constant during tracing.
        example = model.example_inputs(3, text_len=9, audio_len=21, vision_len=13)
        cpu_model = model.to("cpu")
        tmp = path.with_suffix(f".{os.getpid()}.tmp.onnx")
        try:
            with warnings.catch_warnings(), torch.no_grad():
                warnings.simplefilter("ignore")
                torch.onnx.export(
                    cpu_model, example.to("cpu").tensors(), str(tmp), dynamo=True,
                    dynamic_shapes=MultimodalBatch.dynamic_shapes(),
                    input_names=list(MultimodalBatch.FIELDS), output_names=list(OUTPUT_NAMES),
                    opset_version=self.opset(), external_data=False, verbose=False,
                )
            if self.opset() >= 23:
                log.debug("attention rewrite of %s: %s", path.name, simplify_attention(tmp))
            os.replace(tmp, path)  # atomic: a concurrent scorer never reads a half-written file
            prune_cache(path.parent, "*.onnx", keep=MAX_CACHED_EXPORTS)
        except Exception as err:
            tmp.unlink(missing_ok=True)
            for leftover in tmp.parent.glob(tmp.name + "*"):
                leftover.unlink(missing_ok=True)
            raise BackendError(f"Exporting {type(model).__name__} to ONNX failed "
                               f"({type(err).__name__}: {str(err).splitlines()[0][:200]}).") from err
        finally:
            model.to(self.device)

    def run(self, batch):
        feeds = self._feeds(batch)
        outs = self.session.run(list(OUTPUT_NAMES), feeds)
        if self.quantized and self._shadowed():
            ref = self.float_session.run(list(OUTPUT_NAMES), feeds)
            diff = _max_abs_diff(ref, outs)
            self.live_parity = max(self.live_parity or 0.0, diff)
            self.shadow_checks += 1
            outs = ref                  # a checked call returns the float model's result
            if diff > self.options.onnxruntime.int8_parity:
                log.warning("int8 model differs from the float one by %.3g > int8_parity %.3g on a live window; "
                            "using the float model from now on", diff, self.options.onnxruntime.int8_parity)
                self.session, self.quantized, self.path = self.float_session, False, self.float_path
                self.int8_rejected = (f"live window {self.calls} (batch of {batch.batch_size}): "
                                      f"max difference {diff:.3g}")
        self.calls += 1
        return SentimentOutput(*(torch.from_numpy(np.asarray(o, dtype=np.float32)) for o in outs))

    def describe(self) -> dict[str, Any]:
        out = super().describe()
        if self.options.onnxruntime.quantize == "int8":
            out.update(quantized=self.quantized, int8_parity_check=self.parity, int8_live_parity=self.live_parity,
                       int8_shadow_checks=self.shadow_checks, int8_rejected=self.int8_rejected,
                       int8_smoothing_alpha=self.options.onnxruntime.int8_smoothing_alpha,
                       int8_smoothing_float_diff=self.smoothing_float_diff)
        return out


def _max_abs_diff(ref, got) -> float:
    return max(float(np.nanmax(np.abs(np.asarray(a) - np.asarray(b)))) for a, b in zip(ref, got))


# Version of `simplify_attention`'s rewrite, part of the export's cache key (a changed rewrite re-exports).
ATTENTION_REWRITE = "a1"


def simplify_attention(path: Path) -> dict[str, int]:
    """Rewrite the opset-23 `Attention` nodes of the ONNX file at `path` in place (values unchanged);
    returns {"attention": nodes, "three_d": nodes now taking 3-D inputs, "masks": masks expanded, "nodes": after}.

    From opset 23 the exporter writes scaled_dot_product_attention as one `Attention` node (17 nodes
    each at opset 18); ONNX Runtime's per-node cost is a large part of a batch-1 call here (~1000 nodes
    at opset 18, most on tensors of a few thousand values), so fewer nodes is time saved. Two rewrites:

    - 3-D inputs: where Q, K and V each come from Reshape (B, L, D) -> (B, L, H, D/H) then Transpose
      (0, 2, 1, 3), and the output goes back through Transpose + Reshape to (B, L, D), the node takes
      the (B, L, D) tensors with q_num_heads = kv_num_heads = H (the spec's 3-D form) and the head
      split and merge are dropped (8 nodes per attention, plus the shape arithmetic feeding them);
    - masks: the ONNX spec lets a (B, 1, 1, Lk) key mask broadcast over the query axis, but ONNX
      Runtime's CPU kernel (1.32) refuses a mask whose dim -2 is not Lq: each such mask is expanded to
      (B, 1, Lq, Lk) once per distinct query length (Shape/Concat/Expand) and shared by its layers.
    """
    import collections

    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(path))
    graph = model.graph
    shapes = {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in list(graph.value_info) + list(graph.input) + list(graph.output)}
    producer = {out: node for node in graph.node for out in node.output}
    consumers: dict[str, list] = collections.defaultdict(list)
    for node in graph.node:
        for name in node.input:
            consumers[name].append(node)
    graph_outputs = {o.name for o in graph.output}

    def is_head_transpose(node) -> bool:
        return node is not None and node.op_type == "Transpose" and next(
            (list(a.ints) for a in node.attribute if a.name == "perm"), None) == [0, 2, 1, 3]

    attention = [n for n in graph.node if n.op_type == "Attention" and n.domain in ("", "ai.onnx")]
    three_d = 0
    for node in attention:
        sources, heads = [], set()
        for name in node.input[:3]:
            transpose = producer.get(name)
            reshape = producer.get(transpose.input[0]) if is_head_transpose(transpose) else None
            split, flat = (shapes.get(reshape.output[0]), shapes.get(reshape.input[0])) if reshape is not None \
                and reshape.op_type == "Reshape" else (None, None)
            if len(consumers[name]) != 1 or not split or len(split) != 4 or not isinstance(split[2], int) \
                    or not flat or len(flat) != 3:
                break
            sources.append(reshape.input[0])
            heads.add(split[2])
        else:
            after = consumers[node.output[0]]
            merge = consumers[after[0].output[0]] if len(after) == 1 and is_head_transpose(after[0]) else []
            if (len(merge) != 1 or merge[0].op_type != "Reshape" or len(shapes.get(merge[0].output[0], [])) != 3
                    or len(heads) != 1 or node.output[0] in graph_outputs or len(node.output) > 1):
                continue
            h = heads.pop()
            node.input[0], node.input[1], node.input[2] = sources
            node.output[0], merge[0].output[0] = merge[0].output[0], merge[0].output[0] + "__unused"
            node.attribute.extend([helper.make_attribute("q_num_heads", h), helper.make_attribute("kv_num_heads", h)])
            three_d += 1
    attention_names = {n.name for n in attention}
    made: dict[tuple[str, Any], str] = {}
    nodes = []
    for node in graph.node:
        if node.name in attention_names and len(node.input) > 3 and node.input[3]:
            mask, query = node.input[3], node.input[0]
            mask_dims, query_dims = shapes.get(mask), shapes.get(query) or []
            axis = 1 if any(a.name == "q_num_heads" for a in node.attribute) else 2
            query_len = query_dims[axis] if len(query_dims) == axis + 2 else query   # symbolic dim where known
            # Expanding a mask that is already (B, 1, Lq, Lk) changes nothing, so an unknown shape is expanded too.
            if not (mask_dims and len(mask_dims) == 4 and mask_dims[2] != 1) and query_len != 1:
                key = (mask, query_len)
                if key not in made:
                    base = f"{mask}__q{len(made)}"
                    nodes += [helper.make_node("Shape", [query], [base + "_len"], start=axis, end=axis + 1),
                              helper.make_node("Concat", ["attn_mask__1_1", base + "_len", "attn_mask__1"],
                                               [base + "_shape"], axis=0),
                              helper.make_node("Expand", [mask, base + "_shape"], [base + "_full"])]
                    made[key] = base + "_full"
                node.input[3] = made[key]
        nodes.append(node)
    if made:
        graph.initializer.extend([numpy_helper.from_array(np.array([1, 1], dtype=np.int64), "attn_mask__1_1"),
                                  numpy_helper.from_array(np.array([1], dtype=np.int64), "attn_mask__1")])

    def names_read(node):   # its inputs, and what the subgraphs of an If / Loop read from outside
        yield from node.input
        for attr in node.attribute:
            for sub in ([attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)):
                for inner in sub.node:
                    yield from names_read(inner)

    while True:   # drop what only fed the removed head split / merge
        used = {name for node in nodes for name in names_read(node)} | graph_outputs
        alive = [node for node in nodes if any(out in used for out in node.output)]
        if len(alive) == len(nodes):
            break
        nodes = alive
    del graph.node[:]
    graph.node.extend(nodes)
    used = {name for node in nodes for name in names_read(node)}
    kept = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    onnx.save(model, str(path))
    return {"attention": len(attention), "three_d": three_d, "masks": len(made), "nodes": len(nodes)}


def text_encoder_matmuls(path: Path, keep_float: list[str] | tuple[str, ...] = ()) -> list[str]:
    """Names of the MatMul nodes with a weight operand inside the model's `text_encoder` module
    (torch.onnx's dynamo exporter records each node's module path in `pkg.torch.onnx.name_scopes`),
    less those `keep_float` names as "<layer>.<kind>" (see `matmul_label`)."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    weights = {i.name for i in graph.initializer}
    names = []
    for node in graph.node:
        if node.op_type != "MatMul" or node.input[1] not in weights:
            continue
        scopes = next((p.value for p in node.metadata_props if p.key == "pkg.torch.onnx.name_scopes"), "")
        if "'text_encoder'" in scopes and matmul_label(scopes) not in keep_float:
            names.append(node.name)
    return names


def matmul_label(scopes: str) -> str | None:
    """"<layer>.<kind>" of a text-encoder MatMul from its module scopes ("1.ffn_out" for
    ...layer.1.output.dense; smoothing's wrappers add an `inner.` that is skipped), None if not a layer's."""
    import re

    found = re.findall(r"layer\.(\d+)\.([A-Za-z_.]+)'", scopes)
    if not found:
        return None
    layer, module = found[-1]
    module = module.replace("inner.", "")
    kind = next((k for k, m in MATMUL_KINDS.items() if module == m), None)
    return f"{layer}.{kind}" if kind else None


class TensorRTBackend(Backend):
    """torch-tensorrt, dynamo IR, FP16: one engine with dynamic batch and sequence dims
    (min/opt/max from configs/live/backends.yaml), saved with torch_tensorrt.save and reloaded
    with torch.export.load. Coded against torch-tensorrt's documented API; it cannot be installed
    on the CPU machines this project is developed on (see docs/benchmarks.md)."""

    name = "tensorrt"

    def __init__(self, model, device, options):
        super().__init__(model, device, options)
        import torch_tensorrt

        self.trt = torch_tensorrt
        self.path = self.engine_path()
        if self.path.exists():
            self.module = torch.export.load(str(self.path)).module()
            self.cache_hits += 1
        else:
            start = time.perf_counter()
            self.module = self.build(self.path)
            self.builds += 1
            self.build_seconds += time.perf_counter() - start

    def engine_path(self) -> Path:
        t = self.options.tensorrt
        shapes = "-".join(f"{s.batch}x{s.text}x{s.audio}x{s.vision}" for s in (t.min_shape, t.opt_shape, t.max_shape))
        gpu = torch.cuda.get_device_name(self.device).replace(" ", "_")
        key = hashlib.sha256(f"{shapes}|{t.fp16}|{gpu}|{self.trt.__version__}".encode()).hexdigest()[:10]
        name = getattr(self.model, "name", type(self.model).__name__)
        return self.options.resolved_cache_dir() / f"{name}-{model_fingerprint(self.model)}-trt{key}.ep"

    def build(self, path: Path):
        import inspect

        from torch.export import Dim

        t = self.options.tensorrt
        dims = {f.name: Dim(f"{f.name}_dim", min=getattr(t.min_shape, f.name), max=getattr(t.max_shape, f.name))
                for f in fields(ShapeDims)}
        b, lt, la, lv = dims["batch"], dims["text"], dims["audio"], dims["vision"]
        dynamic = ({0: b, 1: lt}, {0: b, 1: lt}, {0: b, 1: la}, {0: b, 1: la}, {0: b, 1: lv}, {0: b, 1: lv}, {0: b})
        opt = t.opt_shape
        example = typical_batch(self.model, max(opt.batch, 2), 1.0, self.options.typical_window)
        example = pad_batch(example, (max(opt.batch, 2), opt.text, opt.audio, opt.vision)).to(self.device)
        exported = torch.export.export(self.model, example.tensors(), dynamic_shapes=dynamic)

        def spec(shape_of, dtype, with_features: int | None = None):
            def shape(s: ShapeDims):
                dims_ = shape_of(s)
                return dims_ + ((with_features,) if with_features else ())
            return self.trt.Input(min_shape=shape(t.min_shape), opt_shape=shape(t.opt_shape),
                                  max_shape=shape(t.max_shape), dtype=dtype)

        cfg = self.model.config
        inputs = [
            spec(lambda s: (s.batch, s.text), torch.int64),
            spec(lambda s: (s.batch, s.text), torch.bool),
            spec(lambda s: (s.batch, s.audio), torch.float32, cfg.audio_dim),
            spec(lambda s: (s.batch, s.audio), torch.bool),
            spec(lambda s: (s.batch, s.vision), torch.float32, cfg.vision_dim),
            spec(lambda s: (s.batch, s.vision), torch.bool),
            self.trt.Input(min_shape=(t.min_shape.batch, 3), opt_shape=(t.opt_shape.batch, 3),
                           max_shape=(t.max_shape.batch, 3), dtype=torch.bool),
        ]
        compile_params = inspect.signature(self.trt.dynamo.compile).parameters
        kwargs: dict[str, Any] = {"min_block_size": 1, "truncate_double": True}
        if "workspace_size" in compile_params:
            kwargs["workspace_size"] = int(t.workspace_gb * (1 << 30))
        if t.fp16:
            if "enable_autocast" in compile_params:  # torch-tensorrt >= 2.10: rule-based autocast
                kwargs.update(use_explicit_typing=True, enable_autocast=True, low_precision_type=torch.float16)
            else:                                     # older releases: TensorRT's precision set
                kwargs["enabled_precisions"] = {torch.float16, torch.float32}
                if "use_explicit_typing" in compile_params:
                    kwargs["use_explicit_typing"] = False
        kwargs = {k: v for k, v in kwargs.items() if k in compile_params}
        arg_key = "arg_inputs" if "arg_inputs" in compile_params else "inputs"
        try:
            trt_module = self.trt.dynamo.compile(exported, **{arg_key: inputs}, **kwargs)
        except Exception as err:
            raise BackendError(f"torch-tensorrt could not build an engine for {type(self.model).__name__} "
                               f"({type(err).__name__}: {str(err).splitlines()[0][:200]}).") from err
        path.parent.mkdir(parents=True, exist_ok=True)
        save_params = inspect.signature(self.trt.save).parameters
        save_key = "arg_inputs" if "arg_inputs" in save_params else "inputs"
        tmp = path.with_suffix(f".{os.getpid()}.tmp.ep")
        self.trt.save(trt_module, str(tmp), **{save_key: list(example.tensors())})
        os.replace(tmp, path)
        return trt_module

    def run(self, batch):
        with torch.no_grad():
            out = self.module(*batch.to(self.device).tensors())
        return _to_cpu(out)


BACKEND_CLASSES: dict[str, type[Backend]] = {
    "eager": EagerBackend, "compile": CompileBackend, "onnxruntime": OnnxRuntimeBackend,
    "tensorrt": TensorRTBackend,
}


def create_backend(name: str, model: torch.nn.Module, device: str | torch.device | None = None,
                   options: BackendOptions | None = None) -> Backend:
    """Build backend `name` ("auto" picks one and records why in `.reason`). An unavailable
    backend raises BackendError with one sentence saying what to install."""
    options = options or BackendOptions.load()
    device = resolve_device(device)
    if name == "auto":
        name, reason = choose_auto(device, options)
    elif name in BACKEND_CLASSES:
        ok, why = availability(name, device)
        if not ok:
            raise BackendError(unavailable_sentence(name, why))
        reason = f"{name} was asked for ({why})."
    else:
        raise ConfigError(f"Unknown backend '{name}'; choose one of: {', '.join(BACKEND_CHOICES)}.")
    backend = BACKEND_CLASSES[name](model, device, options)
    backend.reason = reason
    return backend

