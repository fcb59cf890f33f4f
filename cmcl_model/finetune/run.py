"""Downstream fine-tuning of the molecule encoder (MIGA / Hu et al. 2020 protocol).

A GIN (:class:`cmcl_model.nn.encoders.GINEncoder`, from a run's pre-trained graph encoder or at
random initialisation) gets a linear task head and is trained end to end on a labelled set
(:mod:`cmcl_model.finetune.labelled`) with

* masked binary cross-entropy for classification (missing labels contribute nothing) and
  ROC-AUC per task (tasks whose evaluated subset has one class only are skipped, as Hu et al.
  do), averaged over tasks;
* mean squared error on standardised targets for regression, RMSE in the label's units.

Hu et al.'s settings are the defaults (:class:`FinetuneConfig`): GIN 5 x 300, dropout 0.5,
mean pooling, Adam lr 1e-3 without weight decay, batch 32, 100 epochs. Every epoch is
evaluated on validation and test; a result records the test metric at the last epoch (what
Hu et al.'s code reports) and at the best validation epoch. ``patience`` stops training when
validation has not improved for that many epochs (the model is then taken at its best
validation epoch).

Baselines on the same split: Morgan fingerprints with a logistic-regression / ridge or a
random-forest model tuned on validation (:func:`morgan_baseline`), a linear probe on frozen
GIN embeddings (:func:`linear_probe`), and a structure-only self-supervised GIN pre-trained by
attribute masking (:func:`attribute_masking_pretrain`).
"""

from __future__ import annotations

import contextlib
import copy
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, nn

from cmcl_model.nn.encoders import GINEncoder
from cmcl_model.finetune.labelled import LabelledSet

__all__ = [
    "FinetuneConfig",
    "GraphTensors",
    "PropertyModel",
    "masked_bce",
    "masked_mse",
    "task_scores",
    "finetune_once",
    "check_encoder_features",
    "predict",
    "train_epoch",
    "make_optimizer",
    "EpochCallback",
    "ProgressCallback",
    "attribute_masking_pretrain",
    "linear_probe",
    "morgan_baseline",
    "summarize",
    "METHODS",
    "run_methods",
    "random_encoder",
    "run_encoder",
    "store_train_graphs",
    "ssl_encoder",
]


