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
evaluated on validation and test; a result records the test metric at the last epoch and at
the best validation epoch (the first epoch of highest validation score: what Hu et al. report,
their ``chem/parse_result.py`` taking ``test_auc_list[np.argmax(val_auc_list)]``; ``cmcl
finetune --protocol hu2020`` makes it the headline). ``patience`` stops training when
validation has not improved for that many epochs (the model is then taken at its best
validation epoch).

Baselines on the same split: Morgan fingerprints with a logistic-regression / ridge or a
random-forest model tuned on validation (:func:`~cmcl_model.finetune.baselines.morgan_baseline`),
a linear probe on frozen GIN embeddings (:func:`~cmcl_model.finetune.baselines.linear_probe`),
and a structure-only self-supervised GIN pre-trained by attribute masking
(:func:`~cmcl_model.finetune.pretrain.attribute_masking_pretrain`); losses and scores live in
:mod:`cmcl_model.finetune.scores`, graph batching in :mod:`cmcl_model.finetune.tensors`. Their
names stay importable from this module.
"""

from __future__ import annotations

import contextlib
import copy
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, nn

from cmcl_model.finetune.baselines import linear_probe, morgan_baseline
from cmcl_model.finetune.labelled import LabelledSet
from cmcl_model.finetune.pretrain import attribute_masking_pretrain, ssl_encoder, store_train_graphs
from cmcl_model.finetune.resume import LoopState, load_state, save_state
from cmcl_model.finetune.scores import is_better, masked_bce, masked_mse, summarize, task_scores
from cmcl_model.finetune.tensors import GraphTensors
from cmcl_model.nn.encoders import GINEncoder

__all__ = [
    "FinetuneConfig",
    "GraphTensors",
    "PropertyModel",
    "masked_bce",
    "masked_mse",
    "task_scores",
    "finetune_once",
    "score_val_test",
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

    ``select``: which epoch's test metric is the headline, ``'last'`` or ``'best_val'`` (the
    first epoch of highest validation score, what Hu et al. report); with ``patience`` set,
    training stops early and ``'best_val'`` is used.
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


class PropertyModel(nn.Module):
    """GIN encoder + linear task head.

    Shapes: forward(x (N, F_atom), edge_index (2, E), edge_attr (E, F_bond), batch (N,), G) -> (G, T)
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


def score_val_test(
    model: PropertyModel,
    graphs: GraphTensors,
    data: LabelledSet,
    val_ids: Tensor,
    test_ids: Tensor,
    *,
    config: FinetuneConfig,
    mean: np.ndarray,
    sd: np.ndarray,
) -> tuple[tuple[float, list], tuple[float, list]]:
    """Validation and test scores (:func:`task_scores`) from one forward pass over both.

    ``val_ids`` (V,), ``test_ids`` (T,) index ``graphs``; predictions are mapped back to label
    units with ``mean`` and ``sd`` (T_tasks,) (zeros and ones for classification). An empty part
    scores ``(nan, [None] * T_tasks)``.
    """
    n_val = val_ids.numel()
    scored = torch.cat([val_ids, test_ids])
    nothing = (float("nan"), [None] * len(data.tasks))
    p = predict(model, graphs, scored, config.eval_batch_size, config.precision) * sd + mean
    lab = data.labels[scored.numpy()]
    val = task_scores(p[:n_val], lab[:n_val], data.kind) if n_val else nothing
    test = task_scores(p[n_val:], lab[n_val:], data.kind) if scored.numel() > n_val else nothing
    return val, test


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
    state_path: str | os.PathLike | None = None,
    state_key: str = "",
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
    state_path, state_key : path and str, optional
        Where the run's state is written after every epoch and read at the start, for that key
        (:mod:`cmcl_model.finetune.resume`): a stopped run continues to an uninterrupted run's
        numbers; the file is removed at the end.

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
    st = (load_state(state_path, state_key, model, opt, gen) if state_path else None) or LoopState()
    for epoch in range(st.epoch, config.epochs):
        loss = train_epoch(model, graphs, y, idx["train"], opt=opt, loss_fn=loss_fn, batch_size=config.batch_size,
                           generator=gen, precision=config.precision)
        (val, _), (test, per) = score_val_test(model, graphs, data, idx["val"], idx["test"], config=config, mean=mu,
                                               sd=sd)
        better = is_better(val, st.best[0], data.kind)
        st.record(epoch, val, test, per, better=better,
                  weights=copy.deepcopy(model.state_dict()) if better and config.patience is not None else None)
        stop = config.patience is not None and st.bad >= config.patience
        if state_path and st.epoch < config.epochs and not stop:
            save_state(state_path, state_key, replace(st, wall_s=st.wall_s + time.perf_counter() - t0), model, opt, gen)
        if log:
            log(f"epoch {epoch + 1}: loss {loss:.4f} val {val:.4f} test {st.last_test:.4f}")
        if on_epoch:
            on_epoch(epoch + 1, config.epochs, val)
        if stop:
            break
    if state_path:
        Path(state_path).unlink(missing_ok=True)
    curve, best, last_test = st.curve, st.best, st.last_test
    select = "best_val" if config.patience is not None else config.select
    if st.best_state is not None:
        model.load_state_dict(st.best_state)
    head_test, head_per = (best[2], best[3]) if select == "best_val" else (last_test, st.last_per)
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
        "wall_s": st.wall_s + time.perf_counter() - t0,
        "_model": model,
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
    from cmcl_model.train.checkpoints import load_model

    model, run_config = load_model(run_dir, which)
    encoder = model.graph_encoder

    def make(seed: int) -> GINEncoder:
        return copy.deepcopy(encoder)

    return make, run_config


