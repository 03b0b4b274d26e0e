import pytest
import torch

from nesy_gedi.models import MLP, MNISTNet, ResNetSmall, build_backbone

torch.set_num_threads(1)


def _n_params(module):
    return sum(p.numel() for p in module.parameters())


def test_mnist_net_matches_deepproblog_size_and_outputs_logits():
    net = MNISTNet()
    # conv1 1*6*25+6=156, conv2 6*16*25+16=2416, fc 256*120+120=30840, 120*84+84=10164, 84*10+10=850
    assert _n_params(net) == 156 + 2416 + 30840 + 10164 + 850 == 44426
    torch.manual_seed(0)
    out = net(torch.randn(5, 1, 28, 28))
    assert out.shape == (5, 10)
    assert not torch.allclose(out.sum(1), torch.ones(5))  # logits, not probabilities
    assert MNISTNet(num_outputs=19)(torch.randn(2, 1, 28, 28)).shape == (2, 19)
    with pytest.raises(ValueError, match="28x28"):
        net(torch.randn(2, 1, 32, 32))


def test_mlp_shape_and_defaults():
    net = MLP()
    assert net(torch.randn(7, 2)).shape == (7, 2)
    assert any(isinstance(m, torch.nn.SiLU) for m in net.modules())
    assert MLP(in_features=3, hidden=16, depth=1, num_outputs=4)(torch.randn(2, 3)).shape == (2, 4)


def test_resnet_small_forward_backward_on_fake_shaped_input():
    torch.manual_seed(0)
    net = ResNetSmall(in_channels=3, num_outputs=10, width=16)
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in net.modules())
    x = torch.rand(4, 3, 32, 32) * 2 - 1
    x.requires_grad_(True)
    out = net(x)
    assert out.shape == (4, 10)
    # energy-style backward: gradients reach both the parameters and the input (SGLD)
    (-torch.logsumexp(out, dim=1)).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    grads = [p.grad for p in net.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert ResNetSmall(in_channels=1, num_outputs=3, width=8, blocks=(1, 1))(torch.randn(2, 1, 28, 28)).shape == (2, 3)


def test_build_backbone_registry():
    assert isinstance(build_backbone("mnist_net", 10), MNISTNet)
    assert _n_params(build_backbone("mnist_net", 10)) == 44426
    mlp = build_backbone("mlp", 2)
    assert mlp(torch.randn(3, 2)).shape == (3, 2)
    assert build_backbone("mlp", 5, in_features=4, hidden=8)(torch.randn(3, 4)).shape == (3, 5)
    res = build_backbone("resnet_small", 100, in_channels=3, width=8)
    assert res(torch.randn(2, 3, 32, 32)).shape == (2, 100)
    with pytest.raises(ValueError, match="mnist_net, mlp, resnet_small"):
        build_backbone("vit", 10)
