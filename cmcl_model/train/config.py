"""Training configuration: :class:`TrainConfig`, its presets and its choice lists.

Torch-free, so the CLI and the flows can read and check settings without importing torch.
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal

from cmcl_model.data.choices import (
    IMAGE_SOURCES,
    NEGATIVES,
    PROFILE_SOURCES,
    ImageSource,
    Negatives,
    ProfileSource,
)

__all__ = ["TrainConfig", "Device", "DEVICES", "Precision", "PRECISIONS", "Preset", "PRESETS", "resolve_config"]

Device = Literal["auto", "cpu", "cuda"]
DEVICES: tuple[str, ...] = typing.get_args(Device)
#: 'auto' (bf16 autocast on CUDA, fp32 on CPU), 'fp32', 'bf16' (autocast, CPU or CUDA) or
#: 'fp16' (CUDA autocast with a gradient scaler)
Precision = Literal["auto", "fp32", "bf16", "fp16"]
PRECISIONS: tuple[str, ...] = typing.get_args(Precision)
GinJK = Literal["last", "sum", "concat"]
GinPooling = Literal["mean", "sum", "attention"]
#: named starting points of a config: :meth:`TrainConfig.quick`, :meth:`TrainConfig.demo`, the defaults
Preset = Literal["quick", "demo", "default"]
PRESETS: tuple[str, ...] = typing.get_args(Preset)


def _coerce(value: Any, hint: Any, where: str) -> Any:
    """``value`` checked against the type ``hint`` of a :class:`TrainConfig` field."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, a, where)
            except ValueError as exc:
                errors.append(str(exc))
        raise ValueError(errors[0] + (" (or null)" if type(None) in args else ""))
    if origin is Literal:
        if value not in args:
            raise ValueError(f"{where} must be one of {', '.join(map(repr, args))}, got {value!r}")
        return value
    if origin is dict:
        if not isinstance(value, dict):
            raise ValueError(f"{where} must be a JSON object, e.g. {{\"name\": 0.5}}, got {value!r}")
        return {str(k): _coerce(v, args[1], where) for k, v in value.items()}
    if origin is tuple:
        if not isinstance(value, list):
            raise ValueError(f"{where} must be a JSON list, e.g. [64, 128], got {value!r}")
        inner = args[0]
        if len(args) != 2 or args[1] is not Ellipsis:
            if len(value) != len(args):
                raise ValueError(f"{where} must be a list of {len(args)} numbers, got {value!r}")
        return [_coerce(v, inner, where) for v in value]
    if hint is bool:
        if not isinstance(value, bool):
            raise ValueError(f"{where} must be true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{where} must be an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{where} must be a number, got {value!r}")
        return float(value)
    if hint is str and not isinstance(value, str):
        raise ValueError(f"{where} must be text, got {value!r}")
    return value


