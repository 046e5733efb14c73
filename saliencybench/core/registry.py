"""Typed registries for methods, metrics, datasets and models.

Registration is a decorator with an explicit name and metadata, as in timm's model registry
(``list_models`` with wildcards) and lm-evaluation-harness's task registry:

>>> @register_method("gxsi", family="gradient", paper="Lee & Chang 2021")
... def gxsi(model, x, target, **kw): ...

Unknown names raise :class:`UnknownNameError` with a "did you mean" suggestion; duplicate
names raise :class:`DuplicateNameError`.
"""

from __future__ import annotations

import fnmatch
import importlib.util
import inspect
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Generic, Iterable, Iterator, TypeVar

from saliencybench.core.errors import (  # noqa: F401 - the registry's errors, importable from here
    DuplicateNameError,
    MissingDependencyError,
    RegistryError,
    UnknownNameError,
)
from saliencybench.core.names import did_you_mean

T = TypeVar("T")


@dataclass(frozen=True)
class Prefix:
    """A family of names ``<prefix>:<name>`` resolved on demand (``timm:resnet18``).

    ``resolve(name)`` returns the :class:`Entry` of ``<prefix>:<name>`` or raises a
    :class:`RegistryError` (unknown name with a suggestion, missing optional dependency).
    ``describe()`` is the one line ``saliencybench list`` prints for the family;
    ``names(pattern)`` lists the names matching a wildcard (without the prefix).
    """

    prefix: str
    resolve: Callable[[str], Entry[Any]]
    describe: Callable[[], str]
    names: Callable[[str], list[str]] | None = None


@dataclass(frozen=True)
class Entry(Generic[T]):
    """One registered object with its metadata."""

    name: str
    obj: T
    kind: str
    meta: dict[str, Any] = field(default_factory=dict)


