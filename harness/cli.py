"""The ``clusterbench`` command line: list, info, run, bench, report."""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import warnings
from pathlib import Path
from typing import Any, Sequence

from tabulate import tabulate

from clusterbench.budget import Budget
from clusterbench.errors import ClusterbenchError, ConfigError
from clusterbench.launch.cli import add_launch_commands
from clusterbench.results.io import atomic_write_bytes
from clusterbench.results.store import ResultsStore
from clusterbench.settings import EngineSettings

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

EPILOG_REPORT = """examples:
  clusterbench report --results runs/                                   # Markdown to stdout
  clusterbench report --results runs/ --format latex --paper -o table.tex
  clusterbench report --results runs/ --html --paper --data-root ~/data -o report.html
  clusterbench report --results results --paper --data-root ~/data --output-dir results   # every format + figures
"""

OUTPUT_FILES = (("markdown", "LEADERBOARD.md"), ("latex", "leaderboard.tex"), ("csv", "leaderboard.csv"),
                ("html", "report.html"))


def _registry(args: argparse.Namespace):
    from clusterbench.plugins import load_local_plugin, load_registry
    extra = [load_local_plugin(p) for p in (getattr(args, "plugin", None) or [])]
    return load_registry(extra)


def _failures(reg: Any) -> str:
    return "; ".join(f"{k} ({v})" for k, v in reg.failed.items())


def _engine_settings(args: argparse.Namespace) -> EngineSettings:
    """:class:`EngineSettings` from the flags ``run`` and ``bench`` share (:func:`_engine_flags`)."""
    import torch  # the run imports it anyway (seeding)

    from clusterbench.validate import device_problem
    if (problem := device_problem(args.device)) is not None:  # run and bench: the same one line
        raise ConfigError(problem)
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    return EngineSettings(device=device, precision=args.precision, compile=_compile_default(args.compile, device),
                          eval_every=getattr(args, "eval_every", 0), cuda_graphs=not args.no_cuda_graphs,
                          compile_augment=not args.no_compile_augment)


def _join_torchrun(settings: EngineSettings) -> tuple[EngineSettings, bool]:
    """Under ``torchrun --nproc-per-node N`` (N > 1): join the process group, train on this rank's
    device (``cuda:LOCAL_RANK``); True on the rank that prints (rank 0, or a plain process)."""
    from clusterbench.train.distributed import init_from_env

    ranks, device = init_from_env(settings.device)
    return dataclasses.replace(settings, device=device), ranks.is_main


def _compile_default(flag: bool | None, device: str) -> bool:
    """``--compile``/``--no-compile`` as given; unset: compile on a GPU (it pays there), not on the CPU."""
    return device.startswith("cuda") if flag is None else flag


def cmd_list(args: argparse.Namespace) -> int:
    reg = _registry(args)
    if args.what in ("methods", "all"):
        rows = [(n, c.description, ", ".join(c.protocols), "yes" if c.deep else "", c.provenance,
                 reg.provider("method", n)) for n, c in sorted(reg.methods.items())]
        print("Methods\n" + tabulate(rows, headers="name description protocols deep provenance provider".split()))
    if args.what in ("datasets", "all"):
        rows = [(n, c.description, c.n_classes or "?", reg.provider("dataset", n)) for n, c in sorted(reg.datasets.items())]
        print("\nDatasets\n" + tabulate(rows, headers=["name", "description", "classes", "provider"]))
    if reg.failed:
        print(f"\nPlugins that failed to import: {_failures(reg)}")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    reg = _registry(args)
    kind, cls = reg.find(args.name)
    if kind == "dataset":
        return _dataset_info(reg, cls)
    print(f"{cls.name}: {cls.description}\npaper: {cls.paper or '-'}\nversion: {cls.version}\n"
          f"protocols: {', '.join(cls.protocols)}\nprovider: {reg.provider('method', cls.name)}\n"
          f"provenance: {cls.provenance}" + (f" ({cls.provenance_note})" if cls.provenance_note else "") + "\n")
    rows = [(f.name, f.default, f.metadata.get("doc", ""), f.metadata.get("source") or "harness choice")
            for f in dataclasses.fields(cls.Params)]
    print(tabulate(rows, headers=["parameter", "default", "meaning", "source"]))
    for name, values in cls.presets.items():
        print(f"\npreset {name}: " + ", ".join(f"{k}={v}" for k, v in values.items()))
        if getattr(values, "provenance", ""):
            print(f"  provenance: {values.provenance}")
    if cls.recipes:
        print("\nper-dataset recipes (over the defaults; a preset and your options win; data options "
              "apply under the paper settings):")
        rows = [(ds, ", ".join(f"{k}={v}" for k, v in r.params.items()) or "-",
                 ", ".join(f"{k}={v}" for k, v in r.data.items()) or "-", r.source)
                for ds, r in sorted(cls.recipes.items())]
        print(tabulate(rows, headers=["dataset", "parameters", "data", "source"]))
    return 0


