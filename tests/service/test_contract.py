"""The OpenAPI schema is the contract: schemathesis sends generated requests to the live server.

`--checks all`: no 5xx, every status and body documented, valid requests accepted (or the documented
415/422 for bytes that are no usable image, see schemathesis.toml), invalid ones rejected. 20 examples
per operation here, to stay within seconds; the same run with 60 is the one to do by hand.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from mura.inference.predictor import Predictor
from mura.service.app import create_app
from mura.service.loading import make_explainer

CONFIG = Path(__file__).with_name("schemathesis.toml")
EXAMPLES = 20


@pytest.mark.parametrize("with_cam", [True, False])
def test_the_openapi_schema_holds_against_generated_requests(
    serve, tiny_checkpoint, tmp_path, with_cam
) -> None:
    predictor = Predictor.from_checkpoints([tiny_checkpoint], device="cpu", runtime="torch")
    explainer = make_explainer(predictor) if with_cam else None
    app = create_app(predictor, explainer=explainer, max_upload_bytes=1 << 20, body_timeout_s=5)
    command = [sys.executable, "-m", "schemathesis.cli", "--config-file", str(CONFIG), "run"]
    options = ["--checks", "all", "--max-examples", str(EXAMPLES), "--seed", "9", "--workers", "1"]
    options += ["--generation-database", "none", "--request-timeout", "10", "--no-color"]
    with serve(app) as url:
        result = subprocess.run(
            [*command, f"{url}/openapi.json", *options],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=tmp_path,  # schemathesis keeps a crash cache in its working directory
        )
    assert result.returncode == 0, result.stdout[-8000:] + result.stderr[-2000:]
    assert "passed" in result.stdout and "failed" not in result.stdout
