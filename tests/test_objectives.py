import math

import pytest
import torch

from nesy_gedi.objectives import (
    GediWeights,
    barlow_twins_loss,
    concept_entropy_loss,
    contrastive_divergence,
    energy,
    gedi_objective,
    invariance,
    normalised_entropy,
    scaled_logits,
    sinkhorn_knopp,
    swav_loss,
    uniform_prior,
)

torch.set_num_threads(1)


def test_energy_is_negative_logsumexp_by_hand():
    logits = torch.tensor([[0.0, 0.0], [1.0, 2.0], [-3.0, 5.0]])
    expected = torch.tensor(
        [-math.log(2.0), -math.log(math.e + math.e**2), -math.log(math.exp(-3) + math.exp(5))]
    )
    torch.testing.assert_close(energy(logits), expected)


def test_energy_is_stable_for_large_logits():
    out = energy(torch.tensor([[1000.0, 1000.0]]))
    torch.testing.assert_close(out, torch.tensor([-1000.0 - math.log(2.0)]))


def test_contrastive_divergence_hand_values():
    e_data = torch.tensor([1.0, 3.0])  # mean 2, mean square 5
    e_neg = torch.tensor([-1.0, 0.0, 4.0])  # mean 1, mean square 17/3
    torch.testing.assert_close(contrastive_divergence(e_data, e_neg), torch.tensor(1.0))
    torch.testing.assert_close(
        contrastive_divergence(e_data, e_neg, magnitude_weight=0.1),
        torch.tensor(1.0 + 0.1 * (5.0 + 17.0 / 3.0)),
    )


def test_contrastive_divergence_gradient_signs():
    e_data = torch.zeros(4, requires_grad=True)
    e_neg = torch.zeros(4, requires_grad=True)
    contrastive_divergence(e_data, e_neg).backward()
    # Descent lowers data energy and raises negative energy.
    assert torch.all(e_data.grad > 0) and torch.all(e_neg.grad < 0)


def test_invariance_zero_for_identical_confident_views():
    logits = torch.full((5, 4), -50.0)
    logits[torch.arange(5), torch.tensor([0, 1, 2, 3, 0])] = 50.0
    assert invariance(logits, logits.clone()).item() == pytest.approx(0.0, abs=1e-6)


def test_invariance_positive_for_disagreeing_views_and_hand_value():
    a = torch.tensor([[10.0, 0.0]])
    b = torch.tensor([[0.0, 10.0]])
    assert invariance(a, b).item() > 5.0
    # Hand check on soft views: 0.5 * (H(p, q) + H(q, p)).
    a = torch.tensor([[0.3, -0.2, 1.0]])
    b = torch.tensor([[1.5, 0.1, -0.4]])
    p, q = a.softmax(-1), b.softmax(-1)
    expected = 0.5 * (-(p * q.log()).sum() - (q * p.log()).sum())
    torch.testing.assert_close(invariance(a, b), expected)


def test_invariance_gradient_reaches_both_views():
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(6, 3, generator=gen, requires_grad=True)
    b = torch.randn(6, 3, generator=gen, requires_grad=True)
    invariance(a, b).backward()
    assert a.grad is not None and a.grad.abs().sum() > 0
    assert b.grad is not None and b.grad.abs().sum() > 0


def test_uniform_prior_is_log_c_at_uniform_marginals():
    # Each sample confident, but the batch covers the 4 clusters equally.
    logits = torch.full((8, 4), -30.0)
    logits[torch.arange(8), torch.arange(8) % 4] = 30.0
    assert uniform_prior(logits).item() == pytest.approx(math.log(4), abs=1e-5)
    assert uniform_prior(torch.zeros(3, 4)).item() == pytest.approx(math.log(4), abs=1e-6)


def test_uniform_prior_larger_and_finite_when_collapsed():
    logits = torch.full((8, 4), -30.0)
    logits[:, 0] = 30.0
    value = uniform_prior(logits)
    assert torch.isfinite(value)
    assert value.item() > math.log(4) + 10.0


def test_uniform_prior_accepts_list_of_views():
    uniform = torch.zeros(4, 3)
    collapsed = torch.tensor([[5.0, 0.0, 0.0]]).repeat(4, 1)
    expected = 0.5 * (uniform_prior(uniform) + uniform_prior(collapsed))
    torch.testing.assert_close(uniform_prior([uniform, collapsed]), expected)


def test_uniform_prior_gradient_step_makes_marginals_more_uniform():
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(16, 5, generator=gen)
    logits[:, 0] += 3.0  # mostly collapsed onto cluster 0
    logits.requires_grad_(True)

    def marginal_entropy(lg):
        m = lg.detach().softmax(-1).mean(0)
        return -(m * m.log()).sum().item()

    before = marginal_entropy(logits)
    prior_before = uniform_prior(logits)
    prior_before.backward()
    with torch.no_grad():
        stepped = logits - 1.0 * logits.grad
    assert uniform_prior(stepped).item() < prior_before.item()
    assert marginal_entropy(stepped) > before


