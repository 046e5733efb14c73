"""Typed registries for methods, metrics, datasets and models.

Registration is a decorator with an explicit name and metadata, as in timm's model registry
(``list_models`` with wildcards) and lm-evaluation-harness's task registry:

>>> @register_method("gxsi", family="gradient", paper="Lee & Chang 2021")
... def gxsi(model, x, target, **kw): ...

Unknown names raise :class:`UnknownNameError` with a "did you mean" suggestion; duplicate
names raise :class:`DuplicateNameError`.
"""

from __future__ import annotations

import difflib
import fnmatch
import importlib
import importlib.util
import pkgutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Generic, Iterable, Iterator, TypeVar

T = TypeVar("T")


class RegistryError(ValueError):
    """Base class of registry errors (usage errors: the CLI exits with code 2)."""


class UnknownNameError(RegistryError, KeyError):
    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class DuplicateNameError(RegistryError):
    pass


class MissingDependencyError(RegistryError, ImportError):
    """A name needs an optional dependency that is not installed (a usage error: exit code 2)."""


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

    def __getattr__(self, key: str) -> Any:
        # Convenience: entry.family, entry.higher_is_better, ...
        meta = object.__getattribute__(self, "meta")
        if key in meta:
            return meta[key]
        raise AttributeError(f"{self.kind} '{self.name}' has no attribute or metadata '{key}'")


class Registry(Generic[T]):
    """A name -> :class:`Entry` mapping with wildcard listing and helpful errors."""

    def __init__(self, kind: str, populate: Callable[[], None] | None = None) -> None:
        self.kind = kind
        self._entries: dict[str, Entry[T]] = {}
        self._populate = populate
        self._populated = False
        self._prefixes: dict[str, Prefix] = {}
        self._dynamic: dict[str, Entry[T]] = {}

    # -- population -------------------------------------------------------------------------
    def _ensure(self) -> None:
        if not self._populated and self._populate is not None:
            self._populated = True
            self._populate()

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
        """Unregister ``name`` (used by tests and plugin reloads)."""
        self._entries.pop(name, None)
        self._dynamic.pop(name, None)

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
        close = difflib.get_close_matches(name, list(self._entries), n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
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


IMPORT_ERRORS: dict[str, str] = {}


def _import_submodules(package: str) -> None:
    """Import every module of a subpackage so its decorators run (no manual index to edit).

    A module that fails to import is reported with a warning and recorded in
    ``IMPORT_ERRORS`` (a test asserts it stays empty) instead of taking every other
    registry entry down with it.
    """
    import warnings

    pkg = importlib.import_module(package)
    for info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda i: i.name):
        if info.name.startswith("_"):
            continue
        name = f"{package}.{info.name}"
        try:
            importlib.import_module(name)
        except Exception as e:  # noqa: BLE001 - reported, not hidden
            IMPORT_ERRORS[name] = f"{type(e).__name__}: {e}"
            warnings.warn(f"saliencybench: could not import {name}: {type(e).__name__}: {e}", stacklevel=2)


def _populate_all() -> None:
    for sub in ("attributions", "metrics", "datasets", "models"):
        _import_submodules(f"saliencybench.{sub}")
    _load_entry_point_plugins()


def _load_entry_point_plugins() -> None:
    """Plugins installed by other distributions under the ``saliencybench.plugins`` group."""
    try:
        from importlib.metadata import entry_points
    except ImportError:  # pragma: no cover
        return
    try:
        eps = entry_points(group="saliencybench.plugins")
    except TypeError:  # pragma: no cover - Python < 3.10 API
        eps = entry_points().get("saliencybench.plugins", [])
    for ep in eps:
        ep.load()


def populate() -> None:
    """Make sure every built-in entry is registered (idempotent)."""
    for reg in (METHODS, METRICS, DATASETS, MODELS):
        reg._ensure()


_POPULATE_STARTED = False


def _populate_once() -> None:
    global _POPULATE_STARTED
    if _POPULATE_STARTED:
        return
    _POPULATE_STARTED = True
    for reg in (METHODS, METRICS, DATASETS, MODELS):
        reg._populated = True
    _populate_all()


METHODS: Registry[Callable[..., Any]] = Registry("method", _populate_once)
METRICS: Registry[type] = Registry("metric", _populate_once)
DATASETS: Registry[Callable[..., Any]] = Registry("dataset", _populate_once)
MODELS: Registry[Callable[..., Any]] = Registry("model", _populate_once)


def register_method(
    name: str,
    *,
    family: str,
    paper: str = "",
    needs: tuple[str, ...] = ("gradient",),
    defaults: dict[str, Any] | None = None,
    postprocess: tuple[str, ...] = ("sum",),
    stochastic: bool = False,
    conservation: str | None = None,
    layer_capable: bool = False,
    description: str = "",
    fn: Callable[..., Any] | None = None,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register an attribution method ``fn(model, x, target, **kw) -> Tensor``.

    Args:
        name: registry name.
        family: gradient / path / cam / perturbation / lrp / baseline / plugin.
        paper: citation of the paper the method (and its defaults) come from.
        needs: what the method needs from the model ("gradient", "layer", ...).
        defaults: keyword arguments passed to ``fn`` unless a suite overrides them.
        postprocess: steps applied to the raw output, in order (see
            :mod:`saliencybench.attributions.postprocess`), e.g. ``("sum",)``,
            ``("abs_sum",)``, ``("sum", "positive")``, ``("sum", "gauss:9")``.
        stochastic: takes randomness from the ``generator`` keyword.
        conservation: "lrp" or "completeness" when the method claims a conservation
            property (the conservation_error metric only scores those).
        layer_capable: accepts ``layer=<module name>`` for a layer attribution.
        fn: register this function directly instead of decorating (for variants that
            share one implementation).
    """

    meta = dict(
        family=family,
        paper=paper,
        needs=tuple(needs),
        defaults=dict(defaults or {}),
        postprocess=tuple(postprocess),
        stochastic=stochastic,
        conservation=conservation,
        layer_capable=layer_capable,
        description=description,
    )

    def wrap(f: Callable[..., Any]) -> Callable[..., Any]:
        METHODS.add(name, f, **meta, description_doc=(f.__doc__ or "").strip().split("\n")[0])
        return f

    if fn is not None:
        wrap(fn)
    return wrap


def register_metric(
    name: str,
    *,
    higher_is_better: bool,
    per_sample: bool = True,
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
            per_sample=per_sample,
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
