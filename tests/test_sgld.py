import pytest
import torch
from torch import nn

from benchmark_modules import load_benchmark
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


def _counting_energy(model, counts):
    """energy(model(x)), appending to `counts` the batch size of every evaluation (one per SGLD step)."""
    def energy_fn(v):
        counts.append(v.shape[0])
        return energy(model(v))
    return energy_fn


def test_sampler_runs_a_long_chain_every_kth_call_and_short_ones_between():
    model = _fixed_mlp(seed=4)
    sampler = SGLDSampler((2,), buffer_size=20, steps=5, short_steps=1, long_every=3)
    steps_taken = []
    for _ in range(7):
        counts = []
        sampler.sample(_counting_energy(model, counts), 4, generator=torch.Generator().manual_seed(0))
        steps_taken.append(len(counts))
        assert sampler.last_steps == len(counts)
    assert steps_taken == [5, 1, 1, 5, 1, 1, 5]
    # The schedule is saved with the buffer: a restored sampler continues it (call 7 is short, 9 long).
    restored = SGLDSampler((2,), buffer_size=20, steps=5, short_steps=1, long_every=3)
    restored.load_state_dict(sampler.state_dict())
    assert [restored.next_steps(), int(restored.calls)] == [1, 7]
    # A state saved before the schedule existed has no call count: it starts at a long call.
    old_state = {k: v for k, v in sampler.state_dict().items() if k != "calls"}
    restored.load_state_dict(old_state)
    assert [restored.next_steps(), int(restored.calls)] == [5, 0]
    # Without short_steps every call is long, whatever long_every says.
    plain = SGLDSampler((2,), buffer_size=20, steps=4, long_every=3)
    counts = []
    for _ in range(3):
        plain.sample(_counting_energy(model, counts), 2)
    assert len(counts) == 12


@pytest.mark.parametrize("fraction, batch, expected", [(1.0, 256, 256), (0.25, 256, 64), (0.1, 30, 3),
                                                       (0.3, 10, 3), (0.26, 10, 3), (0.01, 16, 1)])
def test_sampler_asks_for_ceil_fraction_of_the_batch(fraction, batch, expected):
    sampler = SGLDSampler((2,), buffer_size=8, batch_fraction=fraction)
    assert sampler.negatives_for(batch) == expected


def test_sampler_refuses_bad_cheap_settings():
    with pytest.raises(ValueError, match="batch_fraction"):
        SGLDSampler((2,), buffer_size=8, batch_fraction=0.0)
    with pytest.raises(ValueError, match="short_steps"):
        SGLDSampler((2,), buffer_size=8, short_steps=-1)
    with pytest.raises(ValueError, match="long_every"):
        SGLDSampler((2,), buffer_size=8, long_every=0)


def _reference_sgld(energy_fn, x, steps, step_size, noise_std, clamp, generator):
    """The plain out-of-place SGLD loop: the reference the in-place sampler must match."""
    x = x.detach().clone().clamp(*clamp)
    for _ in range(steps):
        x.requires_grad_(True)
        (grad,) = torch.autograd.grad(energy_fn(x).sum(), x)
        noise = torch.randn(x.shape, generator=generator)
        x = (x.detach() - step_size * grad + noise_std * noise).clamp(*clamp)
    return x.detach()


@pytest.mark.parametrize("step_size, noise_std", [(1.0, 0.01), (0.1, 0.3)])
def test_in_place_sgld_equals_the_plain_loop_bit_for_bit(step_size, noise_std):
    model = _fixed_mlp(seed=5)
    energy_fn = lambda v: energy(model(v))  # noqa: E731
    x0 = torch.rand(32, 2, generator=torch.Generator().manual_seed(0)) * 2 - 1
    got = sgld(energy_fn, x0, steps=7, step_size=step_size, noise_std=noise_std,
               generator=torch.Generator().manual_seed(1))
    expected = _reference_sgld(energy_fn, x0, 7, step_size, noise_std, (-1.0, 1.0), torch.Generator().manual_seed(1))
    assert torch.equal(got, expected)
    assert got.data_ptr() != x0.data_ptr() and not torch.equal(got, x0)


