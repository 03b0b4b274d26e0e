"""SelfSupervised: the GEDI objective and its ablations on a backbone's cluster logits."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from nesy_gedi.config import GediConfig, SGLDConfig
from nesy_gedi.errors import ConfigError
from nesy_gedi.selfsup import SelfSupervised
from nesy_gedi.sgld import NonFiniteError

torch.set_num_threads(1)


def _config(method="gedi", **kw) -> GediConfig:
    sgld = kw.pop("sgld", None) or SGLDConfig(buffer_size=32, steps=3, step_size=0.1, noise_std=0.01,
                                              low=-2.0, high=2.0)
    return GediConfig(method=method, augment="points", sgld=sgld, **kw)


def _mlp(seed=0, clusters=3):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(2, 16), nn.SiLU(), nn.Linear(16, clusters))


def _batch(n=16, seed=1):
    return torch.randn(n, 2, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("method, keys", [
    ("gedi", {"generative", "invariance", "prior", "total"}),
    ("no-gen", {"generative", "invariance", "prior", "total"}),
    ("jem", {"generative", "invariance", "prior", "total"}),
    ("swav", {"swav", "total"}),
    ("barlow", {"barlow", "total"}),
])
def test_every_method_gives_finite_terms_and_gradients(method, keys):
    backbone = _mlp()
    selfsup = SelfSupervised.from_config(_config(method), (2,), 3)
    terms = selfsup.losses(backbone, _batch(), torch.Generator().manual_seed(0))
    assert set(terms) == keys
    assert all(torch.isfinite(v) and v.dim() == 0 for v in terms.values())
    terms["total"].backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in backbone.parameters())


def test_method_decides_which_terms_exist():
    backbone = _mlp()
    gen = torch.Generator().manual_seed(0)
    jem = SelfSupervised.from_config(_config("jem"), (2,), 3)
    no_gen = SelfSupervised.from_config(_config("no-gen"), (2,), 3)
    gedi = SelfSupervised.from_config(_config("gedi"), (2,), 3)
    assert jem.sampler is not None and gedi.sampler is not None and no_gen.sampler is None
    t = jem.losses(backbone, _batch(), gen)
    assert t["invariance"] == 0 and t["prior"] == 0 and torch.allclose(t["total"], t["generative"])
    t = no_gen.losses(backbone, _batch(), gen)
    assert t["generative"] == 0 and torch.allclose(t["total"], t["invariance"] + t["prior"])
    t = gedi.losses(backbone, _batch(), gen)
    assert torch.allclose(t["total"], t["generative"] + t["invariance"] + t["prior"])
    assert set(gedi.last_stats) == {"energy_data", "energy_negative"}


def test_energy_data_term_sees_the_unaugmented_batch_and_views_differ():
    seen = []

    class Spy(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = _mlp()

        def forward(self, x):
            seen.append(x.detach().clone())
            return self.net(x)

    x = _batch(8)
    selfsup = SelfSupervised.from_config(_config("gedi"), (2,), 3)
    selfsup.losses(Spy(), x, torch.Generator().manual_seed(0))
    main = seen[-1]  # SGLD passes come first, then one pass over [data, negatives, view a, view b]
    assert main.shape == (32, 2)
    data, negatives, view_a, view_b = main.split(8)
    assert torch.equal(data, x)
    assert not torch.equal(view_a, x) and not torch.equal(view_a, view_b)
    assert negatives.abs().max() <= 2.0  # clamped to the configured [low, high] box


def test_sampler_buffer_follows_the_module_and_is_saved():
    selfsup = SelfSupervised.from_config(_config("gedi"), (2,), 3, generator=torch.Generator().manual_seed(3))
    state = selfsup.state_dict()
    assert "sampler.buffer.samples" in state and state["sampler.buffer.samples"].shape == (32, 2)
    other = SelfSupervised.from_config(_config("gedi"), (2,), 3)
    other.load_state_dict(state)
    assert torch.equal(other.buffer_samples(), selfsup.buffer_samples())
    before = selfsup.buffer_samples().clone()
    selfsup.reset_buffer(torch.Generator().manual_seed(9))
    assert not torch.equal(before, selfsup.buffer_samples())
    assert selfsup.to(torch.float64).buffer_samples().dtype == torch.float64


def test_same_generator_state_gives_the_same_losses():
    backbone = _mlp()
    a = SelfSupervised.from_config(_config("gedi"), (2,), 3, generator=torch.Generator().manual_seed(0))
    b = SelfSupervised.from_config(_config("gedi"), (2,), 3, generator=torch.Generator().manual_seed(0))
    ta = a.losses(backbone, _batch(), torch.Generator().manual_seed(5))
    tb = b.losses(backbone, _batch(), torch.Generator().manual_seed(5))
    assert all(torch.equal(ta[k], tb[k]) for k in ta)


def test_temperature_sharpens_the_posterior_terms_only():
    backbone = _mlp()
    x = _batch()
    plain = SelfSupervised.from_config(_config("no-gen"), (2,), 3).losses(backbone, x, torch.Generator().manual_seed(0))
    sharp = SelfSupervised.from_config(_config("no-gen", temperature=0.1), (2,), 3).losses(
        backbone, x, torch.Generator().manual_seed(0))
    assert not torch.allclose(plain["invariance"], sharp["invariance"])


def test_diverging_sampler_raises_nonfinite_error():
    class Exploding(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.ones(()))

        def forward(self, x):
            return self.w * torch.full((x.shape[0], 3), float("nan"))

    selfsup = SelfSupervised.from_config(_config("gedi"), (2,), 3)
    with pytest.raises(NonFiniteError):
        selfsup.losses(Exploding(), _batch(), torch.Generator().manual_seed(0))


def test_bad_configs_raise_config_errors():
    with pytest.raises(ConfigError, match="low < high"):
        SelfSupervised.from_config(_config("gedi", sgld=SGLDConfig(low=1.0, high=-1.0)), (2,), 3)
    with pytest.raises(ConfigError, match="augmentation"):
        SelfSupervised.from_config(GediConfig(augment="points", augment_options={"bogus": 1}), (2,), 3)
    with pytest.raises(ConfigError, match="temperature"):
        SelfSupervised.from_config(_config("gedi", temperature=0.0), (2,), 3)
    with pytest.raises(ValueError, match=r"expected inputs \[B, 2\]"):
        SelfSupervised.from_config(_config("no-gen"), (2,), 3).losses(_mlp(), torch.zeros(4, 3))
