"""The spool keeps an analysed study's instances for a late view: they join the late instances at the
next claim with the earlier results' record, yield to received instances when the quota is reached,
and expire after the maximum age."""

from __future__ import annotations

import os
import time
from pathlib import Path

from mura.pacs.spool import Spool

STUDY = "1.2.3.4"


def analysed_once(spool: Spool, instances: tuple[str, ...] = ("1.1", "1.2")) -> Path:
    for uid in instances:
        spool.store(STUDY, uid, b"x" * 100)
    claimed = spool.claim(STUDY)
    assert claimed is not None
    spool.keep_analysed(claimed, {"sr_instance_uid": "9.9"})
    return spool.analysed / STUDY


def test_a_late_instance_is_claimed_with_the_kept_ones_and_the_record(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool", quota_bytes=10_000)
    assert sorted(p.name for p in analysed_once(spool).iterdir()) == ["1.1.dcm", "1.2.dcm", "results.json"]
    spool.store(STUDY, "1.3", b"y" * 100)
    spool.store(STUDY, "1.2", b"z" * 100)  # sent again: the new copy wins
    claimed = spool.claim(STUDY)
    assert claimed is not None and spool.merge_analysed(claimed) == {"sr_instance_uid": "9.9"}
    assert [p.name for p in spool.instances(claimed)] == ["1.1.dcm", "1.2.dcm", "1.3.dcm"]
    assert (claimed / "1.2.dcm").read_bytes() == b"z" * 100
    assert not (spool.analysed / STUDY).exists() and spool.received_bytes == 300
    spool.remove(claimed)
    assert spool.received_bytes == 0


def test_kept_studies_yield_to_received_instances_and_expire(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool", quota_bytes=250)
    kept = analysed_once(spool)
    spool.store("5.6", "2.1", b"w" * 100)  # 200 kept + 100 > 250: the kept study is dropped
    assert not kept.exists() and spool.received_bytes == 100
    kept = analysed_once(Spool(tmp_path / "other", quota_bytes=10_000), ("3.1",))
    os.utime(kept, (time.time() - 7200, time.time() - 7200))
    assert Spool(tmp_path / "other", quota_bytes=10_000).expire_analysed(3600) == [kept]
    assert not kept.exists()