def test_sgld_leaves_the_parameters_alone():
    model = _fixed_mlp(seed=6)
    model[0].weight.requires_grad_(False)  # a frozen layer stays frozen, trainable ones trainable
    flags = [p.requires_grad for p in model.parameters()]
    sgld(lambda v: energy(model(v)), torch.zeros(8, 2), steps=3, generator=torch.Generator().manual_seed(0))
    assert [p.requires_grad for p in model.parameters()] == flags
    assert all(p.grad is None for p in model.parameters())


def test_sgld_names_the_first_non_finite_step_and_quantity():
    calls = {"n": 0}

    def nan_from_step_3(x):
        calls["n"] += 1
        return (x**2).sum(-1) * (float("nan") if calls["n"] >= 3 else 1.0)

    with pytest.raises(NonFiniteError, match=r"step 3 of 10: the energy is not finite"):
        sgld(nan_from_step_3, torch.zeros(4, 2), steps=10)
    # Without clamping, an exploding update is caught as the sample.
    with pytest.raises(NonFiniteError, match=r"step 1 of 5: the sample is not finite"):
        sgld(lambda x: -1e-30 * x.sum(-1), torch.full((4, 1), 3e38), steps=5, step_size=1e68, noise_std=0.0,
             clamp=None)
    # Energies near the float32 limit are finite, though their float32 sum is not.
    out = sgld(lambda x: -1e38 * x.sum(-1), torch.ones(4, 2), steps=1, step_size=0.0, noise_std=0.0)
    assert torch.equal(out, torch.ones(4, 2))


def test_sgld_without_steps_returns_a_clamped_copy():
    x0 = torch.tensor([[2.0, -0.5]])
    out = sgld(lambda x: x.sum(-1), x0, steps=0)
    assert torch.equal(out, torch.tensor([[1.0, -0.5]])) and torch.equal(x0, torch.tensor([[2.0, -0.5]]))


# ----------------------------------------------------------------------------- benchmarks/sgld_speed.py
def _speed_benchmark():
    return load_benchmark("sgld_speed")


def _tiny_task(steps):
    from nesy_gedi.config import GediConfig, ModelConfig, SGLDConfig, TaskConfig

    sgld_config = SGLDConfig(buffer_size=32, steps=steps, step_size=0.1, low=-2.0, high=2.0)
    return TaskConfig(model=ModelConfig(backbone="mlp", num_clusters=3, options={"hidden": 8, "depth": 1}),
                      gedi=GediConfig(augment="points", sgld=sgld_config))


@pytest.mark.parametrize("steps", [0, 3])
def test_speed_benchmark_counts_s_plus_4_batch_passes_per_step(steps):
    from nesy_gedi.selfsup import SelfSupervised

    benchmark = _speed_benchmark()
    task = _tiny_task(max(steps, 1))
    task.gedi.sgld.steps = steps
    backbone = _fixed_mlp(seed=7)
    selfsup = SelfSupervised.from_config(task.gedi, (2,), 3, generator=torch.Generator().manual_seed(0))
    x = torch.randn(16, 2, generator=torch.Generator().manual_seed(1))
    passes = benchmark.count_passes(backbone, selfsup, x, torch.Generator().manual_seed(2))
    # S sampler steps, then one pass over data, negatives and the two views.
    assert passes == {"forward": steps + 4, "backward": steps + 4}


def test_speed_benchmark_floor_is_its_unit_cost_times_s_plus_4():
    benchmark = _speed_benchmark()
    x = torch.randn(16, 2, generator=torch.Generator().manual_seed(1))
    result = benchmark.measure(_tiny_task(3), x, iters=2, warmup=0)
    assert result["sgld_steps"] == 3 and result["batch_size"] == 16
    assert result["passes_per_step"] == {"forward": 7, "backward": 7}
    assert result["floor_units"] == 7 and result["brief_floor_units"] == 6
    assert result["floor_s"] == pytest.approx(7 * result["unit_s"])
    assert result["brief_floor_s"] == pytest.approx(6 * result["unit_s"])
    assert result["ratio_to_floor"] == pytest.approx(result["gedi_step_s"] / result["floor_s"])
    assert result["gedi_images_per_s"] == pytest.approx(16 / result["gedi_step_s"])
    assert set(result["breakdown_s"]) == {"sampling", "augmentation", "loss_forward", "loss_backward", "optimizer"}
    assert all(value >= 0 for key, value in result["breakdown_s"].items() if key != "loss_forward")
    assert result["breakdown_units"]["sampling"] == pytest.approx(result["breakdown_s"]["sampling"] / result["unit_s"])
    assert result["samples"] == {"unit": 2 * 7, "gedi_step": 2, "nogen_step": 2 * 4}


