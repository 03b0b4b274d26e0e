import pytest
import torch

from nesy_gedi.data.augment import (
    build_augment,
    digit_augment,
    natural_image_augment,
    point_augment,
)

torch.set_num_threads(1)


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _digits(n=8):
    x = -torch.ones(n, 1, 28, 28)
    x[:, :, 8:20, 12:16] = 1.0  # a bar, the same in every sample
    return x


def _natural(n=8):
    return torch.rand(n, 3, 32, 32, generator=_gen(123)) * 2 - 1


@pytest.mark.parametrize(
    "fn, make",
    [(digit_augment, _digits), (natural_image_augment, _natural)],
)
def test_image_augment_shape_determinism_and_range(fn, make):
    x = make()
    before = x.clone()
    a = fn(x, _gen(7))
    b = fn(x, _gen(7))
    c = fn(x, _gen(8))
    assert a.shape == x.shape and a.dtype == x.dtype
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert float(a.min()) >= -1.0 and float(a.max()) <= 1.0
    assert torch.equal(x, before)  # input untouched
    # The draws come from the generator alone: torch's global RNG state is neither used nor changed.
    state = torch.get_rng_state()
    torch.manual_seed(12345)
    assert torch.equal(fn(x, _gen(7)), a)
    torch.set_rng_state(state)


def test_range_is_clamped_even_with_large_noise():
    out = digit_augment(_digits(), _gen(), noise_std=5.0)
    assert float(out.min()) == -1.0 and float(out.max()) == 1.0
    out = natural_image_augment(_natural(), _gen(), brightness=0.9, contrast=0.9, noise_std=5.0)
    assert float(out.min()) == -1.0 and float(out.max()) == 1.0
    # Clamping, not rescaling: with N(0, 5^2) noise about 84 % of the pixels leave [-1, 1] and sit on a bound.
    on_bound = float(((out == -1.0) | (out == 1.0)).float().mean())
    assert 0.75 < on_bound < 0.92
    inside = out[(out > -1.0) & (out < 1.0)]
    assert inside.numel() > 0 and float(inside.abs().max()) < 1.0


def test_each_sample_gets_its_own_parameters():
    x = _digits(16)
    out = digit_augment(x, _gen(), noise_std=0.0)
    flat = out.flatten(1)
    assert not torch.allclose(flat[0], flat[1])
    # all 16 pairwise different
    assert torch.cdist(flat, flat).fill_diagonal_(1.0).min() > 1e-3
    out = natural_image_augment(_natural(1).expand(16, -1, -1, -1), _gen())
    assert torch.cdist(out.flatten(1), out.flatten(1)).fill_diagonal_(1.0).min() > 1e-3
    pts = point_augment(torch.zeros(16, 2), _gen())
    assert torch.unique(pts, dim=0).shape[0] == 16


def test_identity_when_all_magnitudes_are_zero():
    x = _digits()
    out = digit_augment(x, _gen(), max_rotation=0.0, max_translate=0.0, scale=(1.0, 1.0), noise_std=0.0)
    assert torch.equal(out, x)
    y = _natural()
    out = natural_image_augment(
        y, _gen(), crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), flip_prob=0.0, brightness=0.0, contrast=0.0
    )
    assert torch.equal(out, y)
    p = torch.randn(5, 2, generator=_gen())
    assert torch.equal(point_augment(p, _gen(), noise_std=0.0), p)
    assert torch.equal(build_augment("none")(p, _gen()), p)


def test_digit_augment_pads_with_background_and_never_flips():
    x = -torch.ones(4, 1, 28, 28)
    out = digit_augment(x, _gen(), noise_std=0.0)
    assert torch.allclose(out, x)  # empty image stays black: padding is -1, not 0
    # pure translation with zero range and a flip-free map keeps the bar's column
    out = digit_augment(_digits(), _gen(), max_rotation=0.0, max_translate=0.0, scale=(1.0, 1.0), noise_std=0.0)
    assert torch.equal(out, _digits())


def test_natural_flip_only_mirrors_horizontally():
    x = _natural(4)
    out = natural_image_augment(
        x, _gen(), crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), flip_prob=1.0, brightness=0.0, contrast=0.0
    )
    assert torch.allclose(out, x.flip(-1), atol=1e-5)


def test_point_augment_statistics():
    out = point_augment(torch.zeros(20000, 2), _gen(), noise_std=0.1)
    assert abs(float(out.std()) - 0.1) < 0.005 and abs(float(out.mean())) < 0.005
    # Exactly x + noise_std * N(0, 1) drawn from the generator, with no clamping.
    x = torch.tensor([[10.0, -10.0], [0.0, 3.0]])
    torch.testing.assert_close(point_augment(x, _gen(5), noise_std=0.5), x + 0.5 * torch.randn(2, 2, generator=_gen(5)))


def test_build_augment_registry():
    x = _digits(2)
    assert torch.equal(build_augment("digits")(x, _gen(3)), digit_augment(x, _gen(3)))
    quiet = build_augment("digits", noise_std=0.0, max_rotation=0.0, max_translate=0.0, scale=(1.0, 1.0))
    assert torch.equal(quiet(x, _gen()), x)
    assert build_augment("natural")(_natural(2), _gen()).shape == (2, 3, 32, 32)
    assert build_augment("points")(torch.zeros(3, 2), _gen()).shape == (3, 2)
    with pytest.raises(ValueError, match="digits, natural, points, none"):
        build_augment("mixup")
    with pytest.raises(ValueError, match="valid options"):
        build_augment("points", rotation=3)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_augment_on_cuda_with_cpu_and_cuda_generators():
    x = _digits().cuda()
    assert digit_augment(x, _gen()).device == x.device
    g = torch.Generator(device="cuda").manual_seed(0)
    assert natural_image_augment(_natural().cuda(), g).is_cuda


def test_digit_stroke_width_changes_ink_both_ways():
    x = _digits(400)  # a 12x4 bar: 48 bright pixels
    out = digit_augment(x, _gen(), max_rotation=0.0, max_translate=0.0, scale=(1.0, 1.0), noise_std=0.0, stroke=1.0)
    ink = ((out + 1) / 2).sum(dim=(1, 2, 3))
    # A full 3x3 dilation gives a 14x6 bar (84 px), a full erosion a 10x2 bar (20 px); the blend lies between.
    assert float(ink.min()) >= 20 - 1e-4 and float(ink.max()) <= 84 + 1e-4
    assert int((ink > 48 + 1).sum()) > 100 and int((ink < 48 - 1).sum()) > 100  # thicker and thinner both occur
    # Nothing outside the dilated bar lights up, nothing inside the eroded bar goes dark.
    assert bool((out[:, :, :7] == -1).all()) and bool((out[:, :, 9:19, 13:15] == 1).all())
    with pytest.raises(ValueError, match="stroke"):
        digit_augment(x, _gen(), stroke=1.5)
