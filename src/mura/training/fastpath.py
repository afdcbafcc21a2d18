"""CPU speed defaults: tcmalloc and thread settings.

Why tcmalloc: glibc's malloc returns the large activation buffers of every training step to the
kernel and page-faults them back in on the next step. Measured on a 2-core machine (timm, batch 32,
224 px), preloading tcmalloc gave 1.3-2.9x more training throughput. An allocator can only be
swapped before the process starts, so heavy CLI commands (`mura train`, ...) call
`ensure_fast_allocator()` first thing: when `libtcmalloc_minimal` is installed (Debian/Ubuntu:
`apt-get install libtcmalloc-minimal4`) and not yet loaded, it re-executes the same command line once
with `LD_PRELOAD` pointing at it. The process id stays the same (`os.execve`), so torchrun and job
schedulers keep tracking it; the marker variable `MURA_TCMALLOC_REEXEC` stops a second re-exec.

Why OMP_WAIT_POLICY=PASSIVE: OpenMP threads spin at every barrier by default. On a machine with more
runnable threads than cores (decode threads beside the model, DataLoader workers, a shared server),
each spin costs a scheduler time slice: measured here under load, one EfficientNet-B0 forward took
2.5-3.5 s from the main thread and 30 ms with passive waiting (2 cores, load 7). Idle, the two agree.
`prefer_passive_openmp()` sets it unless the user did; it must run before torch is imported.

Opt out with `MURA_NO_TCMALLOC=1`; opt in manually with
`LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4 mura train ...`.
Library code and tests never call this: only CLI entry points do.
"""

from __future__ import annotations

import contextlib
import ctypes.util
import logging
import os
import sys
from pathlib import Path

log = logging.getLogger(__name__)

OPT_OUT_ENV = "MURA_NO_TCMALLOC"
MARKER_ENV = "MURA_TCMALLOC_REEXEC"
KNOWN_PATHS = (
    "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4",
    "/usr/lib/aarch64-linux-gnu/libtcmalloc_minimal.so.4",
    "/usr/lib64/libtcmalloc_minimal.so.4",
    "/usr/lib/libtcmalloc_minimal.so.4",
    "/usr/local/lib/libtcmalloc_minimal.so.4",
    "/opt/homebrew/lib/libtcmalloc_minimal.dylib",
)


def find_tcmalloc() -> str | None:
    """Path (or loader name) of libtcmalloc_minimal, or None when it is not installed."""
    for candidate in KNOWN_PATHS:
        if Path(candidate).is_file():
            return candidate
    return ctypes.util.find_library("tcmalloc_minimal")


def tcmalloc_loaded() -> bool:
    """Whether this process already runs with tcmalloc (via LD_PRELOAD or linked in)."""
    try:
        return "tcmalloc" in Path("/proc/self/maps").read_text()
    except OSError:
        return "tcmalloc" in os.environ.get("LD_PRELOAD", "")


def _running_mura_cli() -> bool:
    """Only the `mura` program itself is re-executed (never pytest or a script calling cli.main)."""
    program = Path(sys.argv[0] if sys.argv else "")
    return program.name == "mura" or (program.name == "__main__.py" and program.parent.name == "mura")


def ensure_fast_allocator() -> bool:
    """Re-exec this command once with tcmalloc preloaded where possible; True when tcmalloc is in use.

    Returns (instead of re-executing) on opt-out, when already loaded, after one re-exec attempt,
    on non-Linux systems, and when the library is absent.
    """
    if tcmalloc_loaded():
        return True
    if os.environ.get(OPT_OUT_ENV, "") not in ("", "0") or os.environ.get(MARKER_ENV):
        return False
    if not sys.platform.startswith("linux") or not _running_mura_cli():
        return False
    library = find_tcmalloc()
    if library is None:
        log.info("tcmalloc not found; install libtcmalloc-minimal4 for faster CPU training")
        return False
    env = dict(os.environ)
    env[MARKER_ENV] = "1"
    env["LD_PRELOAD"] = ":".join(p for p in (library, env.get("LD_PRELOAD", "")) if p)
    argv = list(getattr(sys, "orig_argv", [])) or [sys.executable, *sys.argv]
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execve(sys.executable, [sys.executable, *argv[1:]], env)
    except OSError as exc:  # exec failed: carry on with the default allocator
        log.warning("could not re-exec with tcmalloc (%s); continuing without it", exc)
    return False


def prefer_passive_openmp() -> None:
    """Let OpenMP threads sleep instead of spin (see the module docstring); a user's setting wins."""
    if "torch" not in sys.modules:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def configure_threads(threads: int = 0) -> None:
    """Intra-op threads (0 = torch's default, one per core); one inter-op thread avoids oversubscription."""
    import torch

    if threads > 0:
        torch.set_num_threads(threads)
    with contextlib.suppress(RuntimeError):  # already set, or parallel work started: keep what is there
        torch.set_num_interop_threads(1)
