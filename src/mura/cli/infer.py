"""Subcommand `predict`: files, folders and DICOM (one answer per image, or per study), with its outputs
(JSON lines / CSV, Grad-CAM overlays, DICOM SR + Secondary Captures). `explain` and `export` live in
`mura.cli.explain`; both take their model flags from `mura.cli.model_args`."""

from __future__ import annotations

import argparse
import csv
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO

from mura.cli.model_args import add_model_args, check_body_part
from mura.errors import MuraError
from mura.prediction import Prediction, csv_fields


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `predict`."""
    predict = subparsers.add_parser("predict", help="fracture probability per image (and per study)")
    add_model_args(predict)
    predict.add_argument("--study", action="store_true", help="each folder of views is one study (mean)")
    predict.add_argument("--format", choices=("jsonl", "csv"), default="jsonl")
    predict.add_argument("--out", "-o", default=None, help="output file (default: stdout)")
    predict.add_argument("--tta", action="store_true", help="average with the horizontally flipped image")
    predict.add_argument(
        "--runtime",
        choices=("auto", "torch", "onnx"),
        default="auto",
        help="auto: ONNX Runtime on CPU where an up-to-date CKPT.onnx exists",
    )
    predict.add_argument(
        "--threshold",
        default=None,
        help="operating point: a stored name (suspicious = high sensitivity, the default; definite = high "
        "specificity; youden; default = 0.5) or a probability",
    )
    predict.add_argument(
        "--score-all",
        action="store_true",
        help="score inputs outside the model's scope too (CT, photographs, other body parts, ...): for "
        "research; the gate's reasons become warnings. --dicom-out results are always gated",
    )
    predict.add_argument("--batch-size", type=int, default=32)
    predict.add_argument("--workers", type=int, default=2, help="decoding threads (overlap with inference)")
    predict.add_argument("--cam", default=None, metavar="DIR", help="also write Grad-CAM overlays here")
    predict.add_argument(
        "--dicom-out",
        default=None,
        metavar="DIR",
        help="also write per study a DICOM SR and a Grad-CAM Secondary Capture per view here",
    )
    predict.add_argument("--patient-id", default=None, help="--dicom-out for non-DICOM files: patient ID")
    predict.add_argument("--patient-name", default="", help="with --patient-id: patient name (DICOM PN)")
    predict.add_argument("--study-uid", default=None, help="with --patient-id: all non-DICOM files one study")
    predict.add_argument("--accession-number", default="", help="with --patient-id: accession number")
    predict.add_argument(
        "--trace",
        default=None,
        metavar="FILE",
        help="also write one JSON describing the run: inputs with SHA-256, checkpoints with hashes, "
        "preprocessing, thresholds and where they were fitted, scope, versions, outputs",
    )
    predict.set_defaults(func=run_predict)


def _settings(args: argparse.Namespace) -> dict[str, Any]:
    """The command's arguments as a trace records them (every flag, the handlers left out)."""
    plain = (str, int, float, bool, list, type(None))
    return {
        k: v for k, v in vars(args).items() if k not in ("func", "parameter_flags") and isinstance(v, plain)
    }


def _threshold(text: str | None) -> str | float | None:
    if text is None:
        return None
    try:
        return float(text)
    except ValueError:
        return text


class RecordWriter:
    """JSON lines (`Prediction.model_dump`), or CSV (`Prediction.flat`: one column per field)."""

    def __init__(self, handle: TextIO, fmt: str) -> None:
        self.handle, self.fmt = handle, fmt
        self.csv = csv.DictWriter(handle, csv_fields(), extrasaction="raise") if fmt == "csv" else None
        if self.csv:
            self.csv.writeheader()

    def write(self, prediction: Prediction) -> None:
        if self.csv is None:
            self.handle.write(prediction.model_dump_json() + "\n")
        else:
            self.csv.writerow(prediction.flat())


@contextmanager
def _output(path: str | None) -> Iterator[TextIO]:
    if path is None:
        yield sys.stdout
        return
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as handle:
        yield handle