def _dataset_info(reg: Any, cls: Any) -> int:
    """A dataset's description, classes, provider and options (``name[key=value,...]``)."""
    print(f"{cls.name}: {cls.description}\nclasses: {cls.n_classes or 'known after loading'}\n"
          f"provider: {reg.provider('dataset', cls.name)}\n")
    rows = [(f.name, f.default, f.metadata.get("doc", "")) for f in dataclasses.fields(cls.Options)
            if f.name in cls.option_names()]
    print(tabulate(rows, headers=["option", "default", "meaning"]) if rows else "options: none")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from clusterbench.progress import Reporter
    reg, grid, budget, settings = plan_run(args)
    settings, main_rank = _join_torchrun(settings)
    store = ResultsStore(args.results)  # after every check: a typo writes nothing
    result = grid.run(args.seeds, budget, store, settings, force=args.force,
                      reporter=Reporter(quiet=args.quiet or not main_rank))
    if not main_rank:  # under torchrun rank 0 reports (and records) for every rank
        return 0
    return report_run(result, store)


def plan_run(args: argparse.Namespace) -> tuple[Any, Any, Budget, EngineSettings]:
    """The registry, checked grid, budget and engine settings ``run``'s flags ask for; nothing is written."""
    from clusterbench.runner import plan_grid
    from clusterbench.threads import size_threads
    from clusterbench.validate import GridRequest, validate_grid
    reg = _registry(args)
    methods = args.methods or sorted(n for n, c in reg.methods.items() if c.quick)
    if not methods:
        raise ConfigError("no methods selected and no quick method installed")
    validate_grid(reg, GridRequest(methods, args.datasets or [DEFAULT_DATASET], args.seeds,
                                   args.budget or DEFAULT_BUDGET, args.results, args.data_root, args.protocols,
                                   args.linear, args.device, args.eval_every))  # every problem, exit 2
    budget = Budget.parse(args.budget or DEFAULT_BUDGET)
    grid = plan_grid(reg, methods, args.datasets or [DEFAULT_DATASET], args.data_root, args.protocols, args.linear)
    settings = _engine_settings(args)
    size_threads()  # CPUs available / workers sharing them (CLUSTERBENCH_WORKERS): no oversubscription
    return reg, grid, budget, settings


def report_run(result: Any, store: ResultsStore) -> int:
    """The leaderboard of a grid's records and its failures; the exit code (1 if a cell failed)."""
    from clusterbench.report.render import render
    print(render([o.record for o in result.outcomes if o.record is not None], "markdown"))
    print(f"results: {store.root}/  (rebuild tables with: clusterbench report --results {store.root})")
    if busy := [o for o in result.outcomes if o.status == "busy"]:  # several processes on one store
        print(f"{len(busy)} cell(s) not in this table, still running in another process: " + "; ".join(
            f"{o.method} on {o.dataset} seed {o.seed}" for o in busy) + f". When they finish, `clusterbench "
            f"report --results {store.root}` is the table of record.", file=sys.stderr)
    if result.failed:
        print(f"{len(result.failed)} run(s) failed: " + "; ".join(
            f"{o.method} on {o.dataset} seed {o.seed}: {o.reason}" for o in result.failed), file=sys.stderr)
        return 1
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    settings = _engine_settings(args)  # first: `--device cuda` without a GPU is the line `run` gives, at once
    reg = _registry(args)
    from clusterbench.bench.command import run_bench
    return run_bench(args, reg, settings)


