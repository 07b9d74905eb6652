"""TCC: Twin-Contrast Clustering (Shen, Shen, Wang, Qin, Torr & Shao, "You Never Cluster
Alone", NeurIPS 2021, arXiv 2106.01908).

What the paper says (its abstract, the caption of its Fig. 2, and the task's summary of it;
these are the parts that could be read when this plugin was written): a set of
*categorical assignment variables* k ~ q(k|x) links an instance-level learning track with a
cluster-level one.  (a) Cluster level: with the assignments as weights, a weighted
aggregation of the batch's features is the set representation of each cluster; "cluster
augmentation equivalents" (the same clusters seen through the other augmented view of the
batch) make contrastive learning *between clusters* possible.  (b) Instance level: the
evidence lower bound (ELBO) of an instance contrastive objective, conditioned on the
assignments.  (c) The assignments are reparameterised (Gumbel-softmax), so the whole model
trains end to end with no alternating steps.  (Fig. 2's caption: a 2-way clustering of
three images; the instance-level module is drawn for one image but applies to all.)

RECONSTRUCTED, NOT TRANSCRIBED: the paper's body text (§3 equations, the implementation
details, the hyper-parameters) was not in any stored copy reachable here: every copy of
the paper is stored only up to the start of its introduction, and the authors released no
code (community lists of clustering code mark TCC with "-").  The formulation below
follows the abstract's wording; where the abstract leaves the form open -- how the
instance embedding is conditioned on k, which features are aggregated, the aggregation
weights, the exact KL/entropy term and every hyper-parameter -- the choice is this
plugin's, is said to be so below, and carries ``source=None`` in ``Params``.
Check this against §3 and the implementation-details paragraph of §4 before quoting
numbers measured with it as "TCC's".

Model: a ResNet backbone f gives h = f(x); three heads act on h:
- the assignment head pi (Linear-ReLU-Linear to K), q(k|x) = softmax(pi(h));
- the cluster-level projector u (Linear-ReLU-Linear to d = 128, L2-normalised);
- the instance-level projector g, *conditioned on the assignment*: z = g([h; k~]) with
  k~ in the simplex a Gumbel-softmax sample of q(k|x) (Linear(D + K)-ReLU-Linear to d,
  L2-normalised; a linear layer on [h; k~] is a cluster embedding added to the first
  layer, so k~ shifts the instance embedding towards its cluster's region).

Loss, L = L_ins + L_clu + lambda * L_ent:
- L_clu (cluster-level contrast): s_k = normalise(sum_i q(k|x_i) u(x_i)) over the batch
  for each view; NT-Xent over the 2K cluster representations, the positive of s_k being
  the same cluster k aggregated over the other view (its augmentation equivalent), tau_C.
  The weights are the assignment *probabilities* ("assignment confidence", abstract), so
  gradients reach the assignment head directly (``aggregate_samples=True`` weights by the
  Gumbel-softmax samples k~ instead).
- L_ins (instance level, the ELBO's expected log-likelihood term): -E_{q(k|x)} log
  p(x'|x, k), estimated with one Gumbel-softmax sample per image and view (as a VAE's
  reparameterised Monte-Carlo estimate); log p(x'|x, k) is the InfoNCE of the
  conditional embeddings: NT-Xent over the 2N rows z, each row's positive being its other
  view, tau_I.  The gradient reaches the assignment head through the reparameterised k~.
- L_ent (the ELBO's KL term, kept on the batch's cluster marginal): with the uniform prior
  p(k) = 1/K, E_x KL(q(k|x) || p(k)) = I(x; k) + KL(q(k) || p(k)) where q(k) = E_x q(k|x);
  the mutual-information part would push every assignment towards uniform, so only the
  marginal part is kept: KL(q_B(k) || U) = log K - H(q_B(k)) with q_B the mean
  assignment over the batch (both views).  It is 0 when the batch uses the clusters
  uniformly and log K when all the data fall into one cluster: what keeps TCC from
  collapsing.  (That the paper regularises the entropy of the batch's cluster marginal
  is from the task's summary of the paper; its exact weight could not be read: lambda = 1,
  the KL's weight in an ELBO.)

Prediction: argmax_k q(k|x), the assignment head (no sampling at test time).
``embed``: the backbone's pooled features h (for the kmeans and linear protocols).

Defaults and where they come from.  None of the values below could be checked against
the paper's text, so every one is ``source=None`` with its reason in its ``doc``:
- encoder, input size, batch, optimiser: CC's setting (Li et al., AAAI 2021, §4.2:
  ResNet-34, 224x224, batch 256, Adam lr 3e-4, no weight decay), the method TCC compares
  against on the same benchmarks; a like-for-like setting, not a quotation of TCC;
- tau_I = 0.5, tau_C = 1.0: CC's instance and cluster temperatures (same reason);
- Gumbel-softmax temperature 1.0, soft samples (Jang et al. 2017's default), constant;
- d = 128, heads Linear-ReLU-Linear with hidden width = the backbone's width (CC's heads);
- augmentation: CC's CIFAR policy (RandomResizedCrop, flip, colour jitter with s = 0.5
  and p = 0.8, grayscale p = 0.2);
- K = the number of classes; epochs = the run's budget.

Reported (``clusterbench_reported_results``): CIFAR-10 ACC 0.906, NMI 0.790 (the task
quotes these from the paper); ACC/NMI on CIFAR-100-20, STL-10, ImageNet-10 and
ImageNet-Dogs as indexed from the paper's main results table by wizwand.com (the table
itself could not be read here; ARI is not quoted for that reason).

Presets: ``paper`` (the defaults) and ``fast``: ResNet-18 with a CIFAR stem at the
dataset's own resolution (32x32 on CIFAR), batch 256 -- a harness choice for an
equal-budget comparison next to CC's fast preset, not the paper's setting.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from clusterbench import (AugmentSpec, DeepMethod, DeepParams, ResNetBackbone, cc_augmentation, hookimpl, mlp,
                          neg_entropy_of_mean, nt_xent, param)

PAPER = "Shen et al., You Never Cluster Alone, NeurIPS 2021"
CITATION = PAPER + ", main results table (values as indexed by wizwand.com; table not read here)"


class TCCNetwork(nn.Module):
    """Backbone + assignment head q(k|x) + cluster-level projector + conditional instance projector."""

    def __init__(self, backbone: nn.Module, rep_dim: int, feature_dim: int, n_clusters: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.n_clusters = n_clusters
        self.assignment_head = mlp(rep_dim, rep_dim, n_clusters)
        self.cluster_projector = mlp(rep_dim, rep_dim, feature_dim)
        self.instance_projector = mlp(rep_dim + n_clusters, rep_dim, feature_dim)

    def assignment_logits(self, h: torch.Tensor) -> torch.Tensor:
        return self.assignment_head(h).float()

    def cluster_features(self, h: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.cluster_projector(h).float(), dim=1)

    def instance_features(self, h: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """z = g([h; k]): the instance embedding conditioned on a (relaxed) assignment k."""
        return F.normalize(self.instance_projector(torch.cat([h, k.to(h.dtype)], dim=1)).float(), dim=1)

    def forward(self, x: torch.Tensor, tau_gumbel: float = 1.0, hard: bool = False):
        """(q(k|x), sampled k~, cluster-level features u, conditional instance features z)."""
        h = self.backbone(x)
        logits = self.assignment_logits(h)
        k = gumbel_softmax_sample(logits, tau_gumbel, hard=hard)
        return logits.softmax(dim=1), k, self.cluster_features(h), self.instance_features(h, k)


# ---- the paper's pieces, as pure functions --------------------------------------------------

def gumbel_softmax_sample(logits: torch.Tensor, tau: float, noise: torch.Tensor | None = None,
                          hard: bool = False) -> torch.Tensor:
    """Gumbel-softmax relaxation of k ~ Cat(softmax(logits)): softmax((logits + g) / tau).

    ``noise`` is the Gumbel(0, 1) draw ``g`` (drawn here when not given: g = -log E with
    E ~ Exp(1)).  ``hard``: the one-hot argmax in the forward pass with the soft sample's
    gradient (straight-through).  Computed in float32.
    """
    logits = logits.float()
    if noise is None:
        noise = -torch.empty_like(logits).exponential_().clamp_min_(torch.finfo(logits.dtype).tiny).log()
    y = ((logits + noise.float()) / tau).softmax(dim=1)
    if hard:
        one_hot = F.one_hot(y.argmax(dim=1), y.shape[1]).to(y.dtype)
        y = one_hot + y - y.detach()
    return y


def cluster_representations(q: torch.Tensor, u: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """(K, d) set representations: s_k = normalise(sum_i q(k|x_i) u_i), the assignment-weighted
    aggregation of the batch's (L2-normalised) features ``u`` (N, d) with weights ``q`` (N, K)."""
    return F.normalize(q.float().t() @ u.float(), dim=1, eps=eps)


