"""The two task heads every model shares: body part (one class per part of the model's vocabulary,
`mura.constants.BODY_PARTS[:num_body_parts]`) and fracture (2-way, body-part aware).

The fracture head sees the image features concatenated with a learned embedding of the body part
(spec section 3). Where the body part is unknown (index -1, e.g. external data without labels):
- models with an unknown-part embedding (`add_unknown_part`, every model built since) embed the
  body-part head's argmax only when its top probability reaches `body_part_floor` (fitted on held-out
  films and stored in the checkpoint), else the learned "unknown" vector: a bad guess is never fed.
  In training mode an unknown part is always the unknown vector (training drops given parts to
  unknown for a share of films so that vector learns to stand for "any part").
- older models (no such vector) embed the argmax, however unsure, as they were trained to.
The choice is made element-wise with `torch.where`, so the graph has no data-dependent Python
branches and exports to ONNX (the floor is a buffer, a constant of the graph).

Hidden sizes the spec leaves open are chosen here and listed per model in `SPEC_HEADS`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from mura.constants import NUM_BODY_PARTS
from mura.errors import MuraError
from mura.outputs import ModelOutput


def mlp(
    in_dim: int, hidden: tuple[int, ...], out_dim: int, *, dropout: float, batch_norm: bool
) -> nn.Sequential:
    """Linear -> [BatchNorm] -> ReLU -> Dropout per hidden size, then a final Linear to `out_dim`."""
    layers: list[nn.Module] = []
    width = in_dim
    for size in hidden:
        layers.append(nn.Linear(width, size))
        if batch_norm:
            layers.append(nn.BatchNorm1d(size))
        layers += [nn.ReLU(inplace=True), nn.Dropout(dropout)]
        width = size
    layers.append(nn.Linear(width, out_dim))
    return nn.Sequential(*layers)


@dataclass(frozen=True)
class HeadSpec:
    """Hidden sizes of the two heads for one architecture (what the spec fixes, and what we chose)."""

    fracture_hidden: tuple[int, ...]
    fracture_batch_norm: bool
    body_part_hidden: tuple[int, ...]


# resnet50: spec fixes 2080 in, "FC + BN + ReLU + dropout blocks", body-part head FC+ReLU+dropout+linear(7);
#   we choose 2080 -> 512 -> 128 -> 2 and 2048 -> 256 -> 7.
# densenet169: spec fixes three FC layers with BN/ReLU/dropout on 1696 and 1664 -> 128 -> 7;
#   we choose 1696 -> 512 -> 128 -> 2 (three Linear layers).
# efficientnet_b0: spec fixes 1312 in, three FC layers with ReLU + dropout, last Linear(256 -> 2), no BN;
#   we choose 1312 -> 512 -> 256 -> 2 and a body-part head 1280 -> 128 -> 7 like densenet169's.
# generic (any other timm backbone): F+32 -> 512 -> 256 -> 2 with BN (keeps unnormalised features of
#   unfamiliar backbones well scaled) and F -> 128 -> 7.
SPEC_HEADS: dict[str, HeadSpec] = {
    "resnet50": HeadSpec((512, 128), True, (256,)),
    "densenet169": HeadSpec((512, 128), True, (128,)),
    "efficientnet_b0": HeadSpec((512, 256), False, (128,)),
    "generic": HeadSpec((512, 256), True, (128,)),
}


class MultiTaskHeads(nn.Module):
    """Body-part head on the features; fracture head on concat(features, body-part embedding).

    `body_part_head=None` builds the spec's single-output form: body-part logits are all zero (a uniform
    distribution, i.e. no opinion) and every image needs a known body part; `has_body_part_head` tells
    callers (the predictor refuses "predicted" mode for such models), and eager calls with -1 raise.
    `body_part_floor` is not in the state dict: the checkpoint's metadata holds it (`mura.checkpoint`).
    """

    def __init__(
        self,
        feature_dim: int,
        fracture_head: nn.Module,
        body_part_head: nn.Module | None,
        *,
        embed_dim: int = 32,
        num_body_parts: int = NUM_BODY_PARTS,
    ) -> None:
        super().__init__()
        self.feature_dim = feature_dim
        self.num_body_parts = num_body_parts
        self.embedding = nn.Embedding(num_body_parts, embed_dim)
        self.body_part_head = body_part_head
        self.fracture_head = fracture_head
        self.unknown_part: nn.Parameter | None = None
        self.register_buffer("body_part_floor", torch.zeros(()), persistent=False)

    @property
    def has_body_part_head(self) -> bool:
        return self.body_part_head is not None

    @property
    def has_unknown_part(self) -> bool:
        return self.unknown_part is not None

    def add_unknown_part(self) -> None:
        """Give the model a learned "unknown part" embedding (initialised like the part embeddings)."""
        self.unknown_part = nn.Parameter(torch.randn(1, self.embedding.embedding_dim))

    def set_body_part_floor(self, floor: float) -> None:
        """The top body-part probability below which a predicted part is not fed (models with
        `has_unknown_part` only; 0 feeds every guess)."""
        if not 0.0 <= floor <= 1.0:
            raise MuraError(f"body_part_floor={floor} is not a probability; give a value in 0..1")
        self.body_part_floor.fill_(float(floor))

    def body_part_logits(self, features: torch.Tensor) -> torch.Tensor:
        if self.body_part_head is None:
            return features.new_zeros(features.shape[0], self.num_body_parts)
        return self.body_part_head(features)

    def forward(self, features: torch.Tensor, body_part: torch.Tensor) -> ModelOutput:
        """Pooled features [B, feature_dim] and body parts [B] (-1 = predict it) -> both logits."""
        body_part_logits = self.body_part_logits(features)
        if self.body_part_head is None and not _tracing() and bool((body_part < 0).any()):
            raise MuraError(
                "this model has no body-part head (body_part_head=False): every image needs a known "
                "body part, got -1 (unknown)"
            )
        embedded = self.embed_parts(body_part, body_part_logits).to(features.dtype)
        fracture_logits = self.fracture_head(torch.cat([features, embedded], dim=1))
        return ModelOutput(fracture_logits=fracture_logits, body_part_logits=body_part_logits)

    def embed_parts(self, body_part: torch.Tensor, body_part_logits: torch.Tensor) -> torch.Tensor:
        """[B, embed_dim]: each given part's embedding; for -1 the predicted part's (see the module
        docstring for when) or the unknown vector."""
        # argmax carries no gradient, so the predicted part is effectively detached.
        predicted = body_part_logits.argmax(dim=1)
        known = body_part >= 0
        embedded = self.embedding(torch.where(known, body_part, predicted))
        if self.unknown_part is None:
            return embedded
        if self.training:
            trusted = known
        else:
            top = torch.softmax(body_part_logits.float(), dim=1).amax(dim=1)
            trusted = known | (top >= self.body_part_floor)
        unknown = self.unknown_part.to(embedded.dtype).expand_as(embedded)
        return torch.where(trusted.unsqueeze(1), embedded, unknown)


def _tracing() -> bool:
    """True while exporting/compiling, where the eager-only input check must not run."""
    return bool(torch.jit.is_tracing() or torch.compiler.is_compiling() or torch.onnx.is_in_onnx_export())


def build_heads(
    spec_name: str,
    feature_dim: int,
    *,
    embed_dim: int,
    dropout: float,
    body_part_head: bool,
    num_body_parts: int,
) -> MultiTaskHeads:
    """The heads of `spec_name` (a key of SPEC_HEADS) on `feature_dim`-wide backbone features."""
    spec = SPEC_HEADS[spec_name]
    fracture = mlp(
        feature_dim + embed_dim, spec.fracture_hidden, 2, dropout=dropout, batch_norm=spec.fracture_batch_norm
    )
    body = (
        mlp(feature_dim, spec.body_part_hidden, num_body_parts, dropout=dropout, batch_norm=False)
        if body_part_head
        else None
    )
    return MultiTaskHeads(feature_dim, fracture, body, embed_dim=embed_dim, num_body_parts=num_body_parts)