def cmd_report(args: argparse.Namespace) -> int:
    from clusterbench.report.figures import build_figures
    from clusterbench.report.leaderboard import build_leaderboard
    from clusterbench.report.render import render
    if args.figure_methods < 0:
        raise ConfigError(f"--figure-methods {args.figure_methods}: must be >= 0")
    store = ResultsStore(args.results, create=False)
    records = list(store.iter_records(strict=True))  # a broken record: RecordError naming the file, exit 2
    outputs = _report_outputs(args)
    html = any(fmt == "html" for fmt, _ in outputs)
    reg = _registry(args) if (args.paper or html) else None
    board = build_leaderboard(records, reg.reported_results() if args.paper else None,  # once, for every format
                              equal_time=args.equal_time)
    figures, notes = [], []
    if html:
        figures = build_figures(board, store.load_labels, reg.recorded_data_loader(args.data_root),
                                max_methods=args.figure_methods)
        if reg.failed:
            notes.append(f"plugins that failed to import (their reported numbers are missing): {_failures(reg)}")
    for fmt, path in outputs:
        text = render(board, fmt, figures=figures, notes=notes, title=args.title, source=str(store.root))
        if path is None:
            print(text)
        else:
            _write(path, text.encode())
            print(f"wrote {path}", file=sys.stderr)
    if args.output_dir:
        _write_figures(Path(args.output_dir) / "figures", figures)
    for ds in figures:
        for note in ds.notes:
            print(f"clusterbench: note: {note}", file=sys.stderr)
    return 0


def _report_outputs(args: argparse.Namespace) -> list[tuple[str, Path | None]]:
    """(format, file or None for stdout) for every table ``report`` writes."""
    if not args.output_dir:
        return [(args.format, Path(args.output) if args.output else None)]
    if args.output:
        raise ConfigError("give either --output or --output-dir, not both")
    return [(fmt, Path(args.output_dir) / name) for fmt, name in OUTPUT_FILES]


def _write_figures(fig_dir: Path, figures: Sequence[Any]) -> None:
    from clusterbench.report.figures import IMAGE_TYPES

    for ds in figures:
        for fig in ds.figures:
            for ext in IMAGE_TYPES.keys() - {fig.ext}:  # the same figure in the format an older report wrote
                (fig_dir / f"{fig.key}.{ext}").unlink(missing_ok=True)
            _write(fig_dir / f"{fig.key}.{fig.ext}", fig.image)
    if any(ds.figures for ds in figures):
        print(f"wrote {fig_dir}/ ({sum(len(ds.figures) for ds in figures)} figures)", file=sys.stderr)


def _write(path: Path, data: bytes) -> None:
    try:
        atomic_write_bytes(path, data)
    except OSError as exc:
        raise ConfigError(f"cannot write {path}: {exc.strerror or exc}") from None


def _engine_flags() -> argparse.ArgumentParser:
    """The engine flags ``run`` and ``bench`` share, read by :func:`_engine_settings`."""
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("engine")
    g.add_argument("--device", default="auto", help="auto (GPU when there is one), cpu, cuda, cuda:1")
    g.add_argument("--precision", default="bf16", choices=["bf16", "fp32"])
    g.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                   help="torch.compile the model (default: on a GPU; ~30-40 s of compilation, then ~1.3x faster "
                   "steps); bench also times the uncompiled step")
    g.add_argument("--no-cuda-graphs", action="store_true", help="run the training step eagerly, not as a CUDA graph")
    g.add_argument("--no-compile-augment", action="store_true", help="run the GPU colour jitter without torch.compile")
    return p


