"""The body parts a run's data covered, recorded in its checkpoints as `scope_parts`.

The scope gate (`mura.inference.scope`) refuses a DICOM whose header names a part outside them, so
they say what the films showed, in the gate's names (`mura.inference.scope_parts`): an index's
`body_part` (MURA's seven parts) as it is, and FracAtlas's region flags (the index's `region`
column, e.g. `leg+hip`) as the parts those films show (FracAtlas's "hand" films show hand, fingers,
wrist, forearm or elbow; "leg" knee, lower leg, ankle, foot and the femur above the knee; "hip" an AP
pelvis; "shoulder" the shoulder girdle, clavicle and humerus). Data naming no part at all records
MURA's seven, the vocabulary of the model's body-part head.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from mura.constants import MURA_BODY_PARTS

FRACATLAS_REGION_PARTS: dict[str, tuple[str, ...]] = {
    "hand": ("HAND", "FINGER", "WRIST", "FOREARM", "ELBOW"),
    "leg": ("LEG", "KNEE", "ANKLE", "FOOT", "FEMUR"),
    "hip": ("HIP", "PELVIS", "FEMUR"),
    "shoulder": ("SHOULDER", "CLAVICLE", "HUMERUS"),
}


def trained_parts(index: pd.DataFrame, splits: Sequence[str]) -> tuple[tuple[str, ...], str]:
    """(scope parts, where they came from) for the index rows of `splits` (a run's train and val)."""
    rows = index[index["split"].isin(list(splits))]
    named = {str(p).upper() for p in rows["body_part"].dropna() if str(p).strip()}
    if "region" in rows:
        for regions in rows["region"].dropna().astype(str):
            for region in filter(None, regions.split("+")):
                named.update(FRACATLAS_REGION_PARTS.get(region.strip().lower(), ()))
    where = f"{', '.join(splits)} split(s) of the training index ({len(rows)} images)"
    if not named:
        return MURA_BODY_PARTS, f"{where} name no body part: MURA's seven parts assumed"
    return tuple(sorted(named)), f"body parts named by the {where}"