@dataclass(frozen=True)
class FinetuneConfig:
    """Fine-tuning settings; defaults are Hu et al. (2020)'s.

    ``select``: which epoch's test metric is the headline, ``'last'`` (Hu et al.) or
    ``'best_val'``; with ``patience`` set, training stops early and ``'best_val'`` is used.
    ``precision``: ``'bf16'`` runs forward and backward under CPU/CUDA bfloat16 autocast
    (weights, optimizer state, message sums and the loss stay float32); ``'fp32'`` is the default.
    ``conv``: the GIN layer of a random init, ``'gine'`` (cmcl's / OGB's) or ``'selfloop'`` (Hu
    et al.'s, :class:`cmcl_model.nn.selfloop.SelfLoopGINConv`; the ``hu2020`` protocol's).
    """

    epochs: int = 100
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.0
    dropout: float = 0.5
    layers: int = 5
    hidden: int = 300
    jk: Literal["last", "sum", "concat"] = "last"
    pooling: Literal["mean", "sum", "attention"] = "mean"
    patience: int | None = None
    select: Literal["last", "best_val"] = "last"
    eval_batch_size: int = 1024
    precision: Literal["fp32", "bf16"] = "fp32"
    conv: Literal["gine", "selfloop"] = "gine"

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError(f"epochs and batch_size must be >= 1, got {self.epochs}, {self.batch_size}")
        if self.select not in ("last", "best_val"):
            raise ValueError(f"select={self.select!r} is not one of 'last', 'best_val'")
        if self.patience is not None and self.patience < 1:
            raise ValueError(f"patience must be >= 1, got {self.patience}")
        if self.precision not in ("fp32", "bf16"):
            raise ValueError(f"precision={self.precision!r} is not one of 'fp32', 'bf16'")
        if self.conv not in ("gine", "selfloop"):
            raise ValueError(f"conv={self.conv!r} is not one of 'gine', 'selfloop'")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class GraphTensors:
    """A set of OGB graphs held as concatenated tensors, batched by index without Python loops.

    Parameters
    ----------
    graphs : sequence of torch_geometric.data.Data
        ``x`` (n, 9), ``edge_index`` (2, e), ``edge_attr`` (e, 3).
    device : torch.device

    ``batch(ids)`` returns ``(x (N, 9), edge_index (2, E), edge_attr (E, 3), batch (N,), G)``
    for the graphs ``ids`` (G,) in that order, same as ``Batch.from_data_list``.
    """

    def __init__(self, graphs: Sequence, device: torch.device | str = "cpu") -> None:
        nn_ = torch.tensor([int(g.num_nodes) for g in graphs], dtype=torch.long)
        ne = torch.tensor([int(g.edge_index.shape[1]) for g in graphs], dtype=torch.long)
        self.device = torch.device(device)
        self.x = torch.cat([g.x for g in graphs]).to(self.device)
        self.edge_index = torch.cat([g.edge_index for g in graphs], dim=1).to(self.device)  # local indices
        self.edge_attr = torch.cat([g.edge_attr for g in graphs]).to(self.device)
        self.n_nodes, self.n_edges = nn_.to(self.device), ne.to(self.device)
        self.node_ptr = (torch.cumsum(nn_, 0) - nn_).to(self.device)
        self.edge_ptr = (torch.cumsum(ne, 0) - ne).to(self.device)

    def __len__(self) -> int:
        return int(self.n_nodes.numel())

    @staticmethod
    def _ranges(starts: Tensor, counts: Tensor) -> tuple[Tensor, Tensor]:
        offsets = torch.cumsum(counts, 0) - counts
        total = int(counts.sum())
        idx = torch.repeat_interleave(starts - offsets, counts, output_size=total)
        return idx + torch.arange(total, device=starts.device), offsets

    def batch(self, ids: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, int]:
        ids = ids.to(self.device)
        n, e = self.n_nodes[ids], self.n_edges[ids]
        node_idx, node_off = self._ranges(self.node_ptr[ids], n)
        edge_idx, _ = self._ranges(self.edge_ptr[ids], e)
        g = int(ids.numel())
        shift = torch.repeat_interleave(node_off, e, output_size=edge_idx.numel())
        batch = torch.repeat_interleave(torch.arange(g, device=self.device), n, output_size=node_idx.numel())
        return self.x[node_idx], self.edge_index[:, edge_idx] + shift, self.edge_attr[edge_idx], batch, g


