"""Symmetric InfoNCE: symmetry, the log N value at identical embeddings, and that it trains."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from mmedrag.training.objectives import LogitScale, info_nce, positive_matrix


def _unit(n: int, d: int, seed: int) -> torch.Tensor:
    return F.normalize(torch.randn(n, d, generator=torch.Generator().manual_seed(seed)), dim=-1)


def test_loss_is_symmetric_in_images_and_texts() -> None:
    a, b = _unit(6, 8, 0), _unit(6, 8, 1)
    assert float(info_nce(a, b, 10.0)) == pytest.approx(float(info_nce(b, a, 10.0)), abs=1e-6)


def test_identical_embeddings_give_log_n() -> None:
    same = F.normalize(torch.ones(7, 5), dim=-1)
    assert float(info_nce(same, same, 14.3)) == pytest.approx(math.log(7), abs=1e-5)


def test_perfect_alignment_beats_shuffled_pairs() -> None:
    a = _unit(8, 16, 2)
    assert float(info_nce(a, a, 20.0)) < float(info_nce(a, a[torch.randperm(8)], 20.0))


def test_repeated_captions_are_positives_of_each_other() -> None:
    pos = positive_matrix(["x", "x", "y"], ["c1", "c1", "c2"], group_weight=0.5)
    assert pos.tolist() == [[1, 1, 0], [1, 1, 0], [0, 0, 1]]
    pos = positive_matrix(["x", "z", "y"], ["c1", "c1", "c2"], group_weight=0.5)
    assert pos.tolist() == [[1, 0.5, 0], [0.5, 1, 0], [0, 0, 1]]
    # two images sharing one caption: putting the mass on both duplicates is optimal
    txt = _unit(3, 4, 3)
    img = txt.clone()
    multi = info_nce(img, txt, 30.0, positive_matrix(["x", "x", "y"]))
    assert torch.isfinite(multi)


def test_loss_falls_during_a_few_steps_with_learnable_temperature() -> None:
    torch.manual_seed(0)
    texts = _unit(16, 12, 4)
    images = torch.randn(16, 20)
    proj = torch.nn.Linear(20, 12)
    scale = LogitScale()
    opt = torch.optim.Adam([*proj.parameters(), *scale.parameters()], lr=0.05)
    losses = []
    for _ in range(30):
        loss = info_nce(F.normalize(proj(images), dim=-1), texts, scale())
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    assert scale.log_scale.item() != pytest.approx(math.log(1 / 0.07))