def test_gedi_objective_full_total_is_sum_of_weighted_terms():
    gen = torch.Generator().manual_seed(2)
    d, n, a, b = (torch.randn(4, 3, generator=gen) for _ in range(4))
    w = GediWeights(generative=0.5, invariance=2.0, prior=3.0, energy_magnitude=0.1)
    out = gedi_objective(d, n, a, b, w)
    torch.testing.assert_close(
        out["generative"], 0.5 * contrastive_divergence(energy(d), energy(n), 0.1)
    )
    torch.testing.assert_close(out["invariance"], 2.0 * invariance(a, b))
    torch.testing.assert_close(out["prior"], 3.0 * uniform_prior([a, b]))
    torch.testing.assert_close(out["total"], out["generative"] + out["invariance"] + out["prior"])


def test_gedi_objective_skips_zero_weight_terms():
    gen = torch.Generator().manual_seed(3)
    d, n, a, b = (torch.randn(4, 3, generator=gen) for _ in range(4))
    # "no-gen" ablation: data/negative logits are never touched.
    out = gedi_objective(None, None, a, b, GediWeights(generative=0.0))
    assert out["generative"].item() == 0.0
    torch.testing.assert_close(out["total"], invariance(a, b) + uniform_prior([a, b]))
    # "JEM-only" ablation: views are never touched.
    out = gedi_objective(d, n, None, None, GediWeights(invariance=0.0, prior=0.0))
    torch.testing.assert_close(out["total"], contrastive_divergence(energy(d), energy(n)))
    assert set(out) == {"generative", "invariance", "prior", "total"}


def test_gedi_objective_rejects_missing_inputs_and_bad_weights():
    a = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="logits_data"):
        gedi_objective(None, a, a, a, GediWeights())
    with pytest.raises(ValueError):
        GediWeights(prior=-1.0)
    with pytest.raises(ValueError, match="every weight"):
        gedi_objective(a, a, a, a, GediWeights(0.0, 0.0, 0.0))


def test_energy_with_temperature_by_hand():
    # E(x) = -T logsumexp(f / T): at T = 1/2, logits [1, 2] -> -(1/2) log(e^2 + e^4).
    logits = torch.tensor([[1.0, 2.0], [0.0, 0.0]])
    expected = torch.tensor([-0.5 * math.log(math.exp(2) + math.exp(4)), -0.5 * math.log(2.0)])
    torch.testing.assert_close(energy(logits, 0.5), expected)
    assert torch.equal(energy(logits, 1.0), -torch.logsumexp(logits, -1))  # T = 1: GEDI's energy, bit for bit
    # T -> 0: the energy tends to -max_y f(x)_y.
    torch.testing.assert_close(energy(logits, 1e-3), torch.tensor([-2.0, 0.0]), atol=1e-3, rtol=0)
    torch.testing.assert_close(scaled_logits(logits, 0.5), 2 * logits)
    assert scaled_logits(logits, 1.0) is logits
    for bad in (0.0, -1.0, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="temperature"):
            energy(logits, bad)


def test_gedi_objective_energy_and_posterior_share_the_temperature_by_hand():
    # One set of logits, T = 1/2: E = -(1/2) logsumexp(2 f), p(y|x) = softmax(2 f).
    T = 0.5
    data = torch.tensor([[0.0, 0.0]])  # E = -(1/2) log 2
    negative = torch.tensor([[1.0, -1.0]])  # E = -(1/2) log(e^2 + e^-2)
    view_a = torch.tensor([[0.0, 0.5 * math.log(3.0)]])  # softmax(2 f) = [1/4, 3/4]
    view_b = torch.tensor([[0.0, 0.0]])  # [1/2, 1/2]
    out = gedi_objective(data, negative, view_a, view_b, GediWeights(), temperature=T)
    e_data, e_negative = -0.5 * math.log(2.0), -0.5 * math.log(math.exp(2) + math.exp(-2))
    assert out["generative"].item() == pytest.approx(e_data - e_negative, rel=1e-6)
    # 0.5 * (H(p_a, p_b) + H(p_b, p_a)) with H(p, q) = -sum p log q.
    h_ab = math.log(2.0)
    h_ba = -0.5 * (math.log(0.25) + math.log(0.75))
    assert out["invariance"].item() == pytest.approx(0.5 * (h_ab + h_ba), rel=1e-6)
    # One example per batch: the marginal is the posterior itself; mean over the two views.
    prior_a, prior_b = -0.5 * (math.log(0.25) + math.log(0.75)), math.log(2.0)
    assert out["prior"].item() == pytest.approx(0.5 * (prior_a + prior_b), rel=1e-6)
    # The "posterior" scope (energy at T = 1) changes the generative term only.
    decoupled = gedi_objective(data, negative, view_a, view_b, GediWeights(), temperature=T, energy_temperature=1.0)
    assert decoupled["generative"].item() == pytest.approx(
        -math.log(2.0) + math.log(math.exp(1) + math.exp(-1)), rel=1e-6)
    torch.testing.assert_close(decoupled["invariance"], out["invariance"])
    torch.testing.assert_close(decoupled["prior"], out["prior"])
    # The posterior scope equals the old call on pre-divided views.
    old = gedi_objective(data, negative, view_a / T, view_b / T, GediWeights())
    assert all(torch.equal(old[k], decoupled[k]) for k in old)