@dataclass(frozen=True)
class TrainConfig:
    """Every hyper-parameter of a training run. Defaults are paper-like (MIGA) sizes.

    Use :meth:`quick` (tests, ~30 s on ~80 compounds) or :meth:`demo` (CPU demo, ~5 min on
    ~600 compounds of 32 px crops) for small machines.
    """

    # optimisation
    epochs: int = 100
    batch_size: int = 256
    crops_per_sample: int = 4
    lr: float = 3e-4
    weight_decay: float = 1e-5
    warmup_epochs: float = 1.0
    min_lr_ratio: float = 0.01
    grad_clip: float = 1.0
    device: Device = "auto"
    #: 'auto' (bf16 autocast on CUDA, fp32 on CPU), 'fp32', 'bf16' (autocast, CPU or CUDA) or
    #: 'fp16' (CUDA autocast with a gradient scaler)
    precision: Precision = "auto"
    seed: int = 0
    # graph encoder
    gin_layers: int = 5
    gin_hidden: int = 300
    gin_dropout: float = 0.1
    gin_jk: GinJK = "last"
    gin_pooling: GinPooling = "mean"
    # image encoder
    cnn_widths: tuple[int, ...] = (64, 128, 256, 512)
    cnn_blocks: int = 2
    cnn_stem_stride: int = 1
    proj_dim: int = 128
    # losses
    temperature: float = 0.1
    learnable_temperature: bool = False
    margin: float = 0.4
    infonce_weight: float = 0.9
    margin_weight: float = 0.1
    mgm_weight: float = 0.0
    mask_rate: float = 0.15
    ggim_weight: float = 0.0
    #: weights of registered objectives that have no field of their own
    #: (:mod:`cmcl_model.train.objectives`; ``--set objective_weights={"name": 0.5}``); 0 or absent = off
    objective_weights: dict[str, float] = dataclasses.field(default_factory=dict)
    # data
    #: 'crops' (single cells, the default), 'tiles' (field tiles; ingest with a field tile size) or
    #: 'profiles' (CellProfiler well profiles, cmcl's own or imported: cmcl_model/data/profiles.py)
    image_source: ImageSource = "crops"
    #: profile mode: which well profiles to pair ('all', 'cmcl' = `cmcl profile`'s, 'imported')
    profile_sources: ProfileSource = "all"
    #: profile mode: 'within_source' draws each batch (its negatives) from one source/lab
    negatives: Negatives = "any"
    #: profile mode: hidden widths of the profile MLP (its last width is the image feature size)
    mlp_widths: tuple[int, ...] = (512, 256)
    mlp_dropout: float = 0.1
    #: profile mode: features per profile, set by `train` from the data (0 = not yet known)
    profile_features: int = 0
    #: leave out crops zero-padded at the field's edge (cells table ``Metadata_CropPadded``).
    #: Default False: they are whole, measured cells (their features and profiles include
    #: them), the padding is the CNN's own zero, and evaluation embeds every crop
    exclude_padded_crops: bool = False
    augment: bool = True
    jitter: float = 0.05
    log1p: bool = True
    norm_crops: int = 1024
    cache_mb: int = 256
    num_workers: int = 0
    split_fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
    split_seed: int = 0
    eval_batch_size: int = 256
    # stopping
    max_minutes: float | None = None
    max_steps: int | None = None
    patience: int | None = None
    #: also write ``last.pt`` every this many optimizer steps inside an epoch (crash safety)
    checkpoint_every_steps: int | None = None

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "crops_per_sample", "gin_layers", "gin_hidden", "proj_dim", "cnn_blocks"):
            if getattr(self, name) < 1:
                raise ValueError(f"TrainConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.batch_size < 2:
            raise ValueError(f"TrainConfig.batch_size must be >= 2 for a contrastive loss, got {self.batch_size}")
        if self.checkpoint_every_steps is not None and self.checkpoint_every_steps < 1:
            raise ValueError(f"TrainConfig.checkpoint_every_steps must be >= 1 or None, got {self.checkpoint_every_steps}")
        if not isinstance(self.exclude_padded_crops, bool):
            raise ValueError(f"TrainConfig.exclude_padded_crops must be true or false, got {self.exclude_padded_crops!r}")
        for name, choices in (("image_source", IMAGE_SOURCES), ("precision", PRECISIONS), ("device", DEVICES),
                              ("profile_sources", PROFILE_SOURCES), ("negatives", NEGATIVES)):
            if getattr(self, name) not in choices:
                raise ValueError(f"TrainConfig.{name}={getattr(self, name)!r} is not one of {', '.join(map(repr, choices))}")
        weights = {str(k): float(v) for k, v in dict(self.objective_weights).items()}
        if any(not math.isfinite(v) or v < 0 for v in weights.values()):
            raise ValueError(f"TrainConfig.objective_weights must be finite and >= 0, got {weights}")
        object.__setattr__(self, "objective_weights", weights)
        object.__setattr__(self, "cnn_widths", tuple(int(w) for w in self.cnn_widths))
        object.__setattr__(self, "mlp_widths", tuple(int(w) for w in self.mlp_widths))
        object.__setattr__(self, "split_fractions", tuple(float(f) for f in self.split_fractions))

    @classmethod
    def quick(cls, **overrides: Any) -> "TrainConfig":
        """Tiny model for tests: ~30 s on ~80 compounds on 2 CPU cores."""
        base = dict(
            epochs=20, batch_size=32, crops_per_sample=2, lr=2e-3, weight_decay=1e-4, warmup_epochs=1.0,
            gin_layers=2, gin_hidden=64, gin_dropout=0.0, cnn_widths=(8, 16, 32), cnn_blocks=1, proj_dim=32,
            eval_batch_size=64, norm_crops=256, cache_mb=64,
        )
        return cls(**{**base, **overrides})

    @classmethod
    def demo(cls, **overrides: Any) -> "TrainConfig":
        """CPU demo: 32 px crops, ~600 compounds, ~4-5 minutes on 2 cores.

        Measured on the generated 2-plate demo store (482 train / 68 val compounds, loaded
        2-core machine, 6-minute cap): the former preset (batch 64, CNN 16-128, lr 1e-3) made
        14 steps and stayed at chance (val Hit@10 0.14, chance 0.147); this one (batch 32,
        CNN 16-64, lr 2e-3: ~2x the steps, each ~2x cheaper) reached val Hit@10 0.23 after
        one epoch.
        """
        base = dict(
            epochs=25, batch_size=32, crops_per_sample=4, lr=2e-3, weight_decay=1e-4, warmup_epochs=1.0,
            gin_layers=3, gin_hidden=128, gin_dropout=0.1, cnn_widths=(16, 32, 64), cnn_blocks=1,
            cnn_stem_stride=2, proj_dim=128, eval_batch_size=128, max_minutes=6.0,
        )
        return cls(**{**base, **overrides})

    @classmethod
    def parse_overrides(cls, items: list[str]) -> dict[str, Any]:
        """``['epochs=10', 'lr=1e-3']`` (``--set`` values) -> typed field overrides.

        Values are read as JSON where they parse (``10``, ``1e-3``, ``true``, ``null``,
        ``[0.8, 0.1, 0.1]``), else as text, then checked against the field's type.

        Raises
        ------
        ValueError
            Naming the ``--set`` item: not ``KEY=VALUE``, an unknown key (the message lists the
            valid keys), or a value of the wrong type or outside a field's choices.
        """
        hints = typing.get_type_hints(cls)
        names = [f.name for f in dataclasses.fields(cls)]
        out: dict[str, Any] = {}
        for item in items:
            if "=" not in item:
                raise ValueError(f"--set {item!r} is not KEY=VALUE (e.g. --set epochs=10)")
            key, text = (s.strip() for s in item.split("=", 1))
            if key not in hints:
                raise ValueError(f"--set {item!r}: unknown key {key!r}; valid keys: {', '.join(names)}")
            try:
                value = json.loads(text)
            except json.JSONDecodeError:
                value = text
            out[key] = _coerce(value, hints[key], f"--set {item!r}: {key}")
        return out

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON values (tuples as lists), as ``config.json`` stores them."""
        d = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "TrainConfig":
        """Inverse of :meth:`to_dict`; unknown keys raise ``ValueError``."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown TrainConfig fields {sorted(unknown)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


def resolve_config(preset: Preset = "default", overrides: Mapping[str, Any] | None = None) -> TrainConfig:
    """A :class:`TrainConfig` from a preset name (:data:`PRESETS`) and field overrides.

    Raises
    ------
    ValueError
        On an unknown preset (the message lists :data:`PRESETS`) or a bad field value.
    """
    if preset not in PRESETS:
        raise ValueError(f"preset {preset!r} is not one of {', '.join(PRESETS)}")
    overrides = dict(overrides or {})
    if preset == "quick":
        return TrainConfig.quick(**overrides)
    if preset == "demo":
        return TrainConfig.demo(**overrides)
    return TrainConfig(**overrides)