def test_speed_benchmark_writes_its_provenance(tmp_path):
    import json

    benchmark = _speed_benchmark()
    out = tmp_path / "speed.json"
    benchmark.main(["--batch-size", "4", "--set", "gedi.sgld.steps=1", "--iters", "1", "--warmup", "0",
                    "--variant-iters", "1", "--data-root", str(tmp_path / "no-data"), "--out", str(out)])
    record = json.loads(out.read_text())
    machine = record["machine"]
    assert machine["torch_threads"] == 1 and len(machine["load_average_before"]) == 3
    assert machine["cpu_model"] and machine["date"] and "load_average_after" in machine
    assert record["data"].startswith("uniform noise") and record["result"]["backbone"] == "mnist_net"
    assert record["result"]["floor_units"] == 1 + 4
    variants = record["result"]["variants"]
    assert [row["name"] for row in variants["variants"]] == [benchmark.parse_variant(v)[0]
                                                             for v in benchmark.DEFAULT_VARIANTS]
    assert variants["batch_size"] == 4 and variants["cycle_steps"] == 4


def test_speed_benchmark_times_each_sampler_setting_against_no_gen_and_counts_its_work():
    from nesy_gedi.config import SGLDConfig

    benchmark = _speed_benchmark()
    settings = {"all": SGLDConfig(buffer_size=32, steps=3, step_size=0.1, low=-2.0, high=2.0),
                "half, short": SGLDConfig(buffer_size=32, steps=3, step_size=0.1, low=-2.0, high=2.0,
                                          batch_fraction=0.5, short_steps=1, long_every=2),
                "quarter": SGLDConfig(buffer_size=32, steps=2, step_size=0.1, low=-2.0, high=2.0,
                                      batch_fraction=0.25)}
    configs = []
    for name, sgld_config in settings.items():
        task = _tiny_task(3)
        task.gedi.sgld = sgld_config
        configs.append((name, task))
    x = torch.randn(16, 2, generator=torch.Generator().manual_seed(1))
    result = benchmark.compare_variants(configs, x, iters=2, warmup=0)
    assert result["cycle_steps"] == 2 and result["rounds"] == 2 and result["batch_size"] == 16
    rows = {row["name"]: row for row in result["variants"]}
    assert rows["all"]["negatives_per_step"] == [16, 16] and rows["all"]["sgld_steps_per_step"] == [3, 3]
    assert rows["half, short"]["negatives_per_step"] == [8, 8]
    assert rows["half, short"]["sgld_steps_per_step"] == [3, 1] and rows["half, short"]["mean_sgld_steps"] == 2
    assert rows["quarter"]["negatives_per_step"] == [4, 4] and rows["quarter"]["sgld_steps_per_step"] == [2, 2]
    for row in rows.values():
        assert row["ratio_to_nogen"] == pytest.approx(row["step_s"] / result["nogen_step_s"])
        assert row["images_per_s"] == pytest.approx(16 / row["step_s"])
    assert benchmark.parse_variant("a b:batch_fraction=0.5, long_every=2") == (
        "a b", ["gedi.sgld.batch_fraction=0.5", "gedi.sgld.long_every=2"])


def test_speed_benchmark_compares_two_samplers_call_for_call():
    from pathlib import Path

    import nesy_gedi.sgld

    benchmark = _speed_benchmark()
    x = torch.randn(8, 2, generator=torch.Generator().manual_seed(1))
    result = benchmark.compare_samplers(nesy_gedi.sgld.__file__, _tiny_task(2), x, rounds=2)
    assert result["same_samples"] and result["rounds"] == 2
    assert result["baseline"] == str(Path(nesy_gedi.sgld.__file__).resolve())
    assert result["speedup"] == pytest.approx(result["baseline_step_s"] / result["current_step_s"])
    assert 0 < result["current_step_min_s"] <= result["current_step_s"]
