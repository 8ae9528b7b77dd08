"""The IASS network's CPU speed layout (training/iass_model.py) computes the authors' math:
channels-last BatchNorm with exact statistics, transposed 3x3 convolutions as convolutions, the
whole network against float64."""
from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F

from iass.training.iass_model import (BatchNorm2d, IASSNet, frequency_upsampling, narrow_batch_norm_backward,
                                     pointwise_from_one_channel, transposed_conv3x3)

CL = torch.channels_last


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.detach().double() - b.detach().double()).norm() / b.detach().double().norm())


def test_channels_last_batchnorm_keeps_exact_statistics_where_one_pass_loses_them():
    """Mean 40 against spread 1: torch's channels-last CPU kernel (one-pass variance) is 2.5e-5
    off float64 here, its contiguous kernel 1.4e-6; ours matches float64 like the contiguous one
    in output, input/weight/bias gradients and running buffers."""
    torch.manual_seed(0)
    x = (torch.randn(2, 8, 60, 50) + 40).contiguous(memory_format=CL)
    grad = torch.randn(2, 8, 60, 50).contiguous(memory_format=CL)
    ours = BatchNorm2d(8, momentum=0.1)
    with torch.no_grad():
        ours.weight.uniform_(0.5, 1.5)
        ours.bias.uniform_(-1, 1)
    ref = copy.deepcopy(ours).double()
    xo = x.clone().requires_grad_()
    xr = x.double().contiguous().requires_grad_()
    yo, yr = ours(xo), ref(xr)
    assert yo.is_contiguous(memory_format=CL)
    yo.backward(grad)
    yr.backward(grad.double())
    assert rel(yo, yr) < 5e-6
    assert rel(xo.grad, xr.grad) < 1e-5
    assert rel(ours.weight.grad, ref.weight.grad) < 1e-4
    assert rel(ours.bias.grad, ref.bias.grad) < 1e-5
    assert rel(ours.running_mean, ref.running_mean) < 1e-6
    assert rel(ours.running_var, ref.running_var) < 1e-5
    assert int(ours.num_batches_tracked) == int(ref.num_batches_tracked) == 1
    ours.eval()   # eval mode: nn.BatchNorm2d's own path on the running statistics
    ref.eval()
    assert rel(ours(x), ref(x.double())) < 5e-6


@pytest.mark.parametrize("channels,shape", [(4, (2, 30, 16)), (8, (3, 20, 10)), (12, (2, 12, 8)),
                                            (12, (1, 5, 7)), (16, (2, 10, 6)), (24, (2, 10, 6))])
