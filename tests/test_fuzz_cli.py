"""Random input through the CLI (hypothesis): whatever is typed or read, the exit code is 0, 1
or 2 and stderr carries no traceback."""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clusterbench.cli import main
from helpers import subprocess_env

BOUNDED = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
# words a user types: names, options, brackets, separators, numbers, and anything else
pieces = st.sampled_from(["kmeans", "cc", "digits", "synthetic", "npz", "[", "]", "=", ",", "n=", "path=", "preset=",
                          "epochs=", "steps=", "minutes=", "0", "-1", "1e9", "nan", "inf", "all", " "])
words = st.one_of(st.lists(pieces, min_size=1, max_size=6).map("".join), st.text(min_size=1, max_size=20))


def _cli(argv: list[str]) -> tuple[int, str]:
    """``main(argv)`` as a process would end: its exit code and stderr (argparse exits too)."""
    err = io.StringIO()
    # only the quick plugins: a random grid that happens to be valid must not train a network for minutes
    quick = subprocess_env(keep=("kmeans", "digits", "synthetic", "files"))["CLUSTERBENCH_DISABLE_PLUGINS"]
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()), \
            _env("CLUSTERBENCH_DISABLE_PLUGINS", quick):
        try:
            rc = main(argv)
        except SystemExit as exc:  # argparse: exit 2 with its usage line
            rc = exc.code if isinstance(exc.code, int) else 2
    return rc, err.getvalue()


@contextlib.contextmanager
def _env(key: str, value: str):
    before = os.environ.get(key)
    os.environ[key] = value
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = before


def _check(rc: int, err: str) -> None:
    assert rc in (0, 1, 2), (rc, err)
    assert "Traceback" not in err, err


@BOUNDED
@given(methods=st.lists(words, min_size=1, max_size=3), datasets=st.lists(words, min_size=1, max_size=2),
       budget=st.lists(words, min_size=1, max_size=2), seeds=st.lists(words, min_size=1, max_size=3))
def test_random_grid_options_never_give_a_traceback(methods, datasets, budget, seeds):
    with tempfile.TemporaryDirectory() as tmp:
        argv = ["run", "--methods", *methods, "--datasets", *datasets, "--budget", *budget, "--seeds", *seeds,
                "--results", str(Path(tmp) / "res"), "--device", "cpu", "--quiet"]
        _check(*_cli(argv))


@pytest.mark.parametrize("dataset, name", [("npz", "data.npz"), ("imagefolder", "images.tar.gz")])
@BOUNDED
@given(data=st.binary(max_size=2048))
def test_random_bytes_as_data_never_give_a_traceback(dataset, name, data):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        path.write_bytes(data)
        _check(*_cli(["run", "--methods", "kmeans", "--datasets", f"{dataset}[path={path}]", "--seeds", "0",
                      "--results", str(Path(tmp) / "res"), "--quiet"]))
