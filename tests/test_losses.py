"""MSE + lambda x BCE; unknown targets leave the MSE, unknown frames leave the BCE."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from iass.training.losses import masked_bce_with_logits, masked_mse, separation_loss


def test_all_known_equals_the_plain_losses():
    torch.manual_seed(0)
    est, tgt = torch.rand(3, 2, 2, 5, 7), torch.rand(3, 2, 2, 5, 7)
    logits, labels = torch.randn(3, 2, 7), (torch.rand(3, 2, 7) > 0.5).float()
    terms = separation_loss(est, tgt, torch.ones(3, 2, dtype=torch.bool), logits, labels, 0.5)
    torch.testing.assert_close(terms.mse, F.mse_loss(est, tgt))
    torch.testing.assert_close(terms.bce, F.binary_cross_entropy_with_logits(logits, labels))
    torch.testing.assert_close(terms.total, terms.mse + 0.5 * terms.bce)


def test_bce_ignores_unknown_frames_whatever_their_logits():
    labels = torch.tensor([[[1.0, 0.0, math.nan, math.nan]]])
    a = torch.tensor([[[2.0, -1.0, 0.0, 0.0]]], requires_grad=True)
    b = torch.tensor([[[2.0, -1.0, 50.0, -80.0]]])
    la, n = masked_bce_with_logits(a, labels)
    lb, _ = masked_bce_with_logits(b, labels)
    expected = (F.softplus(torch.tensor(-2.0)) + F.softplus(torch.tensor(-1.0))) / 2  # by hand
    torch.testing.assert_close(la, expected)
    torch.testing.assert_close(lb, expected)
    assert n == 2
    la.backward()
    assert a.grad[0, 0, 2] == 0 and a.grad[0, 0, 3] == 0 and a.grad[0, 0, 0] != 0
    assert torch.isfinite(a.grad).all()


def test_all_unknown_gives_zero_not_nan():
    loss, n = masked_bce_with_logits(torch.randn(2, 1, 3), torch.full((2, 1, 3), math.nan))
    assert loss == 0 and n == 0


def test_mse_ignores_unknown_targets():
    torch.manual_seed(1)
    est, tgt = torch.rand(2, 3, 2, 4, 5), torch.rand(2, 3, 2, 4, 5)
    known = torch.tensor([[True, False, True], [False, False, True]])
    loss, n = masked_mse(est, tgt, known)
    pairs = [(0, 0), (0, 2), (1, 2)]
    expected = sum(((est[b, k] - tgt[b, k]) ** 2).mean() for b, k in pairs) / 3
    torch.testing.assert_close(loss, expected)
    assert n == 3
    est2 = est.clone()
    est2[0, 1] += 100  # an unknown target's estimate does not matter
    torch.testing.assert_close(masked_mse(est2, tgt, known)[0], loss)


def test_mse_has_the_bits_of_the_squared_difference_and_its_gradient():
    """masked_mse squares with F.mse_loss (one fused backward): the per-pair errors and the
    estimate's gradient are bit for bit those of (estimate - target) ** 2."""
    torch.manual_seed(2)
    est = torch.rand(3, 4, 2, 50, 20, requires_grad=True)
    tgt = torch.rand(3, 4, 2, 50, 20)
    known = torch.rand(3, 4) > 0.3
    loss, _ = masked_mse(est, tgt, known)
    per_pair = (est - tgt).pow(2).flatten(2).mean(-1)
    weight = known.float()
    ref = (per_pair * weight).sum() / weight.sum().clamp_min(1.0)
    assert torch.equal(loss, ref)
    assert torch.equal(torch.autograd.grad(loss, est)[0], torch.autograd.grad(ref, est)[0])


def test_without_activity_the_loss_is_the_mse():
    est, tgt = torch.rand(1, 1, 2, 3, 4), torch.rand(1, 1, 2, 3, 4)
    terms = separation_loss(est, tgt, torch.ones(1, 1, dtype=torch.bool))
    assert terms.total is terms.mse and terms.bce == 0


def test_target_weights_scale_each_targets_squared_error():
    from iass.training.stats import balance_weights

    g = torch.Generator().manual_seed(5)
    est, tgt = torch.rand(4, 3, 2, 9, 7, generator=g), torch.rand(4, 3, 2, 9, 7, generator=g)
    known = torch.tensor([[1, 1, 0], [1, 1, 1], [0, 1, 1], [1, 0, 1]], dtype=torch.bool)
    w = torch.tensor([0.5, 2.0, 1.5])
    got, count = masked_mse(est, tgt, known, w)
    by_hand = sum(w[k] * F.mse_loss(est[b, k], tgt[b, k]) for b in range(4) for k in range(3) if known[b, k])
    assert count == 9 and torch.allclose(got, by_hand / 9)
    # balance: mean(E) / E_k; an unknown (NaN) or silent target keeps weight 1
    bw = balance_weights(torch.tensor([4.0, 1.0, float("nan"), 0.0, 1.0]))
    assert torch.allclose(bw, torch.tensor([0.5, 2.0, 1.0, 1.0, 2.0]))
