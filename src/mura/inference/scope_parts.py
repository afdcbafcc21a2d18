"""The body-part vocabulary of the scope gate: the words a DICOM header uses, mapped to one name per part.

The names are those a checkpoint's `scope_parts` holds (MURA's seven parts, plus what other training
data covered: FracAtlas's leg films are KNEE, ANKLE, FOOT, LEG, FEMUR; see `mura.training.scope`), so a
header's part and a model's scope compare by name. Words follow DICOM's BodyPartExamined defined terms
(PS3.16 Annex L) and what study descriptions say ("XR KNEE 2V RT", "C-SPINE", "TIB FIB"). Only whole
words count, and a text may name several parts ("WRIST AND HAND"). Words that also name a piece of a
limb are left out: HEAD (radial head), NECK (femoral neck), ABD (abduction view).
"""

from __future__ import annotations

import re

# name -> the words that mean it (upper case, whole words after splitting on anything but letters)
PART_WORDS: dict[str, tuple[str, ...]] = {
    # upper limb (MURA's seven parts first)
    "ELBOW": ("ELBOW", "ELBOWS", "OLECRANON"),
    "FINGER": ("FINGER", "FINGERS", "DIGIT", "DIGITS", "THUMB", "THUMBS", "PHALANX", "PHALANGES"),
    "FOREARM": ("FOREARM", "FOREARMS", "RADIUS", "ULNA"),
    "HAND": ("HAND", "HANDS", "METACARPAL", "METACARPALS"),
    "HUMERUS": ("HUMERUS", "HUMERI"),
    "SHOULDER": ("SHOULDER", "SHOULDERS", "SCAPULA", "GLENOHUMERAL", "ACJOINT"),
    "WRIST": ("WRIST", "WRISTS", "CARPUS", "CARPAL", "SCAPHOID"),
    "CLAVICLE": ("CLAVICLE", "CLAVICLES"),
    # lower limb
    "HIP": ("HIP", "HIPS"),
    "PELVIS": ("PELVIS", "PELVIC", "SACROILIAC"),
    "FEMUR": ("FEMUR", "FEMORA", "THIGH", "THIGHS"),
    "KNEE": ("KNEE", "KNEES", "PATELLA", "PATELLAE"),
    "LEG": ("LEG", "LEGS", "TIBIA", "FIBULA", "TIB"),
    "ANKLE": ("ANKLE", "ANKLES"),
    "FOOT": ("FOOT", "FEET", "TOE", "TOES", "HEEL", "CALCANEUS", "METATARSAL", "METATARSALS"),
    # everything else a radiograph may show
    "CHEST": ("CHEST", "THORAX", "LUNG", "LUNGS", "RIB", "RIBS", "STERNUM", "CXR"),
    "SPINE": ("SPINE", "CSPINE", "TSPINE", "LSPINE", "SSPINE", "VERTEBRA", "SACRUM", "COCCYX"),
    "SKULL": ("SKULL", "BRAIN", "FACIAL", "SINUS", "SINUSES", "ORBIT", "ORBITS", "MANDIBLE", "JAW"),
    "ABDOMEN": ("ABDOMEN", "ABDOMINAL", "KUB", "BOWEL"),
    "BREAST": ("BREAST", "BREASTS", "MAMMO"),
    "TEETH": ("TEETH", "TOOTH", "DENTAL"),
}
# Two-word phrases, read before single words ("LOWER LEG" is a leg, not an unknown "LOWER")
PART_PHRASES: dict[str, str] = {"UPPER ARM": "HUMERUS", "LOWER ARM": "FOREARM", "LOWER LEG": "LEG"}
WORD_PART: dict[str, str] = {word: name for name, words in PART_WORDS.items() for word in words}


def named_parts(text: str | None) -> frozenset[str]:
    """The part names a free text names (`"XR WRIST AND HAND"` -> WRIST, HAND); empty when none."""
    if not text:
        return frozenset()
    upper = re.sub(r"[^A-Z]+", " ", str(text).upper())
    found = {name for phrase, name in PART_PHRASES.items() if f" {phrase} " in f" {upper} "}
    found |= {WORD_PART[word] for word in upper.split() if word in WORD_PART}
    return frozenset(found)
