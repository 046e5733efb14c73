"""The one reader of a results directory: ``scores.csv``, ``curves.csv.gz`` and ``run.json``.

Every command that reads results (leaderboard, compare, check-regression, accept, merge, the
figures and the Python API) goes through :func:`read_scores`, :func:`read_curves`,
:func:`read_manifest` or :func:`load_results`. What they read is validated, and anything
damaged or foreign raises :class:`~saliencybench.core.errors.ResultsError` (a usage error: the
CLI exits 2) with one line naming the file and the line:

- a file cut mid-line (an interrupted copy: no trailing newline, or a row with too few fields);
- a missing column (a CSV that is not a results file at all);
- a cell of the wrong type (``value`` / ``x`` not a number, ``step`` not an integer);
- a (dataset, model, method, metric) cell with fewer samples than ``run.json`` records for
  its (dataset, model) (``datasets.<name>.by_model.<model>.n``; not checked for shards);
- a ``run.json`` that is not a JSON object.

Valid files read exactly as before: ``sample_id`` and ``status`` as strings, empty / ``nan``
values as NaN.
"""

from __future__ import annotations

import gzip
import io
import json
import re
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from saliencybench.core.errors import ResultsError

SCORE_COLUMNS = ["suite", "dataset", "model", "method", "metric", "sample_id", "value", "status"]
CURVE_COLUMNS = ["suite", "dataset", "model", "method", "metric", "sample_id", "step", "x", "value"]
CELL = ["dataset", "model", "method", "metric"]
CURVES_FILE = "curves.csv.gz"
RESULT_FILES = ("scores.csv", CURVES_FILE, "run.json")  # what a baseline keeps of a run

_SCORE_READ = {"dtype": {"sample_id": str, "status": str}, "keep_default_na": False,
               "na_values": {"value": ["nan", "NaN", ""]}}
_CURVE_READ = {"dtype": {"sample_id": str}}
_TEXT_COLUMNS = ["suite", "dataset", "model", "method", "metric", "sample_id"]


@dataclass(frozen=True)
class Results:
    """A results directory as read and validated: scores, curves and manifest."""

    root: Path
    scores: pd.DataFrame
    curves: pd.DataFrame
    manifest: dict[str, Any]


def load_results(results_dir: Path | str, *, curves: bool = True) -> Results:
    """Scores, curves (empty unless ``curves``) and manifest of ``results_dir``, validated."""
    root = Path(results_dir)
    manifest = read_manifest(root)
    scores = read_scores(root, manifest=manifest)
    return Results(root, scores, read_curves(root) if curves else pd.DataFrame(columns=CURVE_COLUMNS), manifest)


def read_manifest(results_dir: Path | str) -> dict[str, Any]:
    """A results directory's ``run.json`` ({} when it has none)."""
    path = Path(results_dir) / "run.json"
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except UnicodeDecodeError:
        raise ResultsError(f"{path}:1: not a valid run manifest (not UTF-8 text)") from None
    except json.JSONDecodeError as e:
        raise ResultsError(f"{path}:{e.lineno}: not a valid run manifest ({e.msg})") from None
    if not isinstance(data, dict):
        raise ResultsError(f"{path}:1: not a valid run manifest (a JSON {type(data).__name__}, expected an object)")
    for key in ("datasets", "metrics", "methods", "config"):
        if key in data and not isinstance(data[key], dict):
            raise ResultsError(f"{path}:1: not a valid run manifest ('{key}' must be an object)")
    return data


def read_scores(results_dir: Path | str, *, manifest: dict[str, Any] | None = None) -> pd.DataFrame:
    """A results directory's ``scores.csv``, checked against its ``run.json``.

    Raises FileNotFoundError when there is none, :class:`ResultsError` when it is damaged.
    """
    path = Path(results_dir) / "scores.csv"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: run `saliencybench run --out {results_dir}` first")
    scores = parse_scores(path.read_bytes(), path)
    check_complete(scores, read_manifest(results_dir) if manifest is None else manifest, path)
    return scores


def read_curves(results_dir: Path | str) -> pd.DataFrame:
    """A results directory's curves (``curves.csv.gz``, or ``curves.csv`` of older runs)."""
    path = Path(results_dir) / CURVES_FILE
    if not path.is_file():
        path = Path(results_dir) / "curves.csv"
    if not path.is_file():
        return pd.DataFrame(columns=CURVE_COLUMNS)
    data = path.read_bytes()
    if path.suffix == ".gz":
        data = _gunzip(data, path)
    return parse_curves(data, path)


