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
import shutil
from pathlib import Path
from typing import Iterable, Sequence

import pandas as pd
import torch
from torch import Tensor

from saliencybench.benchmark.results import (
    CURVE_COLUMNS,
    CURVES_FILE,
    SCORE_COLUMNS,
    parse_curves,
    parse_scores,
)
from saliencybench.core.errors import ResultsError
from saliencybench.core.io import atomic_write_bytes, atomic_write_text, read_verified, safe_filename

SORT_KEYS = ["dataset", "model", "method", "metric", "sample_id"]


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
        folder = self.parts / safe_filename(dataset) / safe_filename(model) / safe_filename(method)
        return folder / f"{tag}.{chunk:05d}.csv"

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
            scores.append(parse_scores(data, p))
            curves.append(parse_curves(cdata, _curves_path(p)))
        s = pd.concat(scores, ignore_index=True) if scores else pd.DataFrame(columns=SCORE_COLUMNS)
        c = pd.concat(curves, ignore_index=True) if curves else pd.DataFrame(columns=CURVE_COLUMNS)
        return s, c, bad

    def absorb(self, other: Path) -> None:
        """Copy another results directory's parts and attribution cache into this one (the
        shards of ``saliencybench merge``)."""
        other = Path(other)
        if not (other / "parts").is_dir():
            raise ResultsError(f"{other / 'parts'}:1: not found: not a shard results directory")
        for part in (other / "parts").rglob("*"):
            if part.is_file():
                dest = self.parts / part.relative_to(other / "parts")
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(part, dest)
        if (other / "cache").is_dir():
            shutil.copytree(other / "cache", self.root / "cache", dirs_exist_ok=True)

    def merge(self, *, strict: bool = False) -> tuple[pd.DataFrame, pd.DataFrame]:
        """Write ``scores.csv`` and ``curves.csv.gz`` from the parts, sorted deterministically
        (the gzip header carries no time stamp, so equal curves give equal bytes). ``strict``:
        a part whose checksum does not verify raises :class:`ResultsError` instead of being
        left for the next run to recompute."""
        s, c, bad = self.read_parts()
        if strict and bad:
            raise ResultsError(f"{bad[0]}:1: damaged result part (checksum does not match; "
                               f"{len(bad)} such part(s)): rerun the shard that wrote it")
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
