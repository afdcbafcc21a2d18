"""Names shared by every part of the toolkit: body parts, splits and index columns."""

BODY_PARTS: tuple[str, ...] = ("ELBOW", "FINGER", "FOREARM", "HAND", "HUMERUS", "SHOULDER", "WRIST")
BODY_PART_INDEX: dict[str, int] = {name: i for i, name in enumerate(BODY_PARTS)}
UNKNOWN_BODY_PART = -1
NUM_BODY_PARTS = len(BODY_PARTS)

# Label 1 is the positive class everywhere: abnormal (MURA) / fractured (external data sets).
FRACTURE_CLASSES: tuple[str, ...] = ("normal", "abnormal")

# Splits of the index. MURA's own `valid` folder is our `test`; MURA `train` is split into train/val.
SPLITS: tuple[str, ...] = ("train", "val", "test")

# Columns every index has; sources may add more (view flags, hardware, ...).
INDEX_COLUMNS: tuple[str, ...] = ("path", "split", "body_part", "patient_id", "study_id", "label", "view")


def body_part_index(name: str | None) -> int:
    """Map a body-part name (any case, with or without MURA's `XR_` prefix) to 0..6, or -1."""
    if not name or not isinstance(name, str):
        return UNKNOWN_BODY_PART
    key = name.strip().upper().removeprefix("XR_")
    return BODY_PART_INDEX.get(key, UNKNOWN_BODY_PART)