def parse_scores(data: bytes, path: Path | str) -> pd.DataFrame:
    """Validated long-format scores from the bytes of a ``scores.csv`` (``path`` for messages)."""
    df = _parse(data, path, SCORE_COLUMNS, _SCORE_READ)
    _check_numeric(df, path, "value")
    return df


def parse_curves(data: bytes, path: Path | str) -> pd.DataFrame:
    """Validated long-format curves from the bytes of a curves CSV (``path`` for messages)."""
    df = _parse(data, path, CURVE_COLUMNS, _CURVE_READ)
    for col in ("x", "value"):
        _check_numeric(df, path, col)
    if len(df) and not pd.api.types.is_integer_dtype(df["step"]):
        step = pd.to_numeric(df["step"], errors="coerce")
        bad = (step.isna() | (step != step.round())).to_numpy()
        row = int(np.flatnonzero(bad)[0]) if bad.any() else 0
        raise ResultsError(f"{path}:{_line(row)}: column 'step' must hold integers, got {df['step'].iloc[row]!r}")
    return df


def check_complete(scores: pd.DataFrame, manifest: dict[str, Any], path: Path | str) -> None:
    """Every (dataset, model, method, metric) cell has as many samples as ``run.json`` records
    for its (dataset, model); shards and runs without a record are not checked."""
    if not len(scores) or manifest.get("shard"):
        return
    datasets = manifest.get("datasets", {})
    cells = scores.reset_index(drop=True).groupby(CELL, sort=False)
    for (ds, model, method, metric), idx in cells.indices.items():
        info = datasets.get(ds)
        n = info.get("by_model", {}).get(model, {}).get("n") if isinstance(info, dict) else None
        if isinstance(n, int) and len(idx) < n:
            raise ResultsError(
                f"{path}:{int(idx[0]) + 2}: {ds}/{model}/{method}/{metric} has {len(idx)} samples, "
                f"run.json records {n} (an incomplete copy of the results?)")


# -- internals ------------------------------------------------------------------------------

def _gunzip(data: bytes, path: Path) -> bytes:
    try:
        return gzip.decompress(data)
    except (EOFError, OSError, zlib.error):
        partial = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(data) if data[:2] == b"\x1f\x8b" else b""
        line = partial.count(b"\n") + 1
        raise ResultsError(f"{path}:{line}: damaged gzip file (cut short or not gzip)") from None


def _line(row: int) -> int:
    """1-based line of data row ``row`` (the header is line 1)."""
    return row + 2


def _parse(data: bytes, path: Path | str, columns: list[str], read_kw: dict[str, Any]) -> pd.DataFrame:
    if not data.strip():
        raise ResultsError(f"{path}:1: empty file, expected the columns {','.join(columns)}")
    try:
        header = data.split(b"\n", 1)[0].decode().rstrip("\r").split(",")
    except UnicodeDecodeError:
        raise ResultsError(f"{path}:1: not a results CSV (not UTF-8 text)") from None
    missing = [c for c in columns if c not in header]
    if missing:
        raise ResultsError(f"{path}:1: not a results file: missing column(s) {','.join(missing)} "
                           f"(expected {','.join(columns)})")
    if not data.endswith(b"\n"):
        last = data.count(b"\n") + 1
        raise ResultsError(f"{path}:{last}: last line is cut short (no newline at the end: an interrupted "
                           "write or copy?)")
    try:
        df = pd.read_csv(io.BytesIO(data), **read_kw)
    except (pd.errors.ParserError, ValueError) as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        found = re.search(r"line (\d+)", msg)
        raise ResultsError(f"{path}:{found.group(1) if found else 1}: not a valid results CSV ({msg})") from None
    required = _TEXT_COLUMNS + (["status"] if "status" in columns else ["step", "x"])
    short = df[required].isna().any(axis=1)
    for col in required:
        if not pd.api.types.is_numeric_dtype(df[col]):
            short |= df[col] == ""
    if short.any():
        row = int(np.flatnonzero(short.to_numpy())[0])
        raise ResultsError(f"{path}:{_line(row)}: row has too few fields (expected {len(columns)}: "
                           f"{','.join(columns)})")
    return df


def _check_numeric(df: pd.DataFrame, path: Path | str, col: str) -> None:
    if not len(df) or pd.api.types.is_float_dtype(df[col]) or pd.api.types.is_integer_dtype(df[col]):
        return
    conv = pd.to_numeric(df[col], errors="coerce")
    bad = conv.isna() & df[col].notna()
    row = int(np.flatnonzero(bad.to_numpy())[0]) if bad.any() else 0
    raise ResultsError(f"{path}:{_line(row)}: column '{col}' must hold numbers, got {df[col].iloc[row]!r}")
