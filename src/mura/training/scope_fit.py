"""Fitting the feature-space scope detector (`mura.scope_detector`) on a model's training films.

Why at training time: the detector describes the films a model learned from, with that model's own
features, so it is fitted where those films and that model are at hand (`mura train` on its best
checkpoint, `mura cv` on each fold's model) and stored in the checkpoint. Its threshold is set on films
the Gaussians were NOT fitted on (the validation split; at `mura cv` every fold's held-out films, pooled),
because in-sample distances are small and a threshold set on them would refuse far more new films than
stated.

Deterministic: the same films, weights and seed give the same detector (the training films are
subsampled with `seed` when there are more than `max_films`; principal axes come from an exact SVD).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.covariance import LedoitWolf

from mura import checkpoint as ckpt
from mura.data.cache import ImageCache
from mura.devices import resolve_device
from mura.errors import MuraError
from mura.models.feature_depths import feature_depths, tapped_depths
from mura.preprocessing import Preprocessing
from mura.scope_detector import DepthGaussians, DetectorVariant, ScopeDetector

MAX_DIMS = 256  # principal components kept per depth: keeps a checkpoint's detector to a few MB
MAX_FILMS = 4096  # training films the Gaussians are fitted on (a seeded sample beyond that)
DEFAULT_REFUSAL_RATE = 0.01


def film_features(
    model: torch.nn.Module,
    images: np.ndarray,
    preprocessing: Preprocessing,
    depths: Sequence[str],
    batch_size: int = 64,
) -> dict[str, np.ndarray]:
    """Pooled [N, C] features per depth of uint8 [N, S, S] films (the backbone only: no head runs)."""
    device = next(model.parameters()).device
    model.eval()
    with tapped_depths(model, depths) as found, torch.inference_mode():
        for start in range(0, len(images), batch_size):
            batch = np.asarray(images[start : start + batch_size])
            x = torch.from_numpy(np.asarray(preprocessing.normalize(batch[:, None]), dtype=np.float32))
            model.forward_features(x.to(device))
    return {name: np.concatenate(parts) if parts else np.zeros((0, 0)) for name, parts in found.items()}


def _whitening(centred: np.ndarray) -> np.ndarray:
    """[k, k] Cholesky factor L of the shrunk precision: ||(x - mu) @ L||^2 is the Mahalanobis distance."""
    covariance = LedoitWolf(assume_centered=True).fit(centred).covariance_
    return np.linalg.cholesky(np.linalg.inv(covariance))


def fit_depth(
    depth: str, features: np.ndarray, labels: np.ndarray, variant: DetectorVariant
) -> DepthGaussians:
    """Class-conditional Gaussians (shared covariance) on the first principal components of one depth."""
    x = np.asarray(features, dtype=np.float64)
    centre = x.mean(axis=0)
    _, _, axes = np.linalg.svd(x - centre, full_matrices=False)
    axes = axes[: min(MAX_DIMS, len(x) - 1, x.shape[1])].T  # [C, k]
    for i in range(axes.shape[1]):  # SVD signs are arbitrary; fix them so a refit stores the same numbers
        axes[:, i] *= np.sign(axes[np.argmax(np.abs(axes[:, i])), i]) or 1.0
    projected = (x - centre) @ axes
    classes = [c for c in np.unique(labels) if np.sum(labels == c) >= 2]
    if not classes:
        raise MuraError(f"scope detector: too few training films to fit on ({len(x)}); train on more films")
    within = np.concatenate([projected[labels == c] - projected[labels == c].mean(axis=0) for c in classes])
    whitening = axes @ _whitening(within)
    class_means = np.stack([x[labels == c].mean(axis=0) for c in classes]) @ whitening
    background, background_mean = None, None
    if variant == "relative":
        background = axes @ _whitening(projected - projected.mean(axis=0))
        background_mean = centre[None, :] @ background
    # As stored (float32), so the threshold is set on exactly the scores a loaded detector computes.
    stored = [
        None if a is None else _as_stored(a) for a in (whitening, class_means, background, background_mean)
    ]
    fitted = DepthGaussians(depth, *stored, 0.0, 1.0)
    own = fitted.distances(x)
    return DepthGaussians(depth, *stored, float(own.mean()), float(own.std()) or 1.0)


def _as_stored(array: np.ndarray) -> np.ndarray:
    return array.astype(np.float32).astype(np.float64)


def fit_detector(
    features: dict[str, np.ndarray], labels: np.ndarray, variant: DetectorVariant = "plain"
) -> ScopeDetector:
    """A detector without a threshold yet (`set_threshold` sets it on held-out films)."""
    labels = np.asarray(labels)
    return ScopeDetector(variant, tuple(fit_depth(name, f, labels, variant) for name, f in features.items()))


def refusal_threshold(scores: np.ndarray, rate: float) -> tuple[float, float]:
    """(threshold, share of `scores` above it): refuses at most `rate` of `scores`, placed halfway between
    the highest kept score and the next one up (past the highest: 0.1% above it). Never AT a score: the
    same film scored again in another batch differs in the last float digits (another kernel path), and
    a threshold equal to its score would refuse it one time and keep it the next."""
    if not 0.0 < rate < 1.0:
        raise MuraError(f"scope refusal rate {rate} must lie between 0 and 1 (e.g. 0.01 for 1%)")
    scores = np.sort(np.asarray(scores, dtype=np.float64))
    if not len(scores):
        raise MuraError("scope detector: no held-out films to set its threshold on")
    kept = float(np.quantile(scores, 1.0 - rate, method="higher"))
    above = scores[scores > kept]
    upper = float(above[0]) if len(above) else kept + max(abs(kept) * 1e-3, 1e-6)
    threshold = (kept + upper) / 2
    return threshold, float(np.mean(scores > threshold))


def sample_rows(rows: pd.DataFrame, seed: int, max_films: int = MAX_FILMS) -> pd.DataFrame:
    """At most `max_films` rows, a seeded sample in cache order (all of them when fewer)."""
    if len(rows) <= max_films:
        return rows
    return rows.sample(n=max_films, random_state=seed).sort_values("cache_row")


def rows_features(
    model: torch.nn.Module, cache: ImageCache, rows: pd.DataFrame, preprocessing: Preprocessing
) -> dict[str, np.ndarray]:
    positions = rows["cache_row"].to_numpy(dtype=np.int64)
    return film_features(model, np.asarray(cache.images[positions]), preprocessing, feature_depths(model))


def fit_on_rows(
    model: torch.nn.Module, cache: ImageCache, rows: pd.DataFrame, preprocessing: Preprocessing, seed: int
) -> ScopeDetector:
    """The detector (no threshold) on a seeded sample of `rows`' films with their labels."""
    chosen = sample_rows(rows, seed)
    return fit_detector(rows_features(model, cache, chosen, preprocessing), chosen["label"].to_numpy())


