"""`mura.load(...)`: a trained model (one checkpoint or an ensemble) as one Python object.

Every answer is a typed `mura.prediction.Prediction`, made by the same code as `mura predict`,
`mura serve` and the DICOM node, for a path, a decoded array or a batch of either. An input outside the
model's scope (`mura.inference.scope`: a CT, a photograph, a blank) is answered `not_assessed` with its
reasons, unless the model was loaded with `score_all=True`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from mura.constants import given_body_part
from mura.errors import MuraError
from mura.inference.files import (
    FileResult,
    expand_paths,
    iter_file_predictions,
    not_assessed,
    study_prediction,
)
from mura.inference.predictor import Predictor
from mura.inference.scope import image_reasons, scored_anyway
from mura.inference.study_identity import check_one_study
from mura.inference.trace import RunTrace, check_trace_target
from mura.prediction import Finding, ModelIdentity, Prediction, StudyPrediction

if TYPE_CHECKING:
    import torch

    from mura.pacs.results import StudyIdentity, StudyResults
    from mura.preprocessing import Preprocessing

ImageInput = str | Path | np.ndarray


class Explanation(NamedTuple):
    """`Model.explain`'s answer: the prediction, and the heatmap only where the model assessed the input."""

    prediction: Prediction
    heatmap: np.ndarray | None  # float32 [H, W] in [0, 1]; None when `prediction` is not_assessed

    def figure(self, pixels: np.ndarray) -> np.ndarray | None:
        """What `mura explain` writes for the explained film `pixels` (uint8 [H, W]): RGB uint8 [H, W, 3]
        (`explanation_figure`); None when not assessed."""
        if self.heatmap is None:
            return None
        return explanation_figure(pixels, self.heatmap, self.prediction.findings)


def explanation_figure(pixels: np.ndarray, heatmap: np.ndarray, findings: Sequence[Finding]) -> np.ndarray:
    """The film under its Grad-CAM heatmap, each finding of the fracture map boxed on top (dotted at
    `suspicious`, solid at `definite`, as the page and the DICOM captures draw them): the heatmap says
    where the fracture score looked, the boxes what the model localised; RGB uint8 [H, W, 3]."""
    from mura.inference.gradcam import overlay
    from mura.pacs.capture import draw_findings

    return draw_findings(overlay(pixels, heatmap), list(findings), 1.0)


