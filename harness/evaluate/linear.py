"""The linear protocols: a classifier on frozen features, trained on the training split only.

Standard linear evaluation (MoCo ``main_lincls``, solo-learn): the method is pretrained on
the training split alone (the runner's linear cell, ``train_split="train"``), then a linear
classifier is trained on its frozen features of the training split and scored top-1 on the
test split.  The test images are seen by nothing but the final scoring.

- ``linear`` (default): an SGD-trained linear head on freshly augmented views every epoch:
  RandomResizedCrop (scale 0.08-1) + horizontal flip, computed on the device through the
  method's own ``embed`` on its frozen network (eval mode).  MoCo ``main_lincls.py``
  defaults: 100 epochs, batch 256, SGD momentum 0.9, weight decay 0, lr ÷10 at epochs 60
  and 80.  MoCo's lr 30 is tuned to its unnormalised features; here the features go through
  a BatchNorm without affine parameters first (MAE ``main_linprobe.py``), which keeps the
  classifier linear (at test time it folds into the weights) and makes one lr fit every
  method's feature scale: 0.1, as MoCo v3's ``main_lincls.py``.
- ``linear-logreg``: the fast variant, sklearn logistic regression on standardised,
  unaugmented features (no SGD, no augmentation); the same train-only cell.

A method that is not trained by the engine (no network to augment through) gets the SGD
head on its unaugmented ``features``; the record says ``augmented: false``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any, Sequence

import numpy as np

from clusterbench.api import ImageData, Method
from clusterbench.errors import ConfigError, DataError

LINEAR_PROTOCOLS = ("linear", "linear-logreg")

__all__ = ["LINEAR_PROTOCOLS", "LinearProbe", "check_test_split", "sgd_probe", "logreg_probe"]


@dataclass(frozen=True)
class LinearProbe:
    """The SGD probe's settings (``--linear key=value ...``); part of the linear cell's identity."""

    epochs: int = 100  # MoCo main_lincls --epochs
    lr: float = 0.1  # MoCo v3 main_lincls --lr (features BatchNorm'd, see the module doc)
    batch_size: int = 256  # MoCo main_lincls -b
    momentum: float = 0.9  # MoCo main_lincls --momentum
    weight_decay: float = 0.0  # MoCo main_lincls --wd
    milestones: tuple[float, ...] = (0.6, 0.8)  # lr ÷10 at these fractions (MoCo: epochs 60, 80 of 100)
    crop_scale: float = 0.08  # RandomResizedCrop's smallest area (torchvision default, as MoCo)

    @classmethod
    def parse(cls, items: Sequence[str] | None) -> "LinearProbe":
        """``["epochs=10", "lr=0.5"]`` -> a probe; one-line ConfigError for an unknown key or bad value."""
        kinds = {f.name: type(f.default) for f in fields(cls)}
        values: dict[str, Any] = {}
        for item in items or []:
            key, sep, text = item.partition("=")
            if not sep or key not in kinds or key == "milestones":
                raise ConfigError(f"--linear {item!r}: expected KEY=VALUE with KEY one of "
                                  f"{', '.join(k for k in kinds if k != 'milestones')}")
            try:
                values[key] = kinds[key](text)
            except ValueError:
                raise ConfigError(f"--linear {item!r}: {text!r} is not a valid {kinds[key].__name__}") from None
        probe = cls(**values)
        if probe.epochs < 1 or probe.batch_size < 1 or probe.lr <= 0 or not 0 < probe.crop_scale <= 1:
            raise ConfigError(f"--linear: epochs and batch_size must be >= 1, lr > 0, crop_scale in (0, 1]: {probe}")
        return probe

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


def check_test_split(data: ImageData, what: str) -> None:
    """DataError (one line) unless ``data`` has both a training and a test split."""
    mask = data.train_mask
    if mask is None or mask.all() or not mask.any():
        has = "no train/test split" if mask is None or mask.all() else "no training split"
        raise DataError(f"dataset {data.name!r} has {has}, so {what} cannot run: the linear protocol trains "
                        f"on the training split and scores on the test split (use a dataset with both, "
                        f"e.g. its split=all)")


def _splits(data: ImageData) -> tuple[np.ndarray, np.ndarray]:
    check_test_split(data, "the linear probe")
    return np.flatnonzero(data.train_mask), np.flatnonzero(~data.train_mask)


def logreg_probe(features: np.ndarray, data: ImageData, seed: int) -> dict[str, Any]:
    """``linear-logreg``: logistic regression on standardised frozen features, train -> test."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    train, test = _splits(data)
    scaler = StandardScaler().fit(features[train])
    clf = LogisticRegression(max_iter=1000, random_state=seed)
    clf.fit(scaler.transform(features[train]), data.y[train])
    acc = float((clf.predict(scaler.transform(features[test])) == data.y[test]).mean())
    return {"accuracy": acc, "trained_on": "train", "probe": "logreg", "n_train": len(train), "n_test": len(test)}


