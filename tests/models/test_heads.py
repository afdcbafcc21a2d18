"""The fracture head is fed a part it was given, a guess the body-part head is sure of, or "unknown"."""

from __future__ import annotations

import torch

from mura.models.heads import build_heads


def heads_with_unknown(floor: float):
    torch.manual_seed(0)
    heads = build_heads("generic", 8, embed_dim=4, dropout=0.0, body_part_head=True, num_body_parts=9)
    heads.add_unknown_part()
    heads.set_body_part_floor(floor)
    return heads.eval()


def test_an_unsure_part_feeds_the_unknown_embedding_and_a_sure_one_its_own() -> None:
    heads = heads_with_unknown(0.6)
    logits = torch.full((3, 9), -4.0)
    logits[0, 3] = 4.0  # sure: HAND at ~0.98
    logits[1, :2] = 0.0  # unsure: two parts at ~0.5 each
    parts = torch.tensor([-1, -1, 5])  # the third is given (SHOULDER), however unsure the head is
    embedded = heads.embed_parts(parts, logits)
    assert torch.equal(embedded[0], heads.embedding.weight[3])
    assert torch.equal(embedded[1], heads.unknown_part[0])
    assert torch.equal(embedded[2], heads.embedding.weight[5])


def test_training_feeds_unknown_for_every_part_not_given() -> None:
    heads = heads_with_unknown(0.0).train()
    logits = torch.zeros(2, 9)
    logits[:, 3] = 10.0
    embedded = heads.embed_parts(torch.tensor([-1, 2]), logits)
    assert torch.equal(embedded[0], heads.unknown_part[0])
    assert torch.equal(embedded[1], heads.embedding.weight[2])


def test_heads_without_the_unknown_embedding_feed_their_argmax_however_unsure() -> None:
    torch.manual_seed(0)
    heads = build_heads("generic", 8, embed_dim=4, dropout=0.0, body_part_head=True, num_body_parts=7).eval()
    logits = torch.zeros(1, 7)
    logits[0, 4] = 0.01
    assert torch.equal(heads.embed_parts(torch.tensor([-1]), logits)[0], heads.embedding.weight[4])
    assert (
        "unknown_part" not in dict(heads.named_parameters()) and "body_part_floor" not in heads.state_dict()
    )