def test_sinkhorn_equal_partition():
    gen = torch.Generator().manual_seed(4)
    scores = torch.randn(32, 4, generator=gen)
    scores[:, 0] += 2.0  # scores prefer cluster 0; codes must still spread out
    # Converged: rows are distributions, every cluster gets B / C samples' mass.
    q = sinkhorn_knopp(scores, epsilon=0.5, iterations=50)
    torch.testing.assert_close(q.sum(1), torch.ones(32))
    torch.testing.assert_close(q.sum(0), torch.full((4,), 32 / 4), atol=1e-3, rtol=0)
    q = sinkhorn_knopp(scores, epsilon=0.05, iterations=500)
    torch.testing.assert_close(q.sum(0), torch.full((4,), 32 / 4), atol=1e-3, rtol=0)
    # Default 3 iterations: rows exact, columns far more balanced than the raw
    # tempered softmax, which puts most of the mass on cluster 0.
    q3 = sinkhorn_knopp(scores)
    torch.testing.assert_close(q3.sum(1), torch.ones(32))
    raw = (scores / 0.05).softmax(-1).sum(0)
    assert (q3.sum(0) - 8.0).abs().max() < 0.5 * (raw - 8.0).abs().max()


def test_sinkhorn_stable_for_large_logits_and_no_grad():
    scores = torch.tensor([[100.0, -100.0], [90.0, -80.0], [-50.0, 60.0], [0.0, 0.0]])
    scores.requires_grad_(True)
    q = sinkhorn_knopp(scores)
    assert torch.isfinite(q).all() and not q.requires_grad


def test_swav_loss_hand_value_and_gradient():
    gen = torch.Generator().manual_seed(5)
    a = torch.randn(8, 3, generator=gen, requires_grad=True)
    b = torch.randn(8, 3, generator=gen, requires_grad=True)
    loss = swav_loss(a, b, temperature=0.1)
    qa, qb = sinkhorn_knopp(a), sinkhorn_knopp(b)
    expected = 0.5 * (
        -(qb * (a / 0.1).log_softmax(-1)).sum(-1).mean()
        - (qa * (b / 0.1).log_softmax(-1)).sum(-1).mean()
    )
    torch.testing.assert_close(loss, expected)
    loss.backward()
    assert a.grad.abs().sum() > 0 and b.grad.abs().sum() > 0


def _whitened(batch, dim, seed):
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(batch, dim, generator=gen, dtype=torch.float64)
    z = z - z.mean(0)
    u, _, _ = torch.linalg.svd(z, full_matrices=False)
    return (u * math.sqrt(batch)).float()  # zero-mean, unit-variance, decorrelated


def test_barlow_zero_for_identical_decorrelated_inputs():
    z = _whitened(64, 8, seed=6)
    assert barlow_twins_loss(z, z.clone()).item() == pytest.approx(0.0, abs=1e-3)


def test_barlow_hand_value_and_invariance_to_scale():
    z = _whitened(64, 4, seed=7)
    # Second view flips one feature: diagonal entry -1 -> on-diagonal loss (−1 − 1)^2 = 4.
    flipped = z.clone()
    flipped[:, 0] = -flipped[:, 0]
    assert barlow_twins_loss(z, flipped).item() == pytest.approx(4.0, abs=1e-3)
    # Fully correlated features: every off-diagonal entry is 1.
    col = z[:, :1].repeat(1, 3)
    assert barlow_twins_loss(col, 3.0 * col + 1.0, off_diagonal_weight=0.5).item() == pytest.approx(
        0.5 * 6, abs=1e-3
    )


def test_normalised_entropy():
    probs = torch.tensor([[0.25, 0.25, 0.25, 0.25], [1.0, 0.0, 0.0, 0.0], [0.5, 0.5, 0.0, 0.0]])
    torch.testing.assert_close(normalised_entropy(probs), torch.tensor([1.0, 0.0, 0.5]))
    assert normalised_entropy(torch.full((2, 3, 5), 0.2)).shape == (2, 3)


def test_concept_entropy_loss():
    # Confident samples whose batch mean is uniform: loss 0.
    one_hot = torch.eye(4)
    assert concept_entropy_loss(one_hot).item() == pytest.approx(0.0, abs=1e-6)
    # Collapsed batch: loss 1, and finite gradients despite zero probabilities.
    collapsed = torch.zeros(6, 2, 4)
    collapsed[..., 1] = 1.0
    collapsed.requires_grad_(True)
    loss = concept_entropy_loss(collapsed)
    assert loss.item() == pytest.approx(1.0, abs=1e-6)
    loss.backward()
    assert torch.isfinite(collapsed.grad).all()
    # Per position: one uniform position (0) and one collapsed position (1) average to 0.5.
    mixed = torch.zeros(4, 2, 4)
    mixed[:, 0] = torch.eye(4)
    mixed[:, 1, 2] = 1.0
    assert concept_entropy_loss(mixed).item() == pytest.approx(0.5, abs=1e-6)
