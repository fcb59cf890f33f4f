"""Trained encoders that leave the store: one self-contained file per model.

``cmcl export --run ID OUT.pt`` writes the run's weights, its :class:`TrainConfig`, the
featurizer it was trained with and the per-plate crop normalisation into one ``torch.save``
file of tensors and plain values (``torch.load(path, weights_only=True)`` reads it). It loads
without the store::

    from cmcl_model.deploy.export import load_exported
    model, config, meta = load_exported("cmcl_encoder.pt")     # eval mode, CPU
    from cmcl_model.deploy.embed import embed_smiles
    table = embed_smiles(model, ["CCO", "c1ccccc1O"])          # one row per SMILES

``cmcl finetune --init FILE`` and ``cmcl embed --model FILE`` accept the same file.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import torch

__all__ = ["FORMAT", "ExportError", "featurizer_version", "export_run", "load_exported", "exported_graph_encoder",
           "load_encoder"]

#: the ``format`` of an exported file
FORMAT = "cmcl-encoder/1"


class ExportError(ValueError):
    """An exported file cannot be used: not one, another format, or another featurizer."""


def featurizer_version() -> dict[str, Any]:
    """What turns a SMILES into the GIN's input: OGB ``smiles2graph`` features, as
    :mod:`pipeline.chem.graphs` builds them, identified by a hash of their vocabularies."""
    from pipeline.chem.graphs import ATOM_VOCABULARY, BOND_VOCABULARY

    text = repr((ATOM_VOCABULARY, BOND_VOCABULARY)).encode()
    return {"name": "ogb-smiles2graph", "atom_features": len(ATOM_VOCABULARY), "bond_features": len(BOND_VOCABULARY),
            "vocabulary_sha256": hashlib.sha256(text).hexdigest()}


def export_run(run_dir: str | os.PathLike, out: str | os.PathLike, *, which: Literal["best", "last"] = "best") -> Path:
    """Write a run's model as one self-contained file (see the module docstring).

    Parameters
    ----------
    run_dir : path
        ``runs/<run>`` of a store.
    out : path
        File to write (parent folders are created); replaced atomically.
    which : {'best', 'last'}
        The checkpoint to export.

    Returns
    -------
    Path of the file.

    Raises
    ------
    FileNotFoundError
        If the run has no such checkpoint.
    """
    from cmcl_model.train.checkpoints import load_checkpoint

    run_dir, out = Path(run_dir), Path(out)
    ckpt = load_checkpoint(run_dir, which)
    meta_path = run_dir / "config.json"
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    doc = {
        "format": FORMAT,
        "run_id": run_dir.name,
        "checkpoint": which,
        "config": ckpt["config"],
        "model": ckpt["model"],
        "normalization": ckpt.get("normalization", {}),
        "featurizer": featurizer_version(),
        "code": meta.get("code", {}),
        "world_size": meta.get("world_size", 1),
        "position": ckpt.get("position", {}),
        "exported": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    torch.save(doc, tmp)
    os.replace(tmp, out)
    return out


def load_exported(path: str | os.PathLike, *, map_location: str | torch.device = "cpu"):
    """Rebuild the model of an exported file -> (model in eval mode, TrainConfig, metadata dict).

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ExportError
        If it is not a cmcl encoder file of this format, or was trained with another featurizer.
    """
    from cmcl_model.train.build import build_model
    from cmcl_model.train.config import TrainConfig

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"exported model {path} does not exist")
    try:
        doc = torch.load(path, weights_only=True, map_location=map_location)
    except Exception as exc:  # torch raises several types for a file that is not a torch archive
        raise ExportError(f"{path} is not a cmcl encoder file ({type(exc).__name__}: {str(exc).splitlines()[0]})") from exc
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        fmt = doc.get("format") if isinstance(doc, dict) else type(doc).__name__
        raise ExportError(f"{path} is not a {FORMAT} file (format {fmt!r}); write one with `cmcl export --run ID OUT`")
    if doc["featurizer"] != featurizer_version():
        raise ExportError(f"{path} was trained with featurizer {doc['featurizer']}, this cmcl has {featurizer_version()}")
    config = TrainConfig.from_dict(doc["config"])
    model = build_model(config)
    model.load_state_dict(doc["model"])
    model.eval()
    meta = {k: v for k, v in doc.items() if k not in ("model", "config")}
    return model, config, meta


def load_encoder(source: str | os.PathLike):
    """(model in eval mode, TrainConfig) from an exported file or a run directory."""
    p = Path(source)
    if p.is_dir():
        from cmcl_model.train.checkpoints import load_model

        return load_model(p, "best")
    model, config, _ = load_exported(p)
    return model, config


def exported_graph_encoder(path: str | os.PathLike) -> tuple[Callable[[int], torch.nn.Module], Any]:
    """(seed -> a copy of the file's pre-trained graph encoder, its TrainConfig): what
    ``cmcl finetune --init FILE`` fine-tunes."""
    import copy

    model, config, _ = load_exported(path)
    encoder = model.graph_encoder

    def make(seed: int) -> torch.nn.Module:
        return copy.deepcopy(encoder)

    return make, config