class PropertyModel(nn.Module):
    """GIN encoder + linear task head.

    Shapes: forward(x (N, 9), edge_index (2, E), edge_attr (E, 3), batch (N,), G) -> (G, T)
    logits (classification) or standardised predictions (regression).
    """

    def __init__(self, encoder: GINEncoder, num_tasks: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(encoder.out_dim, num_tasks)
        self.head.reset_parameters()

    def reset_parameters(self) -> None:
        self.encoder.reset_parameters()
        self.head.reset_parameters()

    def forward(self, x: Tensor, edge_index: Tensor, edge_attr: Tensor, batch: Tensor, num_graphs: int) -> Tensor:
        return self.head(self.encoder(x, edge_index, edge_attr, batch, num_graphs)[1])


def masked_bce(logits: Tensor, labels: Tensor) -> Tensor:
    """Binary cross-entropy over the labelled entries only.

    .. math:: L = \\frac{\\sum_{ij} m_{ij}\\,\\mathrm{BCE}(z_{ij}, y_{ij})}{\\sum_{ij} m_{ij}},
              \\quad m_{ij} = [y_{ij} \\text{ is not NaN}]

    Shapes: logits (B, T), labels (B, T) with NaN for missing -> scalar. Returns 0 (with a
    gradient) when nothing is labelled.
    """
    mask = ~torch.isnan(labels)
    loss = nn.functional.binary_cross_entropy_with_logits(logits, torch.where(mask, labels, 0.0), reduction="none")
    return (loss * mask).sum() / mask.sum().clamp(min=1)


def masked_mse(pred: Tensor, labels: Tensor) -> Tensor:
    """Mean squared error over the labelled (non-NaN) entries. (B, T), (B, T) -> scalar."""
    mask = ~torch.isnan(labels)
    return (torch.where(mask, pred - labels, 0.0) ** 2).sum() / mask.sum().clamp(min=1)


def task_scores(pred: np.ndarray, labels: np.ndarray, kind: str) -> tuple[float, list[float | None]]:
    """Mean and per-task score: ROC-AUC (classification; None for a task whose labelled subset
    has one class) or RMSE (regression; None for a task without labels).

    Shapes: pred (N, T) (logits/probabilities or predictions in label units), labels (N, T) NaN
    for missing.
    """
    from sklearn.metrics import roc_auc_score

    per: list[float | None] = []
    for j in range(labels.shape[1]):
        m = np.isfinite(labels[:, j])
        y, p = labels[m, j], pred[m, j]
        if kind == "classification":
            per.append(float(roc_auc_score(y, p)) if y.size and np.unique(y).size == 2 else None)
        else:
            per.append(float(np.sqrt(np.mean((p - y) ** 2))) if y.size else None)
    vals = [v for v in per if v is not None]
    return (float(np.mean(vals)) if vals else float("nan")), per


def _better(a: float, b: float, kind: str) -> bool:
    if np.isnan(b):
        return not np.isnan(a)
    return a > b if kind == "classification" else a < b


def _autocast(device: torch.device, precision: str):
    """bfloat16 autocast for ``precision='bf16'``, else a no-op context."""
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


@torch.no_grad()
def predict(
    model: PropertyModel, graphs: GraphTensors, ids: Tensor, batch_size: int, precision: str = "fp32"
) -> np.ndarray:
    """Predictions (len(ids), T) float64 in eval mode, ``batch_size`` graphs at a time."""
    model.eval()
    out = []
    with _autocast(graphs.device, precision):
        for a in range(0, ids.numel(), batch_size):
            out.append(model(*graphs.batch(ids[a : a + batch_size])).float().cpu())
    return torch.cat(out).numpy().astype(np.float64)


def make_optimizer(model: nn.Module, config: FinetuneConfig, device: torch.device) -> torch.optim.Optimizer:
    """Adam with ``config``'s lr and weight decay; the fused (one kernel for all parameters)
    implementation on CPU and CUDA: same update rule, about a sixth of a CPU step saved."""
    fused = device.type in ("cpu", "cuda")
    return torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay, fused=fused or None)


def train_epoch(
    model: PropertyModel,
    graphs: GraphTensors,
    y: Tensor,
    train_ids: Tensor,
    *,
    opt: torch.optim.Optimizer,
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    batch_size: int,
    generator: torch.Generator,
    precision: str = "fp32",
) -> float:
    """One pass over ``train_ids`` (G_train,) in a random order drawn from ``generator``;
    batches of one graph are skipped (batch norm needs two). ``y`` (N, T) on the model's
    device. Returns the last batch's loss."""
    model.train()
    perm = train_ids[torch.randperm(train_ids.numel(), generator=generator)]
    loss = torch.tensor(float("nan"))
    for a in range(0, perm.numel(), batch_size):
        ids = perm[a : a + batch_size]
        if ids.numel() < 2:
            continue
        with _autocast(graphs.device, precision):
            out = model(*graphs.batch(ids))
        loss = loss_fn(out.float(), y[ids.to(y.device)])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return float(loss.detach())


def _labels_tensor(data: LabelledSet, train: np.ndarray, device: torch.device) -> tuple[Tensor, np.ndarray, np.ndarray]:
    """Training targets (N, T) on ``device`` (regression: standardised on the train part) and
    the (mean, sd) to map predictions back to label units."""
    y = torch.as_tensor(data.labels, dtype=torch.float32)
    mu, sd = np.zeros(len(data.tasks)), np.ones(len(data.tasks))
    if data.kind == "regression":
        tr = data.labels[train]
        mu, sd = np.nanmean(tr, 0), np.nanstd(tr, 0)
        sd[~(sd > 0)] = 1.0
        y = (y - torch.as_tensor(mu, dtype=torch.float32)) / torch.as_tensor(sd, dtype=torch.float32)
    return y.to(device), mu, sd


