"""The ``clusterbench`` command line: list, info, run, report."""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path
from typing import Sequence

from clusterbench.api import ConfigError, DataError
from clusterbench.records import RecordError

DEFAULT_RESULTS = "clusterbench-results"
DEFAULT_SEEDS = [0, 1, 2]
DEFAULT_DATASET = "digits"
DEFAULT_BUDGET = "epochs=100"

EPILOG_RUN = """examples:
  clusterbench run                                   # quick methods on digits, seeds 0 1 2
  clusterbench run --methods all --datasets cifar10 --data-root ~/data --seeds 0 1 2 --budget epochs=100
  clusterbench run --methods "cc[preset=fast]" kmeans --datasets "imagefolder[path=cifar10.tar.gz]" --budget minutes=10
  clusterbench run --methods cc --datasets "npz[path=my.npz]" --budget steps=2000 --results runs/ --force
"""


def _registry(args: argparse.Namespace):
    from clusterbench.plugins import load_local_plugin, load_registry

    extra = [load_local_plugin(p) for p in (getattr(args, "plugin", None) or [])]
    return load_registry(extra)


def cmd_list(args: argparse.Namespace) -> int:
    from tabulate import tabulate

    reg = _registry(args)
    if args.what in ("methods", "all"):
        rows = [(n, c.description, ", ".join(c.protocols), "yes" if c.deep else "", reg.provider("method", n))
                for n, c in sorted(reg.methods.items())]
        print("Methods\n" + tabulate(rows, headers=["name", "description", "protocols", "deep", "provider"]))
    if args.what in ("datasets", "all"):
        rows = [(n, c.description, c.n_classes or "?", reg.provider("dataset", n))
                for n, c in sorted(reg.datasets.items())]
        print("\nDatasets\n" + tabulate(rows, headers=["name", "description", "classes", "provider"]))
    if reg.failed:
        print("\nPlugins that failed to import: " + "; ".join(f"{k} ({v})" for k, v in reg.failed.items()))
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    import dataclasses

    from tabulate import tabulate

    reg = _registry(args)
    cls = reg.method(args.name)
    print(f"{cls.name}: {cls.description}\npaper: {cls.paper or '-'}\nversion: {cls.version}\n"
          f"protocols: {', '.join(cls.protocols)}\nprovider: {reg.provider('method', cls.name)}\n")
    rows = [(f.name, f.default, f.metadata.get("doc", ""), f.metadata.get("source") or "harness choice")
            for f in dataclasses.fields(cls.Params)]
    print(tabulate(rows, headers=["parameter", "default", "meaning", "source"]))
    for name, values in cls.presets.items():
        print(f"\npreset {name}: " + ", ".join(f"{k}={v}" for k, v in values.items()))
    return 0