class Registry(Generic[T]):
    """A name -> :class:`Entry` mapping with wildcard listing and helpful errors."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Entry[T]] = {}
        self._prefixes: dict[str, Prefix] = {}
        self._dynamic: dict[str, Entry[T]] = {}

    # -- population -------------------------------------------------------------------------
    def _ensure(self) -> None:
        populate()

    # -- registration -----------------------------------------------------------------------
    def add(self, name: str, obj: T, **meta: Any) -> Entry[T]:
        if not isinstance(name, str) or not name:
            raise RegistryError(f"{self.kind} name must be a non-empty string, got {name!r}")
        if name in self._entries:
            raise DuplicateNameError(
                f"{self.kind} '{name}' is already registered "
                f"(by {_origin(self._entries[name].obj)}); pick another name"
            )
        entry = Entry(name=name, obj=obj, kind=self.kind, meta=dict(meta))
        self._entries[name] = entry
        return entry

    def remove(self, name: str) -> None:
        """Unregister ``name``."""
        self._entries.pop(name, None)
        self._dynamic.pop(name, None)

    def snapshot(self) -> tuple[dict[str, Entry[T]], dict[str, Entry[T]]]:
        """The current entries, for :meth:`restore` (tests undo their registrations with it)."""
        return dict(self._entries), dict(self._dynamic)

    def restore(self, snap: tuple[dict[str, Entry[T]], dict[str, Entry[T]]]) -> None:
        """Put back the entries of a :meth:`snapshot`; later registrations are dropped."""
        self._entries, self._dynamic = dict(snap[0]), dict(snap[1])

    def add_prefix(self, prefix: str, resolve: Callable[[str], Entry[T]], *, describe: Callable[[], str],
                   names: Callable[[str], list[str]] | None = None) -> None:
        """Make every ``<prefix>:<name>`` a valid name, resolved by ``resolve(name)`` on first use.

        Prefixed names are not listed by :meth:`names` (a library may offer thousands);
        ``saliencybench list`` prints ``describe()`` instead.
        """
        if not prefix or ":" in prefix:
            raise RegistryError(f"{self.kind} prefix must be a non-empty string without ':', got {prefix!r}")
        if prefix in self._prefixes:
            raise DuplicateNameError(f"{self.kind} prefix '{prefix}:' is already registered")
        self._prefixes[prefix] = Prefix(prefix, resolve, describe, names)

    @property
    def prefixes(self) -> dict[str, Prefix]:
        """Registered name prefixes (``{"timm": Prefix(...)}`` for models)."""
        self._ensure()
        return dict(self._prefixes)

    def prefix_of(self, name: str) -> str | None:
        """The registered prefix that ``name`` starts with (``"timm"`` for ``"timm:resnet18"``)."""
        head, sep, _ = str(name).partition(":")
        return head if sep and head in self.prefixes else None

    def decorator(self, name: str, **meta: Any) -> Callable[[T], T]:
        def wrap(obj: T) -> T:
            self.add(name, obj, **meta)
            return obj

        return wrap

    # -- lookup -----------------------------------------------------------------------------
    def get(self, name: str) -> Entry[T]:
        self._ensure()
        try:
            return self._entries[name]
        except KeyError:
            pass
        prefix = self.prefix_of(name)
        if prefix is None:
            raise UnknownNameError(self._unknown_message(name)) from None
        if name not in self._dynamic:
            rest = name[len(prefix) + 1:].strip()
            if not rest:
                raise UnknownNameError(f"{self.kind} '{name}' needs a name after '{prefix}:': "
                                       f"{self._prefixes[prefix].describe()}")
            self._dynamic[name] = self._prefixes[prefix].resolve(rest)
        return self._dynamic[name]

    def _unknown_message(self, name: str) -> str:
        if name in self._prefixes:
            return f"unknown {self.kind} '{name}'; '{name}:' is a prefix: {self._prefixes[name].describe()}"
        hint = did_you_mean(name, self._entries, cutoff=0.5)
        return (
            f"unknown {self.kind} '{name}'{hint} "
            f"(see `saliencybench list {self.kind}s`)"
        )

    def __contains__(self, name: object) -> bool:
        self._ensure()
        if name in self._entries:
            return True
        if not isinstance(name, str) or self.prefix_of(name) is None:
            return False
        try:
            self.get(name)
        except RegistryError:
            return False
        return True

    def __iter__(self) -> Iterator[Entry[T]]:
        self._ensure()
        return iter(sorted(self._entries.values(), key=lambda e: e.name))

    def __len__(self) -> int:
        self._ensure()
        return len(self._entries)

    def names(self, pattern: str | Iterable[str] = "*") -> list[str]:
        """Sorted names matching a shell wildcard (or any of several), like timm.list_models."""
        self._ensure()
        patterns = [pattern] if isinstance(pattern, str) else list(pattern)
        return sorted(n for n in self._entries if any(fnmatch.fnmatchcase(n, p) for p in patterns))

    def resolve(self, spec: str | Iterable[str]) -> list[str]:
        """Expand a comma list of names and wildcards into registered names, in order.

        A literal name that is not registered raises with a suggestion; a wildcard that
        matches nothing raises too, since it is almost always a typo.
        """
        self._ensure()
        items = [s.strip() for s in spec.split(",")] if isinstance(spec, str) else list(spec)
        out: list[str] = []
        for item in items:
            if not item:
                continue
            if any(ch in item for ch in "*?["):
                prefix = self.prefix_of(item)
                lister = self._prefixes[prefix].names if prefix is not None else None
                if lister is not None:
                    matched = [f"{prefix}:{n}" for n in lister(item[len(prefix) + 1:])]
                else:
                    matched = self.names(item)
                if not matched:
                    raise UnknownNameError(f"no {self.kind} matches '{item}'")
            else:
                matched = [self.get(item).name]
            out.extend(m for m in matched if m not in out)
        return out


def _origin(obj: Any) -> str:
    mod = getattr(obj, "__module__", None) or type(obj).__module__
    qual = getattr(obj, "__qualname__", None) or type(obj).__qualname__
    return f"{mod}.{qual}"


def _load_entry_point_plugins() -> None:
    """Plugins installed by other distributions under the ``saliencybench.plugins`` group."""
    from importlib.metadata import entry_points

    for ep in entry_points(group="saliencybench.plugins"):
        ep.load()


_builtin_loader: Callable[[], None] | None = None
_populated = False


def set_builtin_loader(loader: Callable[[], None]) -> None:
    """Set the function that imports the built-in entries (``saliencybench/__init__.py`` does,
    so that this contract layer imports nothing else of the package)."""
    global _builtin_loader
    _builtin_loader = loader


def populate() -> None:
    """Register every built-in entry and every installed plugin, once (idempotent).

    Each registry calls this on its first lookup; the built-in entries are the modules that
    the ``attributions``, ``metrics``, ``datasets`` and ``models`` packages import in their
    ``__init__`` (an explicit list, as in timm).
    """
    global _populated
    if _populated:
        return
    _populated = True
    if _builtin_loader is not None:
        _builtin_loader()
    _load_entry_point_plugins()


METHODS: Registry[Callable[..., Any]] = Registry("method")
METRICS: Registry[type] = Registry("metric")
DATASETS: Registry[Callable[..., Any]] = Registry("dataset")
MODELS: Registry[Callable[..., Any]] = Registry("model")


def register_method(
    name: str,
    *,
    family: str,
    paper: str = "",
    defaults: dict[str, Any] | None = None,
    postprocess: tuple[str, ...] = ("sum",),
    stochastic: bool = False,
    conservation: str | None = None,
    description: str = "",
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register an attribution method ``fn(model, x, target, **kw) -> Tensor``.

    Args:
        name: registry name.
        family: gradient / path / cam / perturbation / lrp / baseline / plugin.
        paper: citation of the paper the method (and its defaults) come from.
        defaults: keyword arguments passed to ``fn`` unless a suite overrides them.
        postprocess: steps applied to the raw output, in order (see
            :mod:`saliencybench.attributions.postprocess`), e.g. ``("sum",)``,
            ``("abs_sum",)``, ``("sum", "positive")``, ``("sum", "gauss:9")``.
        stochastic: takes randomness from the ``generator`` keyword.
        conservation: "lrp" or "completeness" when the method claims a conservation
            property (the conservation_error metric only scores those).

    Variants that share one implementation call the decorator directly:
    ``register_method("s_ixg", family="gradient", postprocess=("sum", "gauss:9"))(input_x_gradient)``.

    The entry's ``layer_capable`` (read by the localization report) is derived from the function:
    True when it accepts a ``layer`` keyword (a layer attribution, ``layer=<module name>``).
    """

    meta = dict(
        family=family,
        paper=paper,
        defaults=dict(defaults or {}),
        postprocess=tuple(postprocess),
        stochastic=stochastic,
        conservation=conservation,
        description=description,
    )

    def wrap(f: Callable[..., Any]) -> Callable[..., Any]:
        METHODS.add(name, f, **meta, layer_capable=_accepts_layer(f),
                    description_doc=(f.__doc__ or "").strip().split("\n")[0])
        return f

    return wrap


