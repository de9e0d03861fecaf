"""Where the model-only milliseconds go: ONNX Runtime's per-node profile of the live batch-1 session.

    .venv/bin/python benchmarks/model_profile.py [--quantize none|int8] [--seconds 3] [--calls 200] [--json out.json]

Builds the scorer the live pipeline builds (configs/live/backends.yaml, the default weights, the
onnxruntime backend), profiles the session it runs at batch 1 on the bench's typical window
(`SessionOptions.enable_profiling`, the same session options otherwise), and reports:

- per area of the model (text encoder layers split into attention / FFN / norms, the audio and vision
  branches, the cascaded cores, the pooled heads, the fusion, input cleaning), per kind of operator
  (float MatMul, int8 MatMul + its activation quantization, Attention, LayerNorm, GELU, element-wise,
  shape arithmetic) and the nodes that cost most: each node's **median** kernel time over the calls, so a
  call preempted by another process on this shared machine does not land on one node's account;
- the graph as run: node count after ONNX Runtime's optimizations, the input shapes (tokens fed vs real
  tokens: no padding at batch 1), the weight MatMuls left float;
- the Python side of a call: building the feeds, the backend wrapper (lock, output tensors) and the
  shadow checks (which calls also run the float model, and what one costs);
- wall p50 of `session.run` without profiling, for scale (profiling adds ~2 us a node).

Fused nodes (ONNX Runtime renames them) are attributed through the tensors they write: each output
name is looked up in the exported file, whose nodes carry the PyTorch module scope. Results:
docs/benchmarks.md, "Model-only, session 4".
"""

from __future__ import annotations

import argparse
import ast
import collections
import dataclasses
import json
import statistics
import tempfile
import time
from pathlib import Path

# Operator kinds for the per-kind table.
KINDS = {
    "MatMul": "float MatMul / Gemm", "Gemm": "float MatMul / Gemm", "FusedMatMul": "float MatMul / Gemm",
    "DynamicQuantizeMatMul": "int8 MatMul (+ activation quantization)",
    "MatMulIntegerToFloat": "int8 MatMul (+ activation quantization)",
    "DynamicQuantizeLinear": "int8 MatMul (+ activation quantization)",
    "MatMulInteger": "int8 MatMul (+ activation quantization)",
    "Attention": "Attention (softmax(QK^T)V)", "MultiHeadAttention": "Attention (softmax(QK^T)V)",
    "LayerNormalization": "LayerNorm", "SkipLayerNormalization": "LayerNorm",
    "SimplifiedLayerNormalization": "LayerNorm",
    "Gelu": "GELU", "BiasGelu": "GELU", "FastGelu": "GELU", "Erf": "GELU",
    "Shape": "shape arithmetic", "Reshape": "shape arithmetic", "Unsqueeze": "shape arithmetic",
    "Squeeze": "shape arithmetic", "Concat": "shape arithmetic", "Gather": "shape arithmetic",
    "Slice": "shape arithmetic", "Expand": "shape arithmetic", "Range": "shape arithmetic",
    "Transpose": "shape arithmetic", "Cast": "shape arithmetic",
}


def scope_of(node) -> list[str]:
    value = next((p.value for p in node.metadata_props if p.key == "pkg.torch.onnx.name_scopes"), "[]")
    try:
        return [s for s in ast.literal_eval(value) if s]
    except (ValueError, SyntaxError):
        return []


def area_of(scopes: list[str]) -> str:
    """A readable area for a node from its scopes (the module path, then the node's own name)."""
    import re

    scopes = scopes[:-1]
    if not scopes:
        return "inputs, masks, outputs (top level)"
    top = scopes[0]
    if top == "text_encoder":
        layer = next((s for s in reversed(scopes) if re.search(r"\.layer\.\d+$", s)), None)
        if layer is None:
            return "text encoder: embeddings" if any("embeddings" in s for s in scopes) else "text encoder: other"
        inner = scopes[-1][len(layer):]
        kind = ("attention" if ".attention.self" in inner or inner.endswith(".attention") else
                "attention out + LayerNorm" if ".attention.output" in inner else
                "FFN in + GELU" if ".intermediate" in inner else
                "FFN out + LayerNorm" if ".output" in inner else "other")
        return f"text encoder: {kind}"
    if top in ("core", "redundant", "pooled_heads", "unimodal_heads", "to_shared") and len(scopes) > 1:
        return scopes[1]
    return top


