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
    x = torch.randn(5, 1, 28, 28)
    out = net(x)
    assert out.shape == (5, 10)
    # Logits: the output IS the last linear layer's output (no softmax, no activation after it) ...
    features = net.classifier[:-1](net.encoder(x).flatten(1))
    torch.testing.assert_close(out, features @ net.classifier[-1].weight.T + net.classifier[-1].bias)
    # ... so shifting that layer's bias shifts every logit (a softmax output would not move).
    with torch.no_grad():
        net.classifier[-1].bias += 3.0
    torch.testing.assert_close(net(x), out + 3.0)
    assert MNISTNet(num_outputs=19)(torch.randn(2, 1, 28, 28)).shape == (2, 19)
    with pytest.raises(ValueError, match="28x28"):
        net(torch.randn(2, 1, 32, 32))


def test_mlp_shape_and_defaults():
    net = MLP()
    assert net(torch.randn(7, 2)).shape == (7, 2)
    assert any(isinstance(m, torch.nn.SiLU) for m in net.modules())
    # 3 hidden layers of 128: (2*128 + 128) + 2 * (128*128 + 128) + (128*2 + 2)
    assert _n_params(net) == 384 + 2 * 16512 + 258 == 33666
    # A hand-set one-hidden-layer net computes W2 silu(W1 x + b1) + b2.
    small = MLP(in_features=2, hidden=2, depth=1, num_outputs=1)
    with torch.no_grad():
        small.net[0].weight.copy_(torch.tensor([[1.0, 0.0], [0.0, -1.0]]))
        small.net[0].bias.copy_(torch.tensor([0.5, 0.0]))
        small.net[2].weight.copy_(torch.tensor([[2.0, 1.0]]))
        small.net[2].bias.copy_(torch.tensor([-1.0]))
    x = torch.tensor([[1.0, 2.0], [0.0, 0.0]])
    h = torch.tensor([[1.5, -2.0], [0.5, 0.0]])
    expected = (2 * h[:, 0] * torch.sigmoid(h[:, 0]) + h[:, 1] * torch.sigmoid(h[:, 1]) - 1.0).unsqueeze(1)
    torch.testing.assert_close(small(x), expected)
    # Inputs are flattened from dim 1: [N, 1, 2] works like [N, 2].
    torch.testing.assert_close(small(x.unsqueeze(1)), expected)
    assert MLP(in_features=3, hidden=16, depth=1, num_outputs=4)(torch.randn(2, 3)).shape == (2, 4)


def test_resnet_small_forward_backward_on_fake_shaped_input():
    torch.manual_seed(0)
    net = ResNetSmall(in_channels=3, num_outputs=10, width=16)
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in net.modules())
    x = torch.rand(4, 3, 32, 32) * 2 - 1
    # Zero-initialised residual branches: at initialisation every block is its shortcut, so the
    # network is stem -> (identity, 1x1 conv, 1x1 conv) shortcuts -> act -> pool -> head.
    with torch.no_grad():
        h = net.stem(x)
        for block in net.blocks:
            h = block.shortcut(h)
        expected = net.head(net.act(h).mean(dim=(2, 3)))
        torch.testing.assert_close(net(x), expected)
        assert net.features(x).shape == (4, 64) and net.feature_dim == 64  # 16 * 2**2 channels
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
