"""Typed units of work of the runner, and the one hash of a method configuration.

A run is (dataset, model) pairs (:class:`PairJob`) x methods (:class:`MethodJob`) x sample
chunks (:class:`ChunkJob`) x groups of metrics that share forward passes (:class:`GroupJob`).
:func:`method_hash` is the only place a method configuration is hashed: the attribution cache
key, the signature under which aliases share raw outputs, everything goes through it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from torch import Tensor, nn

from saliencybench.attributions.base import method_params
from saliencybench.core.io import config_key
from saliencybench.core.registry import Entry
from saliencybench.core.types import Batch, SampleSet

if TYPE_CHECKING:
    from saliencybench.benchmark.config import SuiteConfig
    from saliencybench.metrics.base import Metric


def method_hash(method: Mapping[str, Any], **context: Any) -> str:
    """Short stable hash of a method configuration (``method``: its record, or part of it)
    together with the ``context`` it was computed in (dataset, model, seed, ...)."""
    return config_key({"method": dict(method), **context})


@dataclass(frozen=True)
class MethodJob:
    """One method of a suite: its suite name (maybe an alias), registry entry and overrides."""

    name: str
    entry: Entry
    overrides: Mapping[str, Any]

    @property
    def params(self) -> dict[str, Any]:
        """Registry defaults merged with the suite's overrides."""
        return method_params(self.entry, dict(self.overrides))

    @property
    def record(self) -> dict[str, Any]:
        """What run.json records of the method: the inputs that decide its attributions."""
        post = self.overrides.get("postprocess", self.entry.meta.get("postprocess", ()))
        return {"base": self.entry.name, "params": self.params, "postprocess": list(post)}

    @property
    def meta(self) -> dict[str, Any]:
        """The entry's metadata with the resolved parameters and names (what metrics see)."""
        return {**self.entry.meta, "params": self.params, "name": self.name, "base": self.entry.name}

    def raw_signature(self) -> str:
        """Methods with equal signatures produce the same raw output (they differ only in
        post-processing); stochastic methods draw per-method seeds, so they never share."""
        seed_of = self.name if self.entry.meta.get("stochastic") else ""
        return method_hash({"base": self.entry.name, "params": self.params}, seed_of=seed_of)

    def cache_key(self, cfg: SuiteConfig, dataset: str, model: str) -> str:
        """Key of the method's maps in the attribution cache for (dataset, model)."""
        return method_hash(self.record, dataset=dataset, dataset_params=cfg.dataset_params.get(dataset, {}),
                           model=model, model_params=cfg.model_params.get(model, {}),
                           seed=cfg.seed, target=cfg.explained)


@dataclass(frozen=True)
class PairJob:
    """One (dataset, model) pair: the model as the methods see it and its samples."""

    dataset: str
    model_name: str
    model: nn.Module
    samples: SampleSet


@dataclass(frozen=True)
class ChunkJob:
    """One method on one chunk of a pair's samples (indices into the sample set)."""

    pair: PairJob
    method: MethodJob
    chunk: int
    idx: tuple[int, ...]

    @property
    def ids(self) -> list[str]:
        return [self.pair.samples.sample_ids[i] for i in self.idx]


@dataclass(frozen=True)
class GroupJob:
    """A group of metrics evaluated together on a chunk, written to one result part."""

    chunk: ChunkJob
    metrics: tuple[Metric, ...]
    path: Path

    @property
    def names(self) -> list[str]:
        return [m.name for m in self.metrics]


@dataclass(frozen=True)
class ChunkInputs:
    """What the metrics of a chunk evaluate: inputs, targets, the cached maps or the error
    that prevented them."""

    batch: Batch
    target: Tensor
    maps: Tensor | None
    error: str | None
