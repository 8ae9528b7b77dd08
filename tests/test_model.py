"""The IASS network follows the design (DESIGN.md "The model", from the authors' block.py/model.py)."""
from __future__ import annotations

import pytest
import torch

from iass.errors import ConfigError
from iass.training.iass_model import IASSModel, IASSNet, count_parameters, frequency_sizes
from iass.training.presets import IASS_PRESETS, bandwidth_to_max_bin, resolve_iass

TARGETS = ["vocals", "drums", "bass", "electric_guitar", "acoustic_guitar", "piano"]


def conv(i, o, kh, kw):
    return i * o * kh * kw + o


def bn(c):
    return 2 * c


def design_parameter_count(c=(16, 32, 48), max_bin=1487, out_bins=2049, latent_convs=3, last_k=2):
    """The parameter count written out from the design, layer by layer (not from our code)."""
    c1, c2, c3 = c

    def block(i, o):
        return conv(i, o, 3, 3) + bn(o) + conv(o, o, 3, 3) + bn(o) + conv(i, o, 1, 1) + conv(o, o, 3, 1)

    def d_block(inp, out, last):
        up = inp if last else inp - out
        return (conv(up, up, 3, 1) + conv(inp, inp // 2, 3, 3) + bn(inp // 2)
                + conv(inp // 2, out, 3, 3) + (0 if last else bn(out)))

    encoder = block(1, c1) + block(c1, c2) + block(c2, c3) + conv(c2, c2, 3, 3) + conv(c1, c1, 3, 3)
    decoder = d_block(c3 + c2, c2, False) + d_block(c2 + c1, c1, False) + d_block(c1, 1, True)
    chans = [c3, c2, c1, c1][: latent_convs + 1]
    activity = sum(conv(a, b, 3, 1) + bn(b) for a, b in zip(chans[:-1], chans[1:]))
    activity += conv(chans[-1], 1, last_k, 1)
    head = max_bin * out_bins + out_bins + 2 * max_bin + 2 * out_bins
    return encoder + decoder + activity + head


def test_bandwidth_gives_the_papers_bins():
    assert bandwidth_to_max_bin(44100, 4096, 16000) == 1487
    assert frequency_sizes(1487) == [495, 165, 55]


def test_paper_parameter_count_follows_the_design():
    net = IASSNet(4096, 1487, (16, 32, 48), n_targets=1)
    expected = design_parameter_count()
    assert count_parameters(net) == expected == 3_205_682
    # the measurement of a plain build: ~3.19 M
    assert 3.1e6 < count_parameters(net) < 3.3e6


def test_paper_shapes_downsample_frequency_only():
    torch.manual_seed(0)
    net = IASSNet(4096, 1487, (16, 32, 48), n_targets=1).eval()
    seen = {}
    for name in ("block1", "block2", "block3"):
        getattr(net.encoder, name).register_forward_hook(
            lambda m, i, o, name=name: seen.__setitem__(name, tuple(o[0].shape)))
    frames = 5
    mix = torch.rand(2, 2, 2049, frames)
    with torch.no_grad():
        est, logits = net(mix)
        mask, _ = net.masks(mix)
    assert seen == {"block1": (2, 16, 495, frames), "block2": (2, 32, 165, frames),
                    "block3": (2, 48, 55, frames)}
    assert est.shape == (2, 1, 2, 2049, frames)
    assert logits.shape == (2, 1, frames)          # one logit per frame: time never downsampled
    assert mask.shape == (2, 1, 2049, frames) and (mask >= 0).all()
    # the estimate is the mask applied to each channel of the mixture
    torch.testing.assert_close(est, mask[:, :, None] * mix[:, None])


def test_input_is_mono_and_cropped_to_max_bin():
    torch.manual_seed(0)
    net = IASSNet(512, 186, (2, 4, 6)).eval()
    a = torch.rand(1, 2, 257, 7)
    swapped = a.flip(1)                                  # same mono sum
    above = a.clone()
    above[:, :, 186:] += 5.0                             # only bins the network does not see
    with torch.no_grad():
        m0, l0 = net.masks(a)
        m1, l1 = net.masks(swapped)
        m2, l2 = net.masks(above)
    torch.testing.assert_close(m0, m1)
    torch.testing.assert_close(m0, m2)
    torch.testing.assert_close(l0, l2)


def test_frames_are_independent_of_far_frames():
    """Only 3x3 convolutions mix time: frame 0's output ignores a change 20 frames away."""
    torch.manual_seed(0)
    net = IASSNet(512, 186, (2, 4, 6)).eval()
    a = torch.rand(1, 2, 257, 30)
    b = a.clone()
    b[..., 25] += 3.0
    with torch.no_grad():
        ma, la = net.masks(a)
        mb, lb = net.masks(b)
    torch.testing.assert_close(ma[..., :10], mb[..., :10])
    torch.testing.assert_close(la[..., :10], lb[..., :10])
    assert not torch.allclose(la[..., 25], lb[..., 25])


@pytest.mark.parametrize("preset", ["cpu", "tiny"])
def test_smaller_presets_keep_every_part(preset):
    cfg = resolve_iass({"preset": preset, "multi_target": True}, 44100, 1024)
    net = IASSNet(cfg["n_fft"], cfg["max_bin"], cfg["channels"], n_targets=3)
    mix = torch.rand(1, 2, cfg["n_fft"] // 2 + 1, 4)
    est, logits = net(mix)
    assert est.shape == (1, 3, 2, cfg["n_fft"] // 2 + 1, 4) and logits.shape == (1, 3, 4)
    assert cfg["preset"] == preset and cfg["hop"] == 1024


def test_cpu_preset_is_much_cheaper_than_paper():
    paper = resolve_iass({"preset": "paper"}, 44100, 1024)
    cpu = resolve_iass({"preset": "cpu"}, 44100, 1024)
    assert cpu["max_bin"] == bandwidth_to_max_bin(44100, 2048, 16000) == 744
    p = count_parameters(IASSNet(paper["n_fft"], paper["max_bin"], paper["channels"]))
    c = count_parameters(IASSNet(cpu["n_fft"], cpu["max_bin"], cpu["channels"]))
    # latent 27 bins -> 9 -> 3 -> 1, so the last activity conv spans 1 bin
    assert c == design_parameter_count(tuple(cpu["channels"]), 744, 1025, last_k=1)
    assert c < p / 3


def test_preset_overrides_and_unknown_preset():
    cfg = resolve_iass({"preset": "cpu", "channels": [4, 8, 12]}, 44100, 1024)
    assert cfg["channels"] == [4, 8, 12] and cfg["n_fft"] == IASS_PRESETS["cpu"]["n_fft"]
    with pytest.raises(ConfigError, match="unknown preset"):
        resolve_iass({"preset": "huge"}, 44100, 1024)


def test_multi_target_shares_the_encoder_and_single_target_has_one_net_each():
    multi = IASSModel(TARGETS, 512, 186, (2, 4, 6), multi_target=True)
    single = IASSModel(TARGETS, 512, 186, (2, 4, 6), multi_target=False)
    assert sum(1 for n, _ in multi.named_modules() if n.endswith("encoder")) == 1
    assert sum(1 for n, _ in single.named_modules() if n.endswith("encoder")) == len(TARGETS)
    mix = torch.rand(2, 2, 257, 6)
    for model in (multi, single):
        est, logits = model(mix)
        mask, logits2 = model.masks(mix)
        assert est.shape == (2, len(TARGETS), 2, 257, 6)
        assert logits.shape == (2, len(TARGETS), 6) and mask.shape == (2, len(TARGETS), 257, 6)
    # single-target mode stacks the per-target networks in target order
    with torch.no_grad():
        mask, logits = single.eval().masks(mix)
        m_bass, l_bass = single.nets["bass"].masks(mix)
    torch.testing.assert_close(mask[:, 2:3], m_bass)
    torch.testing.assert_close(logits[:, 2:3], l_bass)


def test_per_target_linear_matches_separate_linears():
    """The multi-target frequency Linear is K independent nn.Linear layers."""
    torch.manual_seed(1)
    net = IASSNet(512, 186, (2, 4, 6), n_targets=3)
    x = torch.rand(2, 3, 5, 186)
    out = net.last(x)
    # the network's own path: the same map on the decoder's (B, K, bins, T) layout, computed as
    # a grouped 1x1 convolution and laid out (B, K, F, T) contiguous, gradients included
    xt = x.transpose(2, 3).contiguous().requires_grad_()
    conv_out = net.last.over_frequency(xt)
    assert conv_out.shape == (2, 3, 257, 5) and conv_out.is_contiguous()
    for k in range(3):
        ref = torch.nn.functional.linear(x[:, k], net.last.weight[k].T, net.last.bias[k])
        torch.testing.assert_close(out[:, k], ref)
        torch.testing.assert_close(conv_out[:, k], ref.transpose(1, 2))
    g = torch.randn(conv_out.shape)
    grads = torch.autograd.grad((conv_out * g).sum(), [xt, net.last.weight, net.last.bias])
    xr = xt.detach().clone().requires_grad_()
    ref = torch.einsum("bkit,kio->bkot", xr, net.last.weight) + net.last.bias[:, :, None]
    ref_grads = torch.autograd.grad((ref * g).sum(), [xr, net.last.weight, net.last.bias])
    for a, b in zip(grads, ref_grads):
        torch.testing.assert_close(a, b)


def test_inference_optimisation_keeps_the_outputs():
    """BN folded into the convolutions + channels-last: same masks and logits (float rounding)."""
    import copy

    from iass.training.iass_model import optimize_for_inference

    torch.manual_seed(3)
    model = IASSModel(TARGETS[:2], 512, 186, (2, 4, 6), multi_target=True)
    for m in model.modules():  # trained-looking BatchNorm statistics
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-1, 1)
    model.eval()
    fast = optimize_for_inference(copy.deepcopy(model))
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fast.net.encoder.modules())
    mix = torch.rand(1, 2, 257, 9)
    with torch.no_grad():
        m0, l0 = model.masks(mix)
        m1, l1 = fast.masks(mix)
    torch.testing.assert_close(m1, m0, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(l1, l0, rtol=1e-4, atol=1e-5)