def check_encoder_features(encoder: GINEncoder, data: LabelledSet) -> None:
    """Raise when ``encoder`` reads other atom/bond features than ``data.graphs`` hold.

    Raises
    ------
    ValueError
        One line: the two feature sets and what to do (pre-trained cmcl encoders read OGB
        features: fine-tune them under ``--protocol cmcl``).
    """
    if not data.graphs:
        return
    want = (len(encoder.atom_encoder.dims), len(encoder.convs[0].bond_encoder.dims))
    have = (int(data.graphs[0].x.size(1)), int(data.graphs[0].edge_attr.size(1)))
    if want != have:
        raise ValueError(
            f"the encoder reads {want[0]} atom / {want[1]} bond features but {data.name}'s graphs "
            f"({data.featurizer} featurizer) hold {have[0]} / {have[1]}: pre-trained cmcl encoders read OGB features, "
            "fine-tune them with --protocol cmcl"
        )


#: ``on_epoch(epoch, epochs, val)``: called after every epoch (1-based) with its validation score.
EpochCallback = Callable[[int, int, float], None]


def finetune_once(
    encoder: GINEncoder,
    data: LabelledSet,
    split: np.ndarray,
    *,
    config: FinetuneConfig = FinetuneConfig(),
    seed: int = 0,
    device: torch.device | str = "cpu",
    graphs: GraphTensors | None = None,
    log: Callable[[str], None] | None = None,
    on_epoch: EpochCallback | None = None,
) -> dict[str, Any]:
    """Fine-tune ``encoder`` (modified in place) + a new head on the train part of ``split``.

    Validation and test are scored after every epoch in one forward pass over both.

    Parameters
    ----------
    encoder : GINEncoder
        Initial weights (random or pre-trained); its dropout is set to ``config.dropout``.
    data : LabelledSet
    split : (N,) array of 'train'/'val'/'test'
    config : FinetuneConfig
    seed : int
        Seeds the head's initialisation and the batch order (``torch.manual_seed``).
    device : torch device
    graphs : GraphTensors, optional
        ``data.graphs`` already on ``device`` (saves re-building per seed).
    log : callable, optional
        Gets one line per epoch.
    on_epoch : callable, optional
        ``on_epoch(epoch, epochs, val)`` after every epoch (progress displays).

    Returns
    -------
    dict
        ``test`` and ``val`` (headline per ``config.select``), ``test_last``, ``test_best_val``,
        ``val_best``, ``best_epoch``, ``epochs_run``, ``per_task_test`` (list, headline epoch),
        ``curve`` ({"val": [...], "test": [...]}, per epoch), ``wall_s``.
    """
    t0 = time.perf_counter()
    device = torch.device(device)
    torch.manual_seed(seed)
    split = np.asarray(split)
    idx = {k: torch.from_numpy(np.flatnonzero(split == k)) for k in ("train", "val", "test")}
    if idx["train"].numel() == 0:
        raise ValueError("the split has no training molecules")
    check_encoder_features(encoder, data)
    graphs = graphs or GraphTensors(data.graphs, device)
    encoder.dropout = config.dropout
    model = PropertyModel(encoder, len(data.tasks)).to(device)
    y, mu, sd = _labels_tensor(data, idx["train"].numpy(), device)
    loss_fn = masked_bce if data.kind == "classification" else masked_mse
    opt = make_optimizer(model, config, device)
    gen = torch.Generator().manual_seed(seed)
    n_val = idx["val"].numel()
    scored = torch.cat([idx["val"], idx["test"]])
    nothing = (float("nan"), [None] * len(data.tasks))

    def score() -> tuple[tuple[float, list], tuple[float, list]]:
        p = predict(model, graphs, scored, config.eval_batch_size, config.precision) * sd + mu
        lab = data.labels[scored.numpy()]
        val = task_scores(p[:n_val], lab[:n_val], data.kind) if n_val else nothing
        test = task_scores(p[n_val:], lab[n_val:], data.kind) if scored.numel() > n_val else nothing
        return val, test

    curve: dict[str, list[float]] = {"val": [], "test": []}
    best = (float("nan"), -1, None, None)  # val, epoch, test, per-task test
    best_state, bad = None, 0
    last_test, last_per = float("nan"), None
    for epoch in range(config.epochs):
        loss = train_epoch(model, graphs, y, idx["train"], opt=opt, loss_fn=loss_fn, batch_size=config.batch_size,
                           generator=gen, precision=config.precision)
        (val, _), (last_test, last_per) = score()
        curve["val"].append(val)
        curve["test"].append(last_test)
        if _better(val, best[0], data.kind):
            best, bad = (val, epoch, last_test, last_per), 0
            if config.patience is not None:
                best_state = copy.deepcopy(model.state_dict())
        else:
            bad += 1
        if log:
            log(f"epoch {epoch + 1}: loss {loss:.4f} val {val:.4f} test {last_test:.4f}")
        if on_epoch:
            on_epoch(epoch + 1, config.epochs, val)
        if config.patience is not None and bad >= config.patience:
            break
    select = "best_val" if config.patience is not None else config.select
    if best_state is not None:
        model.load_state_dict(best_state)
    head_test, head_per = (best[2], best[3]) if select == "best_val" else (last_test, last_per)
    return {
        "test": head_test,
        "val": best[0] if select == "best_val" else curve["val"][-1],
        "test_last": last_test,
        "test_best_val": best[2],
        "val_best": best[0],
        "best_epoch": best[1] + 1,
        "epochs_run": len(curve["val"]),
        "select": select,
        "per_task_test": head_per,
        "curve": curve,
        "wall_s": time.perf_counter() - t0,
        "_model": model,
    }