def _auto_device(requested: str) -> str:
    if requested != "auto":
        return requested
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def cmd_run(args: argparse.Namespace) -> int:
    from clusterbench.budget import Budget
    from clusterbench.context import EngineSettings
    from clusterbench.records import ResultsStore
    from clusterbench.report import render
    from clusterbench.runner import Reporter, run_grid, validate_grid

    reg = _registry(args)
    budget = Budget.parse(args.budget or DEFAULT_BUDGET)
    methods = args.methods or sorted(n for n, c in reg.methods.items() if c.quick)
    if not methods:
        raise ConfigError("no methods selected and no quick method installed")
    validate_grid(reg, methods, args.datasets or [DEFAULT_DATASET], args.data_root)
    settings = EngineSettings(device=_auto_device(args.device), precision=args.precision,
                              compile=args.compile, eval_every=args.eval_every)
    if settings.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise ConfigError(f"--device {settings.device}: no CUDA GPU is available")
    store = ResultsStore(args.results)
    result = run_grid(reg, methods, args.datasets or [DEFAULT_DATASET], args.seeds, budget, store, settings,
                      data_root=args.data_root, protocols=args.protocols, force=args.force,
                      reporter=Reporter(quiet=args.quiet))
    records = [o.record for o in result.outcomes if o.record is not None]
    print(render(records, "markdown"))
    print(f"results: {store.root}/  (rebuild tables with: clusterbench report --results {store.root})")
    if result.failed:
        print(f"{len(result.failed)} run(s) failed: " + "; ".join(
            f"{o.method} on {o.dataset} seed {o.seed}: {o.reason}" for o in result.failed), file=sys.stderr)
        return 1
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from clusterbench.records import ResultsStore
    from clusterbench.report import render

    store = ResultsStore(args.results, create=False)
    text = render(list(store.iter_records(strict=True)), args.format)
    if args.output:
        Path(args.output).write_text(text)
        print(f"wrote {args.output}", file=sys.stderr)
    else:
        print(text)
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    import json
    import platform

    import torch
    from tabulate import tabulate

    from clusterbench.bench import bench_eval, bench_inference, bench_step
    from clusterbench.context import EngineSettings
    from clusterbench.envinfo import environment
    from clusterbench.records import atomic_write_json
    from clusterbench.runner import Spec, expand_methods, instantiate_method, load_dataset, instantiate_dataset

    reg = _registry(args)
    device = _auto_device(args.device)
    settings = EngineSettings(device=device, precision=args.precision, compile=args.compile)
    data = load_dataset(instantiate_dataset(reg, Spec.parse(args.dataset), args.data_root))
    x = data.x[: args.max_images]
    rows, out = [], {"env": environment(device), "settings": settings.__dict__, "dataset": args.dataset, "steps": []}
    for mspec in expand_methods(reg, args.methods):
        for size in args.image_sizes:
            for bs in args.batch_sizes:
                spec = Spec(mspec.name, mspec.options + (("batch_size", str(bs)), ("image_size", str(size))))
                method = instantiate_method(reg, spec)
                if not method.deep:
                    continue
                r = bench_step(method, x, data.n_classes, settings, steps=args.steps,
                               pil_workers=args.workers, pil_steps=0 if args.no_pil else None)
                ips = None
                if args.inference:
                    model = method.build_model(data.channels, size, data.n_classes).to(device)
                    ips = bench_inference(method, model, x, settings)
                rows.append([str(mspec), size, bs, f"{r.model_only:,.0f}", f"{r.harness:,.0f}",
                             f"{r.pil:,.0f}" if r.pil else "-", f"{r.efficiency:.2f}",
                             f"{r.speedup:.1f}x" if r.speedup else "-", f"{ips:,.0f}" if ips else "-"])
                out["steps"].append({**r.__dict__, "efficiency": r.efficiency, "speedup": r.speedup,
                                     "method_spec": str(mspec), "inference_images_per_s": ips})
                print(tabulate([rows[-1]], tablefmt="plain"), flush=True)
    gpu = out["env"].get("gpu") or platform.processor() or "cpu"
    print(f"\n{gpu}, torch {torch.__version__}, precision {settings.precision}, compile {settings.compile}, "
          f"channels_last {settings.channels_last}; images/s (one image = two views)")
    print(tabulate(rows, headers=["method", "size", "batch", "1 model-only", "2 harness", "3 PIL+DataLoader",
                                  "2/1", "2/3", "infer img/s"]))
    if args.kmeans:
        ev = bench_eval(n=args.kmeans_n)
        out["eval"] = ev
        print(f"\nmetrics+Hungarian at n={ev['n']}: {ev['metrics_seconds']:.3f}s; k-means {ev['n']}x{ev['dim']} "
              f"k={ev['k']} {ev['niter']} iterations: faiss {ev['faiss_seconds']:.2f}s, scikit-learn "
              f"{ev['sklearn_seconds']:.2f}s ({ev['faiss_speedup']:.1f}x), ACC {ev['faiss_acc']:.3f} vs "
              f"{ev['sklearn_acc']:.3f}")
    if args.output:
        atomic_write_json(Path(args.output), out)
        print(f"wrote {args.output}", file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    from clusterbench import __version__

    p = argparse.ArgumentParser(prog="clusterbench", description=__doc__)
    p.add_argument("--version", action="version", version=f"clusterbench {__version__}")
    p.add_argument("--plugin", action="append", metavar="FILE",
                   help="also load plugins from this .py file (repeatable)")
    sub = p.add_subparsers(dest="command")

    ls = sub.add_parser("list", help="show every method and dataset with its provider")
    ls.add_argument("what", nargs="?", choices=["all", "methods", "datasets"], default="all")
    ls.set_defaults(func=cmd_list)

    info = sub.add_parser("info", help="a method's parameters, defaults and their sources")
    info.add_argument("name")
    info.set_defaults(func=cmd_info)

    run = sub.add_parser("run", help="run every (method, dataset, seed) cell", epilog=EPILOG_RUN,
                         formatter_class=argparse.RawDescriptionHelpFormatter)
    run.add_argument("--methods", nargs="+", metavar="NAME",
                     help="method names, NAME[key=value,...] or 'all' (default: the quick methods)")
    run.add_argument("--datasets", nargs="+", metavar="NAME",
                     help=f"dataset names or NAME[key=value,...] (default: {DEFAULT_DATASET})")
    run.add_argument("--seeds", nargs="+", type=int, default=DEFAULT_SEEDS, metavar="N")
    run.add_argument("--budget", nargs="+", metavar="KEY=VALUE",
                     help=f"training budget shared by every deep method: epochs=, steps=, images=, minutes= "
                          f"(default: {DEFAULT_BUDGET})")
    run.add_argument("--results", default=DEFAULT_RESULTS, help=f"results directory (default: {DEFAULT_RESULTS})")
    run.add_argument("--data-root", help="where dataset files are (torchvision layouts, image folders)")
    run.add_argument("--protocols", nargs="+", metavar="P", help="evaluation protocols: head kmeans linear")
    run.add_argument("--device", default="auto", help="auto (GPU when there is one), cpu, cuda, cuda:1")
    run.add_argument("--precision", default="bf16", choices=["bf16", "fp32"])
    run.add_argument("--compile", action="store_true", help="torch.compile the model")
    run.add_argument("--eval-every", type=int, default=0, metavar="EPOCHS",
                     help="epochs between ACC/NMI points on the learning curve (default: about 10 points)")
    run.add_argument("--force", action="store_true", help="rerun cells that already finished")
    run.add_argument("--quiet", action="store_true", help="no progress output")
    run.set_defaults(func=cmd_run)

    b = sub.add_parser("bench", help="throughput: model-only ceiling vs harness step vs PIL pipeline")
    b.add_argument("--methods", nargs="+", default=["cc[preset=fast]"], metavar="NAME")
    b.add_argument("--dataset", default="synthetic[n=4096,size=32]",
                   help="images to augment (default: synthetic 32x32)")
    b.add_argument("--data-root")
    b.add_argument("--image-sizes", nargs="+", type=int, default=[32])
    b.add_argument("--batch-sizes", nargs="+", type=int, default=[256, 512])
    b.add_argument("--steps", type=int, default=30, help="timed steps per measurement")
    b.add_argument("--workers", type=int, default=None, help="DataLoader workers for the PIL path (default: min(16, cpus))")
    b.add_argument("--no-pil", action="store_true", help="skip the PIL + DataLoader path")
    b.add_argument("--inference", action="store_true", help="also time feature extraction")
    b.add_argument("--kmeans", action="store_true", help="also time metrics and faiss vs scikit-learn k-means")
    b.add_argument("--kmeans-n", type=int, default=60000)
    b.add_argument("--max-images", type=int, default=60000)
    b.add_argument("--device", default="auto")
    b.add_argument("--precision", default="bf16", choices=["bf16", "fp32"])
    b.add_argument("--compile", action="store_true")
    b.add_argument("--output", "-o", help="write the figures as JSON")
    b.set_defaults(func=cmd_bench)

    rep = sub.add_parser("report", help="rebuild leaderboards from a results directory")
    rep.add_argument("--results", default=DEFAULT_RESULTS)
    rep.add_argument("--format", default="markdown", choices=["markdown", "latex", "csv"])
    rep.add_argument("--output", "-o", help="write to this file instead of stdout")
    rep.set_defaults(func=cmd_report)
    return p


def _one_line_warning(message, category, filename, lineno, line=None) -> str:
    return f"clusterbench: warning: {message}\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    saved_format = warnings.formatwarning  # catch_warnings does not restore it
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("default")
            warnings.formatwarning = _one_line_warning
            return args.func(args)
    except (ConfigError, DataError, RecordError) as exc:
        print(f"clusterbench: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("clusterbench: interrupted; finished runs are kept, rerun the same command to resume",
              file=sys.stderr)
        return 130
    finally:
        warnings.formatwarning = saved_format


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
