"""Suite configuration: TOML files (the named suites are package data in
``saliencybench/configs/``) plus command-line overrides.

A suite is datasets x models x methods x metrics with parameters. Method and metric names
may be *aliases* that reuse an implementation with other parameters::

    [methods."gradcam@middle"]
    base = "gradcam"
    layer = "middle"

Errors are :class:`ConfigError` (a usage error: the CLI exits 2) naming the file, the line
and the key.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    from importlib.resources.abc import Traversable

    import tomllib
else:  # pragma: no cover
    from importlib.abc import Traversable

    import tomli as tomllib

from saliencybench.core.errors import ConfigError
from saliencybench.core.names import did_you_mean

SUITES_PACKAGE = "saliencybench.configs"

_SUITE_KEYS: dict[str, tuple[type, ...]] = {
    "name": (str,),
    "description": (str,),
    "datasets": (list,),
    "models": (list,),
    "methods": (list,),
    "metrics": (list,),
    "n_samples": (int, type(None)),
    "batch_size": (int,),
    "seed": (int,),
    "device": (str,),
    "target": (str,),
    "explain_target": (str,),
    "score_target": (str,),
    "chunk_size": (int,),
    "autocast": (str, bool),
    "figures": (bool,),
}


@dataclass
class SuiteConfig:
    """A parsed suite. ``*_params`` map a (possibly aliased) name to its keyword arguments."""

    name: str = "default"
    description: str = ""
    datasets: list[str] = field(default_factory=lambda: ["synthetic"])
    models: list[str] = field(default_factory=list)
    methods: list[str] = field(default_factory=list)
    metrics: list[str] = field(default_factory=list)
    n_samples: int | None = 64
    batch_size: int = 32
    seed: int = 0
    device: str = "auto"
    # which class is explained (attribution target) and which class's score the perturbation
    # metrics read; ``target`` is the shorthand for both, an explicit key overrides it
    target: str = "label"
    explain_target: str | None = None
    score_target: str | None = None
    chunk_size: int = 256
    autocast: str = "off"
    figures: bool = True
    dataset_params: dict[str, dict[str, Any]] = field(default_factory=dict)
    model_params: dict[str, dict[str, Any]] = field(default_factory=dict)
    method_params: dict[str, dict[str, Any]] = field(default_factory=dict)
    metric_params: dict[str, dict[str, Any]] = field(default_factory=dict)
    paper: list[dict[str, Any]] = field(default_factory=list)
    source: str = ""

    # -- aliases ------------------------------------------------------------------------------
    def method_base(self, name: str) -> str:
        return str(self.method_params.get(name, {}).get("base", name))

    def metric_base(self, name: str) -> str:
        return str(self.metric_params.get(name, {}).get("base", name))

    @property
    def explained(self) -> str:
        """The class the methods explain: ``label`` or ``predicted`` (``explain_target``,
        else ``target``)."""
        return self.explain_target or self.target

    @property
    def scored(self) -> str:
        """The class whose score the perturbation metrics read: ``label`` or ``predicted``
        (``score_target``, else ``target``); a metric's own ``target`` parameter wins."""
        return self.score_target or self.target

    def method_overrides(self, name: str) -> dict[str, Any]:
        return {k: v for k, v in self.method_params.get(name, {}).items() if k != "base"}

    def metric_overrides(self, name: str) -> dict[str, Any]:
        return {k: v for k, v in self.metric_params.get(name, {}).items() if k != "base"}

    def to_dict(self) -> dict[str, Any]:
        return {
            "suite": {**{k: getattr(self, k) for k in _SUITE_KEYS},
                      "explain_target": self.explained, "score_target": self.scored},
            "datasets": self.dataset_params,
            "models": self.model_params,
            "methods": self.method_params,
            "metrics": self.metric_params,
            "paper": self.paper,
            "source": self.source,
        }


def _line_of(text: str, section: str | None, key: str) -> int | None:
    """Best-effort line number of ``key = ...`` inside ``[section]`` of a TOML text."""
    in_section = section is None
    for i, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if stripped.startswith("["):
            head = stripped.strip("[]").strip().strip('"')
            in_section = section is not None and head.replace('"', "") == section
            continue
        if in_section and re.match(rf'^\s*"?{re.escape(key)}"?\s*=', line):
            return i
    return None


def list_suites() -> dict[str, Traversable]:
    """Named suites shipped with the package (name -> resource), found through
    ``importlib.resources``, so they work from a wheel install as from a checkout."""
    root = resources.files(SUITES_PACKAGE)
    return {p.name[: -len(".toml")]: p for p in sorted(root.iterdir(), key=lambda p: p.name)
            if p.name.endswith(".toml")}


def find_suite(name_or_path: str) -> Path | Traversable:
    """A suite file: a path to any TOML file, or the name of a shipped suite."""
    p = Path(name_or_path)
    if p.suffix == ".toml" or p.exists():
        if not p.is_file():
            raise ConfigError(f"config file not found: {p}")
        return p
    suites = list_suites()
    if name_or_path in suites:
        return suites[name_or_path]
    hint = did_you_mean(name_or_path, suites, quote=False)
    raise ConfigError(f"unknown suite '{name_or_path}'{hint} (see `saliencybench list suites`)")