def _grid_flags() -> argparse.ArgumentParser:
    """The flags that say which cells a grid has (``run``, ``status``; the keys of a ``--grid`` file)."""
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--methods", nargs="+", metavar="NAME",
                   help="method names, NAME[key=value,...] or 'all' (default: the quick methods)")
    p.add_argument("--datasets", nargs="+", metavar="NAME",
                   help=f"dataset names or NAME[key=value,...] (default: {DEFAULT_DATASET})")
    p.add_argument("--seeds", nargs="+", type=int, default=DEFAULT_SEEDS, metavar="N")
    p.add_argument("--budget", nargs="+", metavar="KEY=VALUE", help="training budget shared by every deep method: "
                   f"epochs=, steps=, images=, minutes= (default: {DEFAULT_BUDGET})")
    p.add_argument("--results", default=DEFAULT_RESULTS, help=f"results directory (default: {DEFAULT_RESULTS})")
    p.add_argument("--data-root", help="where dataset files are (torchvision layouts, image folders)")
    p.add_argument("--protocols", nargs="+", metavar="P", help="head kmeans; linear linear-logreg: one more cell")
    p.add_argument("--linear", nargs="+", metavar="KEY=VALUE", help="the linear probe: epochs=100 lr=0.1 ...")
    p.add_argument("--eval-every", type=int, default=0, metavar="EPOCHS",
                   help="epochs between ACC/NMI points on the learning curve (default: about 10 points)")
    return p


