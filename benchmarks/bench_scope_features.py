"""Layer 3 of the scope gate (feature space): out-of-scope AUROC per variant, in-scope refusals out of fold.

Reads a finished `mura cv` of FracAtlas (its folds' last.pt and the cache it was trained on; nothing is
trained or written there). For each fold k, every variant is fitted on fold k's model's features of the
other folds' films and scored on fold k's held-out films (in scope, out of fold) and on out-of-scope
images gathered offline; one threshold for 1% refusals is set on the pooled out-of-fold scores, as
`mura cv` sets it. Variants: relative vs plain Mahalanobis, three depths vs the last one.

    .venv/bin/python benchmarks/bench_scope_features.py --cv runs/fracatlas_loc/cv_lite2_128_2ep \
        --markdown docs/benchmarks/scope.md    (rewrites the layer 3 section only)
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image
from pydicom.data import get_testdata_files
from scipy.ndimage import gaussian_filter
from sklearn.metrics import roc_auc_score

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_scope import photographs  # noqa: E402

from mura.checkpoint import load_model  # noqa: E402
from mura.config_loading import load_config  # noqa: E402
from mura.constants import MURA_BODY_PARTS  # noqa: E402
from mura.data.cache import open_cache  # noqa: E402
from mura.data.images import read_image  # noqa: E402
from mura.data.synth import render_image  # noqa: E402
from mura.errors import ImageDecodeError  # noqa: E402
from mura.experiments.cv import pooled_folds  # noqa: E402
from mura.inference.predictor import Predictor  # noqa: E402
from mura.inference.scope import image_reasons  # noqa: E402
from mura.models.feature_depths import feature_depths  # noqa: E402
from mura.scope_detector import ScopeDetector  # noqa: E402
from mura.training.scope_fit import film_features, fit_detector, refusal_threshold  # noqa: E402

SECTION = "## Layer 3: feature space"
VARIANTS = {  # name: (variant, depths used)
    "relative, 3 depths": ("relative", None),
    "relative, last depth": ("relative", -1),
    "plain, 3 depths": ("plain", None),
    "plain, last depth": ("plain", -1),
}
CHOSEN = "relative, 3 depths"


def out_of_scope(cache_images: np.ndarray) -> Iterator[tuple[str, np.ndarray]]:
    """(group, grey uint8 image) of everything a FracAtlas model should refuse, plus a control."""
    for path in get_testdata_files("*.dcm"):
        try:
            yield "pydicom's CT/MR/US/... test images, decoded to grey", read_image(Path(path)).pixels
        except ImageDecodeError:
            continue
    for rgb in photographs():
        yield "matplotlib's photographs, grey", np.asarray(Image.fromarray(rgb).convert("L"))
    rng = np.random.default_rng(0)
    for sigma in (2, 4, 8, 16):
        for _ in range(8):
            noise = gaussian_filter(rng.normal(0, 1, (256, 256)), sigma)
            yield "smooth noise", np.clip(128 + 60 * noise / noise.std(), 0, 255).astype(np.uint8)
    for part in MURA_BODY_PARTS:
        for seed in range(8):
            yield "synthetic MURA films", render_image(part, seed % 2 == 0, [seed, 2, 3], seed % 3)
    for film in cache_images[::40]:
        side = film.shape[0]
        yield "control: FracAtlas films, inverted", 255 - film
        yield (
            "control: FracAtlas films, central quarter",
            film[side // 4 : 3 * side // 4, side // 4 : 3 * side // 4],
        )


def variant_detector(name: str, features: dict[str, np.ndarray], labels: np.ndarray) -> ScopeDetector:
    kind, depth = VARIANTS[name]
    used = features if depth is None else dict([list(features.items())[depth]])
    return fit_detector(used, labels, kind)


def measure(cv_dir: Path) -> dict:
    cfg = load_config(cv_dir / "cv_config.yaml")
    cache = open_cache(cfg.data.cache)
    inside, folds = pooled_folds(cfg, cache, cfg.data.folds)
    images = np.asarray(cache.images[inside["cache_row"].to_numpy()])
    oos = list(out_of_scope(images))
    groups = [g for g, _ in oos]
    in_scores = {name: np.zeros(len(inside)) for name in VARIANTS}
    out_scores = {name: [] for name in VARIANTS}
    for k in range(cfg.data.folds):
        model, checkpoint = load_model(cv_dir / f"fold{k}" / "last.pt")
        pre = checkpoint.meta.preprocessing
        depths = feature_depths(model)
        train = film_features(model, images[folds != k], pre, depths)
        held = film_features(model, images[folds == k], pre, depths)
        outside = film_features(model, np.stack([pre.resize(x) for _, x in oos]), pre, depths)
        for name in VARIANTS:
            detector = variant_detector(name, train, inside["label"].to_numpy()[folds != k])
            in_scores[name][folds == k] = detector.scores(held)
            out_scores[name].append(detector.scores(outside))
    results = {}
    for name in VARIANTS:
        threshold, reached = refusal_threshold(in_scores[name], 0.01)
        outside = np.concatenate(out_scores[name])  # each image once per fold model
        out_groups = groups * cfg.data.folds
        real = np.array([not g.startswith("control") for g in out_groups])
        y = np.r_[np.zeros(len(in_scores[name])), np.ones(int(real.sum()))]
        per_group = {
            g: float(np.mean(outside[np.array(out_groups) == g] > threshold)) for g in dict.fromkeys(groups)
        }
        results[name] = {
            "auroc": float(roc_auc_score(y, np.r_[in_scores[name], outside[real]])),
            "in_scope_refused": reached,
            "threshold": threshold,
            "refused": per_group,
        }
    layer2 = {
        g: float(np.mean([not image_reasons(x) for h, x in oos if h == g])) for g in dict.fromkeys(groups)
    }
    counts = {g: groups.count(g) for g in dict.fromkeys(groups)}
    return {"results": results, "layer2_pass": layer2, "counts": counts, "films": len(inside),
            "cost": cost(cv_dir, images[:128]), "folds": cfg.data.folds, "model": cfg.model.name,
            "size": cfg.model.size}  # fmt: skip


def cost(cv_dir: Path, films: np.ndarray) -> dict[str, float]:
    """ms per image of a prediction (one fold model, CPU) without and with layer 3 scored from its pass."""
    predictor = Predictor.from_checkpoints([cv_dir / "fold0" / "last.pt"], device="cpu", runtime="torch")
    model = predictor.members[0].model
    pre = predictor.members[0].preprocessing
    detector = fit_detector(film_features(model, films, pre, feature_depths(model)), np.zeros(len(films)))
    found = {}
    for label, gate in (("predict", None), ("predict + layer 3", detector)):
        predictor.members[0].scope_detector = gate
        predictor.predict_images(list(films[:16]))  # warm-up
        started = time.perf_counter()
        predictor.predict_images(list(films))
        found[label] = 1000 * (time.perf_counter() - started) / len(films)
    return found


def markdown(m: dict) -> str:
    lines = [
        SECTION,
        "",
        f"`.venv/bin/python benchmarks/bench_scope_features.py --cv <a mura cv folder> --markdown "
        f"docs/benchmarks/scope.md` (rewrites this section only). Measured on the {m['folds']}-fold cv of "
        f"{m['model']} at {m['size']} px on FracAtlas ({m['films']} films, 2 epochs): fold k's detector is "
        "fitted on its model's features of the other folds' films and scored on fold k's films (in scope, "
        "out of fold) and on every out-of-scope image; the threshold is set for 1% refusals on the pooled "
        "out-of-fold scores, as `mura cv` sets it.",
        "",
        "| variant | AUROC, out of scope vs out-of-fold FracAtlas | in-scope refused (out of fold) | "
        + " | ".join(f"{g} (n={n})" for g, n in m["counts"].items())
        + " |",
        "|---|---:|---:|" + "---:|" * len(m["counts"]),
    ]
    for name, r in m["results"].items():
        cells = " | ".join(f"{100 * v:.0f}%" for v in r["refused"].values())
        lines.append(f"| {name} | {r['auroc']:.4f} | {100 * r['in_scope_refused']:.2f}% | {cells} |")
    passing = " | ".join(f"{100 * v:.0f}%" for v in m["layer2_pass"].values())
    lines.append(f"| (pass layers 1-2 as PNG) | | | {passing} |")
    c = m["cost"]
    best = max(m["results"], key=lambda name: m["results"][name]["auroc"])
    lines += [
        "",
        "The AUROC leaves the controls out (they are in-scope films, changed). Refused shares are at the "
        "1% threshold, each image once per fold model.",
        "",
        f"Chosen (what `mura train` and `mura cv` fit): {best}, the variant with the highest AUROC here; "
        "the relative variant removes what every film shares, and with it, on these features, most of "
        "what sets a CT slice or a photograph apart.",
        "",
        f"Cost (CPU, one fold model, median of a batch of 128 films): prediction {c['predict']:.2f} ms per "
        f"image, with layer 3 scored from the same pass {c['predict + layer 3']:.2f} ms.",
    ]
    return "\n".join(lines) + "\n"


def write_section(path: Path, text: str) -> None:
    """Replace this benchmark's section of `path` (from SECTION to the next heading), keeping the rest."""
    old = path.read_text() if path.exists() else ""
    start = old.find(SECTION)
    if start < 0:
        path.write_text(old + ("\n" if old else "") + text)
        return
    end = old.find("\n## ", start + len(SECTION))
    path.write_text(old[:start] + text + (old[end:] if end >= 0 else ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cv", required=True, help="a finished `mura cv` folder (fold*/last.pt)")
    parser.add_argument("--markdown", default=None, help="write the results section here")
    args = parser.parse_args()
    text = markdown(measure(Path(args.cv)))
    print(text)
    if args.markdown:
        write_section(Path(args.markdown), text)


if __name__ == "__main__":
    main()
