"""TCC: Twin-Contrast Clustering (Shen, Shen, Wang, Qin, Torr & Shao, "You Never Cluster
Alone", NeurIPS 2021, arXiv 2106.01908).

Sources.  The paper's body (§3 equations, §4 implementation details) is in no stored copy
reachable here: every copy stops at the start of its introduction.  Its abstract says: a set
of categorical assignment variables ("assignment confidence") links an instance-level track
with a cluster-level one; (a) with the assignments as weights, a weighted aggregation of the
data is each cluster's set representation, and "heuristic cluster augmentation equivalents"
make contrast *between clusters* possible; (b) the evidence lower bound (ELBO) of the
instance-level contrastive objective is derived with the assignments; (c) the assignments
are reparameterised, so training is end to end.  The closest source to the method itself is
its first author's (Yuming Shen, GitHub ``ymcidence``, the paper's contact address) own
TensorFlow 2 code from the weeks before the paper: ``github.com/ymcidence/OperationVerdandi``,
branch main at commit f70a1cc (2021-05-25; the paper appeared on arXiv 2021-06-03).  Below,
``file:line`` cites that commit.  Nothing is copied: the PyTorch here is written from what
those lines do.

Formulation ``verdandi`` (the default; read item by item in that code):
- encoder (``layer/encodec.py:16,55-93``): a CIFAR ResNet-34 (BasicBlock [3, 4, 6, 3], 3x3
  stride-1 stem, no max-pool, 4x4 average pool) and a linear layer to d = 128
  (``util/config.py:7``); features f = normalise(fc(h)) (``model/moco.py:57-58``);
- K cluster embeddings C, unit rows, initialised as max-Mahalanobis centres (pairwise cosine
  -1/(K-1), ``util/mmc.py:4-20``, ``model/moco.py:20-23``), flagged trainable
  (``util/config.py:21``).  (As written, the TF code normalises the variable once in
  ``__init__``, so in eager mode its gradient never reaches it and the centres stay fixed;
  ``train_centres`` chooses; the default follows the flag's stated intent.  On a CPU proxy
  fixed centres did not help (``results/checks/2026-12-07-cpu-tcc-digits/``); on CIFAR-10
  (one H100, ``assign_scale=10``) they led trained ones by 4.7 head points at 30 epochs but
  trailed by 3.2 at 100 (0.392 vs 0.424; ``results/checks/2026-12-07-gpu-tcc/``).);
- assignments (``model/moco.py:106-111``, ``layer/gumbel.py:6-15``): a = Gumbel-softmax of the
  cosine scores <f, C_k>, tau_g = 0.3 (``util/config.py:12``), soft; the Gumbel noise is on for
  the first 100,000 steps (``util/config.py:19``, ``model/moco.py:110``) and off after.  (The
  TF step passes ``step = -1`` on all but every 100th step (``model/moco.py:146``), so there
  the noise in fact stays on except on logging steps; this plugin does what the flag says.);
- cluster representation (``model/moco.py:119-131``): c_k = normalise(sum_i a_ik f_i /
  sum_i a_ik), the assignment-weighted mean of the same features;
- a momentum twin (``model/moco.py:30-41,94-100``): the second encoder (with its own
  centres) sees the second view and is an EMA of the first, m = 0.999 (``moco.py:33``),
  started as a copy (``moco.py:148-150``); BatchNorm statistics are not averaged (only
  trainable variables are, ``moco.py:95``);
- instance track (``model/moco.py:64``, ``util/contrastive.py:108-119``): MoCo's InfoNCE of f
  (view 1) against the momentum features (view 2) and a queue of L = 16,384 past momentum
  features (``util/config.py:18``), temperature 1 (``util/config.py:9``);
- cluster-level contrast (``model/moco.py:65-67``, ``util/contrastive.py:73-105``): each
  cluster representation of view 1 against the momentum encoder's K cluster representations
  of view 2 (the positive: the same k, its "augmentation equivalent") and a queue of
  20 K past ones (``util/config.py:17``, ``moco.py:35``) perturbed as normalise(2 Q + N(0,
  0.1^2)) (``moco.py:65-66``); the other clusters of both views are negatives, the queue's
  entries of the same cluster are masked; same temperature 1;
- DEC sharpening (``model/moco.py:70``, ``util/dec.py:6-35``): KL(P || Q) with Q =
  softmax(<f, C>) and P_ik = (Q_ik^2 / f_k) / sum_j (Q_ij^2 / f_j), f_k = sum_i Q_ik (DEC's
  target: it sharpens and divides by cluster frequency, the code's guard against one
  cluster taking all); P is not detached in the code, nor here; weight 0.1 (``moco.py:77``);
- L = L_ins + L_clu + 0.1 L_dec (``model/moco.py:77``); both queues are fed with the momentum
  encoder's outputs after each step (``moco.py:88,153,160``; ``contrastive.py:61-70``);
- Adam lr 1e-3, x0.95 at epochs 120 and 160 (``train_moco.py:33-42``,
  ``util/schedule.py:29-33``), batch 384 (``util/config.py:5``), 400,000 steps (``config.py:6``:
  2,560 epochs of CIFAR; the run's budget decides here); train and test together
  (``util/data/loader.py:35-37``);
- augmentation (``util/moco_aug.py:21-28,135-137``, used for both views,
  ``loader.py:24-25``): crop of area 0.2-1 (``moco_aug.py:58``) resized to 32, grayscale p
  0.2, colour jitter *always* with brightness, contrast, saturation and hue 0.4 in random
  order (``moco_aug.py:13-15,72-116``), horizontal flip.  The harness jitters with p = 1
  before the grayscale (the code greys first; saturation and hue are then no-ops, brightness
  and contrast nearly commute) and does not standardise (``moco_aug.py:46-51``; a per-channel
  affine map the first BatchNorm largely absorbs);
- prediction (``model/moco.py:132``): the argmax of the assignment; here without the
  Gumbel noise (the mode of q(k|x)), from the online encoder.

Reconciling this with the abstract.  The instance track is MoCo over the features; the
posterior q(k|x) is the Gumbel-softmax over the cosines to the cluster embeddings, so
log p(x'|x) >= E_q(k|x)[log p(x'|x, k)] - KL(q(k|x) || p(k)) is the ELBO the abstract names;
the code keeps the reconstruction term as the InfoNCE and regularises q through DEC's
sharpening (a per-sample KL towards a sharpened, frequency-balanced target) instead of a KL
to a uniform prior.  The abstract's guard against a cluster taking all is, in the code, that
target's division by cluster frequency, and the cluster-level contrast itself (a cluster with
no members has no distinct representation to be told apart).  ``entropy_weight`` adds the
marginal form, log K - H(mean q) (0 in ``verdandi``: not in the code).

Formulation ``abstract`` (the plugin's first version, written from the abstract alone,
before the code above was found): an assignment head q(k|x) = softmax(MLP(h)); cluster
representations = q-weighted means of a separate cluster projection; NT-Xent between the
two views' 2K cluster representations; the instance term an NT-Xent of embeddings
conditioned on a Gumbel-softmax sample of k (one reparameterised sample, the ELBO's
expected log-likelihood); KL(batch marginal || uniform) as the ELBO's KL term; CC's
encoder, optimiser and augmentation.  Every value there is ``source=None``.

Why ``paper`` = ``verdandi``: it is the author's own design weeks before the paper, matches
every element the abstract names (assignment-weighted set representations, a heuristic
augmentation equivalent -- the momentum twin's cluster representations plus a noise-perturbed
queue of past ones --, reparameterised assignments, end to end), and the ``abstract``
formulation, measured, learnt less than CC (0.404 vs 0.444 head ACC at 1.5 GPU-minutes on
CIFAR-10), against the paper's +11.6 points.  ``abstract`` stays as a preset for comparison.

Presets:
- ``paper`` (= the defaults = ``verdandi``): the code's setting, ResNet-34 at 32x32, batch 384;
- ``fast`` (the 32-px preset for equal-budget grids, ~100 epochs on one GPU): the same
  formulation with ResNet-18 (CC's fast encoder), both views through both encoders and the
  two directions averaged (``symmetric``: MoCo v3's symmetrised loss, twice the signal per
  image), EMA momentum 0.99 (solo-learn's CIFAR MoCo base value: 0.999 lags ~1,000 steps,
  a tenth of a 100-epoch run), instance temperature 0.2 (MoCo v2's; at 1.0 InfoNCE over
  16,384 negatives gives a weak gradient, SimCLR Table 5), and the marginal-entropy guard
  with weight 1 (a short run has no time to recover from an early collapse);
- ``abstract`` / ``abstract-fast``: the abstract formulation at CC's 224 px ResNet-34 / at
  32 px with ResNet-18 (the old ``paper`` / ``fast``);
- ``smoke``: tiny, for the contract tests.

Candidate switches for short runs (each off by default, so ``paper`` = ``verdandi`` is the code;
none is in a preset: a changed preset would change the committed cells' run ids).  ``fast`` as
above, measured on CIFAR-10 (train+test, 100 epochs, one H100): head ACC 0.235, k-means on its
backbone 0.339 (CC's fast preset: 0.480 / 0.482); its cluster-level loss stays near its chance
value log 199 = 5.29 (K = 10: 9 other query rows, 10 key rows, 180 queue rows of other clusters),
so the cluster track barely learns.  With ``assign_scale=10`` alone, same budget and cost: head
0.424, k-means 0.455, the curve still rising at epoch 100; the reference grid runs TCC so
(``results/cifar10-reference.yaml``).  With the scale the cluster loss (4.27 at 30 epochs)
is not at chance but near the floor that ``tau_cluster`` = 1 allows (4.19, see ``tau_cluster``
below): saturated, so it gives little gradient.  All five switches together (``combo`` of
``tests/benchmarks/tcc_probe.sh``) open that room (0.72 at 30 epochs) but lead the scale
alone by only 2 head points there (0.287 vs 0.269), at 13 % less throughput (records:
``results/checks/2026-12-07-gpu-tcc/``).  What each switch rests on:
- ``assign_scale`` (1 in the code, ``model/moco.py:106-111``): the cosines are the logits as they
  stand, and cosines lie in [-1, 1], so q(k|x) = softmax(<f, C>) can never be confident: a
  feature exactly on its centre, of K = 10 simplex centres, gets q = e / (e + 9 e^(-1/9)) = 0.25,
  a Gumbel-max draw (noise std pi / sqrt 6 = 1.28) picks its cluster a quarter of the time, and
  DEC's Q and the balance term see near-uniform rows (the measured loss_dec ~0.05, loss_balance
  ~0.0004).  A scale s makes the logits s <f, C_k>: SwAV's softmax over cosines to unit
  prototypes at temperature 0.1 (Caron et al., NeurIPS 2020; ``main_swav.py --temperature``) is
  s = 10, where the same feature gets q = 0.9999;
- ``gumbel_noise_fraction``: the code's noise is on for the first 100,000 of its 400,000 steps
  (``util/config.py:6,19``), a quarter of the run; ``gumbel_noise_steps`` counts steps, so in a
  15,600-step run the noise never goes off.  The fraction (0.25 for the code's ratio) is of the
  run's budget, as the engine's progress measures it (any budget, ``minutes=`` included), kept
  in a device buffer that ``after_step`` sets, so a CUDA-graphed step reads it;
- ``projector = mlp``: the instance projection is MoCo v1's single linear layer; MoCo v2 (Chen
  et al. 2020, arXiv 2003.04297, Table 1; ``moco/builder.py --mlp``) replaces it with
  Linear-ReLU-Linear of the backbone's width, the largest of its single improvements;
- ``bn_splits`` (shuffle-BN, :mod:`clusterbench.train.splitbn`): MoCo on one GPU with plain
  BatchNorm can "cheat" through BatchNorm (MoCo, He et al. 2020, section 3.3: the positive key
  shares the query's batch statistics, the queue's negatives do not); the authors' CIFAR-10
  demo (``colab/moco_cifar10_demo.ipynb``, ``--bn-splits 8``) normalises every BatchNorm of
  *both* encoders over 8 groups of the batch and shuffles the key encoder's batch, so a query's
  group and its key's share ~1/8 of their images (splitting the key side alone would leave the
  query normalised over the whole batch, which holds every key's group).  Under torchrun the
  groups and the shuffle span the global batch, so the numbers do not depend on the ranks;
- ``tau_cluster`` (a value, no new switch): at the code's 1, even perfectly separated clusters
  (cosine 1 to the positive, -1/9 to the 198 others) give a loss of -1 + log(e + 198 e^(-1/9))
  = 4.19 against chance 5.29: little room, and little gradient; 0.2 (the instance track's MoCo v2
  value; the cluster representations are unit vectors of the same space) opens it to 0.57.

Reported (``clusterbench_reported_results``, head protocol): CIFAR-10 ACC 0.906, NMI 0.790;
ACC on CIFAR-100-20, STL-10, ImageNet-10 (and its NMI) and ImageNet-Dogs as previously
indexed from the paper's main table by wizwand.com.  The task names DCBoost (Li et al.,
NeurIPS 2025, Table 2) as a second-hand copy of that table with ARI; that table could not be
found in any stored copy here, so the values above are unchanged and no ARI is quoted.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from clusterbench import (AugmentSpec, ConfigError, DeepMethod, DeepParams, FeatureQueue, ResNetBackbone,
                          build_optimizer, cc_augmentation, ema_update, gumbel_noise, gumbel_softmax, hookimpl,
                          info_nce, mlp, momentum_copy, neg_entropy_of_mean, nt_xent, param, shuffled_forward,
                          simplex_centres, split_batchnorm)

PAPER = "Shen et al., You Never Cluster Alone, NeurIPS 2021"
CITATION = PAPER + ", main results table (values as indexed by wizwand.com; table not read here)"
CODE = "ymcidence/OperationVerdandi@f70a1cc "  # the first author's code, 2021-05-25


# ==== formulation "verdandi" ===================================================================
def weighted_cluster_means(a: torch.Tensor, f: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """(K, d): c_k = normalise(sum_i a_ik f_i / (sum_i a_ik + eps)) for weights ``a`` (N, K)
    and features ``f`` (N, d) (``model/moco.py:124-129``)."""
    a = a.float()
    means = (a.t() @ f.float()) / (a.sum(0, keepdim=True).t() + eps)
    return F.normalize(means, dim=1)


def perturbed_queue(queue: torch.Tensor, std: float, noise: torch.Tensor | None = None) -> torch.Tensor:
    """normalise(2 Q + std * n), n ~ N(0, 1): the noisy past cluster representations
    (``model/moco.py:65-66``)."""
    if noise is None:
        noise = torch.randn_like(queue, dtype=torch.float32)
    return F.normalize(2 * queue.float() + std * noise.float(), dim=1)


def cluster_queue_contrast(query: torch.Tensor, key: torch.Tensor, queue: torch.Tensor,
                           temperature: float) -> torch.Tensor:
    """Cluster-level InfoNCE (``util/contrastive.py:73-105``).

    Row k of ``query`` (K, d) is scored against [query; key; queue] (queue: (Q, d), Q a
    multiple of K, entry j holding a past representation of cluster j mod K); its positive
    is ``key[k]``; masked out are itself and the queue's entries of cluster k; every other
    row is a negative.  Mean cross entropy over the K rows.
    """
    k, q_len = query.shape[0], queue.shape[0]
    if q_len % k:
        raise ValueError(f"the cluster queue's length {q_len} is not a multiple of K = {k}")
    query, key, queue = (F.normalize(t.float(), dim=1) for t in (query, key, queue))
    logits = query @ torch.cat([query, key, queue]).t() / temperature
    eye = torch.eye(k, dtype=torch.bool, device=query.device)
    mask = torch.cat([eye, torch.zeros_like(eye), eye.repeat(1, q_len // k)], dim=1)
    logits = logits.masked_fill(mask, float("-inf"))
    return F.cross_entropy(logits, torch.arange(k, 2 * k, device=query.device))


def dec_sharpening_loss(q: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """DEC's KL(P || Q), P_ik = (Q_ik^2 / f_k) / sum_j (Q_ij^2 / f_j), f_k = sum_i Q_ik; the mean
    over rows; P is not detached (``util/dec.py:6-27``)."""
    q = q.float()
    w = q.pow(2) / (q.sum(0) + eps)
    p = w / w.sum(1, keepdim=True)
    return (p * ((p + eps).log() - (q + eps).log())).sum(1).mean()


def verdandi_terms(f: torch.Tensor, s: torch.Tensor, g: torch.Tensor, t: torch.Tensor, instance_queue: torch.Tensor,
                   cluster_queue: torch.Tensor, *, tau_instance: float, tau_cluster: float, tau_gumbel: float,
                   noise_scale: torch.Tensor | float, queue_noise_std: float, assign_scale: float = 1.0,
                   noises: tuple[torch.Tensor | None, ...] = (None, None, None)) -> dict[str, torch.Tensor]:
    """One direction: online features ``f`` and cosines ``s`` (N, K) of one view against the
    momentum encoder's ``g`` and ``t`` of the other view.  The assignment logits are
    ``assign_scale`` times the cosines, wherever the code uses them as logits (the Gumbel-softmax,
    DEC's Q, the balance term; 1 in the code).  ``noises``: the Gumbel draws for s and t and the
    queue's Gaussian draw (drawn when None), for tests."""
    g, t = g.detach().float(), t.detach().float() * assign_scale
    s = s.float() * assign_scale
    a = gumbel_softmax(s, tau_gumbel, noises[0], noise_scale)
    with torch.no_grad():
        key = weighted_cluster_means(gumbel_softmax(t, tau_gumbel, noises[1], noise_scale), g)
    query = weighted_cluster_means(a, f)
    q = s.float().softmax(1)
    return {
        "loss_instance": info_nce(f, g, instance_queue, tau_instance),
        "loss_cluster": cluster_queue_contrast(query, key, perturbed_queue(cluster_queue, queue_noise_std, noises[2]),
                                               tau_cluster),
        "loss_dec": dec_sharpening_loss(q),
        "loss_balance": neg_entropy_of_mean(gumbel_softmax(s, tau_gumbel, noise_scale=0.0)),
        "instance_keys": g,
        "cluster_keys": key,
    }


def verdandi_loss(directions: list[dict[str, torch.Tensor]], dec_weight: float,
                  entropy_weight: float) -> dict[str, torch.Tensor]:
    """L = L_ins + L_clu + dec_weight L_dec + entropy_weight L_bal, each term averaged over the
    directions (one in the code; two when symmetrised)."""
    names = ("loss_instance", "loss_cluster", "loss_dec", "loss_balance")
    terms = {n: sum(d[n] for d in directions) / len(directions) for n in names}
    terms["loss"] = (terms["loss_instance"] + terms["loss_cluster"] + dec_weight * terms["loss_dec"]
                     + entropy_weight * terms["loss_balance"])
    return terms


class VerdandiEncoder(nn.Module):
    """Backbone + projection to d (one linear layer, or ``projector="mlp"``: Linear-ReLU-Linear
    with the backbone's width as hidden width), L2-normalised, and K unit cluster embeddings."""

    def __init__(self, backbone: ResNetBackbone, feature_dim: int, n_clusters: int, train_centres: bool,
                 projector: str = "linear") -> None:
        super().__init__()
        self.backbone = backbone
        width = backbone.out_dim
        self.fc = nn.Linear(width, feature_dim) if projector == "linear" else mlp(width, width, feature_dim)
        # max-Mahalanobis centres need d >= K - 1; beyond that (e.g. K = 200 > d + 1), random unit vectors
        init = (simplex_centres(n_clusters, feature_dim) if feature_dim >= n_clusters - 1
                else F.normalize(torch.randn(n_clusters, feature_dim), dim=1))
        self.centres = nn.Parameter(init, requires_grad=train_centres)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(f, <f, C>): unit features (N, d) and their cosines to the centres (N, K), float32."""
        f = F.normalize(self.fc(self.backbone(x)).float(), dim=1)
        with torch.autocast(x.device.type, enabled=False):
            return f, f @ F.normalize(self.centres.float(), dim=1).t()


class VerdandiNetwork(nn.Module):
    """The online encoder, its momentum twin, the two queues, the step counter and the Gumbel
    noise switch of ``gumbel_noise_fraction`` (buffers, so both survive a resume and are read on
    the device).  ``shuffle_keys``: the twin sees its batch shuffled (shuffle-BN, with
    ``bn_splits``)."""

    def __init__(self, online: VerdandiEncoder, instance_queue: int, cluster_queue: int,
                 shuffle_keys: bool = False, noise_on: bool = True) -> None:
        super().__init__()
        self.online = online
        self.momentum = momentum_copy(online)
        d, k = online.centres.shape[1], online.centres.shape[0]
        self.instance_queue = FeatureQueue(instance_queue, d)
        self.cluster_queue = FeatureQueue(cluster_queue, d)
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))
        self.register_buffer("noise_on", torch.tensor(float(noise_on)))
        self.n_clusters = k
        self.shuffle_keys = shuffle_keys

    def _keys(self, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            return shuffled_forward(self.momentum, v) if self.shuffle_keys else self.momentum(v)

    def forward(self, v1: torch.Tensor, v2: torch.Tensor, symmetric: bool = False):
        """[(f, s, g, t)] per direction: online on one view, momentum on the other."""
        f1, s1 = self.online(v1)
        g2, t2 = self._keys(v2)
        if not symmetric:
            return [(f1, s1, g2, t2)]
        f2, s2 = self.online(v2)
        g1, t1 = self._keys(v1)
        return [(f1, s1, g2, t2), (f2, s2, g1, t1)]


def verdandi_augmentation() -> AugmentSpec:
    """``util/moco_aug.py:21-28``: crop area 0.2-1, grayscale 0.2, jitter 0.4 x4 always, flip."""
    return AugmentSpec(crop_scale=(0.2, 1.0), brightness=0.4, contrast=0.4, saturation=0.4, hue=0.4, jitter_p=1.0,
                       grayscale_p=0.2, blur_p=0.0, flip_p=0.5)


# ==== formulation "abstract" ===================================================================
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
        k = gumbel_softmax(logits, tau_gumbel, gumbel_noise(logits), hard=hard)
        return logits.softmax(dim=1), k, self.cluster_features(h), self.instance_features(h, k)


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
    """The ``abstract`` formulation's L = L_ins + L_clu + lambda * L_ent for one batch of two views.

    ``q``: assignment probabilities (N, K); ``u``: cluster-level features (N, d); ``z``:
    assignment-conditioned instance features (N, d); ``w``: the aggregation weights of the
    cluster representations (default: ``q``).
    """
    l_ins = instance_elbo_loss(z1, z2, tau_instance)
    l_clu = cluster_contrastive_loss(q1 if w1 is None else w1, u1, q2 if w2 is None else w2, u2, tau_cluster)
    l_ent = marginal_kl_to_uniform(q1, q2)
    return {"loss": l_ins + l_clu + entropy_weight * l_ent,
            "loss_instance": l_ins, "loss_cluster": l_clu, "loss_entropy": l_ent}


# ==== the plugin ===============================================================================
_ABS = "abstract formulation only; harness choice"
_FAST_ABSTRACT = {"formulation": "abstract", "backbone": "resnet18", "small_stem": True, "image_size": 0,
                  "batch_size": 256, "lr": 3e-4, "tau_instance": 0.5, "tau_cluster": 1.0, "tau_gumbel": 1.0,
                  "entropy_weight": 1.0, "lr_decay_epochs": ""}


class TCC(DeepMethod):
    name = "tcc"
    description = "Twin-Contrast Clustering: cluster- and instance-level contrast linked by Gumbel-softmax assignments"
    paper = PAPER
    provenance = "reconstruction"
    provenance_note = ("paper body unreadable; preset paper follows the first author's pre-paper code "
                       "ymcidence/OperationVerdandi@f70a1cc (model/moco.py, util/config.py) item by item, "
                       "reconciled with the abstract")
    version = "2"

    @dataclass(frozen=True)
    class Params(DeepParams):
        formulation: str = param("verdandi", "verdandi (the author's code) | abstract (written from the abstract)",
                                 "see the module docstring", choices=("verdandi", "abstract"))
        backbone: str = param("resnet34", "ResNet depth: resnet18 | resnet34 | resnet50",
                              CODE + "layer/encodec.py:16 (BasicBlock [3,4,6,3])",
                              choices=("resnet18", "resnet34", "resnet50"))
        small_stem: bool = param(True, "3x3 stride-1 stem without max-pool", CODE + "layer/encodec.py:62")
        image_size: int = param(0, "input size (0 = the dataset's own: 32 on CIFAR)",
                                CODE + "util/data/data_info.py:3 (32) and moco_aug.py:68")
        feature_dim: int = param(128, "feature / cluster-embedding width d", CODE + "util/config.py:7")
        tau_instance: float = param(1.0, "temperature of the instance InfoNCE", CODE + "util/config.py:9")
        tau_cluster: float = param(1.0, "temperature of the cluster-level contrast", CODE + "util/config.py:9")
        tau_gumbel: float = param(0.3, "Gumbel-softmax temperature", CODE + "util/config.py:12")
        gumbel_noise_steps: int = param(100000, "steps with Gumbel noise, then none (-1: always)",
                                        CODE + "util/config.py:19, model/moco.py:110")
        # ---- candidate switches for short runs (module docstring, "Candidate switches"); each
        # default is the code's behaviour, so ``paper`` = ``verdandi`` is unchanged; added after TCC
        # runs were recorded, each is left out of the run id at its default (those records stay valid)
        gumbel_noise_fraction: float = param(
            -1.0, "Gumbel noise on for this fraction of the run's budget, then off (< 0: unused, "
            "gumbel_noise_steps decides)", CODE + "util/config.py:6,19 (100,000 of 400,000 steps: 0.25)",
            unhashed_default=True)
        assign_scale: float = param(
            1.0, "the assignment logits are this times the cosines <f, C_k> (Gumbel-softmax, DEC's Q, the "
            "balance term)", CODE + "model/moco.py:106-111 (1); SwAV's 10 = 1/0.1 (Caron et al. 2020, "
            "facebookresearch/swav main_swav.py --temperature 0.1)", above=0,
            unhashed_default=True)
        projector: str = param(
            "linear", "projection to d: linear | mlp (Linear-ReLU-Linear, hidden = backbone width)",
            CODE + "model/moco.py:57-58 (linear); mlp: MoCo v2 (Chen et al. 2020, arXiv 2003.04297, Table 1; "
            "facebookresearch/moco moco/builder.py --mlp)", choices=("linear", "mlp"),
            unhashed_default=True)
        bn_splits: int = param(
            0, "BatchNorm of both encoders over this many groups of the batch, the momentum twin's batch "
            "shuffled (shuffle-BN on one GPU; 0: off, plain BatchNorm)",
            CODE + "layer/encodec.py (plain BatchNorm); 8: MoCo's CIFAR-10 demo (facebookresearch/moco "
            "colab/moco_cifar10_demo.ipynb --bn-splits 8), MoCo section 3.3", minimum=0,
            unhashed_default=True)
        train_centres: bool = param(True, "the K cluster embeddings are trained (else fixed simplex centres)",
                                    CODE + "util/config.py:21 (the TF code in fact kept them fixed)")
        momentum: float = param(0.999, "EMA momentum of the momentum twin", CODE + "model/moco.py:33")
        instance_queue: int = param(16384, "past momentum features kept as negatives", CODE + "util/config.py:18")
        cluster_queue_per_k: int = param(20, "past cluster representations kept, per cluster",
                                         CODE + "util/config.py:17, model/moco.py:35")
        queue_noise_std: float = param(0.1, "std of the Gaussian perturbing the cluster queue",
                                       CODE + "model/moco.py:65")
        dec_weight: float = param(0.1, "weight of the DEC sharpening term", CODE + "model/moco.py:77")
        symmetric: bool = param(False, "both views through both encoders, the two directions averaged",
                                CODE + "model/moco.py:57-58 (one direction)")
        entropy_weight: float = param(0.0, "weight of log K - H(mean assignment), the marginal guard "
                                      "(abstract: 1, the KL's weight in an ELBO)",
                                      CODE + "model/moco.py:77 (absent)")
        batch_size: int = param(384, "images per step, two views each", CODE + "util/config.py:5")
        lr: float = param(1e-3, "Adam learning rate", CODE + "train_moco.py:36,42")
        lr_decay_epochs: str = param("120,160", "epochs after which lr is multiplied by lr_decay ('' = none)",
                                     CODE + "train_moco.py:34, util/schedule.py:29-33")
        lr_decay: float = param(0.95, "lr factor at each of lr_decay_epochs", CODE + "train_moco.py:35")
        weight_decay: float = param(0.0, "Adam weight decay", CODE + "train_moco.py:42 (none)")
        # the abstract formulation's own knobs (source=None: nothing of TCC could be read for them)
        gumbel_hard: bool = param(False, f"straight-through one-hot samples ({_ABS}: soft)")
        aggregate_samples: bool = param(False, f"weight the aggregation by the samples k~, not q ({_ABS})")
        jitter_strength: float = param(0.5, f"CC's colour-jitter strength s ({_ABS}: CC's CIFAR 0.5)")
        blur: bool = param(False, f"Gaussian blur with p=0.5 ({_ABS}: CC's, for ImageNet subsets)")
        n_clusters: int = param(0, "K (0 = the dataset's number of classes)", CODE + "util/config.py:8 (10)")

    presets = {
        "paper": {},
        "verdandi": {},
        # the 32-px preset of equal-budget grids: why each change, in the module docstring
        "fast": {"backbone": "resnet18", "symmetric": True, "momentum": 0.99, "tau_instance": 0.2,
                 "entropy_weight": 1.0},
        "abstract": {**_FAST_ABSTRACT, "backbone": "resnet34", "small_stem": False, "image_size": 224},
        "abstract-fast": _FAST_ABSTRACT,
        # tiny, for the contract tests over the registry (CPU, seconds); not for measurements
        "smoke": {"backbone": "resnet18", "batch_size": 16, "feature_dim": 16, "instance_queue": 64,
                  "symmetric": True, "entropy_weight": 1.0},
    }

    def __init__(self, params=None) -> None:
        super().__init__(params)
        if self.params.formulation not in ("verdandi", "abstract"):
            raise ConfigError(f"tcc: formulation must be verdandi or abstract, not {self.params.formulation!r}")
        if self.params.bn_splits and self.params.batch_size % self.params.bn_splits:
            raise ConfigError(f"tcc: bn_splits={self.params.bn_splits} does not split batch_size="
                              f"{self.params.batch_size} into equal groups")
        self._steps_per_epoch = 0
        self._steps_done: int | None = None  # mirrored from the model's buffer at the first step
        self._noise_on: bool | None = None   # what the model's noise switch holds (gumbel_noise_fraction)
        self._decay_epochs = [float(e) for e in str(self.params.lr_decay_epochs).split(",") if e.strip()]

    @property
    def verdandi(self) -> bool:
        return self.params.formulation == "verdandi"

    # ---- model, schedule ----------------------------------------------------------------
    def build_model(self, in_chans: int, image_size: int, n_clusters: int) -> nn.Module:
        p = self.params
        backbone = ResNetBackbone(p.backbone, in_chans=in_chans, small_stem=p.small_stem)
        if not self.verdandi:
            return TCCNetwork(backbone, backbone.out_dim, p.feature_dim, n_clusters)
        if p.bn_splits:
            split_batchnorm(backbone, p.bn_splits)
        online = VerdandiEncoder(backbone, p.feature_dim, n_clusters, p.train_centres, p.projector)
        return VerdandiNetwork(online, p.instance_queue, p.cluster_queue_per_k * n_clusters,
                               shuffle_keys=p.bn_splits > 0, noise_on=p.gumbel_noise_fraction != 0)

    def configure_optimizer(self, model: nn.Module) -> torch.optim.Optimizer:
        """Adam over what has a gradient (the momentum twin has none)."""
        p = self.params
        trainable = [w for w in model.parameters() if w.requires_grad]
        return build_optimizer(trainable, "adam", p.lr, p.weight_decay)

    def fit(self, data, ctx):
        self._steps_per_epoch = max(1, len(data) // max(1, min(int(self.params.batch_size), len(data))))
        return super().fit(data, ctx)

    def lr_factor(self, progress: float) -> float:
        """Piecewise constant: x lr_decay after each decay epoch passed (``util/schedule.py:29-33``)."""
        epoch = (self._steps_done or 0) / max(1, self._steps_per_epoch)
        return float(self.params.lr_decay) ** sum(epoch > e for e in self._decay_epochs)

    def augmentation(self, data) -> AugmentSpec:
        if self.verdandi:
            return verdandi_augmentation()
        return cc_augmentation(self.params.jitter_strength, self.params.blur)

    # ---- training ---------------------------------------------------------------------------
    def training_loss(self, model, v1, v2):
        p = self.params
        if not self.verdandi:
            q1, k1, u1, z1 = model(v1, p.tau_gumbel, p.gumbel_hard)
            q2, k2, u2, z2 = model(v2, p.tau_gumbel, p.gumbel_hard)
            w1, w2 = (k1, k2) if p.aggregate_samples else (q1, q2)
            return tcc_loss(q1, u1, z1, q2, u2, z2, p.tau_instance, p.tau_cluster, p.entropy_weight, w1, w2)
        directions = [verdandi_terms(f, s, g, t, model.instance_queue.features, model.cluster_queue.features,
                                     tau_instance=p.tau_instance, tau_cluster=p.tau_cluster,
                                     tau_gumbel=p.tau_gumbel, noise_scale=self._noise_scale(model),
                                     queue_noise_std=p.queue_noise_std, assign_scale=p.assign_scale)
                      for f, s, g, t in model(v1, v2, p.symmetric)]
        terms = verdandi_loss(directions, p.dec_weight, p.entropy_weight)
        # not scalars, so not on the learning curve: what after_step enqueues (K rows per
        # direction, so queue entry j keeps holding cluster j mod K)
        for name in ("instance_keys", "cluster_keys"):
            terms[name] = torch.cat([d[name] for d in directions])
        return terms

    def _noise_scale(self, model) -> torch.Tensor | float:
        """The Gumbel noise's factor, read on the device (a CUDA graph replays it): the switch
        ``after_step`` sets under ``gumbel_noise_fraction``, else on for ``gumbel_noise_steps``."""
        p = self.params
        if p.gumbel_noise_fraction >= 0:
            return model.noise_on
        return (model.steps < p.gumbel_noise_steps).float() if p.gumbel_noise_steps >= 0 else 1.0

    def after_step(self, model, progress: float, outputs: dict[str, torch.Tensor]) -> None:
        """Momentum twin <- EMA of the online encoder, queues fed, step counter advanced; under
        ``gumbel_noise_fraction`` the noise switch set for the next step from this step's progress
        (the budget fraction at its start: so the noise goes off one step after the fraction is
        reached -- after_step is the per-step Python hook -- and a resumed run continues alike)."""
        if not self.verdandi:
            return
        if self._steps_done is None:
            self._steps_done = int(model.steps)  # one host sync per run: resumes the schedule
        ema_update(model.momentum, model.online, self.params.momentum)
        model.instance_queue.push(outputs["instance_keys"])
        model.cluster_queue.push(outputs["cluster_keys"])
        model.steps.add_(1)
        self._steps_done += 1
        if self.params.gumbel_noise_fraction >= 0:
            on = progress < self.params.gumbel_noise_fraction
            if on != self._noise_on:  # written only when it changes (a device fill, no sync)
                model.noise_on.fill_(float(on))
                self._noise_on = on

    # ---- prediction -------------------------------------------------------------------------
    def cluster_logits(self, model, x):
        if self.verdandi:
            return model.online(x)[1]  # cosines to the centres: argmax = the mode of q(k|x)
        return model.assignment_logits(model.backbone(x)).softmax(dim=1)

    def embed(self, model, x):
        return (model.online.backbone if self.verdandi else model.backbone)(x)


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