def _add_run(sub: Any, parents: list[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    run = sub.add_parser("run", help="run every (method, dataset, seed) cell", parents=parents, epilog=EPILOG_RUN,
                         formatter_class=argparse.RawDescriptionHelpFormatter)
    run.add_argument("--force", action="store_true", help="rerun cells that already finished")
    run.add_argument("--quiet", action="store_true", help="no progress output")
    run.set_defaults(func=cmd_run)
    return run


def _add_bench(sub: Any, engine: argparse.ArgumentParser) -> None:
    b = sub.add_parser("bench", help="throughput: model-only ceiling vs harness step vs PIL pipeline", parents=[engine])
    b.add_argument("--methods", nargs="+", default=["cc[preset=fast]"], metavar="NAME")
    b.add_argument("--dataset", default="synthetic[n=4096,size=32]",
                   help="images to augment (default: synthetic 32x32)")
    b.add_argument("--data-root")
    b.add_argument("--image-sizes", nargs="+", type=int, default=[32])
    b.add_argument("--batch-sizes", nargs="+", type=int, default=[256, 512])
    b.add_argument("--steps", type=int, default=30, help="timed steps per measurement")
    b.add_argument("--warmup", type=int, default=10, help="untimed steps before each measurement")
    b.add_argument("--workers", type=int, help="DataLoader workers for the PIL path (default: min(16, cpus))")
    b.add_argument("--no-pil", action="store_true", help="skip the PIL + DataLoader path")
    b.add_argument("--profile", action="store_true", help="print torch.profiler's top operators of the harness step")
    b.add_argument("--inference", action="store_true", help="also time feature extraction")
    b.add_argument("--kmeans", action="store_true", help="also time metrics and faiss vs scikit-learn k-means")
    b.add_argument("--kmeans-n", type=int, default=60000, help="samples of the k-means and metrics benchmarks")
    b.add_argument("--kmeans-train-steps", type=int, default=300, metavar="N", help="also run the k-means "
                   "comparison on features of the first method trained for N steps (0: synthetic features only)")
    b.add_argument("--max-images", type=int, default=60000)
    b.add_argument("--output", "-o", help="write the figures as JSON")
    b.set_defaults(func=cmd_bench)


def _add_report(sub: Any) -> None:
    rep = sub.add_parser("report", help="rebuild leaderboards (and an HTML report with figures) from a results "
                         "directory", epilog=EPILOG_REPORT, formatter_class=argparse.RawDescriptionHelpFormatter)
    rep.add_argument("--results", default=DEFAULT_RESULTS)
    rep.add_argument("--format", default="markdown", choices=["markdown", "latex", "csv", "html"])
    rep.add_argument("--html", dest="format", action="store_const", const="html", help="same as --format html")
    rep.add_argument("--output", "-o", help="write to this file instead of stdout")
    rep.add_argument("--output-dir", metavar="DIR", help="write every format at once: DIR/LEADERBOARD.md, "
                     "leaderboard.tex, leaderboard.csv, report.html and DIR/figures/ (PNG; sample grids JPEG)")
    rep.add_argument("--paper", action="store_true", help="show the numbers the papers report under the measured rows")
    rep.add_argument("--data-root", help="where dataset files are: the html report reloads each dataset for its "
                     "confusion matrices and sample grids (skipped, with a note, if it cannot)")
    rep.add_argument("--figure-methods", type=int, default=4, metavar="N",
                     help="confusion matrix and sample grid for the N best methods of each dataset (default 4)")
    rep.add_argument("--title", default="clusterbench report", help="title of the html report")
    rep.add_argument("--equal-time", nargs="+", type=float, default=[1.0, 2.0, 4.0], metavar="MIN",
                     help="GPU-minute marks of the equal-time table: head ACC each method had reached by then")
    rep.set_defaults(func=cmd_report)


def build_parser() -> argparse.ArgumentParser:
    from clusterbench import __version__
    p = argparse.ArgumentParser(prog="clusterbench", description=__doc__)
    p.add_argument("--version", action="version", version=f"clusterbench {__version__}")
    p.add_argument("--plugin", action="append", metavar="FILE", help="load plugins from this .py file too (repeatable)")
    sub = p.add_subparsers(dest="command")
    ls = sub.add_parser("list", help="show every method and dataset with its provider")
    ls.add_argument("what", nargs="?", choices=["all", "methods", "datasets"], default="all")
    ls.set_defaults(func=cmd_list)
    info = sub.add_parser("info", help="a method's parameters, defaults and their sources, or a dataset's options")
    info.add_argument("name")
    info.set_defaults(func=cmd_info)
    engine, grid = _engine_flags(), _grid_flags()
    run = _add_run(sub, [engine, grid])
    add_launch_commands(sub, run, [engine, grid])  # --workers/--launcher/--shard/--grid, status, merge
    _add_bench(sub, engine)
    _add_report(sub)
    return p


def _one_line_warning(message, category, filename, lineno, line=None) -> str:  # noqa: ANN001 - warnings' API
    return f"clusterbench: warning: {message}\n"


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so the interpreter's last flush does not fail on the closed pipe."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # stdout is not a file (captured in tests)
        pass


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
    except ClusterbenchError as exc:
        for line in str(exc).splitlines() or [""]:  # a grid's problems: one line each
            print(f"clusterbench: error: {line}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("clusterbench: interrupted; finished runs are kept, rerun the same command to resume", file=sys.stderr)
        return 130
    except MemoryError as exc:  # e.g. a dataset option asking for more images than fit in memory
        print(f"clusterbench: error: out of memory ({exc}); finished runs are kept", file=sys.stderr)
        return 1
    except BrokenPipeError:  # `clusterbench report | head`: the reader has what it wanted
        _silence_stdout()
        return 141  # 128 + SIGPIPE, as a shell reports a process the closed pipe stopped
    except OSError as exc:  # the disk filled up, the store became read-only: one line; finished records stay
        where = f" ({exc.filename})" if exc.filename else ""
        print(f"clusterbench: error: {exc.strerror or exc}{where}; finished runs are kept", file=sys.stderr)
        return 1
    finally:
        warnings.formatwarning = saved_format


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
