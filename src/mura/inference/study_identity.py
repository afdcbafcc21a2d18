"""The study rule's precondition: the views averaged into one study score are of one patient and study.

Why a rule of its own: averaging a wrist of one patient with a wrist of another gives a number that
describes nobody, and nothing after the mean can tell. DICOM views name their patient and study
(PatientID, StudyInstanceUID), so they are compared before anything is predicted; PNG/JPEG views carry
no identity and are allowed beside them (whoever groups such files into a study vouches for them).
`mura predict --study`, `Model.predict_study`, the service's study endpoint and DICOM results
(`mura.pacs.study`) all check here.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from mura.data.dicom.read import read_dataset
from mura.data.images import is_dicom
from mura.errors import ImageDecodeError, MuraError
from mura.inference.files import FileSource, InMemoryFile, source_path

STUDY_ATTRIBUTES = ("PatientID", "StudyInstanceUID")  # what makes views one study, DICOM's own way


def study_attributes(source: FileSource) -> dict[str, str] | None:
    """A DICOM view's PatientID and StudyInstanceUID (read from its header alone); None for a file that is
    not DICOM, or whose header cannot be read (its prediction reports why)."""
    data = source.data if isinstance(source, InMemoryFile) else source
    if not is_dicom(data):
        return None
    try:
        header = read_dataset(data, str(source_path(source)), stop_before_pixels=True)
    except ImageDecodeError:
        return None
    return {name: str(header.get(name, "") or "").strip() for name in STUDY_ATTRIBUTES}


def check_one_study(sources: Sequence[FileSource]) -> None:
    """MuraError when two DICOM views name different patients or studies (checked before any prediction).

    The error names the two files and the attribute that differs, never its values: patient data must
    not reach a log line or a service client. Views that are not DICOM carry no identity and pass.
    """
    first: tuple[Path, dict[str, str]] | None = None
    for source in sources:
        found = study_attributes(source)
        if found is None:
            continue
        if first is None:
            first = (source_path(source), found)
            continue
        differing = [name for name in STUDY_ATTRIBUTES if found[name] != first[1][name]]
        if differing:
            raise MuraError(
                f"{first[0]} and {source_path(source)}: different {' and '.join(differing)}; a study's "
                "views must be of one patient and one study: give each study on its own"
            )
