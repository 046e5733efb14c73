"""On-disk state of a run: attribution cache, per-chunk result parts, merged CSVs.

Every file is written atomically (temporary file + ``os.replace``) together with a SHA-256
sidecar, so a run killed at any point (SIGINT or SIGKILL) leaves only complete files; a file
whose checksum does not match is treated as missing and recomputed, never trusted.

Layout of a results directory::

    run.json                 manifest (config, versions, seed, device, timings, counters)
    scores.csv               merged long-format scores (generated from parts/)
    curves.csv.gz            merged long-format curves, gzip-compressed (pandas reads it directly)
    parts/<dataset>/<model>/<method>/<metrics>.<chunk>.csv (+ .curves.csv, .sha256)
    cache/<dataset>/<model>/<method>-<key>/<chunk>.pt (+ .sha256)   attribution maps
    figures/*.png
"""

from __future__ import annotations

import gzip
import io
import json
from pathlib import Path
from typing import Any, Iterable, Sequence

import pandas as pd
import torch
from torch import Tensor

from saliencybench.core.errors import ResultsError
from saliencybench.core.io import atomic_write_bytes, atomic_write_text, read_verified, safe_filename

SCORE_COLUMNS = ["suite", "dataset", "model", "method", "metric", "sample_id", "value", "status"]
CURVE_COLUMNS = ["suite", "dataset", "model", "method", "metric", "sample_id", "step", "x", "value"]
SORT_KEYS = ["dataset", "model", "method", "metric", "sample_id"]
CURVES_FILE = "curves.csv.gz"
RESULT_FILES = ("scores.csv", CURVES_FILE, "run.json")  # what a baseline keeps of a run