def test_batchnorm_backward_matches_float64_at_every_channel_count(channels, shape):
    """Below 16 channels the backward runs as per-column sums over a 16-float-wide view of the
    channels-last memory (narrow_batch_norm_backward); 16 and more, and a pixel count the view
    cannot tile (12 channels x 35 pixels), take torch's kernel. Mean 5 against spread 1: input,
    weight and bias gradients against float64 either way."""
    b, h, w = shape
    torch.manual_seed(channels)
    x = (torch.randn(b, channels, h, w) + 5).contiguous(memory_format=CL)
    grad = torch.randn(b, channels, h, w).contiguous(memory_format=CL)
    ours = BatchNorm2d(channels, momentum=0.1)
    with torch.no_grad():
        ours.weight.uniform_(0.5, 1.5)
    ref = copy.deepcopy(ours).double()
    xo, xr = x.clone().requires_grad_(), x.double().contiguous().requires_grad_()
    ours(xo).backward(grad)
    ref(xr).backward(grad.double())
    assert xo.grad.is_contiguous(memory_format=CL)
    assert rel(xo.grad, xr.grad) < 1e-5
    assert rel(ours.weight.grad, ref.weight.grad) < 1e-4
    assert rel(ours.bias.grad, ref.bias.grad) < 1e-5
    flat = x.permute(0, 2, 3, 1).reshape(-1, channels)
    mean = flat.mean(0)
    invstd = torch.rsqrt((flat - mean).square().mean(0) + 1e-5)
    narrow = narrow_batch_norm_backward(grad, x, ours.weight.detach(), mean, invstd)
    tiles = channels < 16 and (b * h * w) % (16 // math.gcd(channels, 16)) == 0
    assert (narrow is not None) == tiles
    if narrow is not None:   # the narrow path's own gradients, as the module returned them
        assert rel(narrow[1], ref.weight.grad) < 1e-5 and rel(narrow[2], ref.bias.grad) < 1e-6


def test_transposed_conv3x3_equals_the_module():
    torch.manual_seed(1)
    conv = torch.nn.ConvTranspose2d(6, 4, kernel_size=3, padding=1)
    x = torch.randn(2, 6, 30, 20).contiguous(memory_format=CL).requires_grad_()
    a = conv(x)
    b = transposed_conv3x3(conv, x)
    assert a.shape == b.shape and torch.allclose(a, b, atol=1e-5, rtol=1e-5)
    ga = torch.autograd.grad(a.square().sum(), [x, conv.weight, conv.bias])
    gb = torch.autograd.grad(b.square().sum(), [x, conv.weight, conv.bias])
    for u, v in zip(ga, gb):
        assert rel(u, v) < 1e-5


def test_first_skip_as_a_matrix_product_equals_the_convolution():
    """The first block's 1x1 skip of the one-channel input: same output (channels-last),
    same input, weight and bias gradients as nn.Conv2d's."""
    torch.manual_seed(4)
    conv = torch.nn.Conv2d(1, 8, kernel_size=1).to(memory_format=CL)
    x = torch.randn(3, 1, 40, 30).requires_grad_()
    a, b = conv(x), pointwise_from_one_channel(conv, x)
    assert b.shape == a.shape and b.is_contiguous(memory_format=CL)
    assert rel(b, a) < 1e-6
    g = torch.randn(a.shape)
    ga = torch.autograd.grad((a * g).sum(), [x, conv.weight, conv.bias])
    gb = torch.autograd.grad((b * g).sum(), [x, conv.weight, conv.bias])
    for u, v in zip(ga, gb):
        assert u.shape == v.shape and rel(v, u) < 1e-5


@pytest.mark.parametrize("extra", [0, 1, 2])
@pytest.mark.parametrize("layout", [CL, torch.contiguous_format])
def test_frequency_upsampling_equals_the_transposed_module(extra, layout):
    """The decoder's (3, 1) stride-(3, 1) upsampling as a 1x1 convolution + rearrangement: the
    module's output to the last bit (each output is one input bin's dot product, in the same
    order), rows beyond 3 x bins (``output_size``) filled with the bias as the module fills them;
    input, weight and bias gradients to float rounding."""
    torch.manual_seed(5)
    conv = torch.nn.ConvTranspose2d(6, 5, kernel_size=(3, 1), stride=(3, 1)).to(memory_format=CL)
    x = torch.randn(2, 6, 11, 7).contiguous(memory_format=layout).requires_grad_()
    size = torch.Size((2, 9, 33 + extra, 7))
    a, b = conv(x, output_size=size[-2:]), frequency_upsampling(conv, x, size)
    assert b.shape == a.shape == (2, 5, 33 + extra, 7) and b.is_contiguous(memory_format=CL)
    assert torch.equal(a, b)
    g = torch.randn(a.shape)
    ga = torch.autograd.grad((a * g).sum(), [x, conv.weight, conv.bias])
    gb = torch.autograd.grad((b * g).sum(), [x, conv.weight, conv.bias])
    for u, v in zip(ga, gb):
        assert u.shape == v.shape and rel(v, u) < 1e-6


@pytest.mark.parametrize("n_targets", [1, 3])
def test_network_in_training_mode_matches_float64(n_targets):
    """Forward (masks, activity logits) and the parameters' gradients of a random weighted loss
    in the channels-last float32 layout vs the same network in float64. The forward must agree to
    float32 rounding (a one-pass BatchNorm variance was 1e-4 off). The gradients are compared as
    one vector with a looser bound: in this tiny random network a few are ill-conditioned (LeakyReLU
    kinks and pooling near-ties fall differently in float32 and float64, and which way depends on
    the thread count: torch's own contiguous layout shows the same up to a few % per parameter)."""
    torch.manual_seed(2)
    net = IASSNet(n_fft=512, max_bin=186, channels=(4, 8, 12), n_targets=n_targets).train()
    assert net.encoder.block1.conv1.weight.is_contiguous(memory_format=CL)
    ref = copy.deepcopy(net).double()
    mix = torch.rand(4, 2, 257, 64)     # a batch of 4: BatchNorm statistics over 4 x 64 frames
    est, logits = net(mix)
    est64, logits64 = ref(mix.double())
    assert rel(est, est64) < 1e-5 and rel(logits, logits64) < 1e-5
    w1, w2 = torch.randn(est.shape), torch.randn(logits.shape)
    ((est * w1).sum() + (logits * w2).sum()).backward()
    ((est64 * w1.double()).sum() + (logits64 * w2.double()).sum()).backward()
    grads = torch.cat([p.grad.flatten() for p in net.parameters()])
    grads64 = torch.cat([q.grad.flatten() for q in ref.parameters()])
    assert rel(grads, grads64) < 1e-2
    sd = net.state_dict()
    assert "encoder.block1.bn1.running_var" in sd and "decoder.block3.conv1.weight" in sd
    assert sd["decoder.block3.conv1.weight"].shape == (20, 10, 3, 3)   # ConvTranspose2d's (in, out, kH, kW)