def cluster_contrastive_loss(q1, u1, q2, u2, tau_cluster: float) -> torch.Tensor:
    """Cluster-level contrast: NT-Xent over the 2K cluster representations of the two views
    (cluster k of one view is the positive of cluster k of the other: its augmentation
    equivalent; the other 2K - 2 clusters are the negatives)."""
    return nt_xent(cluster_representations(q1, u1), cluster_representations(q2, u2), tau_cluster)


def instance_elbo_loss(z1: torch.Tensor, z2: torch.Tensor, tau_instance: float) -> torch.Tensor:
    """-E_q(k|x) log p(x'|x, k): InfoNCE of the assignment-conditioned embeddings z = g([h; k~])
    (one reparameterised sample k~ per image and view), NT-Xent over the 2N rows."""
    return nt_xent(z1, z2, tau_instance)


def marginal_kl_to_uniform(q1: torch.Tensor, q2: torch.Tensor) -> torch.Tensor:
    """KL(q_B(k) || U(K)) = log K - H(q_B(k)), q_B the mean assignment over the batch's 2N
    views: the ELBO's KL term kept on the batch's cluster marginal (0 when uniform, log K
    when collapsed)."""
    return neg_entropy_of_mean(torch.cat([q1, q2]))


def tcc_loss(q1, u1, z1, q2, u2, z2, tau_instance: float, tau_cluster: float, entropy_weight: float,
             w1: torch.Tensor | None = None, w2: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """L = L_ins + L_clu + lambda * L_ent for one batch of two views.

    ``q``: assignment probabilities (N, K); ``u``: cluster-level features (N, d); ``z``:
    assignment-conditioned instance features (N, d); ``w``: the aggregation weights of the
    cluster representations (default: ``q``).
    """
    l_ins = instance_elbo_loss(z1, z2, tau_instance)
    l_clu = cluster_contrastive_loss(q1 if w1 is None else w1, u1, q2 if w2 is None else w2, u2, tau_cluster)
    l_ent = marginal_kl_to_uniform(q1, q2)
    return {"loss": l_ins + l_clu + entropy_weight * l_ent,
            "loss_instance": l_ins, "loss_cluster": l_clu, "loss_entropy": l_ent}


_NOT_READ = "TCC's implementation details could not be read"


class TCC(DeepMethod):
    name = "tcc"
    description = "Twin-Contrast Clustering: cluster- and instance-level contrast linked by Gumbel-softmax assignments"
    paper = PAPER
    provenance = "reconstruction"
    provenance_note = "no paper method section or official code readable: a TCC-like design from the abstract"
    version = "1"

    @dataclass(frozen=True)
    class Params(DeepParams):
        backbone: str = param("resnet34", f"ResNet depth: resnet18 | resnet34 | resnet50 ({_NOT_READ}; "
                              "CC's ResNet-34, the setting TCC is compared in)", choices=("resnet18", "resnet34", "resnet50"))
        small_stem: bool = param(False, "3x3 stride-1 stem without max-pool (for small inputs)")
        image_size: int = param(224, f"input size the images are resized to, 0 = the dataset's own "
                                f"({_NOT_READ}; CC's 224)")
        feature_dim: int = param(128, f"output size d of the instance and cluster projectors ({_NOT_READ}; "
                                 "the usual 128 of SimCLR/CC)")
        tau_instance: float = param(0.5, f"instance-level temperature tau_I ({_NOT_READ}; CC's 0.5)")
        tau_cluster: float = param(1.0, f"cluster-level temperature tau_C ({_NOT_READ}; CC's 1.0)")
        tau_gumbel: float = param(1.0, f"Gumbel-softmax temperature, constant ({_NOT_READ}; "
                                  "Jang et al. 2017's 1.0)")
        gumbel_hard: bool = param(False, "straight-through one-hot samples instead of soft ones "
                                  f"({_NOT_READ}; soft)")
        aggregate_samples: bool = param(False, "weight the cluster aggregation by the Gumbel samples k~ "
                                        "instead of the probabilities q(k|x) "
                                        f"({_NOT_READ}; q, the abstract's 'assignment confidence')")
        entropy_weight: float = param(1.0, "weight lambda of KL(batch marginal || uniform) "
                                      f"({_NOT_READ}; 1, the KL's weight in an ELBO)")
        batch_size: int = param(256, f"images per step, two views each ({_NOT_READ}; CC's 256)")
        lr: float = param(3e-4, f"Adam learning rate ({_NOT_READ}; CC's 3e-4)")
        weight_decay: float = param(0.0, f"Adam weight decay ({_NOT_READ}; CC's none)")
        jitter_strength: float = param(0.5, f"colour-jitter strength s ({_NOT_READ}; CC's CIFAR 0.5)")
        blur: bool = param(False, f"Gaussian blur with p=0.5 ({_NOT_READ}; CC uses it on ImageNet subsets)")
        n_clusters: int = param(0, "K (0 = the dataset's number of classes)")

    presets = {
        "paper": {},
        "fast": {"backbone": "resnet18", "small_stem": True, "image_size": 0, "batch_size": 256},
        # tiny, for the contract tests over the registry (CPU, seconds); not for measurements
        "smoke": {"backbone": "resnet18", "small_stem": True, "image_size": 0, "batch_size": 16, "feature_dim": 16},
    }

    def build_model(self, in_chans: int, image_size: int, n_clusters: int) -> nn.Module:
        p = self.params
        backbone = ResNetBackbone(p.backbone, in_chans=in_chans, small_stem=p.small_stem)
        return TCCNetwork(backbone, backbone.out_dim, p.feature_dim, n_clusters)

    def augmentation(self, data) -> AugmentSpec:
        return cc_augmentation(self.params.jitter_strength, self.params.blur)

    def training_loss(self, model, v1, v2):
        p = self.params
        q1, k1, u1, z1 = model(v1, p.tau_gumbel, p.gumbel_hard)
        q2, k2, u2, z2 = model(v2, p.tau_gumbel, p.gumbel_hard)
        w1, w2 = (k1, k2) if p.aggregate_samples else (q1, q2)
        return tcc_loss(q1, u1, z1, q2, u2, z2, p.tau_instance, p.tau_cluster, p.entropy_weight, w1, w2)

    def cluster_logits(self, model, x):
        return model.assignment_logits(model.backbone(x)).softmax(dim=1)

    def embed(self, model, x):
        return model.backbone(x)


REPORTED: dict[str, dict[str, float]] = {
    "cifar10": {"acc": 0.906, "nmi": 0.790},
    "cifar100-20": {"acc": 0.491},
    "stl10": {"acc": 0.814},
    "imagenet10": {"acc": 0.897, "nmi": 0.848},
    "imagenet-dogs": {"acc": 0.595},
}


@hookimpl
def clusterbench_methods():
    return [TCC]


@hookimpl
def clusterbench_reported_results():
    return [{"method": "tcc", "dataset": ds, "protocol": "head", "citation": CITATION, "metrics": dict(m)}
            for ds, m in REPORTED.items()]