def sgd_probe(method: Method, data: ImageData, probe: LinearProbe, seed: int) -> dict[str, Any]:
    """``linear``: an SGD linear head on frozen features of augmented training views, train -> test."""
    import torch

    train, test = _splits(data)
    trained = getattr(method, "trained", None)
    gen = torch.Generator().manual_seed(seed)
    if trained is not None:
        device = trained.device
        embed = _augmented_embedder(method, trained, probe, seed + 1)
        x_train = torch.from_numpy(data.x[train]).to(device)
        test_feats = torch.from_numpy(trained.apply(lambda m, x: method.embed(m, x).float(), data.x[test]))
    else:  # no network to augment through: the method's fixed features
        device = torch.device("cpu")
        feats = method.features(data)
        if feats is None:
            raise ConfigError(f"method {method.name!r} provides no features for the 'linear' protocol")
        feats = torch.as_tensor(np.asarray(feats, dtype=np.float32))
        x_train, test_feats = feats[train], feats[test]
        embed = None
    y_train = torch.as_tensor(data.y[train], device=device)
    dim = int(test_feats.shape[1])
    head = torch.nn.Sequential(torch.nn.BatchNorm1d(dim, affine=False, eps=1e-6),
                               torch.nn.Linear(dim, data.n_classes)).to(device)
    torch.nn.init.normal_(head[1].weight, std=0.01)  # MoCo main_lincls: N(0, 0.01), zero bias
    torch.nn.init.zeros_(head[1].bias)
    opt = torch.optim.SGD(head.parameters(), lr=probe.lr, momentum=probe.momentum, weight_decay=probe.weight_decay)
    steps = max(1, math.ceil(len(train) / probe.batch_size))
    for epoch in range(probe.epochs):
        lr = probe.lr * 0.1 ** sum(epoch >= m * probe.epochs for m in probe.milestones)
        for group in opt.param_groups:
            group["lr"] = lr
        order = torch.randperm(len(train), generator=gen).to(device)
        for i in range(steps):
            idx = order[i * probe.batch_size:(i + 1) * probe.batch_size]
            with torch.no_grad():
                f = embed(x_train[idx]) if embed is not None else x_train[idx]
            loss = torch.nn.functional.cross_entropy(head(f.float()), y_train[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    head.eval()
    with torch.no_grad():
        pred = head(test_feats.to(device).float()).argmax(1).cpu().numpy()
    acc = float((pred == data.y[test]).mean())
    return {"accuracy": acc, "trained_on": "train", "probe": "sgd", "augmented": embed is not None,
            "n_train": len(train), "n_test": len(test), "epochs": probe.epochs}


def _augmented_embedder(method: Method, trained: Any, probe: LinearProbe, seed: int):
    """``f(uint8 batch)``: crop+flip views through the frozen network (eval mode), seeded on the device."""
    import torch

    from clusterbench.train.augment import AugmentSpec, GPUAugment
    from clusterbench.train.device import autocast, to_channels_last

    spec = AugmentSpec(crop_scale=(probe.crop_scale, 1.0), jitter_p=0.0, grayscale_p=0.0,
                       mean=trained.mean, std=trained.std)
    aug = GPUAugment(spec, trained.input_size)
    gen = torch.Generator(device=trained.device).manual_seed(seed)
    model = trained.model
    model.eval()

    def embed(xb: Any) -> Any:
        views = to_channels_last(aug(xb, gen), trained.device)
        with autocast(trained.device, trained.precision):
            return method.embed(model, views)

    return embed
