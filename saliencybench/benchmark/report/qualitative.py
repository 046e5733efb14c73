"""The qualitative figure of a run: a few images x methods, as Otsuki et al. 2024 (ECCV), Fig. 5.

Drawn from the attribution cache after a (dataset, model) pair is done, so it costs no
attribution call.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from saliencybench.benchmark.report.plots import save_figure  # noqa: E402
from saliencybench.core.io import safe_filename  # noqa: E402
from saliencybench.core.types import SampleSet  # noqa: E402


def qualitative_grid(images: torch.Tensor, maps: dict[str, torch.Tensor], out_path: Path,
                     title: str = "", labels: Sequence[str] | None = None) -> Path:
    """Images (N,3,H,W in [0,1]) in the first column, one column of heatmaps per method.

    Each map is normalised by its own max |value| and drawn with a diverging colormap
    (red positive, blue negative), as in Otsuki et al. 2024 Fig. 5.
    """
    out_path.parent.mkdir(parents=True, exist_ok=True)
    n = images.shape[0]
    methods = list(maps)
    fig, axes = plt.subplots(n, len(methods) + 1, figsize=(1.3 * (len(methods) + 1), 1.35 * n), squeeze=False)
    for i in range(n):
        axes[i][0].imshow(images[i].permute(1, 2, 0).clamp(0, 1).numpy())
        axes[i][0].set_ylabel(labels[i] if labels else "", fontsize=6)
        for j, m in enumerate(methods):
            a = maps[m][i, 0].float()
            s = float(a.abs().max()) or 1.0
            axes[i][j + 1].imshow((a / s).numpy(), cmap="bwr", vmin=-1, vmax=1)
            if i == 0:
                axes[i][j + 1].set_title(m, fontsize=6, rotation=30)
        if i == 0:
            axes[i][0].set_title("image", fontsize=6)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title, fontsize=8)
    # 50 dpi: a 1.3 in cell is 65 screen pixels, about one per pixel of a 64x64 map
    return save_figure(fig, out_path, dpi=50)


def qualitative_figure(samples: SampleSet, maps: dict[str, torch.Tensor], fig_dir: Path,
                       model_name: str) -> Path | None:
    """The grid of the first samples of ``samples`` (as many as the maps have rows) with each
    method's cached ``maps``; None when there are none."""
    if not maps:
        return None
    n = min(m.shape[0] for m in maps.values())
    batch = samples.get(list(range(n)))
    images = samples.normalization.to_pixel(batch.x)
    if images.shape[1] != 3:
        images = images[:, :1].expand(-1, 3, -1, -1)
    names = samples.class_names
    labels = [names[int(y)] if names and int(y) < len(names) else str(int(y)) for y in batch.y]
    ds = samples.name
    path = Path(fig_dir) / f"qualitative_{safe_filename(ds)}_{safe_filename(model_name)}.png"
    return qualitative_grid(images, maps, path, title=f"{ds} / {model_name}: {', '.join(batch.sample_ids)}",
                            labels=labels)
