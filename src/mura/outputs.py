"""What a model returns: `ModelOutput`, read by name everywhere (losses, metrics, members, export, CAM).

A `NamedTuple` rather than a dataclass because every tool between the model and its readers handles
one natively: DDP and `torch.utils._pytree` flatten it, tracing and `torch.compile` keep it, and the
ONNX boundary turns it into the plain outputs named in `ONNX_OUTPUTS`. Fields a model does not compute
are None, so a new output (a fracture map) is one more optional field, not a change of arity.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

# Names of the graph outputs of an exported model, in order; a field that is None is not exported, so a
# model without a map head has the first two only.
ONNX_OUTPUTS: tuple[str, ...] = ("fracture_logits", "body_part_logits", "fracture_map")


class ModelOutput(NamedTuple):
    """One forward pass. Logits are raw (calibration lives in `mura.decision`)."""

    fracture_logits: torch.Tensor  # [B, 2]: normal, fracture/abnormal
    body_part_logits: torch.Tensor  # [B, num_body_parts]; all zero for a model without that head
    features: torch.Tensor | None = None  # [B, F] pooled image features, when asked for
    fracture_map: torch.Tensor | None = None  # [B, 1, h, w] dense fracture evidence, when a head makes it

    def exported_names(self) -> tuple[str, ...]:
        """The `ONNX_OUTPUTS` this output has (not None), in order: the graph's output names."""
        return tuple(name for name in ONNX_OUTPUTS if getattr(self, name) is not None)

    def exported(self) -> tuple[torch.Tensor, ...]:
        """The outputs an ONNX graph carries, in `ONNX_OUTPUTS` order (the fields that are not None)."""
        return tuple(getattr(self, name) for name in self.exported_names())
