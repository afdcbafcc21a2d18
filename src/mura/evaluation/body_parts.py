"""How well the body-part head names a film, in the model's own vocabulary, with its unsure answers apart.

A model knows the parts its head was trained on (`body_parts`, a prefix of `mura.constants.BODY_PARTS`:
a MURA model seven, a FracAtlas one nine) and reports `UNKNOWN` when its top probability is below the
confidence floor stored in its checkpoint (`mura.training.part_floor`). Scoring it on all nine parts or
counting an UNKNOWN as a wrong name would misstate both: so the accuracy is over the films it named,
the unsure share is stated beside it, and the confusion matrix has a column "unknown (unsure)". Films
whose true part is outside the vocabulary (a hip film for a MURA model) cannot be named right; they are
counted apart, with how many of them the model was unsure of (the right answer for such a film).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import confusion_matrix

from mura.constants import BODY_PARTS, UNSURE_BODY_PART, body_part_index
from mura.errors import MuraError
from mura.evaluation.metrics import classification_report

UNSURE_COLUMN = "unknown (unsure)"


def body_part_codes(values: pd.Series) -> np.ndarray:
    """Body-part names (or already BODY_PARTS codes) -> int codes; unknown, unsure and empty -> -1."""
    if pd.api.types.is_numeric_dtype(values):
        return values.fillna(-1).astype(int).to_numpy()
    return np.array([body_part_index(v) for v in values.fillna("")], dtype=int)


def body_part_answers(frame: pd.DataFrame, body_parts: Sequence[str], floor: float | None) -> list[str]:
    """The part a prediction reports for each row: the head's argmax (`body_part_pred`, names or codes)
    where its probability (`body_part_prob`) reaches `floor`, `UNKNOWN` below it, "" where the model
    has no body-part head. `floor` None (a model without one) trusts every argmax; so does a table
    without probabilities."""
    if "body_part_pred" not in frame:
        return [""] * len(frame)
    pred = frame["body_part_pred"]
    unsure = pred.astype(str).str.strip().str.upper() == UNSURE_BODY_PART
    names = np.array([BODY_PARTS[c] if c >= 0 else "" for c in body_part_codes(pred)], dtype=object)
    names[unsure.to_numpy()] = UNSURE_BODY_PART
    outside = sorted(set(names) - {*body_parts, UNSURE_BODY_PART, ""})
    if outside:
        raise MuraError(
            f"predictions name body part(s) {', '.join(outside)} outside the model's body_parts "
            f"({', '.join(body_parts)}); pass the body_parts of the model that made them"
        )
    if floor is not None and "body_part_prob" in frame:
        below = pd.to_numeric(frame["body_part_prob"], errors="coerce").fillna(0.0).to_numpy() < floor
        names[below & (names != "")] = UNSURE_BODY_PART
    return names.tolist()


def body_part_metrics(
    truth: Sequence[str], answers: Sequence[str], body_parts: Sequence[str]
) -> dict[str, Any]:
    """Accuracy over the films the head named, the unsure share, per-part precision/recall/F1 and the
    confusion matrix (rows: true parts of the vocabulary; columns: named parts + "unknown (unsure)"),
    on films whose true part is in `body_parts`; films of a part outside it are counted apart."""
    parts = list(body_parts)
    truth_names = pd.Series(list(truth), dtype=object).fillna("").astype(str).str.strip().str.upper()
    said = np.asarray(list(answers), dtype=object)
    known = truth_names.isin(parts).to_numpy()
    outside = ((truth_names != "") & ~truth_names.isin([*parts, UNSURE_BODY_PART])).to_numpy()
    outside_unsure = int((said[outside] == UNSURE_BODY_PART).sum())
    result: dict[str, Any] = dict(
        body_parts=parts,
        n=int(known.sum()),
        n_named=0,
        n_unsure=0,
        unsure_share=None,
        accuracy=None,
        report=None,
        confusion_matrix=None,
        confusion_rows=parts,
        confusion_columns=[*parts, UNSURE_COLUMN],
        macro_f1=None,
        outside_vocabulary=dict(n=int(outside.sum()), unsure=outside_unsure),
        undefined={},
    )
    if not (said != "").any():
        result["undefined"]["body_part"] = "the model has no body-part predictions"
        return result
    if not known.any():
        result["undefined"]["body_part"] = (
            "no image has a body part of the model's vocabulary (external data): nothing to compare"
        )
        return result
    codes = {name: i for i, name in enumerate(parts)}
    y_true = np.array([codes[t] for t in truth_names[known]], dtype=int)
    y_said = np.array([codes.get(a, len(parts)) for a in said[known]], dtype=int)  # unsure: last column
    named = y_said < len(parts)
    matrix = confusion_matrix(y_true, y_said, labels=list(range(len(parts) + 1)))[: len(parts)]
    result.update(
        n_named=int(named.sum()),
        n_unsure=int((~named).sum()),
        unsure_share=float((~named).mean()),
        confusion_matrix=matrix.astype(int).tolist(),
    )
    if not named.any():
        result["undefined"]["body_part"] = "the model was unsure of every film: it named none"
        return result
    report = classification_report(y_true[named], y_said[named], labels=range(len(parts)), names=parts)
    result["undefined"].update(report.pop("undefined"))
    result.update(accuracy=report["accuracy"], report=report, macro_f1=report["macro_avg"]["f1"])
    return result


def body_part_text(metrics: dict[str, Any], floor: float | None) -> str:
    """The body-part section's lead sentence: accuracy over the films named, the unsure share, the floor
    and the films of parts outside the vocabulary."""
    if metrics["accuracy"] is None and not metrics["n_named"]:
        why = "; ".join(metrics["undefined"].values()) or "undefined"
        return f"Body-part accuracy undefined ({why})."
    rule = f"below its confidence floor {floor:.3f}" if floor is not None else "(no floor: every guess named)"
    text = (
        f"Accuracy {metrics['accuracy']:.4f} on the {metrics['n_named']} films the model named, of "
        f"{metrics['n']} whose part is one of its {len(metrics['body_parts'])} "
        f"({', '.join(p.title() for p in metrics['body_parts'])}); unsure (UNKNOWN, {rule}) on "
        f"{metrics['n_unsure']} ({metrics['unsure_share']:.1%})."
    )
    macro = metrics["macro_f1"]
    text += f" Macro F1 over the named films: {'undefined' if macro is None else f'{macro:.4f}'}."
    outside = metrics["outside_vocabulary"]
    if outside["n"]:
        text += (
            f" {outside['n']} films show a part the model was not trained on; it was unsure of "
            f"{outside['unsure']} of them (the right answer) and named the others."
        )
    return text