def fit_checkpoint_detector(
    path: Path,
    cache: ImageCache,
    train_split: str,
    val_split: str,
    *,
    device: str = "auto",
    seed: int = 0,
    rate: float = DEFAULT_REFUSAL_RATE,
) -> ScopeDetector:
    """`mura train`: fit on the checkpoint's training films, set the threshold on its validation films,
    and store the detector in the checkpoint (in place, atomically)."""
    model, checkpoint = ckpt.load_model(path, resolve_device(device))
    preprocessing = checkpoint.meta.preprocessing
    index = cache.index
    detector = fit_on_rows(model, cache, index[index["split"] == train_split], preprocessing, seed)
    held_out = index[index["split"] == val_split]
    scores = detector.scores(rows_features(model, cache, held_out, preprocessing))
    threshold, reached = refusal_threshold(scores, rate)
    fitted_on = (
        f"{train_split} split ({min(len(index[index['split'] == train_split]), MAX_FILMS)} films); threshold "
        f"on the {val_split} split ({len(held_out)} films)"
    )
    detector = detector.with_threshold(threshold, rate, reached, fitted_on)
    ckpt.update_checkpoint(path, scope_detector=detector)
    return detector


def fit_fold_detectors(
    checkpoints: Sequence[Path],
    cache: ImageCache,
    rows: pd.DataFrame,
    folds: np.ndarray,
    *,
    device: str = "auto",
    seed: int = 0,
    rate: float = DEFAULT_REFUSAL_RATE,
) -> tuple[list[ScopeDetector], np.ndarray]:
    """`mura cv`: fold k's detector on its model's features of the other folds' films, scored on fold k;
    one threshold from all folds' out-of-fold scores (each fold's scores are z-scores of its own training
    films, so they pool). Returns the thresholded detectors (one per fold) and the [len(rows)] OOF scores."""
    detectors, scores = [], np.zeros(len(rows))
    for k, path in enumerate(checkpoints):
        model, checkpoint = ckpt.load_model(path, resolve_device(device))
        preprocessing = checkpoint.meta.preprocessing
        detector = fit_on_rows(model, cache, rows[folds != k], preprocessing, seed)
        scores[folds == k] = detector.scores(rows_features(model, cache, rows[folds == k], preprocessing))
        detectors.append(detector)
    threshold, reached = refusal_threshold(scores, rate)
    fitted_on = (
        f"{len(checkpoints)}-fold cross-validation: each fold's training films; threshold on the "
        f"out-of-fold scores of {len(rows)} films"
    )
    return [d.with_threshold(threshold, rate, reached, fitted_on) for d in detectors], scores