def run_predict(args: argparse.Namespace) -> int:
    from mura.data.images import is_dicom
    from mura.inference.files import expand_paths, iter_file_predictions, study_prediction
    from mura.inference.predictor import Predictor
    from mura.inference.study_identity import check_one_study
    from mura.inference.trace import RunTrace, check_trace_target
    from mura.pacs.study import split_radiographs

    if not args.patient_id and (args.patient_name or args.study_uid or args.accession_number):
        raise MuraError("--patient-name, --study-uid and --accession-number need --patient-id")

    files, set_aside = split_radiographs(expand_paths(args.paths))
    for path, reason in set_aside:
        print(f"mura predict: skipped {path}: {reason}", file=sys.stderr)
    if not files:
        raise MuraError("no image or DICOM radiograph found in " + ", ".join(args.paths))
    if args.study:  # before any work: a folder mixing patients or studies would average them
        for folder in dict.fromkeys(f.parent for f in files):
            check_one_study([f for f in files if f.parent == folder])
    if args.dicom_out and not args.patient_id and not any(is_dicom(f) for f in files):
        raise MuraError(
            f"--dicom-out: none of the {len(files)} file(s) is DICOM, so no patient or study to attach "
            "results to: give --patient-id (and --patient-name, --accession-number)"
        )
    if args.trace:
        check_trace_target(args.trace)  # before any work: a file mura did not write is refused
    predictor = Predictor.from_checkpoints(
        args.checkpoint,
        device=args.device,
        runtime=args.runtime,
        tta=args.tta,
        threshold=_threshold(args.threshold),
        batch_size=args.batch_size,
    )
    check_body_part(args.body_part, predictor)
    trace = RunTrace(predictor, _settings(args), score_all=args.score_all) if args.trace else None
    explainer = None
    if args.cam:
        from mura.cli.explain import write_cam  # the overlay `mura explain` writes
        from mura.inference.gradcam import GradCamExplainer

        explainer = GradCamExplainer.from_predictor(predictor)
    studies: dict[Path, list] = {}
    predicted = 0
    with _output(args.out) as handle:
        writer = RecordWriter(handle, args.format)
        for result in iter_file_predictions(
            predictor,
            files,
            args.body_part,
            workers=args.workers,
            keep_pixels=explainer is not None,
            score_all=args.score_all,
        ):
            if args.study:
                studies.setdefault(result.path.parent, []).append(result)
            if trace is not None:
                trace.add_file(result.path, result.prediction, result.error)
            if not result.ok:
                print(f"mura predict: skipped {result.error}", file=sys.stderr)
                continue
            predicted += 1
            for warning in result.prediction.warnings:
                print(f"mura predict: warning: {result.path}: {warning}", file=sys.stderr)
            for reason in result.prediction.reasons:
                print(f"mura predict: warning: {result.path}: not assessed: {reason}", file=sys.stderr)
            writer.write(result.prediction)
            if explainer is not None and result.prediction.assessed:
                write_cam(explainer, result, Path(args.cam))
        for folder, results in studies.items():
            if any(r.ok for r in results):
                study = study_prediction(str(folder), results, predictor.tiers)
                writer.write(study)
                if trace is not None:
                    trace.add_study(study)
    if trace is not None:
        trace.write(args.trace)
    if predicted == 0:
        print(f"mura predict: none of the {len(files)} file(s) could be predicted", file=sys.stderr)
        return 2
    if args.dicom_out and _write_dicom_results(args, predictor, files, explainer) == 0:
        print(f"mura predict: --dicom-out: no DICOM result written to {args.dicom_out}", file=sys.stderr)
        return 2
    return 0


def _write_dicom_results(args: argparse.Namespace, predictor: Any, files: list[Path], explainer: Any) -> int:
    """One SR + Secondary Captures per study (DICOM: by StudyInstanceUID; other files: by folder);
    returns how many objects were written (the lines above say why a study got none)."""
    from mura.pacs.results import StudyIdentity
    from mura.pacs.study import group_studies, study_results

    identity = None
    if args.patient_id:
        identity = StudyIdentity(
            args.patient_id, args.patient_name, args.study_uid, accession_number=args.accession_number
        )
    if explainer is None:
        from mura.inference.gradcam import GradCamExplainer

        explainer = GradCamExplainer.from_predictor(predictor)
    total = 0
    for paths in group_studies(files, one_non_dicom_study=args.study_uid is not None):
        try:
            study = study_results(
                predictor, paths, explainer=explainer, identity=identity, body_part=args.body_part
            )
        except MuraError as exc:
            print(f"mura predict: no DICOM results: {exc}", file=sys.stderr)
            continue
        if study.note:
            print(f"mura predict: {study.prediction.path}: {study.note}", file=sys.stderr)
            continue
        for path, reason in study.skipped:
            print(f"mura predict: DICOM results leave out {path}: {reason}", file=sys.stderr)
        written = study.write(args.dicom_out)
        total += len(written)
        print(
            f"mura predict: {study.prediction.path}: wrote {len(written)} DICOM object(s) (1 SR, "
            f"{len(study.captures)} Secondary Capture(s)) to {args.dicom_out}",
            file=sys.stderr,
        )
    return total