def attribute_masking_pretrain(
    encoder: GINEncoder,
    graphs: Sequence,
    *,
    epochs: int,
    batch_size: int = 256,
    lr: float = 1e-3,
    mask_rate: float = 0.15,
    seed: int = 0,
    device: torch.device | str = "cpu",
) -> dict[str, Any]:
    """Structure-only self-supervised pre-training (Hu et al.'s attribute masking), in place.

    Each step masks ``mask_rate`` of the atoms (every feature replaced by its mask token) and
    trains the encoder + a linear head to predict the masked atoms' element (cross-entropy
    over the 119 atomic-number classes) from the node representations.

    Returns ``{"epochs", "steps", "final_loss", "wall_s"}``.
    """
    t0 = time.perf_counter()
    device = torch.device(device)
    torch.manual_seed(seed)
    gt = GraphTensors(graphs, device)
    encoder.to(device)
    head = nn.Linear(encoder.out_dim, int(encoder.atom_encoder.dims[0])).to(device)
    opt = torch.optim.Adam(list(encoder.parameters()) + list(head.parameters()), lr=lr)
    mask_index = encoder.atom_encoder.mask_index.to(device)
    gen = torch.Generator().manual_seed(seed)
    steps, loss = 0, torch.tensor(float("nan"))
    for _ in range(epochs):
        encoder.train()
        perm = torch.randperm(len(gt), generator=gen)
        for a in range(0, perm.numel(), batch_size):
            ids = perm[a : a + batch_size]
            if ids.numel() < 2:
                continue
            x, ei, ea, b, g = gt.batch(ids)
            masked = torch.rand(x.size(0), device=device) < mask_rate
            if not masked.any():
                masked[0] = True
            xm = torch.where(masked[:, None], mask_index[None, :], x)
            node = encoder.node_forward(xm, ei, ea)
            loss = nn.functional.cross_entropy(head(node[masked]), x[masked, 0])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            steps += 1
    return {"epochs": int(epochs), "steps": steps, "final_loss": float(loss.detach()), "wall_s": time.perf_counter() - t0}


def _fit_linear(x_tr, y_tr, x_ev, kind: str, c: float):
    from sklearn.linear_model import LogisticRegression, Ridge

    if kind == "classification":
        m = LogisticRegression(C=c, max_iter=2000).fit(x_tr, y_tr)
        return [m.predict_proba(x)[:, 1] for x in x_ev]
    m = Ridge(alpha=1.0 / c).fit(x_tr, y_tr)
    return [m.predict(x) for x in x_ev]


def _fit_forest(x_tr, y_tr, x_ev, kind: str, leaf: int, seed: int):
    from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor

    cls = RandomForestClassifier if kind == "classification" else RandomForestRegressor
    m = cls(n_estimators=200, min_samples_leaf=leaf, max_features="sqrt" if kind == "classification" else 0.3,
            n_jobs=1, random_state=seed).fit(x_tr, y_tr)
    return [m.predict_proba(x)[:, 1] if kind == "classification" else m.predict(x) for x in x_ev]


