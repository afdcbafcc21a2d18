"""The `mura` entry point: one-line errors and the CPU fast-path environment."""

import subprocess
import sys

from mura.cli import main


def test_importing_the_cli_does_not_import_torch() -> None:
    # OMP_WAIT_POLICY and LD_PRELOAD only take effect if set before torch (and its OpenMP) loads.
    code = "import sys, mura.cli; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_a_model_command_prefers_passive_openmp(tmp_path) -> None:
    code = (
        "import os, sys; from mura.cli import main; os.environ.pop('OMP_WAIT_POLICY', None); "
        f"main(['predict', {str(tmp_path / 'missing.png')!r}, '--checkpoint', {str(tmp_path / 'x.pt')!r}]); "
        "print(os.environ.get('OMP_WAIT_POLICY'))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.stdout.strip().splitlines()[-1] == "PASSIVE"


def test_user_errors_are_one_line_without_traceback(tmp_path, capsys) -> None:
    assert main(["train", "--config", str(tmp_path / "nope.yaml"), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "nope.yaml" in err and "Traceback" not in err
