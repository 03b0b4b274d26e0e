import pytest
import torch
from torch import nn

from nesy_gedi.objectives import energy
from nesy_gedi.sgld import NonFiniteError, ReplayBuffer, SGLDSampler, sgld

torch.set_num_threads(1)


def _fixed_mlp(seed=0, dim=2, classes=3):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(dim, 16), nn.SiLU(), nn.Linear(16, classes))


def test_sgld_descends_a_quadratic_energy():
    centre = torch.tensor([0.3, -0.2])

    def quadratic(x):
        return 0.5 * ((x - centre) ** 2).sum(-1)

    gen = torch.Generator().manual_seed(0)
    x0 = torch.rand(256, 2, generator=gen) * 2 - 1
    x = sgld(quadratic, x0, steps=30, step_size=0.1, noise_std=0.01, generator=gen)
    assert quadratic(x).mean() < 0.05 * quadratic(x0).mean()
    assert not x.requires_grad
    assert x.min() >= -1 and x.max() <= 1


def test_sgld_lowers_mean_energy_of_fixed_mlp_and_leaves_no_param_grads():
    model = _fixed_mlp()
    with torch.no_grad():
        model[2].weight.mul_(4.0)  # a steeper landscape than the default init
    energy_fn = lambda v: energy(model(v))  # noqa: E731
    x0 = torch.rand(128, 2, generator=torch.Generator().manual_seed(1)) * 2 - 1
    before = energy_fn(x0).mean().item()
    x = sgld(energy_fn, x0, steps=20, step_size=1.0, noise_std=0.01,
             generator=torch.Generator().manual_seed(2))
    # Control: the same noise without the gradient step does not descend.
    noise_only = sgld(energy_fn, x0, steps=20, step_size=0.0, noise_std=0.01,
                      generator=torch.Generator().manual_seed(2))
    assert energy_fn(x).mean().item() < before - 0.2
    assert abs(energy_fn(noise_only).mean().item() - before) < 0.01
    assert all(p.grad is None for p in model.parameters())
    assert not x.requires_grad


def test_sgld_works_inside_no_grad_and_is_reproducible():
    model = _fixed_mlp(seed=2)
    x0 = torch.zeros(8, 2)
    with torch.no_grad():
        a = sgld(lambda v: energy(model(v)), x0, steps=5, generator=torch.Generator().manual_seed(3))
    b = sgld(lambda v: energy(model(v)), x0, steps=5, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(a, b)


def test_sgld_raises_on_nan_energy_with_step():
    calls = {"n": 0}

    def bad(x):
        calls["n"] += 1
        e = (x**2).sum(-1)
        return e * float("nan") if calls["n"] == 3 else e

    with pytest.raises(NonFiniteError, match="step 3"):
        sgld(bad, torch.zeros(4, 2), steps=10)


def test_sgld_raises_on_non_finite_gradient():
    # sqrt at 0 has an infinite gradient while the energy itself is finite.
    with pytest.raises(NonFiniteError, match="step 1 .*gradient"):
        sgld(lambda x: x.sqrt().sum(-1), torch.zeros(4, 2), steps=3, noise_std=0.0)


def test_replay_buffer_init_range_and_state_dict_round_trip():
    buffer = ReplayBuffer(50, (1, 3, 3), generator=torch.Generator().manual_seed(0))
    assert buffer.samples.shape == (50, 1, 3, 3)
    assert buffer.samples.min() >= -1 and buffer.samples.max() <= 1
    assert buffer.samples.std() > 0.4  # uniform on [-1, 1] has std 0.577
    state = buffer.state_dict()
    assert set(state) == {"samples"}
    other = ReplayBuffer(50, (1, 3, 3), generator=torch.Generator().manual_seed(1))
    assert not torch.equal(other.samples, buffer.samples)
    other.load_state_dict(state)
    torch.testing.assert_close(other.samples, buffer.samples)


def test_replay_buffer_draw_update_reset():
    buffer = ReplayBuffer(10, (2,), reinit_prob=0.0, generator=torch.Generator().manual_seed(0))
    samples, indices = buffer.draw(6, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(samples, buffer.samples[indices])
    samples.fill_(5.0)  # a copy, not a view
    assert buffer.samples.abs().max() <= 1
    buffer.update(indices, torch.full((6, 2), 0.5))
    torch.testing.assert_close(buffer.samples[indices], torch.full((6, 2), 0.5))
    buffer.reset(torch.Generator().manual_seed(2))
    assert not torch.any(torch.all(buffer.samples == 0.5, dim=1))
    with pytest.raises(ValueError):
        buffer.update(indices, torch.zeros(6, 3))


def test_replay_buffer_reinit_probability_respected():
    buffer = ReplayBuffer(100, (4,), reinit_prob=0.2, generator=torch.Generator().manual_seed(0))
    # A sentinel outside the noise range marks entries that were not re-initialised.
    buffer.samples.fill_(7.0)
    samples, _ = buffer.draw(5000, generator=torch.Generator().manual_seed(1))
    reinit = (samples != 7.0).all(dim=1)
    assert ((samples == 7.0).all(dim=1) | reinit).all()  # whole samples, not pieces
    assert samples[reinit].abs().max() <= 1
    # Binomial(5000, 0.2): std is about 0.0057, so 0.2 +- 0.02 is ~3.5 sigma.
    assert abs(reinit.float().mean().item() - 0.2) < 0.02
    never = ReplayBuffer(10, (4,), reinit_prob=0.0)
    never.samples.fill_(7.0)
    assert (never.draw(500)[0] == 7.0).all()


def test_sampler_writes_back_and_moves_with_module():
    model = _fixed_mlp(seed=4)
    sampler = SGLDSampler((2,), buffer_size=20, reinit_prob=0.0, steps=5, step_size=0.5)
    before = sampler.buffer.samples.clone()
    gen = torch.Generator().manual_seed(5)
    out = sampler.sample(lambda v: energy(model(v)), 8, generator=gen)
    assert out.shape == (8, 2) and not out.requires_grad
    changed = (sampler.buffer.samples != before).any(dim=1)
    assert 1 <= changed.sum().item() <= 8
    # Every changed row holds one of the returned samples.
    for row in sampler.buffer.samples[changed]:
        assert (out == row).all(dim=1).any()
    assert "buffer.samples" in sampler.state_dict()
    doubled = sampler.to(torch.float64)
    assert doubled.buffer.samples.dtype == torch.float64
    assert all(p.grad is None for p in model.parameters())