def _tuned_per_task(
    features: np.ndarray, data: LabelledSet, split: np.ndarray, fit: Callable, grid: Sequence[Any]
) -> dict[str, Any]:
    """Per task: fit each grid value on train, keep the best on validation, score on test."""
    split = np.asarray(split)
    tr, va, te = (split == k for k in ("train", "val", "test"))
    t = len(data.tasks)
    pv, pt = np.full((va.sum(), t), np.nan), np.full((te.sum(), t), np.nan)
    chosen: list[Any] = []
    for j in range(t):
        lab = np.isfinite(data.labels[:, j])
        m = tr & lab
        y = data.labels[m, j]
        if data.kind == "classification" and np.unique(y).size < 2:  # constant predictor
            pv[:, j] = pt[:, j] = float(y.mean()) if y.size else 0.5
            chosen.append(None)
            continue
        best = (None, None, None, None)
        for g in grid:
            p_val, p_test = fit(features[m], y, (features[va], features[te]), g)
            s, _ = task_scores(p_val[:, None], data.labels[va][:, [j]], data.kind)
            if best[0] is None or _better(s, best[0], data.kind) or (np.isnan(s) and best[1] is None):
                best = (s, g, p_val, p_test)
        pv[:, j], pt[:, j] = best[2], best[3]
        chosen.append(best[1])
    val, _ = task_scores(pv, data.labels[va], data.kind)
    test, per = task_scores(pt, data.labels[te], data.kind)
    return {"val": val, "test": test, "per_task_test": per, "chosen": chosen}


def linear_probe(embeddings: np.ndarray, data: LabelledSet, split: np.ndarray) -> dict[str, Any]:
    """Frozen embeddings (N, d), standardised -> logistic regression (classification) or
    ridge (regression) per task, the inverse regularisation ``C`` chosen on validation."""
    x = np.asarray(embeddings, dtype=np.float64)
    tr = np.asarray(split) == "train"
    mu, sd = x[tr].mean(0), x[tr].std(0)
    sd[sd < 1e-12] = 1.0
    x = (x - mu) / sd
    return _tuned_per_task(
        x, data, split, lambda a, y, ev, c: _fit_linear(a, y, ev, data.kind, c), (1e-3, 1e-2, 1e-1, 1.0)
    )


def morgan_baseline(
    data: LabelledSet, split: np.ndarray, *, model: Literal["linear", "forest"], seed: int = 0
) -> dict[str, Any]:
    """Morgan fingerprints (radius 2, 2048 bits) -> logistic regression / ridge (``C`` in
    {0.01, 0.1, 1}) or random forest (200 trees, ``min_samples_leaf`` in {1, 3}), tuned per
    task on validation."""
    from pipeline.chem.graphs import morgan_fingerprints

    fp = morgan_fingerprints(data.smiles).astype(np.float32)
    if model == "linear":
        return _tuned_per_task(fp, data, split, lambda a, y, ev, c: _fit_linear(a, y, ev, data.kind, c), (0.01, 0.1, 1.0))
    if model == "forest":
        return _tuned_per_task(
            fp, data, split, lambda a, y, ev, leaf: _fit_forest(a, y, ev, data.kind, leaf, seed), (1, 3)
        )
    raise ValueError(f"model={model!r} is not one of 'linear', 'forest'")


def summarize(values: Sequence[float]) -> dict[str, Any]:
    """``{"mean", "sd", "per_seed"}`` (sd with ddof=1; 0 for one value), NaNs dropped."""
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], dtype=np.float64)
    return {
        "mean": float(v.mean()) if v.size else None,
        "sd": float(v.std(ddof=1)) if v.size > 1 else 0.0 if v.size else None,
        "per_seed": [float(x) if x is not None and np.isfinite(x) else None for x in values],
    }


# ---------------------------------------------------------------------------------------------
# Methods over seeds
# ---------------------------------------------------------------------------------------------

#: The usual method names of :func:`run_methods`: ``gin_<init>`` fine-tunes the whole GIN from
#: the encoder ``encoders[<init>]``, ``probe_<init>`` fits a linear model on its frozen
#: embeddings, ``morgan_lr`` / ``morgan_rf`` are fingerprint models.
METHODS: tuple[str, ...] = (
    "gin_random", "gin_pretrained", "gin_ssl", "probe_random", "probe_pretrained", "probe_ssl", "morgan_lr", "morgan_rf",
)