def _accepts_layer(fn: Callable[..., Any]) -> bool:
    """Whether ``fn`` takes a ``layer`` keyword (a method with a layer attribution)."""
    try:
        return "layer" in inspect.signature(fn).parameters
    except (TypeError, ValueError):  # a callable without a signature
        return False


def register_metric(
    name: str,
    *,
    higher_is_better: bool,
    paper: str = "",
    defaults: dict[str, Any] | None = None,
    description: str = "",
) -> Callable[[type], type]:
    """Register a :class:`saliencybench.metrics.base.Metric` subclass under ``name``."""

    def wrap(cls: type) -> type:
        METRICS.add(
            name,
            cls,
            higher_is_better=higher_is_better,
            paper=paper,
            defaults=dict(defaults or {}),
            description=description or (cls.__doc__ or "").strip().split("\n")[0],
        )
        return cls

    return wrap


def register_dataset(name: str, **meta: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register a dataset factory ``fn(split=..., root=..., **kw) -> SampleSet``."""
    return DATASETS.decorator(name, **meta)


def register_model(name: str, **meta: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register a model factory ``fn(**kw) -> nn.Module`` (eval mode, logits out).

    Useful metadata: ``dataset`` (what it is trained on), ``input_size``,
    ``layers`` ({"input": ..., "middle": ..., "final": ...}), ``cam_layer``, ``accuracy``.
    """
    return MODELS.decorator(name, **meta)


def load_plugin(path: str | Path) -> list[str]:
    """Import a user's Python file so that its ``@register_*`` decorators run.

    Returns the names of methods and metrics it registered. Plugins run only when named
    explicitly (``--plugin FILE``): it is arbitrary code.
    """
    populate()
    p = Path(path)
    if not p.is_file():
        raise RegistryError(f"plugin file not found: {p}")
    before = set(METHODS.names()) | {f"metric:{n}" for n in METRICS.names()}
    mod_name = f"saliencybench_plugin_{p.stem}_{abs(hash(str(p.resolve()))) % 10**8}"
    if mod_name in sys.modules:
        return []
    spec = importlib.util.spec_from_file_location(mod_name, p)
    if spec is None or spec.loader is None:
        raise RegistryError(f"cannot import plugin {p}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[mod_name] = module
    try:
        spec.loader.exec_module(module)
    except RegistryError:
        sys.modules.pop(mod_name, None)
        raise
    after = set(METHODS.names()) | {f"metric:{n}" for n in METRICS.names()}
    return sorted(after - before)
