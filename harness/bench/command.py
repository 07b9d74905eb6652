"""``clusterbench bench``: the timing tables of every requested method, and their JSON."""

from __future__ import annotations

import argparse
import platform
import sys
from pathlib import Path

import numpy as np
import torch
from tabulate import tabulate

from clusterbench.bench.kmeans_bench import (bench_kmeans, bench_metrics, kmeans_table, synthetic_features,
                                             trained_features)
from clusterbench.bench.steps import bench_inference, bench_step
from clusterbench.plugins import Registry
from clusterbench.results.envinfo import environment
from clusterbench.results.io import atomic_write_json
from clusterbench.plugins import PluginRef
from clusterbench.settings import EngineSettings


def _fmt(v: float | None, spec: str = ",.0f", suffix: str = "") -> str:
    return f"{v:{spec}}{suffix}" if v else "-"


def run_bench(args: argparse.Namespace, reg: Registry, settings: EngineSettings) -> int:
    """``clusterbench bench``: time every method's step, print the tables, write the JSON."""
    device = settings.device
    data = reg.load_data(reg.make_dataset(PluginRef.parse(args.dataset), args.data_root))
    images = data.subset(np.arange(min(len(data), args.max_images))).without_labels()
    rows, out = [], {"env": environment(device), "settings": settings.__dict__, "dataset": args.dataset, "steps": []}
    deep, compile_rows = [], []
    for mspec in reg.method_refs(args.methods):
        for size in args.image_sizes:
            for bs in args.batch_sizes:
                spec = PluginRef(mspec.name, mspec.options + (("batch_size", str(bs)), ("image_size", str(size))))
                method = reg.make_method(spec)
                if not method.deep:
                    continue
                deep.append(method)
                r = bench_step(method, images, settings, steps=args.steps, warmup=args.warmup,
                               pil_workers=args.workers, pil_steps=0 if args.no_pil else None,
                               profile=args.profile)
                ips = None
                if args.inference:
                    model = method.build_model(data.channels, size, data.n_classes).to(device)
                    ips = bench_inference(method, model, images, settings)
                rows.append([str(mspec), size, bs, _fmt(r.model_only_eager), _fmt(r.model_only),
                             _fmt(r.harness_eager), _fmt(r.harness), _fmt(r.pil), _fmt(r.pil_tf32),
                             _fmt(r.pil_same_precision), f"{r.efficiency:.2f}", _fmt(r.speedup, ".1f", "x"),
                             _fmt(r.speedup_tf32, ".1f", "x"), _fmt(r.speedup_same_precision, ".1f", "x"), _fmt(ips)])
                out["steps"].append({**r.__dict__, "efficiency": r.efficiency, "speedup": r.speedup,
                                     "speedup_tf32": r.speedup_tf32,
                                     "speedup_same_precision": r.speedup_same_precision,
                                     "compile_gain": r.compile_gain,
                                     "method_spec": str(mspec), "inference_images_per_s": ips})
                print(tabulate([rows[-1]], tablefmt="plain"), f"  [CUDA graphs {r.cuda_graphs}; compile {r.compiled}]",
                      flush=True)
                if r.compile_gain:
                    compile_rows.append([str(mspec), size, bs, _fmt(r.model_only_uncompiled), _fmt(r.model_only),
                                         _fmt(r.harness_uncompiled), _fmt(r.harness), f"{r.compile_gain:.2f}x"])
    gpu = out["env"].get("gpu") or platform.processor() or "cpu"
    print(f"\n{gpu}, torch {torch.__version__}, precision {settings.precision}, compile {settings.compile}, "
          f"channels_last {settings.channels_last}, CUDA graphs {settings.cuda_graphs}, compiled augmentation "
          f"{settings.augment_compiled}; images/s, one image = two views (views/s = 2 x images/s).\n"
          f"1 = model-only ceiling, 2 = harness step (eager / CUDA graph), 3 = PIL + DataLoader feeding the "
          f"model in strict fp32 (the papers' code path) / with TF32 / the harness's eager {settings.precision} step")
    if rows:
        print(tabulate(rows, headers=["method", "size", "batch", "1 eager", "1 graph", "2 eager", "2 graph",
                                      "3 fp32", "3 tf32", f"3 {settings.precision}", "2/1", "2/3 fp32", "2/3 tf32",
                                      f"2/3 {settings.precision}", "infer img/s"]))
    if compile_rows:
        print("\ntorch.compile of the model, measured in the same run (graphed when graphs are on):")
        print(tabulate(compile_rows, headers=["method", "size", "batch", "1 uncompiled", "1 compiled", "2 uncompiled",
                                              "2 compiled", "2 gain"]))
    if args.kmeans:
        out["metrics_seconds"] = bench_metrics(n=args.kmeans_n)
        print(f"\nmetrics (ACC with Hungarian matching, NMI, ARI) at n={args.kmeans_n}: "
              f"{out['metrics_seconds']:.3f} s")
        feats, y = synthetic_features(n=args.kmeans_n)
        out["kmeans"] = {"synthetic": bench_kmeans(feats, y, k=10)}
        sets = [("synthetic", f"{args.kmeans_n} x 512 synthetic features, 10 Gaussian clusters")]
        if deep and args.kmeans_train_steps:
            m = deep[0]
            feats, y, note = trained_features(m, data, settings, steps=args.kmeans_train_steps,
                                              max_images=args.kmeans_n)
            out["kmeans"]["trained"] = {**bench_kmeans(feats, y, k=data.n_classes), "features": note}
            sets.append(("trained", note))
        for key, title in sets:
            ev = out["kmeans"][key]
            print(f"\nk-means on {title}: k={ev['k']}, {ev['niter']} iterations, {ev['restarts']} restarts, "
                  f"{ev['cpu_threads']} CPU threads")
            print(kmeans_table(ev))
    if args.output:
        atomic_write_json(Path(args.output), out)
        print(f"wrote {args.output}", file=sys.stderr)
    return 0


