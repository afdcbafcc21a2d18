"""What resuming a run needs beyond the weights: optimizer, schedule, early stopping, history and RNG
states; written after every epoch (`training_state`) and read back by `restore`.

It lives in `last.pt` under `training_state` (see `mura.checkpoint`); consumers of a checkpoint never
read it. RNG states become tensors so `torch.load(weights_only=True)` can still open the file.
"""

from __future__ import annotations

import logging
import random
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from mura import checkpoint as ckpt
from mura.errors import MuraError
from mura.training.distributed import unwrap

if TYPE_CHECKING:  # the assembly imports nothing from here; the type is for the signatures only
    from mura.training.assembly import Run

log = logging.getLogger(__name__)


def rng_state(generators: dict[str, torch.Generator]) -> dict[str, Any]:
    """Python, numpy, torch (and CUDA) RNG states plus named generators, all as tensors."""
    version, mt, gauss = random.getstate()
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "python": torch.tensor([version, *mt], dtype=torch.int64),
        "python_gauss": torch.tensor([] if gauss is None else [gauss], dtype=torch.float64),
        "numpy_keys": torch.from_numpy(np_state[1].astype(np.int64)),
        "numpy_pos": torch.tensor([np_state[2], np_state[3]], dtype=torch.int64),
        "numpy_gauss": torch.tensor([np_state[4]], dtype=torch.float64),
        "torch": torch.get_rng_state(),
        "generators": {name: g.get_state() for name, g in generators.items()},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any], generators: dict[str, torch.Generator]) -> None:
    python = state["python"].tolist()
    gauss = state["python_gauss"].tolist()
    random.setstate((int(python[0]), tuple(int(x) for x in python[1:]), gauss[0] if gauss else None))
    pos, has_gauss = state["numpy_pos"].tolist()
    np.random.set_state(
        (
            "MT19937",
            state["numpy_keys"].numpy().astype(np.uint32),
            int(pos),
            int(has_gauss),
            float(state["numpy_gauss"].item()),
        )
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    for name, g in generators.items():
        if name in state.get("generators", {}):
            g.set_state(state["generators"][name])


def training_state(run: Run) -> dict[str, Any]:
    """What `last.pt` stores under `training_state` after an epoch (rank 0 writes it)."""
    return {
        "optimizer": run.optimizer.state_dict(),
        "scheduler": run.schedule.state_dict(),
        "rng": rng_state({"augment": run.augment_gen}),
        "early_stopping": run.early.state_dict(),
        "history": run.history,
    }


def restore(run: Run) -> None:
    """Continue from `last.pt`: weights, optimizer, schedule, early stopping, history, RNG streams."""
    state = ckpt.load_checkpoint(run.last_path)
    if state.meta.config["model"] != run.cfg.to_dict()["model"]:
        raise MuraError(
            f"{run.last_path}: was trained with a different model config; cannot resume with this one"
        )
    if state.training_state is None:
        raise MuraError(f"{run.last_path}: holds no training state to resume from")
    saved = state.training_state
    unwrap(run.model).load_state_dict(state.model_state)
    run.optimizer.load_state_dict(saved["optimizer"])
    run.schedule.load_state_dict(saved["scheduler"])
    run.early.load_state_dict(saved["early_stopping"])
    run.history = list(saved["history"])
    set_rng_state(saved["rng"], {"augment": run.augment_gen})
    run.start_epoch = int(state.meta.epoch) + 1
    log.info("resuming %s after epoch %d", run.run_dir, run.start_epoch - 1)