class Model:
    """A loaded model: `predict`, `predict_batch`, `predict_files`, `predict_study`, `explain`,
    `dicom_results`, and what it is (`identity`, `operating_points`, `preprocessing`, `body_parts`,
    `provenance`, `modules`)."""

    def __init__(self, predictor: Predictor, *, score_all: bool = False) -> None:
        self._predictor = predictor
        self.score_all = score_all  # score out-of-scope inputs too; the gate's reasons become warnings

    # --- what it is ---------------------------------------------------------------------------------
    @property
    def identity(self) -> ModelIdentity:
        """Architecture(s), mura version and one SHA-256 for the checkpoint file(s)."""
        return self._predictor.identity

    @property
    def operating_point(self) -> str:
        """The named operating point every decision is made at (see `operating_points`)."""
        return self._predictor.threshold_name

    @property
    def operating_points(self) -> dict[str, float]:
        """Each operating point every member stores, with the ensemble's threshold (the members' mean)."""
        names = set.intersection(*(set(m.decision.thresholds) for m in self._predictor.members))
        return {name: self._predictor.operating_point(name)[1] for name in sorted(names)}

    @property
    def preprocessing(self) -> list[Preprocessing]:
        """Each member's input (size, resize mode, normalisation), in member order."""
        return [m.preprocessing for m in self._predictor.members]

    @property
    def body_parts(self) -> tuple[str, ...]:
        """The body-part head's classes (an answer may also say UNKNOWN: not confidently one of them)."""
        return self._predictor.body_parts

    @property
    def provenance(self) -> list[dict[str, Any]]:
        """Per member: source file, epoch, validation/test figures, training provenance."""
        return [{"source": str(m.source), "runtime": m.runtime, **m.info} for m in self._predictor.members]

    @property
    def modules(self) -> list[torch.nn.Module]:
        """The members' PyTorch modules (eval mode, shared with prediction: do not train them in place)."""
        from mura.inference.members import TorchMember

        missing = [str(m.source) for m in self._predictor.members if not isinstance(m, TorchMember)]
        if missing:
            raise MuraError(f"{missing[0]}: runs on ONNX Runtime; load the .pt checkpoint for its nn.Module")
        return [m.model for m in self._predictor.members]  # type: ignore[attr-defined]

    @property
    def module(self) -> torch.nn.Module:
        """The `nn.Module` of a single checkpoint (an ensemble has `modules`)."""
        modules = self.modules
        if len(modules) != 1:
            raise MuraError(f"this model is an ensemble of {len(modules)}: use model.modules")
        return modules[0]

    # --- predictions --------------------------------------------------------------------------------
    def predict(
        self, image: ImageInput, body_part: str | None = None, *, trace: str | Path | None = None
    ) -> Prediction:
        """One file (PNG/JPEG/DICOM) or a decoded uint8 [H, W] array; MuraError names a bad file."""
        (prediction,) = self.predict_batch([image], body_part, trace=trace)
        return prediction

    def predict_batch(
        self, images: Sequence[ImageInput], body_part: str | None = None, *, trace: str | Path | None = None
    ) -> list[Prediction]:
        """Paths and/or arrays, one `Prediction` each in order; the first unreadable file raises MuraError.
        `trace`: also write the run's trace there (`mura.inference.trace`: inputs with SHA-256,
        checkpoints, thresholds and where they were fitted, scope, versions)."""
        if trace is not None:
            check_trace_target(trace)
        part = _part(body_part)
        arrays = [(i, x) for i, x in enumerate(images) if isinstance(x, np.ndarray)]
        out: dict[int, Prediction] = {}
        for array in (x for _, x in arrays):
            if array.ndim != 2 or array.dtype != np.uint8:
                raise MuraError(f"an image array must be uint8 [H, W], got {array.dtype} {array.shape}")
        reasons = {i: image_reasons(x) for i, x in arrays}  # an array has no header: layer 2 only
        scored = [(i, x) for i, x in arrays if self.score_all or not reasons[i]]
        out.update({i: not_assessed(self._predictor, None, reasons[i]) for i, _ in arrays if reasons[i]})
        if scored:
            batch = self._predictor.predict_images([x for _, x in scored], [part] * len(scored))
            for j, (i, _) in enumerate(scored):
                out[i] = batch.prediction(
                    j, self.identity, warnings=scored_anyway(reasons[i]), score_all=self.score_all
                )
        paths = [(i, Path(x)) for i, x in enumerate(images) if not isinstance(x, np.ndarray)]
        results = iter_file_predictions(
            self._predictor, [p for _, p in paths], body_part, score_all=self.score_all
        )
        for (i, _), result in zip(paths, results, strict=True):
            if result.prediction is None:
                raise MuraError(str(result.error))
            out[i] = result.prediction
        predictions = [out[i] for i in range(len(images))]
        if trace is not None:
            run = self._trace({"call": "predict_batch", "body_part": body_part})
            for image, prediction in zip(images, predictions, strict=True):
                if isinstance(image, np.ndarray):
                    run.add_array(image, prediction)
                else:
                    run.add_file(image, prediction)
            run.write(trace)
        return predictions

    def predict_files(
        self, paths: Sequence[str | Path], body_part: str | None = None
    ) -> Iterator[FileResult]:
        """Files and folders (recursive), streamed; an unreadable file gets a result with `error` set, so
        one corrupt image in 40,000 is reported and skipped."""
        return iter_file_predictions(
            self._predictor, expand_paths(paths), body_part, score_all=self.score_all
        )

    def predict_study(
        self, paths: Sequence[str | Path], body_part: str | None = None, *, trace: str | Path | None = None
    ) -> StudyPrediction:
        """The views of one study: the mean of the assessed views' probabilities (the MURA paper's rule).
        DICOM views of different patients or studies are refused (MuraError naming two of them); other
        files carry no identity and are taken as given. `trace`: also write the run's trace there (as
        `predict_batch`)."""
        if trace is not None:
            check_trace_target(trace)
        check_one_study(expand_paths(paths))
        results = list(self.predict_files(paths, body_part))
        if not any(r.ok for r in results):
            raise MuraError("no view of the study could be read: " + "; ".join(str(r.error) for r in results))
        folder = str(Path(paths[0]).parent) if len(paths) else None
        study = study_prediction(folder, results, self._predictor.tiers)
        if trace is not None:
            run = self._trace({"call": "predict_study", "body_part": body_part})
            for result in results:
                run.add_file(result.path, result.prediction, result.error)
            run.add_study(study)
            run.write(trace)
        return study

    def _trace(self, settings: dict[str, Any]) -> RunTrace:
        return RunTrace(self._predictor, settings, score_all=self.score_all)

    # --- explanations and DICOM results -------------------------------------------------------------
    def explain(self, image: ImageInput, body_part: str | None = None) -> Explanation:
        """The prediction and its Grad-CAM (fracture output, at the image's own size: float32 [H, W] in
        [0, 1]). An input the scope gate refuses gets no heatmap, since a heatmap would suggest a finding
        where the model has no say: `heatmap` is None and `prediction` is `not_assessed` with its reasons
        (a model loaded with `score_all=True` explains it anyway)."""
        from mura.data.images import read_image
        from mura.inference.gradcam import GradCamExplainer

        prediction = self.predict(image, body_part)
        if not prediction.assessed:
            return Explanation(prediction, None)
        pixels = image if isinstance(image, np.ndarray) else read_image(Path(image)).pixels
        explainer = GradCamExplainer.from_predictor(self._predictor)
        return Explanation(prediction, explainer.heatmap(pixels, _part(body_part)))

    def dicom_results(
        self,
        views: Sequence[ImageInput],
        *,
        identity: StudyIdentity | None = None,
        body_part: str | None = None,
        operating_point: str | float | None = None,
    ) -> StudyResults:
        """One study's SR and Secondary Captures (`.write(folder)` saves them). DICOM views carry their own
        patient and study; arrays and other files need `identity`."""
        from mura.pacs.study import study_results

        return study_results(
            self._predictor, views, identity=identity, body_part=body_part, operating_point=operating_point
        )


def _part(name: str | None) -> int:
    try:
        return given_body_part(name)
    except ValueError as exc:
        raise MuraError(str(exc)) from None


def load(
    checkpoints: str | Path | Sequence[str | Path],
    *,
    device: str = "auto",
    runtime: str = "auto",
    tta: bool = False,
    threshold: str | float | None = None,
    score_all: bool = False,
) -> Model:
    """Load checkpoint(s) (`.pt` or exported `.onnx`; several = an ensemble) for prediction.

    `score_all=True` scores inputs outside the model's scope too (research only): they get a probability
    and the scope gate's reasons as warnings instead of `not_assessed`. DICOM results stay gated.
    """
    return Model(
        Predictor.from_checkpoints(checkpoints, device=device, runtime=runtime, tta=tta, threshold=threshold),
        score_all=score_all,
    )
