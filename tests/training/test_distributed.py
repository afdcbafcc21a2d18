"""DDP on CPU (gloo, 2 processes): identical weights on every rank, each validation image counted once."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mura.training.distributed import DistInfo, ShardSampler, gather_by_row, gather_columns_by_row


def test_shard_sampler_covers_every_index_once_without_padding() -> None:
    shards = [list(ShardSampler(11, rank, 3)) for rank in range(3)]
    assert sorted(i for s in shards for i in s) == list(range(11))
    assert [len(ShardSampler(11, r, 3)) for r in range(3)] == [4, 4, 3]


def test_gather_by_row_drops_duplicates_and_sorts_single_process() -> None:
    rows, values = gather_by_row(
        torch.tensor([5, 2, 5, 9]), torch.tensor([[1.0], [2.0], [1.0], [3.0]]), DistInfo()
    )
    assert rows.tolist() == [2, 5, 9] and values[:, 0].tolist() == [2.0, 1.0, 3.0]


def test_gather_columns_by_row_returns_each_column_by_name_in_its_shape_and_kind() -> None:
    rows, columns = gather_columns_by_row(
        torch.tensor([7, 3]),
        {"logits": torch.tensor([[0.5, -1.0], [2.0, 0.25]]), "labels": torch.tensor([1, 0])},
        DistInfo(),
    )
    assert rows.tolist() == [3, 7]
    assert (
        columns["logits"].tolist() == [[2.0, 0.25], [0.5, -1.0]] and columns["logits"].dtype == torch.float64
    )
    assert columns["labels"].tolist() == [0, 1] and columns["labels"].dtype == torch.int64


GATHER_WORKER = """
import json, os, sys
import torch
import torch.distributed as dist
from mura.training.distributed import DistInfo, gather_columns_by_row

dist.init_process_group("gloo")
rank = dist.get_rank()
info = DistInfo(rank=rank, world_size=2)
if rank == 0:  # a shard with images
    columns = {"logits": torch.tensor([[1.0, 2.0], [3.0, 4.0]]), "labels": torch.tensor([1, 0])}
    rows = torch.tensor([0, 1])
else:  # an empty shard: it cannot know the logits' width
    columns = {"logits": torch.empty(0, 0), "labels": torch.empty(0, dtype=torch.int64)}
    rows = torch.empty(0, dtype=torch.int64)
rows, got = gather_columns_by_row(rows, columns, info)
result = {"rows": rows.tolist(), **{name: value.tolist() for name, value in got.items()}}
open(os.path.join(sys.argv[1], f"rank{rank}.json"), "w").write(json.dumps(result))
dist.destroy_process_group()
"""


@pytest.mark.slow
def test_a_rank_with_an_empty_shard_still_gathers_every_column(tmp_path: Path) -> None:
    script = tmp_path / "gather.py"
    script.write_text(GATHER_WORKER)
    _launch(script, str(tmp_path))
    expected = {"rows": [0, 1], "logits": [[1.0, 2.0], [3.0, 4.0]], "labels": [1, 0]}
    for rank in (0, 1):
        assert json.loads((tmp_path / f"rank{rank}.json").read_text()) == expected


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


WORKER = """
import json, os, sys
import torch
from mura.config_loading import config_from_dict
from mura.training.loop import train

torch.set_num_threads(1)
result = train(config_from_dict(json.loads(open(sys.argv[1]).read())))
rank = os.environ["RANK"]
torch.save({"state": result.model.state_dict(), "history": result.history}, f"{sys.argv[2]}/rank{rank}.pt")
"""


def _launch(script: Path, *args: str) -> None:
    """Launch 2 ranks exactly as users do (torchrun sets RANK/WORLD_SIZE/MASTER_*), gloo on CPU."""
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        str(_free_port()),
        str(script),
        *args,
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]


def _torchrun(cfg, tmp_path: Path) -> None:
    script, cfg_json = tmp_path / "worker.py", tmp_path / "cfg.json"
    script.write_text(WORKER)
    cfg_json.write_text(json.dumps(cfg.to_dict()))
    _launch(script, str(cfg_json), str(tmp_path))


@pytest.mark.slow
def test_two_process_gloo_run_keeps_ranks_identical_and_counts_validation_once(
    make_cfg, tmp_path: Path
) -> None:
    cfg = make_cfg("ddp", **{"train.epochs": 2, "data.max_val_images": 29, "train.batch_size": 8})
    _torchrun(cfg, tmp_path)
    rank0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    rank1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    for name, tensor in rank0["state"].items():
        torch.testing.assert_close(tensor, rank1["state"][name], rtol=0, atol=0, msg=name)
    for h0, h1 in zip(rank0["history"], rank1["history"], strict=True):
        assert h0["val_images"] == 29  # odd: a padded sampler would have counted 30
        assert h0["val_loss"] == h1["val_loss"] and h0["val_auc"] == h1["val_auc"]

    # The gathered validation metrics equal a single-process evaluation of the saved weights.
    from mura.checkpoint import load_model
    from mura.data.cache import open_cache
    from mura.data.dataset import CachedImageDataset, make_loader
    from mura.training.losses import MultiTaskLoss
    from mura.training.steps import ImageInput, autocast_for, predict, validation_metrics

    model, checkpoint = load_model(Path(cfg.out) / "last.pt")
    assert torch.equal(
        checkpoint.model_state["heads.embedding.weight"], rank0["state"]["heads.embedding.weight"]
    )
    val = CachedImageDataset(open_cache(cfg.data.cache), "val", limit=29)
    loader = make_loader(val, 8, ShardSampler(len(val)), torch.Generator())
    batch_input = ImageInput(
        checkpoint.meta.preprocessing,
        "none",
        0.0,
        torch.device("cpu"),
        False,
        torch.Generator(),
    )
    arrays = predict(model, loader, batch_input, DistInfo(), autocast_for(torch.device("cpu"), False))
    single = validation_metrics(arrays, MultiTaskLoss())
    assert single["val_loss"] == pytest.approx(rank0["history"][-1]["val_loss"], rel=1e-4)
    assert single["val_auc"] == pytest.approx(rank0["history"][-1]["val_auc"], abs=1e-9)