class AttributionCache:
    """Attribution maps per (dataset, model, method, parameter key), stored in sample chunks."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def _dir(self, dataset: str, model: str, method: str, key: str) -> Path:
        return self.root / safe_filename(dataset) / safe_filename(model) / f"{safe_filename(method)}-{key}"

    def get(self, dataset: str, model: str, method: str, key: str, chunk: int,
            sample_ids: Sequence[str]) -> Tensor | None:
        data = read_verified(self._dir(dataset, model, method, key) / f"{chunk:05d}.pt")
        if data is None:
            return None
        try:
            obj = torch.load(io.BytesIO(data), weights_only=True)
        except Exception:
            return None
        if list(obj.get("sample_ids", [])) != list(sample_ids):
            return None
        return obj["maps"]

    def put(self, dataset: str, model: str, method: str, key: str, chunk: int,
            sample_ids: Sequence[str], maps: Tensor) -> None:
        buf = io.BytesIO()
        torch.save({"sample_ids": list(sample_ids), "maps": maps.detach().cpu().contiguous()}, buf)
        atomic_write_bytes(self._dir(dataset, model, method, key) / f"{chunk:05d}.pt", buf.getvalue(), checksum=True)
        self._index(dataset, model, method, key)

    def _index(self, dataset: str, model: str, method: str, key: str) -> None:
        latest = self.root / safe_filename(dataset) / safe_filename(model) / f"{safe_filename(method)}.latest"
        if not latest.exists() or latest.read_text() != key:
            atomic_write_text(latest, key)

    def load(self, dataset: str, model: str, method: str) -> tuple[list[str], Tensor]:
        """All cached maps of the latest parameters for (dataset, model, method), in order."""
        latest = self.root / safe_filename(dataset) / safe_filename(model) / f"{safe_filename(method)}.latest"
        if not latest.is_file():
            raise FileNotFoundError(f"no cached attributions for {dataset}/{model}/{method} in {self.root}")
        d = self._dir(dataset, model, method, latest.read_text().strip())
        ids: list[str] = []
        maps: list[Tensor] = []
        for f in sorted(d.glob("*.pt")):
            data = read_verified(f)
            if data is None:
                continue
            obj = torch.load(io.BytesIO(data), weights_only=True)
            ids.extend(obj["sample_ids"])
            maps.append(obj["maps"])
        if not maps:
            raise FileNotFoundError(f"no valid cached attributions in {d}")
        return ids, torch.cat(maps)


class ResultStore:
    """Per-chunk result parts and the merged ``scores.csv`` / ``curves.csv``."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.parts = self.root / "parts"

    def clean_temporaries(self) -> int:
        """Remove temp files a killed writer left behind (they were never renamed into place)."""
        n = 0
        for t in self.root.rglob(".*.tmp") if self.root.is_dir() else []:
            t.unlink(missing_ok=True)
            n += 1
        return n

    def part_path(self, dataset: str, model: str, method: str, metrics: Iterable[str], chunk: int) -> Path:
        tag = "+".join(sorted(safe_filename(m) for m in metrics))
        return self.parts / safe_filename(dataset) / safe_filename(model) / safe_filename(method) / f"{tag}.{chunk:05d}.csv"

    def has_part(self, path: Path) -> bool:
        return read_verified(path) is not None and read_verified(_curves_path(path)) is not None

    def write_part(self, path: Path, scores: pd.DataFrame, curves: pd.DataFrame) -> None:
        # curves first: a part counts as done only when its scores file verifies too
        atomic_write_bytes(_curves_path(path), _to_csv(curves, CURVE_COLUMNS).encode(), checksum=True)
        atomic_write_bytes(path, _to_csv(scores, SCORE_COLUMNS).encode(), checksum=True)

    def read_parts(self) -> tuple[pd.DataFrame, pd.DataFrame, list[Path]]:
        """All verified parts (and the list of corrupt ones that will be recomputed)."""
        scores, curves, bad = [], [], []
        for p in sorted(self.parts.rglob("*.csv")) if self.parts.is_dir() else []:
            if p.name.endswith(".curves.csv"):
                continue
            data, cdata = read_verified(p), read_verified(_curves_path(p))
            if data is None or cdata is None:
                bad.append(p)
                continue
            scores.append(pd.read_csv(io.BytesIO(data), dtype={"sample_id": str, "status": str}, keep_default_na=False,
                                      na_values={"value": ["nan", "NaN", ""]}))
            curves.append(pd.read_csv(io.BytesIO(cdata), dtype={"sample_id": str}))
        s = pd.concat(scores, ignore_index=True) if scores else pd.DataFrame(columns=SCORE_COLUMNS)
        c = pd.concat(curves, ignore_index=True) if curves else pd.DataFrame(columns=CURVE_COLUMNS)
        return s, c, bad

    def merge(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        """Write ``scores.csv`` and ``curves.csv.gz`` from the parts, sorted deterministically
        (the gzip header carries no time stamp, so equal curves give equal bytes)."""
        s, c, _ = self.read_parts()
        s = s.sort_values(SORT_KEYS, kind="mergesort").reset_index(drop=True)
        c = c.sort_values(SORT_KEYS + ["step"], kind="mergesort").reset_index(drop=True)
        atomic_write_text(self.root / "scores.csv", _to_csv(s, SCORE_COLUMNS))
        atomic_write_bytes(self.root / CURVES_FILE,
                           gzip.compress(_to_csv(c, CURVE_COLUMNS).encode(), compresslevel=9, mtime=0))
        (self.root / "curves.csv").unlink(missing_ok=True)  # an older run's uncompressed curves
        return s, c


def _curves_path(part: Path) -> Path:
    return part.with_name(part.name[: -len(".csv")] + ".curves.csv")


def _to_csv(df: pd.DataFrame, columns: list[str]) -> str:
    """Scores keep 8 significant digits; curves (only ever plotted or averaged) keep 6."""
    df = df.reindex(columns=columns)
    fmt = "%.6g" if columns is CURVE_COLUMNS else "%.8g"
    return df.to_csv(index=False, float_format=fmt, lineterminator="\n")


def read_scores(results_dir: Path) -> pd.DataFrame:
    """Read a results directory's ``scores.csv`` (raises a clear error when absent)."""
    path = Path(results_dir) / "scores.csv"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: run `saliencybench run --out {results_dir}` first")
    return pd.read_csv(path, dtype={"sample_id": str, "status": str}, keep_default_na=False,
                       na_values={"value": ["nan", "NaN", ""]})


def read_curves(results_dir: Path) -> pd.DataFrame:
    """A results directory's curves (``curves.csv.gz``, or ``curves.csv`` of older runs)."""
    path = Path(results_dir) / CURVES_FILE
    if not path.is_file():
        path = Path(results_dir) / "curves.csv"
    if not path.is_file():
        return pd.DataFrame(columns=CURVE_COLUMNS)
    return pd.read_csv(path, dtype={"sample_id": str})


def read_manifest(results_dir: Path) -> dict[str, Any]:
    """A results directory's ``run.json`` ({} when it has none)."""
    path = Path(results_dir) / "run.json"
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ResultsError(f"{path}:{e.lineno}: not a valid run manifest ({e.msg})") from None
