"""The stored feature-space scope detector (layer 3 of the scope gate): what a checkpoint keeps of it, and
the distance it computes.

Why here, at the root: training fits it (`mura.training.scope_fit`) and inference gates with it
(`mura.inference.scope_features`); neither may import the other, both import this.

Per depth (a module path of the model, `mura.models.feature_depths`), the training films' pooled features
are projected on their first principal components (at most 256) and modelled as class-conditional
Gaussians (one per label) with a shared, Ledoit-Wolf-shrunk covariance. An input's distance at a depth is
its smallest Mahalanobis distance to a class mean, minus (variant `relative`, Ren et al. 2021) its
distance to one background Gaussian of all training films, which removes what every film shares and
keeps what sets this input apart. `plain` (no background) is the default: on FracAtlas it separated
out-of-scope images with AUROC 0.9995 at three depths against 0.74 for `relative`
(docs/benchmarks/scope.md). Each depth's distance is turned into a z-score by the training films'
own distances; the score is the largest z-score over the depths, and an input is refused when its score
exceeds `threshold`, set so that `target_rate` of held-out in-scope films are refused.

Stored as float32 tensors and plain types (`torch.load(weights_only=True)`-safe): per depth the
whitening matrix (principal axes times the precision's Cholesky factor) and the class means in the
whitened space, so a distance is one matrix product.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal

import numpy as np
import torch

DetectorVariant = Literal["relative", "plain"]
DETECTOR_VARIANTS: tuple[str, ...] = ("relative", "plain")


def _tensor(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))


def _array(value: Any) -> np.ndarray:
    return np.asarray(value.numpy() if isinstance(value, torch.Tensor) else value, dtype=np.float64)


def _squared_norms(features: np.ndarray, whitening: np.ndarray, means: np.ndarray) -> np.ndarray:
    """[N, K]: squared whitened distance of every row to every mean."""
    projected = features @ whitening
    return ((projected[:, None, :] - means[None, :, :]) ** 2).sum(axis=2)


@dataclass(frozen=True)
class DepthGaussians:
    """The training films' features at one depth, as whitening + class means (+ a background)."""

    depth: str  # module path in the model, e.g. "backbone.blocks.4"
    whitening: np.ndarray  # [C, k]: principal axes @ Cholesky factor of the shared precision
    class_means: np.ndarray  # [K, k]: each class's mean feature, whitened
    background_whitening: np.ndarray | None  # [C, k] for the relative variant, else None
    background_mean: np.ndarray | None  # [1, k]
    score_mean: float  # of the training films' distances: turns a distance into a z-score
    score_std: float

    def distances(self, features: np.ndarray) -> np.ndarray:
        """[N] distances of pooled [N, C] features (relative when a background is stored)."""
        x = np.asarray(features, dtype=np.float64)
        found = _squared_norms(x, self.whitening, self.class_means).min(axis=1)
        if self.background_whitening is not None and self.background_mean is not None:
            found = found - _squared_norms(x, self.background_whitening, self.background_mean)[:, 0]
        return found

    def z_scores(self, features: np.ndarray) -> np.ndarray:
        return (self.distances(features) - self.score_mean) / self.score_std

    def to_dict(self) -> dict[str, Any]:
        stored: dict[str, Any] = {
            "depth": self.depth,
            "whitening": _tensor(self.whitening),
            "class_means": _tensor(self.class_means),
            "score_mean": float(self.score_mean),
            "score_std": float(self.score_std),
        }
        if self.background_whitening is not None and self.background_mean is not None:
            stored["background_whitening"] = _tensor(self.background_whitening)
            stored["background_mean"] = _tensor(self.background_mean)
        return stored

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DepthGaussians:
        background = data.get("background_whitening")
        return cls(
            depth=str(data["depth"]),
            whitening=_array(data["whitening"]),
            class_means=_array(data["class_means"]),
            background_whitening=None if background is None else _array(background),
            background_mean=None if background is None else _array(data["background_mean"]),
            score_mean=float(data["score_mean"]),
            score_std=float(data["score_std"]),
        )


@dataclass(frozen=True)
class ScopeDetector:
    """Layer 3 as a checkpoint stores it: the depths' Gaussians and the threshold on their score."""

    variant: DetectorVariant
    depths: tuple[DepthGaussians, ...]
    threshold: float = float("inf")  # score above it: refused; inf until set on held-out films
    target_rate: float = 0.01  # share of held-out in-scope films the threshold was set to refuse
    rate_reached: float = 0.0  # the share it refused of those films
    fitted_on: str = ""  # where the Gaussians were fitted and the threshold set (one line)

    @property
    def depth_names(self) -> tuple[str, ...]:
        return tuple(d.depth for d in self.depths)

    def scores(self, features: Mapping[str, np.ndarray]) -> np.ndarray:
        """[N] scores of pooled features per depth name: the largest per-depth z-score."""
        return np.max([d.z_scores(features[d.depth]) for d in self.depths], axis=0)

    def with_threshold(
        self, threshold: float, target_rate: float, rate_reached: float, fitted_on: str
    ) -> ScopeDetector:
        """This detector with its threshold, set for `target_rate` refusals of held-out in-scope films."""
        return replace(
            self,
            threshold=float(threshold),
            target_rate=float(target_rate),
            rate_reached=float(rate_reached),
            fitted_on=fitted_on,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "variant": self.variant,
            "depths": [d.to_dict() for d in self.depths],
            "threshold": float(self.threshold),
            "target_rate": float(self.target_rate),
            "rate_reached": float(self.rate_reached),
            "fitted_on": self.fitted_on,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ScopeDetector:
        variant = data["variant"]
        if variant not in DETECTOR_VARIANTS:
            raise ValueError(f"scope detector variant {variant!r} is not one of {DETECTOR_VARIANTS}")
        return cls(
            variant=variant,
            depths=tuple(DepthGaussians.from_dict(d) for d in data["depths"]),
            threshold=float(data["threshold"]),
            target_rate=float(data["target_rate"]),
            rate_reached=float(data["rate_reached"]),
            fitted_on=str(data.get("fitted_on", "")),
        )
