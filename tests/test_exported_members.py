"""The public API is what ``clusterbench.__all__`` says, and every name in it resolves (httpx's test)."""

import subprocess
import sys

import clusterbench

PUBLIC = [
    "AugmentSpec", "Budget", "CCObjective", "ClusterbenchError", "ConfigError", "DataError", "Dataset",
    "DeepMethod", "DeepParams", "EngineSettings", "FeatureQueue", "GraphUnavailable", "ImageData", "Method",
    "OptimizerChoice", "OptimizerParams", "PluginError", "Preset", "Recipe", "RecordError", "ResNetBackbone",
    "RunContext", "TrainStats", "Trained", "TrainingDiverged", "__version__", "atomic_save_npz", "atomic_write_bytes",
    "available_cpus", "build_optimizer", "cc_augmentation", "cc_cluster_loss", "cc_loss", "cosine_momentum",
    "ema_update", "gumbel_noise", "gumbel_softmax", "hookimpl", "info_nce", "kmeans", "load_results", "lr_schedule",
    "mlp", "momentum_copy", "neg_entropy_of_mean", "nt_xent", "param", "run_grid", "shuffled_forward",
    "simplex_centres", "split_batchnorm", "warmup_cosine",
]


def test_all_is_the_pinned_public_api():
    assert PUBLIC == sorted(PUBLIC)
    assert clusterbench.__all__ == PUBLIC  # a name added or removed: update PUBLIC (and the README) deliberately


def test_every_exported_name_resolves():
    for name in clusterbench.__all__:
        assert getattr(clusterbench, name) is not None, name  # lazy names are imported here
    assert set(clusterbench.__all__) <= set(dir(clusterbench))


def test_errors_have_one_root_and_the_plugin_api_imports_from_the_top():
    code = ("import clusterbench as c; c.ClusterbenchError, c.DeepMethod, c.AugmentSpec; "
            "assert all(issubclass(getattr(c, n), c.ClusterbenchError) for n in "
            "('ConfigError', 'DataError', 'PluginError', 'RecordError', 'TrainingDiverged', 'GraphUnavailable')); "
            "assert issubclass(c.DeepMethod, c.Method); print('ok')")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr
    try:
        clusterbench.NoSuchName  # noqa: B018
    except AttributeError as exc:
        assert "NoSuchName" in str(exc)
    else:
        raise AssertionError("an unknown name must raise AttributeError")
