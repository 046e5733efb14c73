"""Data types shared by datasets, models, methods, metrics and the runner."""

from __future__ import annotations

from dataclasses import KW_ONLY, dataclass, field
from typing import Any, Callable, Sequence

import torch
from torch import Tensor


@dataclass(frozen=True)
class Normalization:
    """Per-channel normalisation ``x = (pixel - mean) / std`` applied before the model.

    Every tensor a method or metric sees is the *normalised* model input; metrics that need
    pixel space (a black substrate, say) convert with :meth:`to_pixel` / :meth:`from_pixel`.
    """

    mean: tuple[float, ...]
    std: tuple[float, ...]

    def _shape(self, x: Tensor) -> tuple[Tensor, Tensor]:
        m = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        s = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        return m, s

    def to_pixel(self, x: Tensor) -> Tensor:
        m, s = self._shape(x)
        return x * s + m

    def from_pixel(self, p: Tensor) -> Tensor:
        m, s = self._shape(p)
        return (p - m) / s

    def pixel_value(self, value: float, like: Tensor) -> Tensor:
        """The normalised tensor of a constant pixel value (0.0 = black), shaped like ``like``."""
        return self.from_pixel(torch.full_like(like, float(value)))


IMAGENET_NORMALIZATION = Normalization((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
IDENTITY_NORMALIZATION = Normalization((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))


@dataclass
class Batch:
    """A batch of samples on a device. ``x`` is normalised; ``mask`` is (B,1,H,W) or None."""

    x: Tensor
    y: Tensor
    sample_ids: list[str]
    mask: Tensor | None = None

    def to(self, device: torch.device | str) -> "Batch":
        return Batch(
            self.x.to(device),
            self.y.to(device),
            list(self.sample_ids),
            None if self.mask is None else self.mask.to(device),
        )

    def __len__(self) -> int:
        return int(self.x.shape[0])


@dataclass(eq=False, repr=False)
class SampleSet:
    """An indexable set of evaluation samples.

    Subclasses (or instances built with tensors) provide ``__len__`` and ``get(indices)``
    returning a :class:`Batch` on CPU. Attributes:

    - ``normalization``: the :class:`Normalization` of ``x``;
    - ``num_classes``, ``image_size`` (H, W), ``class_names`` (optional);
    - ``name``: dataset registry name;
    - ``info``: free metadata recorded in the run manifest (split, root, counts, ...);
    - ``wrap_model``: optional; a function that turns the base model into the model these
      samples are evaluated with (the grid datasets set it: an n x n grid model around the
      base classifier); None (the default) evaluates the model as it is.
    """

    x: Tensor
    y: Tensor
    _: KW_ONLY
    normalization: Normalization
    num_classes: int
    sample_ids: Sequence[str] | None = None
    mask: Tensor | None = None
    name: str = ""
    class_names: Sequence[str] | None = None
    info: dict[str, Any] | None = None
    #: The model wrapper these samples need (None: none); set by the dataset that builds them.
    wrap_model: Callable[[torch.nn.Module], torch.nn.Module] | None = None

    def __post_init__(self) -> None:
        if self.x.ndim != 4:
            raise ValueError(f"x must be (N,C,H,W), got shape {tuple(self.x.shape)}")
        if self.y.shape[0] != self.x.shape[0]:
            raise ValueError("x and y have different lengths")
        self.y = self.y.long()
        self.num_classes = int(self.num_classes)
        n = len(self.y)
        self.sample_ids = list(self.sample_ids) if self.sample_ids is not None else [f"{i:06d}" for i in range(n)]
        self.class_names = list(self.class_names) if self.class_names is not None else None
        self.info = dict(self.info or {})

    @property
    def image_size(self) -> tuple[int, int]:
        return int(self.x.shape[-2]), int(self.x.shape[-1])

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def get(self, indices: Sequence[int]) -> Batch:
        idx = torch.as_tensor(list(indices), dtype=torch.long)
        return Batch(
            self.x[idx],
            self.y[idx],
            [self.sample_ids[i] for i in idx.tolist()],
            None if self.mask is None else self.mask[idx],
        )

    def batches(self, batch_size: int) -> "list[list[int]]":
        n = len(self)
        return [list(range(i, min(i + batch_size, n))) for i in range(0, n, batch_size)]

    def subset(self, indices: Sequence[int]) -> "SampleSet":
        b = self.get(indices)
        return SampleSet(
            b.x, b.y, normalization=self.normalization, num_classes=self.num_classes,
            sample_ids=b.sample_ids, mask=b.mask, name=self.name,
            class_names=self.class_names, info=self.info, wrap_model=self.wrap_model,
        )


AttributeFn = Callable[..., Tensor]


@dataclass
class EvalContext:
    """Everything a metric may use besides the attribution map itself.

    ``attribute(x, target, **kw)`` calls the method under evaluation again (through the
    registry, model guard and post-processing) for metrics such as MIA that need it; it
    returns (B,1,H,W) maps, or signed per-channel (B,C,H,W) maps with ``reduce=False``.
    ``forward_counter`` is incremented by metrics with the number of images they push
    through the model, so the run manifest can show where the forward passes went.
    """

    model: torch.nn.Module
    batch: Batch
    target: Tensor
    normalization: Normalization
    num_classes: int
    method: str = ""
    method_meta: dict[str, Any] = field(default_factory=dict)
    attribute: AttributeFn | None = None
    seed: int = 0
    model_name: str = ""
    dataset_name: str = ""
    forward_counter: dict[str, int] = field(default_factory=dict)
    max_batch: int = 256

    @property
    def device(self) -> torch.device:
        return self.batch.x.device

    def count_forwards(self, key: str, n_images: int) -> None:
        self.forward_counter[key] = self.forward_counter.get(key, 0) + int(n_images)


@dataclass
class MetricOutput:
    """Per-sample result of one metric on one batch.

    ``values`` is (B,) float; NaN is allowed only where ``status`` says why (it never
    reaches the leaderboard). ``curve`` is (B,T) with shared abscissa ``curve_x`` (T,).
    """

    values: Tensor
    curve: Tensor | None = None
    curve_x: Tensor | None = None
    status: list[str] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
