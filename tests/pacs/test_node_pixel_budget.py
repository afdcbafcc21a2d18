"""`mura dicom-node` receiving a decompression bomb by C-STORE (dcmtk's storescu): the study is refused
from the header, the node's memory never holds the frame, and it keeps serving.

The probe that found it: a 1 KB RLE file declaring 40,000 x 40,000 took the node from 1.29 to 2.86 GB,
held afterwards. No PACS is needed: a study with no usable view has no results to deliver.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.data.oversized import process_peak_mib, rle_bomb
from tests.pacs.test_node import (
    MISSING_TOOLS,
    NODE_AET,
    SENDER_AET,
    STORESCU,
    echoscu,
    free_port,
    launch_node,
    wait_for,
)

pytestmark = [pytest.mark.slow, pytest.mark.skipif(STORESCU is None, reason=MISSING_TOOLS)]

# The node with torch and a tiny model peaks near 1.3 GiB before any study; the bomb's frame alone is
# 1,526 MiB more.
NODE_PEAK_MIB = 2000


def test_node_refuses_an_rle_bomb_from_its_header(tiny_checkpoint: Path, tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.dcm"
    bomb.write_bytes(rle_bomb())
    node = launch_node(
        tmp_path / "node", tiny_checkpoint, f"NOBODY@127.0.0.1:{free_port()}", "--allow", SENDER_AET
    )
    try:
        command = [
            STORESCU,
            "-xr",
            "-aet",
            SENDER_AET,
            "-aec",
            NODE_AET,
            "127.0.0.1",
            str(node.port),
            str(bomb),
        ]
        sent = subprocess.run(command, capture_output=True, text=True, timeout=60)
        assert sent.returncode == 0, sent.stderr
        log = wait_for(lambda: "no results" in node.text() and node.text(), 120, "the study to be refused")
        peak = process_peak_mib(node.process.pid)
        assert peak < NODE_PEAK_MIB, f"the node peaked at {peak} MiB"
        assert "header declares 40000x40000 = 1,600,000,000 pixels" in log, log[-3000:]
        assert echoscu(node.port, SENDER_AET).returncode == 0  # still serving
    finally:
        node.kill()