def attribute(optimized, source) -> dict[str, str]:
    """node name in the optimized graph -> area. In the exported file, a node without a module scope (added
    by the quantizer: DynamicQuantizeLinear, MatMulInteger, its scale Muls) takes the area of the nodes it
    feeds, else of those feeding it; an optimized node then takes the area of the exported node that wrote
    one of its outputs, else of its neighbours."""
    top = "inputs, masks, outputs (top level)"

    def spread(nodes, known: dict[str, str]) -> dict[str, str]:
        """name -> area for `nodes`, from `known` (tensor -> area) and the neighbours of unknown ones."""
        consumers: dict[str, list] = collections.defaultdict(list)
        for node in nodes:
            for name in node.input:
                consumers[name].append(node)
        areas = {}
        for node in nodes:
            hit = next((known[o] for o in node.output if o in known), None)
            if hit:
                areas[node.name] = hit
        for _ in range(6):
            for node in nodes:
                if node.name in areas:
                    continue
                near = [areas.get(c.name) for o in node.output for c in consumers[o]] + \
                       [known.get(i) for i in node.input]
                near = [a for a in near if a and a != top]
                if near:
                    areas[node.name] = collections.Counter(near).most_common(1)[0][0]
                    for o in node.output:
                        known.setdefault(o, areas[node.name])
        return areas

    scoped = {}
    for node in source.graph.node:
        scopes = scope_of(node)
        if scopes:
            for out in node.output:
                scoped[out] = area_of(scopes)
    source_areas = spread(list(source.graph.node), scoped)
    produced = {out: source_areas.get(node.name, top) for node in source.graph.node for out in node.output}
    areas = spread(list(optimized.graph.node), produced)
    return {node.name: areas.get(node.name, top) for node in optimized.graph.node}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quantize", choices=("none", "int8"), default=None,
                        help="default: configs/live/backends.yaml")
    parser.add_argument("--seconds", type=float, default=3.0, help="typical window length (the bench's: 3 s)")
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--top", type=int, default=12, help="costliest nodes listed")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)

    import onnx

    from moodlens.models.checkpoint import load_checkpoint
    from moodlens.realtime.scoring.backends import OUTPUT_NAMES, BackendOptions
    from moodlens.realtime.scoring.scorer import Scorer

    checkpoint = load_checkpoint("default")
    options = BackendOptions.load()
    if args.quantize:
        options.onnxruntime = dataclasses.replace(options.onnxruntime, quantize=args.quantize)
    scorer = Scorer.from_model(checkpoint.model, checkpoint.featurizer_config, backend="onnxruntime", device="cpu",
                               options=options, quiet=True)
    backend = scorer.backend
    batch = scorer.typical_batch(1, args.seconds)
    feeds = backend._feeds(batch)
    report = {"file": backend.path.name, "quantized": bool(getattr(backend, "quantized", False)),
              "options": {"opset": options.onnxruntime.opset, "optimization_level": options.onnxruntime.optimization_level,
                          "disabled_optimizers": options.onnxruntime.disabled_optimizers,
                          "session_config": options.onnxruntime.session_config, "cpu_threads": options.cpu_threads},
              "window": {"seconds": args.seconds, "text_tokens": int(batch.text_ids.shape[1]),
                         "text_tokens_real": int(batch.text_mask.sum()), "audio_frames": int(batch.audio.shape[1]),
                         "vision_frames": int(batch.vision.shape[1])}}

    def median_us(fn, n):
        for _ in range(20):
            fn()
        times = []
        for _ in range(n):
            start = time.perf_counter()
            fn()
            times.append((time.perf_counter() - start) * 1e6)
        return statistics.median(times)

    # Python side and the plain session, no profiling.
    names = list(OUTPUT_NAMES)
    run_us = median_us(lambda: backend.session.run(names, feeds), args.calls)
    report["python"] = {
        "session_run_ms_p50": round(run_us / 1000, 3),
        "feeds_us_p50": round(median_us(lambda: backend._feeds(batch), args.calls), 1),
    }
    if report["quantized"]:
        float_us = median_us(lambda: backend.float_session.run(names, feeds), args.calls // 2)
        o = options.onnxruntime
        report["python"]["shadow_check"] = {
            "float_session_run_ms_p50": round(float_us / 1000, 3),
            "shadowed_calls": f"the first {o.int8_shadow_windows}, then every {o.int8_recheck_every}-th",
            "share_of_calls_after_warmup": round(1 / o.int8_recheck_every, 3) if o.int8_recheck_every else 0.0,
        }
        shadow = dataclasses.replace(o, int8_shadow_windows=0, int8_recheck_every=0)
        backend.options = dataclasses.replace(options, onnxruntime=shadow)   # time the wrapper without shadowing
    # The wrapper (lock, feeds, output tensors): backend() and session.run timed alternately, call by call.
    pairs = []
    for i in range(args.calls + 20):
        start = time.perf_counter()
        backend(batch)
        mid = time.perf_counter()
        backend.session.run(names, feeds)
        if i >= 20:
            pairs.append(((mid - start) - (time.perf_counter() - mid)) * 1e6)
    report["python"]["wrapper_us_p50"] = round(statistics.median(pairs), 1)

    with tempfile.TemporaryDirectory() as tmp:
        optimized_path = Path(tmp) / "optimized.onnx"
        session = backend._session(backend.path, profile_prefix=str(Path(tmp) / "profile"),
                                   optimized_path=optimized_path)
        for _ in range(args.calls + 20):
            session.run(names, feeds)
        profile = json.loads(Path(session.end_profiling()).read_text())
        optimized = onnx.load(str(optimized_path), load_external_data=False)
    source = onnx.load(str(backend.path), load_external_data=False)
    areas = attribute(optimized, source)
    per_node, op_of = collections.defaultdict(list), {}
    for event in profile:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            name = event["name"][: -len("_kernel_time")]
            per_node[name].append(event["dur"])
            op_of[name] = event["args"]["op_name"]
    medians = {n: statistics.median(v) for n, v in per_node.items()}
    total = sum(medians.values())
    runs = sorted(e["dur"] for e in profile if e.get("name") == "model_run")
    report["graph"] = {"nodes_exported": len(source.graph.node), "nodes_run": len(medians),
                       "profiled_call_ms_p50": round(runs[len(runs) // 2] / 1000, 3),
                       "sum_of_node_medians_ms": round(total / 1000, 3)}

    def table(key_of):
        out = collections.defaultdict(lambda: [0.0, 0])
        for n, us in medians.items():
            k = key_of(n)
            out[k][0] += us
            out[k][1] += 1
        return [{"name": k, "ms": round(us / 1000, 3), "share": round(us / total, 3), "nodes": c}
                for k, (us, c) in sorted(out.items(), key=lambda kv: -kv[1][0])]

    report["by_area"] = table(lambda n: areas.get(n, "unattributed"))
    report["by_kind"] = table(lambda n: KINDS.get(op_of[n], "element-wise / other"))
    report["by_op"] = table(lambda n: op_of[n])
    report["top_nodes"] = [{"node": n, "op": op_of[n], "area": areas.get(n, "unattributed"), "us": us}
                           for n, us in sorted(medians.items(), key=lambda kv: -kv[1])[: args.top]]

    def show(title, rows, limit=None):
        print(f"\n{title}")
        for r in rows[:limit]:
            print(f"  {r['name']:45s} {r['ms']:7.3f} ms  {100 * r['share']:5.1f} %  {r['nodes']:4d} nodes")

    print(json.dumps({k: report[k] for k in ("file", "quantized", "options", "window", "python", "graph")}, indent=1))
    show("by area (sum of per-node medians, profiled)", report["by_area"])
    show("by kind of operator", report["by_kind"])
    show("by operator", report["by_op"], 20)
    print("\ncostliest nodes")
    for r in report["top_nodes"]:
        print(f"  {r['us']:7.1f} us  {r['op']:24s} {r['area']}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, default=float) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
