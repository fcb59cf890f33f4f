"""Speed of the fine-tuning step against this machine's matmul peak (``benchmarks/finetune.py --speed``).

Measures torch.matmul GFLOP/s in fp32 and bf16 (2048 x 2048), then trains GIN 5 x 300 on BBBP
(Hu et al.'s settings, protocol hu2020) for a few epochs with: the current step in fp32, the
current step under bf16 autocast, and the previous step (plain Adam, validation and test
scored in two passes) as the peer, alternating epochs so that load from other processes hits
all three alike. FLOPs are counted by ``torch.utils.flop_counter.FlopCounterMode`` over one
training epoch plus one evaluation; GFLOP/s = counted FLOPs / wall time.
"""

from __future__ import annotations

import time

import numpy as np
import torch

__all__ = ["matmul_peak", "speed"]


def matmul_peak(dtype: torch.dtype, n: int = 2048, reps: int = 10) -> float:
    """Best-of-3 GFLOP/s of an (n, n) @ (n, n) matmul in ``dtype``."""
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    a @ b
    best = 0.0
    for _ in range(3):
        t = time.perf_counter()
        for _ in range(reps):
            a @ b
        best = max(best, 2 * n**3 * reps / (time.perf_counter() - t) / 1e9)
    return best


def _setup(data, split, precision: str, reference: bool, featurizer: str):
    from cmcl_model.finetune.run import FinetuneConfig, GraphTensors, PropertyModel, make_optimizer, random_encoder

    config = FinetuneConfig(precision=precision, conv="selfloop" if featurizer == "hu2020" else "gine")
    model = PropertyModel(random_encoder(config, featurizer=featurizer)(0), len(data.tasks))
    model.encoder.dropout = config.dropout
    opt = (torch.optim.Adam(model.parameters(), lr=config.lr, foreach=False) if reference
           else make_optimizer(model, config, torch.device("cpu")))
    return config, model, opt, GraphTensors(data.graphs)


def _epoch(state, data, split, gen, reference: bool) -> None:
    from cmcl_model.finetune.run import masked_bce, predict, task_scores, train_epoch

    config, model, opt, graphs = state
    y = torch.as_tensor(data.labels, dtype=torch.float32)
    ids = {k: torch.from_numpy(np.flatnonzero(split == k)) for k in ("train", "val", "test")}
    train_epoch(model, graphs, y, ids["train"], opt=opt, loss_fn=masked_bce, batch_size=config.batch_size,
                generator=gen, precision=config.precision)
    parts = [ids["val"], ids["test"]] if reference else [torch.cat([ids["val"], ids["test"]])]
    for p in parts:
        task_scores(predict(model, graphs, p, config.eval_batch_size, config.precision), data.labels[p.numpy()],
                    data.kind)


def speed(*, epochs: int = 2, protocol: str = "hu2020", featurizer: str = "hu2020", dataset: str = "bbbp",
          limit: int | None = None) -> int:
    """Print the matmul peaks and ``epochs`` timed epochs of each step variant on ``dataset``
    (its first ``limit`` molecules, for a quick check) under ``protocol`` with ``featurizer``'s
    features (and its GIN layer)."""
    from torch.utils.flop_counter import FlopCounterMode

    from cmcl_model.finetune.labelled import load_shipped, prepare_labelled, split_molecules

    peak = {"fp32": matmul_peak(torch.float32), "bf16": matmul_peak(torch.bfloat16)}
    frame, spec = load_shipped(dataset)
    frame = frame.iloc[:limit] if limit else frame
    data = prepare_labelled(frame, smiles_col=spec.smiles_col, tasks=spec.tasks, kind=spec.kind, name=dataset,
                            protocol=protocol, featurizer=featurizer)
    split = np.asarray(split_molecules(data.smiles, mode="scaffold"))
    variants = {"previous step (fp32)": ("fp32", True), "fp32": ("fp32", False), "bf16 autocast": ("bf16", False)}
    states = {k: _setup(data, split, p, ref, featurizer) for k, (p, ref) in variants.items()}
    gens = {k: torch.Generator().manual_seed(0) for k in variants}
    with FlopCounterMode(display=False) as fc:
        _epoch(states["fp32"], data, split, torch.Generator().manual_seed(1), False)
    flops = fc.get_total_flops()
    times: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(epochs):
        for k, (p, ref) in variants.items():
            t = time.perf_counter()
            _epoch(states[k], data, split, gens[k], ref)
            times[k].append(time.perf_counter() - t)
    print(f"matmul peak (2048^3, {torch.get_num_threads()} threads): fp32 {peak['fp32']:.0f} GFLOP/s, "
          f"bf16 {peak['bf16']:.0f} GFLOP/s")
    print(f"{dataset} epoch (protocol {protocol}, {featurizer} features; train {int((split == 'train').sum())} "
          f"molecules + val/test scoring): {flops / 1e9:.0f} GFLOP counted")
    base = min(times["previous step (fp32)"])
    for k, (p, _) in variants.items():
        best = min(times[k])
        print(f"  {k:<22} {best:6.2f} s/epoch (all: {', '.join(f'{t:.2f}' for t in times[k])})  "
              f"{flops / best / 1e9:6.1f} GFLOP/s = {100 * flops / best / 1e9 / peak[p]:.0f} % of the {p} matmul peak; "
              f"{base / best:.2f}x the previous step")
    return 0