def load_config(path: str | Path | Traversable) -> SuiteConfig:
    """Parse and type-check a suite TOML file (a path, or a shipped suite's resource)."""
    if isinstance(path, str):
        path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise ConfigError(f"cannot read config {path}: {e.strerror}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: invalid TOML: {e}") from None
    return config_from_dict(data, source=str(path), text=text)


def _set_suite_keys(cfg: SuiteConfig, suite: dict[str, Any], source: str, text: str) -> None:
    """Type-check the keys of ``[suite]`` and set them on ``cfg``."""
    for key, value in suite.items():
        if key not in _SUITE_KEYS:
            line = _line_of(text, "suite", key)
            raise ConfigError(
                f"{source}{f':{line}' if line else ''}: unknown key '{key}' in [suite] "
                f"(expected one of {sorted(_SUITE_KEYS)})"
            )
        types = _SUITE_KEYS[key]
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            line = _line_of(text, "suite", key)
            want = " or ".join("null" if t is type(None) else t.__name__ for t in types)
            raise ConfigError(
                f"{source}{f':{line}' if line else ''}: [suite] {key} must be {want}, "
                f"got {type(value).__name__} {value!r}"
            )
        if isinstance(value, list) and not all(isinstance(v, str) for v in value):
            line = _line_of(text, "suite", key)
            raise ConfigError(f"{source}{f':{line}' if line else ''}: [suite] {key} must be a list of strings")
        setattr(cfg, key, value)


def config_from_dict(data: dict[str, Any], *, source: str = "<dict>", text: str = "") -> SuiteConfig:
    known_sections = {"suite", "datasets", "models", "methods", "metrics", "paper"}
    for section in data:
        if section not in known_sections:
            raise ConfigError(
                f"{source}: unknown section [{section}] (expected one of {sorted(known_sections)})"
            )
    suite = data.get("suite", {})
    if not isinstance(suite, dict):
        raise ConfigError(f"{source}: [suite] must be a table")
    cfg = SuiteConfig(source=source)
    _set_suite_keys(cfg, suite, source, text)
    for section, attr in (("datasets", "dataset_params"), ("models", "model_params"),
                          ("methods", "method_params"), ("metrics", "metric_params")):
        tables = data.get(section, {})
        if not isinstance(tables, dict) or not all(isinstance(v, dict) for v in tables.values()):
            raise ConfigError(f"{source}: [{section}.<name>] entries must be tables of parameters")
        setattr(cfg, attr, {k: dict(v) for k, v in tables.items()})
    paper = data.get("paper", [])
    if not isinstance(paper, list):
        raise ConfigError(f"{source}: [[paper]] must be an array of tables")
    for i, row in enumerate(paper):
        missing = {"method", "metric", "value"} - set(row)
        if missing:
            raise ConfigError(f"{source}: [[paper]] entry {i + 1} lacks {sorted(missing)}")
        if not isinstance(row["value"], (int, float)):
            raise ConfigError(f"{source}: [[paper]] entry {i + 1} value must be a number")
    cfg.paper = [dict(r) for r in paper]
    if cfg.batch_size < 1:
        raise ConfigError(f"{source}: [suite] batch_size must be >= 1")
    if cfg.n_samples is not None and cfg.n_samples < 1:
        raise ConfigError(f"{source}: [suite] n_samples must be >= 1")
    for key in ("target", "explain_target", "score_target"):
        value = getattr(cfg, key)
        if value is not None and value not in ("label", "predicted"):
            line = _line_of(text, "suite", key)
            raise ConfigError(
                f"{source}{f':{line}' if line else ''}: [suite] {key} must be 'label' or "
                f"'predicted', got {value!r} (target sets both the explained class, "
                "explain_target, and the scored class, score_target)")
    if cfg.device not in ("auto", "cpu", "cuda") and not cfg.device.startswith("cuda:"):
        raise ConfigError(f"{source}: [suite] device must be auto, cpu or cuda[:N], got {cfg.device!r}")
    return cfg


def split_spec(spec: str) -> tuple[str, str | None]:
    """``resnet50:IMAGENET1K_V1`` -> ("resnet50", "IMAGENET1K_V1"); ``sb_vgg`` -> ("sb_vgg", None).

    A registered model prefix is part of the name: ``timm:resnet18`` -> ("timm:resnet18", None)
    and ``timm:resnet50:a1_in1k`` -> ("timm:resnet50", "a1_in1k").
    """
    from saliencybench.core.registry import MODELS

    prefix = MODELS.prefix_of(spec)
    head = ""
    if prefix is not None:
        head, spec = f"{prefix}:", spec[len(prefix) + 1:]
    name, sep, weights = spec.partition(":")
    return head + name, (weights or None) if sep else None