#: ``progress(done, total, text)``: units done of the total, and what is running.
ProgressCallback = Callable[[int, int, str], None]


def _method_seeds(method: str, seeds: Sequence[int]) -> list[int]:
    """Morgan + logistic regression is deterministic: one fit (the first seed)."""
    return list(seeds[:1]) if method == "morgan_lr" else list(seeds)


@torch.no_grad()
def _embed(encoder: GINEncoder, graphs: GraphTensors, batch_size: int = 1024) -> np.ndarray:
    encoder.eval()
    ids = torch.arange(len(graphs))
    out = [encoder(*graphs.batch(ids[a : a + batch_size]))[1].float().cpu() for a in range(0, len(ids), batch_size)]
    return torch.cat(out).numpy()


def run_methods(
    data: LabelledSet,
    split: np.ndarray,
    *,
    methods: Sequence[str],
    seeds: Sequence[int],
    encoders: dict[str, Callable[[int], GINEncoder]],
    config: FinetuneConfig = FinetuneConfig(),
    device: torch.device | str = "cpu",
    log: Callable[[str], None] | None = None,
    progress: ProgressCallback | None = None,
) -> dict[str, dict[str, Any]]:
    """Every method in ``methods`` on one labelled set and split, over ``seeds``.

    Parameters
    ----------
    encoders : dict
        ``{init: seed -> GINEncoder}`` (e.g. ``random``, ``pretrained``, ``ssl``), the initial
        encoder of the ``gin_<init>`` / ``probe_<init>`` methods (a fresh one per call).
    progress : callable, optional
        ``progress(done, total, text)`` after every GIN epoch and every other fit; units are
        epochs (``config.epochs`` per GIN seed) and one per probe / fingerprint fit; ``text``
        names the method, seed, epoch and running validation score.

    Returns
    -------
    dict
        ``{method: {"mode", "init", "test": {"mean", "sd", "per_seed"}, "val": {...},
        "test_last", "test_best_val" (GIN only), "per_task_test": {task: {"mean", "sd"}},
        "wall_s", "epochs_run" (GIN only)}}``.

    Raises
    ------
    ValueError
        On an unknown method, or a ``gin_``/``probe_`` method without its encoder.
    """
    unknown = [m for m in methods if not (m in ("morgan_lr", "morgan_rf") or m.split("_", 1)[0] in ("gin", "probe"))]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; valid: {', '.join(METHODS)}")
    device = torch.device(device)
    for method in methods:
        family, init = method.split("_", 1)
        if family in ("gin", "probe") and init not in encoders:
            raise ValueError(f"method {method!r} needs a {init!r} encoder; have {sorted(encoders)}")
    graphs = GraphTensors(data.graphs, device)
    plan = [(m, _method_seeds(m, seeds)) for m in methods]
    total = sum(len(ss) * (config.epochs if m.startswith("gin_") else 1) for m, ss in plan)
    done = 0
    out: dict[str, dict[str, Any]] = {}
    for method, method_seeds in plan:
        family, init = method.split("_", 1)
        t0 = time.perf_counter()
        runs = []
        for seed in method_seeds:
            if family == "gin":
                def tick(epoch: int, epochs: int, val: float, _m=method, _s=seed, _d=done) -> None:
                    if progress:
                        progress(_d + epoch, total, f"{_m} seed {_s} epoch {epoch}/{epochs} val {val:.3f}")

                r = finetune_once(encoders[init](seed).to(device), data, split, config=config, seed=seed,
                                  device=device, graphs=graphs, on_epoch=tick)
                r.pop("_model")
                done += config.epochs
            else:
                if family == "probe":
                    r = linear_probe(_embed(encoders[init](seed).to(device), graphs), data, split)
                else:
                    r = morgan_baseline(data, split, model="linear" if init == "lr" else "forest", seed=seed)
                done += 1
                if progress:
                    progress(done, total, f"{method} seed {seed} val {r['val']:.3f}")
            runs.append(r)
            if log:
                log(f"{data.name} {method} seed {seed}: test {r['test']:.4f} (val {r['val']:.4f})")
        per_task = {
            t: summarize([r["per_task_test"][j] for r in runs]) for j, t in enumerate(data.tasks)
        }
        res: dict[str, Any] = {
            "mode": {"gin": "finetune", "probe": "linear_probe", "morgan": "fingerprint"}[family],
            "init": init,
            "test": summarize([r["test"] for r in runs]),
            "val": summarize([r["val"] for r in runs]),
            "per_task_test": {t: {"mean": v["mean"], "sd": v["sd"]} for t, v in per_task.items()},
            "wall_s": time.perf_counter() - t0,
        }
        if family == "gin":
            res["test_last"] = summarize([r["test_last"] for r in runs])
            res["test_best_val"] = summarize([r["test_best_val"] for r in runs])
            res["best_epoch"] = [int(r["best_epoch"]) for r in runs]
            res["epochs_run"] = [int(r["epochs_run"]) for r in runs]
            res["curves"] = [r["curve"] for r in runs]
        if family == "morgan":
            res["chosen"] = runs[0]["chosen"]
            if init == "lr":
                res["note"] = "deterministic: one fit, sd 0"
        out[method] = res
    return out


