"""Names shared by every part of the toolkit: body parts, splits and index columns.

The body-part vocabulary only grows at its end: MURA's seven parts keep indices 0..6 and the regions
FracAtlas labels that MURA lacks follow (HIP, LEG), so a checkpoint whose head has the first N parts
(its `body_parts`) means the same indices today. A model's own vocabulary is `BODY_PARTS[:N]`.
"""

MURA_BODY_PARTS: tuple[str, ...] = ("ELBOW", "FINGER", "FOREARM", "HAND", "HUMERUS", "SHOULDER", "WRIST")
BODY_PARTS: tuple[str, ...] = (*MURA_BODY_PARTS, "HIP", "LEG")
BODY_PART_INDEX: dict[str, int] = {name: i for i, name in enumerate(BODY_PARTS)}
UNKNOWN_BODY_PART = -1
NUM_BODY_PARTS = len(BODY_PARTS)
# The body part an answer reports when none was given and the body-part head is below its confidence
# floor: "not one of the trained parts, or not recognised confidently".
UNSURE_BODY_PART = "UNKNOWN"

# Label 1 is the positive class everywhere: abnormal (MURA) / fractured (external data sets).
FRACTURE_CLASSES: tuple[str, ...] = ("normal", "abnormal")

# Splits of the index. MURA's own `valid` folder is our `test`; MURA `train` is split into train/val.
SPLITS: tuple[str, ...] = ("train", "val", "test")

# Columns every index has; sources may add more (view flags, hardware, ...).
INDEX_COLUMNS: tuple[str, ...] = ("path", "split", "body_part", "patient_id", "study_id", "label", "view")


def given_body_part(name: str | None) -> int:
    """A body part a user gave: its BODY_PARTS index, -1 for none given; any other name is an error."""
    if not name or not name.strip():
        return UNKNOWN_BODY_PART
    index = body_part_index(name)
    if index == UNKNOWN_BODY_PART:
        raise ValueError(f"unknown body part {name.strip()[:40]!r} (one of {', '.join(BODY_PARTS)})")
    return index


def body_part_index(name: str | None) -> int:
    """Map a body-part name (any case, with or without MURA's `XR_` prefix) to its BODY_PARTS index,
    or -1 (also for `UNSURE_BODY_PART`: a part nobody knows)."""
    if not name or not isinstance(name, str):
        return UNKNOWN_BODY_PART
    key = name.strip().upper().removeprefix("XR_")
    return BODY_PART_INDEX.get(key, UNKNOWN_BODY_PART)
