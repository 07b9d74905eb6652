"""One-line messages a user sees: failed runs by their registered name, broken --plugin files; faiss threads."""

from __future__ import annotations

import numpy as np
import pytest

from clusterbench.cli import main
from clusterbench.evaluate.faiss_kmeans import available_cpus, kmeans
from helpers import error_lines

EXPLODER = '''
from dataclasses import dataclass
from clusterbench import Method, hookimpl, param

class ExploderMethod(Method):  # the class name differs from the registered name on purpose
    name = "exploder"
    description = "test: raises in fit"

    @dataclass(frozen=True)
    class Params:
        k: int = param(2, "unused")

    def fit(self, data, ctx):
        raise RuntimeError("exploded on purpose")

    def predict(self, data):
        raise AssertionError("never reached")

@hookimpl
def clusterbench_methods():
    return [ExploderMethod]
'''


def test_failed_runs_are_named_by_their_registered_name(tmp_path, capsys):
    plugin = tmp_path / "exploder_plugin.py"
    plugin.write_text(EXPLODER)
    rc = main(["--plugin", str(plugin), "run", "--methods", "exploder[k=3]", "--datasets",
               "synthetic[n=30,classes=3,size=4]", "--seeds", "0", "--results", str(tmp_path / "res"), "--quiet"])
    out, err = capsys.readouterr()
    assert rc == 1
    summary = [ln for ln in err.splitlines() if "run(s) failed" in ln]
    assert summary == ["1 run(s) failed: exploder on synthetic seed 0: RuntimeError: exploded on purpose"]
    assert "ExploderMethod" not in out + err


BROKEN = {
    "missing_import.py": ("import not_a_module_anywhere_xyz\n", "ModuleNotFoundError: No module named"),
    "syntax.py": ("def clusterbench_methods(:\n", "SyntaxError:"),
    "raises.py": ("x = 1 / 0\n", "ZeroDivisionError: division by zero"),
    "typo_hook.py": ("from clusterbench import hookimpl\n@hookimpl\ndef clusterbench_method():\n    return []\n",
                     "unknown hook 'clusterbench_method'"),
}


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_plugin_file_that_fails_to_import_is_one_line(tmp_path, capsys, name):
    source, fragment = BROKEN[name]
    path = tmp_path / name
    path.write_text(source)
    rc = main(["--plugin", str(path), "run", "--results", str(tmp_path / "res"), "--quiet"])
    err = capsys.readouterr().err
    lines = error_lines(err)
    assert rc == 2
    assert len(lines) == 1 and lines[0].startswith("clusterbench: error: "), err
    assert str(path) in lines[0] and fragment in lines[0]
    assert "Traceback" not in err
    assert not (tmp_path / "res").exists()  # nothing ran, nothing was written


def test_kmeans_caps_faiss_threads_at_the_cpus_available(monkeypatch):
    import faiss

    before = faiss.omp_get_max_threads()
    x = np.random.default_rng(0).normal(size=(40, 3)).astype(np.float32)
    try:
        faiss.omp_set_num_threads(8)
        monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1}, raising=False)
        assert available_cpus() == 2
        kmeans(x, 3, seed=0, niter=5, nredo=1)
        assert faiss.omp_get_max_threads() == 2
        faiss.omp_set_num_threads(1)  # a lower setting (OMP_NUM_THREADS, a caller) is kept
        kmeans(x, 3, seed=0, niter=5, nredo=1)
        assert faiss.omp_get_max_threads() == 1
    finally:
        faiss.omp_set_num_threads(before)
