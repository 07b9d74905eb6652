"""CueCo: Cluster Contrast (Giakoumoglou & Stathaki, ICIP 2025, pp. 133-138; arXiv 2507.12359).

What the paper says -- everything of it that could be read.  Only the abstract, the index
terms, the opening paragraphs of §1 (Introduction) and the caption of the framework figure
were retrievable; the method section (§2: the loss equations, how centroids are defined and
updated), the implementation details and the result tables were NOT (see "Sources" below).
- Two networks, a *query* f_theta and a *key* f_xi; the key network "is updated through a
  slow-moving average" of the query (abstract): an EMA copy that gets no gradient.
- Figure caption: two augmented views v, v' of an image x; z = f_theta(v), z' = f_xi(v').
  CueCo (a) enforces inter-class separation with a contrastive loss, (b) improves
  intra-class cohesion through clustering, (c) trains on both.
- Abstract: the contrastive loss pushes dissimilar features apart; the clustering objective
  pulls together features of the same cluster.  Linear evaluation with a ResNet-18:
  91.40% (CIFAR-10), 68.56% (CIFAR-100), 78.65% (ImageNet-100) top-1.
The paper is silent (as far as it could be read) on: the form of either loss, the
temperatures, how many clusters/centroids and how they are updated, the momentum value or
schedule, optimiser, lr, batch size, epochs, projector, augmentations, image sizes.

Sources: the paper's abstract, index terms, the start of §1 and the framework figure's
caption (arXiv 2507.12359v1; no stored copy holds more).  The authors list no code for
CueCo.  One third-party README cites CueCo as the source of its CIFAR-10 ResNet-18 baselines,
which are solo-learn's published numbers: a hint, second-hand, that CueCo's comparison (and
plausibly its training setup) is solo-learn's CIFAR benchmark.  It only guides the defaults.

RECONSTRUCTED, NOT TRANSCRIBED: the formulation below is the one the abstract's own
vocabulary (query / key / slow-moving average = MoCo) and the authors' MoCo-based lineage
(SynCo is built on MoCo v2) point to, with the clustering objective written as learnable
centroids and balanced assignments.  Every value is marked ``source=None``.  Check it
against the paper's §2 before quoting numbers from it.

Model: a ResNet backbone and a 2-layer MLP projector form the query network; the key
network is a frozen copy updated after every step as xi <- m xi + (1 - m) theta with m
going from 0.99 to 0.999 on a cosine schedule (solo-learn's CIFAR MoCo v2+;
``clusterbench.ema_update``).  K learnable centroids C (unit vectors, K = the number of
clusters) live in the projection space.

Loss: L = L_con + lambda * L_clu, symmetrised over the two views.  (The figure caption sends
v through the query and v' through the key only; both views through both networks, with the
two directions averaged, is the harness's choice, as in MoCo v2+/v3 and SwAV.)
- L_con (scatter): MoCo's InfoNCE, each query's positive is the key of the other view of
  its image, negatives are the keys of earlier batches held in a FIFO queue (one queue
  per view, as solo-learn's MoCo v2+), tau = 0.2;  with ``queue_size=0`` the negatives
  are the other keys of the batch (MoCo v3 style).
- L_clu (align): the key network assigns each image to the centroids with balanced
  (Sinkhorn-Knopp, equipartition) assignments of its key features, made one-hot by
  argmax (``hard_assignment``); the query of the *other* view must predict that
  assignment: cross entropy against softmax(<q, C> / tau_c).  All images of a cluster are
  pulled to the same centroid; the equipartition keeps the clusters from collapsing into
  one.  (Soft SwAV-style targets are available with ``hard_assignment=false``; with K =
  the number of classes they stayed at the uniform fixed point, L_clu = log K, in our
  smoke runs, so the head learned nothing.)

Prediction (``head`` protocol).  During training (and on the learning curve) the head is
the argmax of the query projection's cosines to the K centroids.  After training,
``refine_head`` re-centres that clustering: the centroids' partition of the training images
starts k-means (Lloyd) steps on the backbone features (``head_refine_iters`` = 50), and the
head becomes the nearest refined centre.  Why: CueCo's clustering objective is intra-cluster
cohesion around centres, which is k-means' objective; the centroids trained by SGD trail the
features the network ends with, and Lloyd steps move them to the means of their clusters
without looking at labels.  The partition stays the method's own (its start), so ``head``
is k-means on its features initialised by its learned clustering, a local optimum of the
same objective the ``kmeans`` protocol optimises from k-means++ starts; it is there for the
case measured before it, a centroid head below k-means on the same features (0.29 vs 0.30
at 1.5 minutes on CIFAR-10).  Not guaranteed: a poor start can end in a worse local optimum,
and at 100 epochs (``fast``, CIFAR-10, seed 0, one H100) it cost 1.7 points: the learned
centroids gave head ACC 0.482 (the curve's last point, same network and images), the refined
head 0.465 (k-means 0.466) after moving 17.5 % of the images; the default stays until more
seeds say which way it goes (changing it changes the committed cells' run ids).
``head_refine_iters=0`` keeps the learned centroids; the record's ``stats.details`` gives
``head_refined_moved``, the fraction of images the refinement moved.  ``embed`` gives the
backbone's pooled features (the kmeans and linear protocols' input, as in the paper's
linear evaluation).

Defaults: ResNet-18 (abstract) with the CIFAR stem at 32x32; the rest is solo-learn's
CIFAR MoCo v2+ recipe (``scripts/pretrain/cifar/mocov2plus.yaml``: SGD lr 0.3, momentum
0.9, wd 1e-4, batch 256, warmup-cosine schedule with 10 of 1000 epochs of warmup,
projector 2048 -> 256, tau 0.2, queue 32768, EMA momentum 0.99 -> 0.999; augmentations
``symmetric_weak.yaml``: crop scale 0.08-1, jitter 0.4/0.4/0.4/0.1 with p 0.8, grayscale
0.2, blur 0.5, no solarisation, flip 0.5), chosen because the backbone and the three
benchmarks are solo-learn's and CueCo's baselines appear to be too (see "Sources");
SwAV's values for the clustering part (tau_c = 0.1, epsilon = 0.05, 3 Sinkhorn
iterations); hard targets and lambda = 1 are harness choices.

Reported (abstract, linear evaluation, ResNet-18): CIFAR-10 0.9140, CIFAR-100 0.6856,
ImageNet-100 0.7865 top-1 accuracy.  CIFAR-100 there is the 100-fine-class linear
evaluation, not the 20-superclass clustering benchmark (``cifar100-20``).  The abstract
gives no clustering (ACC/NMI/ARI) numbers.

Presets: ``paper`` (the defaults: the CIFAR setting above -- named for the paper's backbone
and benchmarks; its hyper-parameters are not the paper's, which are unknown), ``fast`` (the
same ResNet-18 with the CIFAR stem at the dataset's own size, batch 256, but 10% of the budget
as lr warmup instead of 1%: solo-learn's 10 warmup epochs are an absolute count, and 1% of a
short budget is a few dozen steps, too few for lr 0.3), ``imagenet100`` (ImageNet stem at
224x224, queue 65536, EMA momentum 0.99 -> 1.0: solo-learn's ImageNet-100 MoCo v2+ values;
its batch of 2 x 64 and 400 epochs are left to the run's budget).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from clusterbench import (AugmentSpec, DeepMethod, DeepParams, FeatureQueue, ResNetBackbone, build_optimizer,
                          cosine_momentum, ema_update, hookimpl, info_nce, mlp, momentum_copy, neg_entropy_of_mean,
                          param, warmup_cosine)

PAPER = "Giakoumoglou & Stathaki, Cluster Contrast for Unsupervised Visual Representation Learning, ICIP 2025"


# ---- the loss, as pure functions (float32 inside) ---------------------------------------
@torch.no_grad()
def sinkhorn_knopp(scores: torch.Tensor, epsilon: float, n_iters: int) -> torch.Tensor:
    """Balanced soft assignments of B samples to K clusters (SwAV's Sinkhorn-Knopp).

    Starts from exp(scores / epsilon) and alternately normalises clusters to mass 1/K and
    samples to mass 1/B; returns (B, K) rows summing to 1, each cluster receiving about
    B/K samples in total, whatever the scores favour.
    """
    s = scores.float() / epsilon
    q = torch.exp(s - s.max()).t()  # (K, B); the shift cancels in the normalisations
    k, b = q.shape
    q = q / q.sum()
    for _ in range(n_iters):
        q = q / q.sum(dim=1, keepdim=True) / k
        q = q / q.sum(dim=0, keepdim=True) / b
    return (q * b).t()


def swapped_cluster_loss(s1: torch.Tensor, s2: torch.Tensor, t1: torch.Tensor, t2: torch.Tensor,
                         temperature: float) -> torch.Tensor:
    """Each view's query predicts the other view's key assignment.

    ``s1, s2``: (B, K) cosine similarities of the queries to the centroids; ``t1, t2``:
    (B, K) target assignments from the key network.  Returns the mean of
    -sum_k t2 log softmax(s1 / tau) and -sum_k t1 log softmax(s2 / tau).
    """
    l1 = -(t2.float() * F.log_softmax(s1.float() / temperature, dim=1)).sum(1).mean()
    l2 = -(t1.float() * F.log_softmax(s2.float() / temperature, dim=1)).sum(1).mean()
    return (l1 + l2) / 2


def balanced_assignment(scores: torch.Tensor, epsilon: float, n_iters: int, hard: bool) -> torch.Tensor:
    """Targets from key-centroid scores: Sinkhorn-Knopp, then (``hard``) one-hot of its argmax."""
    t = sinkhorn_knopp(scores, epsilon, n_iters)
    return F.one_hot(t.argmax(1), t.shape[1]).float() if hard else t


def cueco_loss(z1, z2, k1, k2, s1, s2, ks1, ks2, queue1, queue2, *, temperature: float,
               cluster_temperature: float, epsilon: float, sinkhorn_iters: int,
               cluster_weight: float, hard: bool = False) -> dict[str, torch.Tensor]:
    """L = L_con + lambda L_clu for one batch of two views (see the module docstring).

    ``z*``: query projections, ``k*``: key projections, ``s*``: query-centroid cosines,
    ``ks*``: key-centroid cosines, ``queue1/2``: past keys of view 1/2 (or None).
    """
    l_con = (info_nce(z1, k2, queue2, temperature) + info_nce(z2, k1, queue1, temperature)) / 2
    t1 = balanced_assignment(ks1, epsilon, sinkhorn_iters, hard)
    t2 = balanced_assignment(ks2, epsilon, sinkhorn_iters, hard)
    l_clu = swapped_cluster_loss(s1, s2, t1, t2, cluster_temperature)
    with torch.no_grad():  # a diagnostic, not minimised: log K - H(mean query assignment)
        balance = neg_entropy_of_mean(torch.cat([s1, s2]).float().div(cluster_temperature).softmax(1))
    return {"loss": l_con + cluster_weight * l_clu, "loss_contrast": l_con, "loss_cluster": l_clu,
            "cluster_imbalance": balance}


# ---- the model ------------------------------------------------------------------------------
class Encoder(nn.Module):
    """Backbone + projector: f_theta (query) or, as a frozen copy, f_xi (key)."""

    def __init__(self, backbone: nn.Module, projector: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.projector = projector

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.projector(self.backbone(x))


class CueCoNetwork(nn.Module):
    """Query network, its momentum key network, K centroids and the two key queues."""

    def __init__(self, backbone: nn.Module, rep_dim: int, hidden_dim: int, proj_dim: int, n_clusters: int,
                 queue_size: int) -> None:
        super().__init__()
        self.query = Encoder(backbone, mlp(rep_dim, hidden_dim, proj_dim))
        self.key = momentum_copy(self.query)
        self.centroids = nn.Parameter(F.normalize(torch.randn(n_clusters, proj_dim), dim=1))
        self.queues = nn.ModuleList([FeatureQueue(queue_size, proj_dim), FeatureQueue(queue_size, proj_dim)])
        # the head after training (see CueCo.refine_head): centres in the backbone's feature space
        self.register_buffer("head_centres", torch.zeros(n_clusters, rep_dim))
        self.register_buffer("head_refined", torch.zeros((), dtype=torch.bool))

    def centroid_scores(self, z: torch.Tensor, detach_centroids: bool = False) -> torch.Tensor:
        """(B, K) cosine similarities of projections to the centroids, in float32 (no autocast:
        the balanced assignment divides them by epsilon = 0.05, beyond bf16's precision)."""
        c = self.centroids.detach() if detach_centroids else self.centroids
        with torch.autocast(z.device.type, enabled=False):
            return F.normalize(z.float(), dim=1) @ F.normalize(c.float(), dim=1).t()

    def forward(self, v1: torch.Tensor, v2: torch.Tensor):
        z1, z2 = self.query(v1), self.query(v2)
        with torch.no_grad():
            k1, k2 = self.key(v1), self.key(v2)
            ks1 = self.centroid_scores(k1, detach_centroids=True)
            ks2 = self.centroid_scores(k2, detach_centroids=True)
        return z1, z2, k1, k2, self.centroid_scores(z1), self.centroid_scores(z2), ks1, ks2

    @torch.no_grad()
    def enqueue(self, k1: torch.Tensor, k2: torch.Tensor) -> None:
        """FIFO, one queue per view: the newest keys overwrite the oldest (no host sync)."""
        self.queues[0].push(k1)
        self.queues[1].push(k2)


def lloyd_refine(features: torch.Tensor, labels: torch.Tensor, k: int, n_iters: int) -> torch.Tensor:
    """k-means (Lloyd) steps in ``features``' space started from the partition ``labels``:
    (k, D) centres.  An empty cluster takes the point farthest from its centre (as faiss
    splits large clusters to refill empty ones), so K centres always come back."""
    x = features.float()
    lab = labels.long().clone()
    centres = torch.zeros(k, x.shape[1], dtype=x.dtype, device=x.device)
    for it in range(n_iters + 1):
        counts = torch.bincount(lab, minlength=k)
        centres.zero_().index_add_(0, lab, x)
        centres /= counts.clamp_min(1).unsqueeze(1).to(x.dtype)
        empty = (counts == 0).nonzero().flatten().tolist()
        if empty:
            far = ((x - centres[lab]) ** 2).sum(1).topk(len(empty)).indices
            centres[empty] = x[far]
        if it == n_iters:
            break
        new = torch.cdist(x, centres).argmin(1)
        if torch.equal(new, lab):
            break
        lab = new
    return centres


def cueco_augmentation(jitter_strength: float, blur_p: float) -> AugmentSpec:
    s = jitter_strength
    return AugmentSpec(crop_scale=(0.08, 1.0), brightness=s, contrast=s, saturation=s, hue=min(0.5, s / 4),
                       jitter_p=0.8, grayscale_p=0.2, blur_p=blur_p, solarize_p=0.0, flip_p=0.5,
                       interpolation="bicubic")  # solo-learn pretrain_dataloader.py:224: RRC bicubic


class CueCo(DeepMethod):
    name = "cueco"
    description = "Cluster Contrast: MoCo-style query/key contrast plus centroid clustering (ICIP 2025)"
    paper = PAPER + " (arXiv 2507.12359)"
    provenance = "reconstruction"
    provenance_note = ("abstract only (no method section, no code): MoCo v2+ after solo-learn's CIFAR recipe, "
                       "Sinkhorn-balanced centroid clustering (SwAV), head re-centred by k-means steps")
    version = "2"
    # K learnable centroids with K = n_clusters: the head protocol is the argmax of the
    # query's similarity to them; kmeans and linear use the backbone features.

    @dataclass(frozen=True)
    class Params(DeepParams):
        backbone: str = param("resnet18", "ResNet depth: resnet18 | resnet34 | resnet50", "abstract: ResNet-18",
                             choices=("resnet18", "resnet34", "resnet50"))
        small_stem: bool = param(True, "3x3 stride-1 stem without max-pool (the CIFAR ResNet-18 of solo-learn)",
                                 None)
        image_size: int = param(0, "input size the images are resized to (0 = the dataset's own: 32 on CIFAR)",
                                None)
        hidden_dim: int = param(2048, "projector hidden width (solo-learn MoCo v2+ CIFAR)", None)
        proj_dim: int = param(256, "projection and centroid dimension (solo-learn MoCo v2+ CIFAR)", None)
        temperature: float = param(0.2, "InfoNCE temperature tau (MoCo v2; solo-learn MoCo v2+ CIFAR)", None)
        queue_size: int = param(32768, "past keys kept per view as negatives, 0 = in-batch keys only "
                                       "(solo-learn MoCo v2+ CIFAR)", None)
        cluster_temperature: float = param(0.1, "temperature tau_c of the query-centroid softmax (SwAV)", None)
        sinkhorn_epsilon: float = param(0.05, "entropic regularisation of the balanced assignment (SwAV)", None)
        sinkhorn_iters: int = param(3, "Sinkhorn-Knopp iterations (SwAV)", None)
        hard_assignment: bool = param(True, "one-hot targets (argmax of the balanced assignment) instead of "
                                            "soft ones (harness choice: soft targets with K = #classes stayed at "
                                            "the uniform fixed point, loss = log K, in our runs)", None)
        cluster_weight: float = param(1.0, "lambda, weight of the clustering loss (harness choice: equal weights)",
                                      None)
        momentum_base: float = param(0.99, "key-network EMA momentum at the start (solo-learn CIFAR)", None)
        momentum_final: float = param(0.999, "key-network EMA momentum at the end of the cosine schedule "
                                             "(solo-learn MoCo v2+ CIFAR: final_tau 0.999)", None)
        batch_size: int = param(256, "images per step, two views each (solo-learn CIFAR)", None)
        lr: float = param(0.3, "SGD learning rate after warmup (solo-learn MoCo v2+ CIFAR)", None)
        sgd_momentum: float = param(0.9, "SGD momentum (solo-learn)", None)
        weight_decay: float = param(1e-4, "SGD weight decay (solo-learn MoCo v2+ CIFAR)", None)
        warmup: float = param(0.01, "fraction of the budget with linear lr warmup, then cosine to 0 "
                                    "(solo-learn warmup_cosine: 10 of 1000 epochs)", None)
        jitter_strength: float = param(0.4, "colour jitter s: brightness = contrast = saturation = s, hue = s/4, "
                                            "p = 0.8 (solo-learn symmetric_weak)", None)
        blur_p: float = param(0.5, "Gaussian blur probability (solo-learn symmetric_weak)", None)
        n_clusters: int = param(0, "K centroids, 0 = the dataset's number of classes (harness: K for the head)",
                                None)
        head_refine_iters: int = param(50, "after training, k-means (Lloyd) steps in the backbone's feature "
                                       "space started from the centroids' partition; the head is then the "
                                       "nearest refined centre (0 = the learned centroids; harness choice, see "
                                       "the module docstring)", None)

    presets = {
        "paper": {},
        # warmup 0.1: solo-learn's 10 warmup epochs are 1% of 1000 epochs but 10% of a 100-epoch
        # budget; at 1% of a short budget lr 0.3 arrives within a few dozen steps and training
        # fell apart in our smoke runs (head ACC 0.50 vs 0.90 after 30 epochs, synthetic data).
        "fast": {"backbone": "resnet18", "small_stem": True, "image_size": 0, "batch_size": 256, "warmup": 0.1},
        # solo-learn's ImageNet-100 MoCo v2+ (scripts/pretrain/imagenet-100/mocov2plus.yaml)
        "imagenet100": {"small_stem": False, "image_size": 224, "queue_size": 65536, "momentum_final": 1.0},
        # tiny, for the contract tests over the registry (CPU, seconds); not for measurements
        "smoke": {"backbone": "resnet18", "small_stem": False, "image_size": 0, "batch_size": 16, "warmup": 0.1,
                  "hidden_dim": 64, "proj_dim": 32, "queue_size": 64},
    }

    # ---- model, optimiser, schedule -----------------------------------------------------
    def build_model(self, in_chans: int, image_size: int, n_clusters: int) -> nn.Module:
        p = self.params
        backbone = ResNetBackbone(p.backbone, in_chans=in_chans, small_stem=p.small_stem)
        return CueCoNetwork(backbone, backbone.out_dim, p.hidden_dim, p.proj_dim, n_clusters, p.queue_size)

    def configure_optimizer(self, model: nn.Module) -> torch.optim.Optimizer:
        """SGD with momentum over the query network and the centroids (the key network has no gradient)."""
        p = self.params
        trainable = [w for w in model.parameters() if w.requires_grad]
        return build_optimizer(trainable, "sgd", p.lr, p.weight_decay, p.sgd_momentum)  # fused on the GPU

    def lr_factor(self, progress: float) -> float:
        return warmup_cosine(progress, self.params.warmup)

    def augmentation(self, data) -> AugmentSpec:
        return cueco_augmentation(self.params.jitter_strength, self.params.blur_p)

    # ---- training ---------------------------------------------------------------------------
    def training_loss(self, model, v1, v2):
        p = self.params
        z1, z2, k1, k2, s1, s2, ks1, ks2 = model(v1, v2)
        q1, q2 = (q.features if len(q) else None for q in model.queues)
        terms = cueco_loss(z1, z2, k1, k2, s1, s2, ks1, ks2, q1, q2,
                           temperature=p.temperature, cluster_temperature=p.cluster_temperature,
                           epsilon=p.sinkhorn_epsilon, sinkhorn_iters=p.sinkhorn_iters,
                           cluster_weight=p.cluster_weight, hard=p.hard_assignment)
        # not scalars, so not on the learning curve: the keys after_step enqueues
        return {**terms, "keys1": k1, "keys2": k2}

    def after_step(self, model, progress: float, outputs: dict[str, torch.Tensor]) -> None:
        """Key network <- EMA of the query network, then this step's keys enter the queues."""
        p = self.params
        ema_update(model.key, model.query, cosine_momentum(progress, p.momentum_base, p.momentum_final))
        model.enqueue(outputs["keys1"], outputs["keys2"])

    # ---- the head after training -----------------------------------------------------------
    def fit(self, data, ctx):
        stats = super().fit(data, ctx)
        if self.params.head_refine_iters > 0:
            moved = self.refine_head(data)
            stats = dataclasses.replace(stats, details={**stats.details, "head_refined_moved": round(moved, 4)})
        return stats

    @torch.no_grad()
    def refine_head(self, data) -> float:
        """Re-centre the learned clustering in the backbone's feature space: the partition the
        centroids give (argmax of the query-centroid cosines) starts ``head_refine_iters``
        k-means (Lloyd) steps on the features ``embed`` gives, and the head becomes the nearest
        of those centres.  Uses no labels.  Returns the fraction of images whose cluster moved."""
        trained = self.trained
        model = trained.model
        feats = torch.from_numpy(trained.apply(self.embed, data.x)).to(trained.device)
        labels = torch.from_numpy(trained.apply(lambda m, x: m.centroid_scores(m.query(x)).argmax(1), data.x))
        labels = labels.to(trained.device)
        centres = lloyd_refine(feats, labels, model.centroids.shape[0], self.params.head_refine_iters)
        model.head_centres.copy_(centres)
        model.head_refined.fill_(True)
        return float((torch.cdist(feats, centres).argmin(1) != labels).float().mean())

    # ---- prediction -------------------------------------------------------------------------
    def cluster_logits(self, model, x):
        """Before ``refine_head``: cosines of the query projection to the K centroids; after:
        minus the squared distance of the backbone features to the refined centres."""
        learned = model.centroid_scores(model.query(x))
        refined = -torch.cdist(self.embed(model, x).float(), model.head_centres.float()).pow(2)
        return torch.where(model.head_refined, refined, learned)

    def embed(self, model, x):
        return model.query.backbone(x)


@hookimpl
def clusterbench_methods():
    return [CueCo]


@hookimpl
def clusterbench_reported_results():
    citation = PAPER + " (arXiv 2507.12359), abstract (linear evaluation, ResNet-18, top-1)"
    return [{"method": "cueco", "dataset": ds, "protocol": "linear", "citation": citation,
             "metrics": {"accuracy": acc}}
            for ds, acc in {"cifar10": 0.9140, "cifar100": 0.6856, "imagenet100": 0.7865}.items()]