# ---------------------------------------------------------------------------------------------
# Initial encoders
# ---------------------------------------------------------------------------------------------


def random_encoder(config: FinetuneConfig = FinetuneConfig(), *, featurizer: str = "ogb") -> Callable[[int], GINEncoder]:
    """seed -> a GIN of ``config``'s architecture (layer ``config.conv``) reading ``featurizer``'s
    features (:func:`cmcl_model.finetune.featurizers.feature_dims`) at random initialisation
    (``torch.manual_seed(seed)``)."""
    from cmcl_model.finetune.featurizers import feature_dims

    atom_dims, bond_dims = feature_dims(featurizer)  # type: ignore[arg-type]

    def make(seed: int) -> GINEncoder:
        torch.manual_seed(seed)
        return GINEncoder(config.layers, config.hidden, dropout=config.dropout, jk=config.jk, pooling=config.pooling,
                          atom_dims=atom_dims, bond_dims=bond_dims, conv=config.conv)

    return make


def run_encoder(run_dir, *, which: Literal["best", "last"] = "best") -> tuple[Callable[[int], GINEncoder], Any]:
    """(seed -> a copy of the run's pre-trained graph encoder, the run's TrainConfig)."""
    from cmcl_model.train.loop import load_model

    model, run_config = load_model(run_dir, which)
    encoder = model.graph_encoder

    def make(seed: int) -> GINEncoder:
        return copy.deepcopy(encoder)

    return make, run_config


def store_train_graphs(store_root) -> list:
    """OGB graphs of the store's training-split compounds (what an image run learns from)."""
    from pipeline.chem.graphs import graphs_to_data
    from pipeline.store.paths import Store

    st = Store(store_root)
    graphs = st.read("graphs")
    split = st.read("split")
    train = set(split.loc[split["Split"].astype(str) == "train", "Metadata_InChIKey"].astype(str))
    keep = graphs["Metadata_InChIKey"].astype(str).isin(train).to_numpy()
    return graphs_to_data(graphs.loc[keep].reset_index(drop=True))


def ssl_encoder(
    graphs: Sequence, run_config, *, seed: int = 0, device: torch.device | str = "cpu"
) -> tuple[Callable[[int], GINEncoder], dict[str, Any]]:
    """Attribute-masking pre-training of the run's GIN architecture on ``graphs`` with the
    run's budget (epochs, batch size, learning rate); returns (seed -> a copy, its log)."""
    torch.manual_seed(seed)
    enc = GINEncoder(run_config.gin_layers, run_config.gin_hidden, dropout=run_config.gin_dropout,
                     jk=run_config.gin_jk, pooling=run_config.gin_pooling)
    info = attribute_masking_pretrain(enc, graphs, epochs=run_config.epochs, batch_size=run_config.batch_size,
                                      lr=run_config.lr, mask_rate=run_config.mask_rate, seed=seed, device=device)
    info["compounds"] = len(graphs)
    enc = enc.cpu()

    def make(s: int) -> GINEncoder:
        return copy.deepcopy(enc)

    return make, info
