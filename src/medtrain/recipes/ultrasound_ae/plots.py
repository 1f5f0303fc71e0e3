"""Plots of ultrasound-ae (validation split): reconstructions, scan lines and the embedding map.

- ``reconstructions.png``: per channel, original / reconstruction / difference of consecutive tokens side by side;
- ``scan_lines.png``: the centre pulse of one token, original and reconstruction overlaid per channel;
- ``embeddings.png``: PCA, t-SNE (scikit-learn) and, when ``umap-learn`` is installed (optional, not a
  dependency), UMAP of the embeddings coloured by joystick class.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import torch
from sklearn.decomposition import PCA
from sklearn.manifold import TSNE

from medtrain.recipes.ultrasound_ae.tokens import CLASS_NAMES
from medtrain.reporting.style import plot_style, save_figure

SHOWN_TOKENS = 8
MAX_MAP_POINTS = 1000


def plot_all(task: Any, datamodule: Any, folder: Path, *, split: str = "val") -> list[Path]:
    """Write the three plots for ``split`` (falls back to test when it is empty); returns their paths."""
    tokens, labels = datamodule.tokens_and_labels(split)
    if len(tokens) == 0:
        tokens, labels = datamodule.tokens_and_labels("test")
    if len(tokens) == 0:
        return []
    shown = tokens[:: max(1, len(tokens) // SHOWN_TOKENS)][:SHOWN_TOKENS]
    with torch.no_grad():
        was_training = task.training
        task.eval()
        recon, _ = task.autoencoder(torch.from_numpy(shown).to(task.device))
        task.train(was_training)
    recon = recon.cpu().numpy()
    rng = np.random.default_rng(0)
    pick = np.sort(rng.choice(len(tokens), min(len(tokens), MAX_MAP_POINTS), replace=False))
    return [
        plot_reconstructions(shown, recon, folder / "reconstructions.png"),
        plot_scan_lines(shown[0], recon[0], folder / "scan_lines.png"),
        plot_embedding_map(task.embed(tokens[pick]), labels[pick], folder / "embeddings.png"),
    ]


def _strip(tokens: np.ndarray, channel: int) -> np.ndarray:
    """Tokens ``[K, C, D, P]`` of one channel side by side: ``[D, K·P]``."""
    return np.concatenate(list(tokens[:, channel]), axis=1)


def plot_reconstructions(original: np.ndarray, recon: np.ndarray, path: Path) -> Path:
    """Rows: channels; columns: original, reconstruction, difference (depth down, pulses across)."""
    channels = original.shape[1]
    with plot_style():
        fig, axes = plt.subplots(channels, 3, figsize=(10, 2.6 * channels), squeeze=False)
        for channel in range(channels):
            a, b = _strip(original, channel), _strip(recon, channel)
            low, high = float(min(a.min(), b.min())), float(max(a.max(), b.max()))
            for column, (image, title) in enumerate([(a, "original"), (b, "reconstruction"), (b - a, "difference")]):
                ax = axes[channel, column]
                shown = ax.imshow(
                    image,
                    aspect="auto",
                    cmap="RdBu_r" if column == 2 else "gray",
                    vmin=None if column == 2 else low,
                    vmax=None if column == 2 else high,
                )
                ax.set_title(f"channel {channel}: {title}")
                ax.set_xlabel("pulse (tokens side by side)")
                ax.set_ylabel("depth sample")
                fig.colorbar(shown, ax=ax)
        return save_figure(fig, path)


def plot_scan_lines(original: np.ndarray, recon: np.ndarray, path: Path) -> Path:
    """The token's centre pulse, original vs reconstruction, one panel per channel."""
    channels, _, pulses = original.shape
    with plot_style():
        fig, axes = plt.subplots(channels, 1, figsize=(8, 2.2 * channels), squeeze=False)
        for channel in range(channels):
            ax = axes[channel, 0]
            ax.plot(original[channel, :, pulses // 2], label="original")
            ax.plot(recon[channel, :, pulses // 2], label="reconstruction", linestyle="--")
            ax.set_title(f"channel {channel}, centre pulse")
            ax.set_xlabel("depth sample")
            ax.legend()
        return save_figure(fig, path)


def _umap_2d(embeddings: np.ndarray) -> np.ndarray | None:
    """2-D UMAP of ``embeddings`` (``n_neighbors = min(15, N − 1)``, seed 0), or ``None`` when ``umap-learn`` is not
    installed."""
    if importlib.util.find_spec("umap") is None:
        return None
    import umap

    reducer = umap.UMAP(n_components=2, n_neighbors=min(15, len(embeddings) - 1), random_state=0)
    return np.asarray(reducer.fit_transform(embeddings))


def plot_embedding_map(embeddings: np.ndarray, labels: np.ndarray, path: Path) -> Path:
    """PCA, t-SNE and (if installed) UMAP of ``embeddings`` coloured by joystick class; t-SNE and UMAP need more
    than 10 points."""
    maps = [("PCA", PCA(n_components=2).fit_transform(embeddings))]
    if len(embeddings) > 10:
        perplexity = min(30.0, (len(embeddings) - 1) / 3)
        maps.append(("t-SNE", TSNE(n_components=2, perplexity=perplexity, random_state=0).fit_transform(embeddings)))
        umap_points = _umap_2d(embeddings)
        if umap_points is not None:
            maps.append(("UMAP", umap_points))
    with plot_style():
        fig, axes = plt.subplots(1, len(maps), figsize=(6 * len(maps), 5), squeeze=False)
        for ax, (title, points) in zip(axes[0], maps, strict=True):
            for index, name in enumerate(CLASS_NAMES):
                chosen = labels == index
                if chosen.any():
                    ax.scatter(points[chosen, 0], points[chosen, 1], s=8, label=name, alpha=0.7)
            ax.set_title(f"embeddings ({title}) by joystick class")
            ax.legend(markerscale=2)
        return save_figure(fig, path)
