"""Which folders a report may write into: a new or empty one, or one an earlier report marked as its own.

Why: a report writes fixed names (report.html, metrics.json, ...), so writing into any folder would
replace a user's own report.html without a word. Like `mura prepare` (`.mura-cache`), a report claims
its folder with a marker file, written before anything else; a non-empty folder without it is refused.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from mura.atomic import write_text
from mura.errors import MuraError

REPORT_MARKER = ".mura-report"
NOT_ASSESSED_FILE = "not_assessed.csv"  # the inputs the scope gate refused, listed apart
REPORT_FILES = ("metrics.json", "predictions.csv", "report.md", "report.html")
SCORER_FILES = "mura_scorer*.csv"  # one per operating point
PLOTS_FOLDER = "plots"


def check_report_folder(out_dir: str | Path) -> Path:
    """The folder, if a report may be written there (nothing is written); MuraError naming what is in
    the way otherwise. Called before the work, so a refused folder costs no prediction."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise MuraError(f"{out}: is a file, not a folder; choose a folder for the report")
    if out.is_dir() and not (out / REPORT_MARKER).is_file():
        foreign = sorted(entry.name for entry in out.iterdir())
        if foreign:
            shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
            raise MuraError(
                f"{out}: holds files that no mura report wrote ({shown}); choose a new or empty folder "
                "for the report"
            )
    return out


def claim_report_folder(out_dir: str | Path) -> Path:
    """Check the folder, create it and mark it as a report's (so the next report may replace this one)."""
    out = check_report_folder(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if not (out / REPORT_MARKER).is_file():
        write_text(out / REPORT_MARKER, "a report written by mura, which may replace it\n")
    return out


def remove_report(out_dir: str | Path) -> None:
    """Remove the files a report writes (and its marker, and the list of inputs it left out of scope)
    from a folder the caller owns, e.g. a `mura cv` folder's oof/ whose results are being discarded;
    anything else there stays."""
    out = Path(out_dir)
    if not out.is_dir():
        return
    names = (*REPORT_FILES, NOT_ASSESSED_FILE)
    for path in [*(out / name for name in names), *out.glob(SCORER_FILES), out / REPORT_MARKER]:
        path.unlink(missing_ok=True)
    shutil.rmtree(out / PLOTS_FOLDER, ignore_errors=True)
    if not any(out.iterdir()):
        out.rmdir()
