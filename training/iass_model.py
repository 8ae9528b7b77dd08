"""The IASS network (Hung & Lerch, ISMIR 2020): a U-Net on the magnitude STFT with an activity
classifier on its latent.

Structure from the authors' code (biboamy/Source_Separation_Inst, ``model.py`` class ``Unet`` and
``block.py``), kept layer for layer so that the paper preset has the paper's parameter count:

- input: stereo magnitude averaged to mono, cropped to ``max_bin`` (16 kHz), ``(x - mean) / scale``
  with learnable per-bin mean and scale;
- encoder: 3 residual blocks (conv3x3-BN-LeakyReLU x2 + 1x1 skip) each followed by a (3,1)
  stride-(3,1) convolution that downsamples FREQUENCY only (1487 -> 495 -> 165 -> 55 bins);
  time is never downsampled, so the latent still has one column per STFT frame;
- decoder: transposed (3,1) upsampling to the skip's size, concat of the skip, two 3x3
  transposed convolutions (LeakyReLU then BN, as the authors order them);
- a Linear(max_bin -> n_fft/2+1) over frequency, per-bin output scale and mean, ReLU: the mask;
- activity: strided (3,1) convolutions over the latent's frequency axis down to one logit per
  frame.

Speed on CPU (the math is the authors'): the convolution weights, hence every activation, are
channels-last (oneDNN's native layout); the decoder's stride-1 3x3 transposed convolutions run as
the equal convolutions (:func:`transposed_conv3x3`); training-mode BatchNorm on channels-last
input keeps exact statistics (:class:`BatchNorm2d`), and below 16 channels takes its backward
from per-column sums over a wider view of the same memory (:func:`narrow_batch_norm_backward`);
the first block's 1x1 skip of the one-channel input is a matrix product
(:func:`pointwise_from_one_channel`); the decoder's (3, 1) frequency upsampling is a 1x1
convolution and a rearrangement (:func:`frequency_upsampling`); the frequency Linear is a grouped
1x1 convolution that writes the mask in the (B, K, F, T) layout the mask and loss read
(:meth:`TargetLinear.over_frequency`). Outputs equal the contiguous layout's to float rounding
(bench/bench_model.py measures the step).

Multi-target: one shared encoder and decoder trunk whose last layer has one channel per target,
a frequency Linear, output scale/mean and an activity logit per target. ``n_targets=1`` is
exactly the paper's network.

Multi-pitch (optional, ``model.iass.pitch_weight`` > 0; the paper's future work): a third head per
target on the decoder's last features (the ones the mask's frequency Linear reads), a
Linear(max_bin -> 88) over frequency per target: logits of the 88 piano keys (MIDI 21-108) per
STFT frame. Time is never downsampled, so there is one prediction per frame. Without it
(``pitch_weight`` 0, the default) the network has no such parameters and draws nothing more from
the RNG: it is exactly the network of before.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

BN_MOMENTUM = 0.1  # block.py: batchNorm_momentum
# the corpus' piano roll (corpus_format.PITCH_MIN, NUM_KEYS; not imported: it loads pyarrow)
PITCH_LOW = 21     # MIDI note of the pitch head's first key (A0)
PITCH_KEYS = 88    # MIDI 21..108, the piano's keys


class _ChannelsLastBatchNorm(torch.autograd.Function):
    """Training-mode batch normalisation of a channels-last float32 tensor with two-pass
    statistics. torch's own channels-last CPU kernel gets the variance from one pass (E[x^2] -
    E[x]^2) and loses digits where the mean is large against the spread (relative error 1e-4 on
    the paper network's activations, against 6e-8 in the contiguous layout); here the mean comes
    first, then the mean square deviation from it. Output as torch's kernel computes it (x *
    w/std + (b - mean * w/std)); the backward is torch's, given these statistics."""

    @staticmethod
    def forward(ctx, x, weight, bias, eps):
        flat = x.permute(0, 2, 3, 1).reshape(-1, x.shape[1])   # a view of channels-last memory
        mean = flat.mean(0)
        var = (flat - mean).square_().mean(0)
        invstd = torch.rsqrt(var + eps)
        scale = weight * invstd
        y = torch.addcmul((bias - mean * scale)[:, None, None], x, scale[:, None, None])
        ctx.save_for_backward(x, weight, mean, invstd)
        ctx.eps = eps
        ctx.mark_non_differentiable(mean, var)
        return y, mean, var

    @staticmethod
    def backward(ctx, grad, _mean, _var):
        x, weight, mean, invstd = ctx.saved_tensors
        narrow = narrow_batch_norm_backward(grad, x, weight, mean, invstd)
        if narrow is not None:
            dx, dw, db = narrow
            return (dx if ctx.needs_input_grad[0] else None, dw if ctx.needs_input_grad[1] else None,
                    db if ctx.needs_input_grad[2] else None, None)
        dx, dw, db = torch.ops.aten.native_batch_norm_backward(
            grad, x, weight, None, None, mean, invstd, True, ctx.eps, list(ctx.needs_input_grad[:3]))
        return dx, dw, db, None


def narrow_batch_norm_backward(grad, x, weight, mean, invstd):
    """Training-mode BatchNorm backward of channels-last float32 ``x`` with fewer channels than
    one 16-float vector, or None where that does not apply. torch's channels-last CPU kernel
    runs such layers 3-15x slower than its contiguous one (4 channels x 744 bins x batch 4:
    10.7 ms against 0.7). The same memory read as rows of 16 / gcd(C, 16) pixels (a multiple of
    16 floats wide) gives vectorised per-column sums, folded back to the C channels:
    dx = w invstd (g - sum(g) / n - (x - mean) invstd^2 sum(g (x - mean)) / n), dw = invstd
    sum(g (x - mean)), db = sum(g). The IASS cpu preset's step is ~7 % faster, the paper's 1-2 %;
    the weight and bias gradients are closer to float64 than the kernel's (1e-7 against 1e-5)."""
    c = x.shape[1]
    k = 16 // math.gcd(c, 16)
    n = x.numel() // c
    if (c >= 16 or n % k or x.dtype != torch.float32 or grad.dtype != torch.float32
            or not x.is_contiguous(memory_format=torch.channels_last)
            or not grad.is_contiguous(memory_format=torch.channels_last)):
        return None
    g = grad.permute(0, 2, 3, 1).reshape(n // k, k * c)    # views of channels-last memory
    centred = x.permute(0, 2, 3, 1).reshape(n // k, k * c) - mean.repeat(k)
    sum_g = g.sum(0).view(k, c).sum(0)
    sum_gx = (centred * g).sum(0).view(k, c).sum(0)
    scale = weight * invstd
    coef = -scale * sum_gx * invstd * invstd / n
    dx = torch.addcmul((-scale * sum_g / n).repeat(k), centred, coef.repeat(k))
    dx.addcmul_(g, scale.repeat(k))
    b, _, h, w = x.shape
    return dx.view(b, h, w, c).permute(0, 3, 1, 2), sum_gx * invstd, sum_g


class BatchNorm2d(nn.BatchNorm2d):
    """``nn.BatchNorm2d`` (same parameters, buffers and state dict) whose training-mode
    statistics stay exact on channels-last float32 input (:class:`_ChannelsLastBatchNorm`);
    every other case is ``nn.BatchNorm2d``'s own."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and self.track_running_stats and self.affine and self.momentum is not None
                and x.dtype == torch.float32 and x.dim() == 4 and not x.is_contiguous()
                and x.is_contiguous(memory_format=torch.channels_last)):
            return super().forward(x)
        y, mean, var = _ChannelsLastBatchNorm.apply(x, self.weight, self.bias, self.eps)
        with torch.no_grad():   # as torch's kernel: the running variance is the unbiased one
            n = x.numel() // x.shape[1]
            self.num_batches_tracked.add_(1)
            self.running_mean.mul_(1 - self.momentum).add_(mean, alpha=self.momentum)
            self.running_var.mul_(1 - self.momentum).add_(var * (n / max(n - 1, 1)), alpha=self.momentum)
        return y


def transposed_conv3x3(conv: nn.ConvTranspose2d, x: torch.Tensor) -> torch.Tensor:
    """``conv(x)`` for a stride-1, padding-1, 3x3 ``ConvTranspose2d``, computed as the
    convolution it equals (in/out channels swapped, kernel flipped): oneDNN's channels-last
    convolution is 2-3x faster than its transposed one in forward and backward on CPU. The module
    and its parameters (the state dict) stay ``ConvTranspose2d``'s."""
    return F.conv2d(x, conv.weight.transpose(0, 1).flip(2, 3), conv.bias, padding=1)


def frequency_upsampling(conv: nn.ConvTranspose2d, x: torch.Tensor, size) -> torch.Tensor:
    """``conv(x, output_size=size)`` for the decoder's (3, 1) stride-(3, 1) ``ConvTranspose2d``,
    whose kernel tiles its output without overlap: each input bin f writes bins 3f, 3f+1, 3f+2,
    each a 1x1 map of the channels. Computed as one 1x1 convolution to 3 x out channels (k, o)
    on the coarse grid, whose channels-last memory (b, f, t, k, o) is then rearranged to
    (b, 3f + k, t, o); the rows beyond 3f that ``output_size`` asks for get the bias, as the
    module gives them. oneDNN's transposed convolution is slow here: the paper's 16-channel
    upsampling takes ~30 ms forward + backward at batch 2 against ~20 ms this way (the fp32 step
    ~2.5 % faster, the bf16 autocast step ~27 %; docs/speed.md). Same parameters (the state dict
    stays the module's); the output equals the module's exactly, gradients to float rounding."""
    b, c, f, t = x.shape
    o = conv.out_channels
    w = conv.weight[..., 0].permute(2, 1, 0).reshape(3 * o, c, 1, 1)   # (in, out, k) -> (k, out)
    z = F.conv2d(x, w.to(memory_format=torch.channels_last), conv.bias.repeat(3))
    y = z.permute(0, 2, 3, 1).reshape(b, f, t, 3, o).transpose(2, 3).reshape(b, 3 * f, t, o)
    extra = int(size[-2]) - 3 * f
    if extra:
        y = torch.cat((y, conv.bias.to(y.dtype).view(1, 1, 1, o).expand(b, extra, t, o)), 1)
    return y.permute(0, 3, 1, 2)


def pointwise_from_one_channel(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """``conv(x)`` for a 1x1 convolution of a one-channel input (the first block's skip): an
    outer product, computed as the matrix product it is, (pixels, 1) @ (1, out), into
    channels-last memory. oneDNN's convolution handles a single input channel poorly: forward and
    backward of the paper's first skip take ~2x as long, the CPU preset's ~5x (measured
    with ``bench/bench_model.py``'s shapes)."""
    b, _, h, w = x.shape
    y = torch.addmm(conv.bias, x.reshape(-1, 1), conv.weight.view(conv.out_channels, 1).t())
    return y.view(b, h, w, -1).permute(0, 3, 1, 2)


class ResidualBlock(nn.Module):
    """block.py ``block``: two conv3x3-BN-LeakyReLU, a 1x1 skip, then frequency downsampling."""

    def __init__(self, inp: int, out: int):
        super().__init__()
        self.conv1 = nn.Conv2d(inp, out, kernel_size=3, padding=1)
        self.bn1 = BatchNorm2d(out, momentum=BN_MOMENTUM)
        self.conv2 = nn.Conv2d(out, out, kernel_size=3, padding=1)
        self.bn2 = BatchNorm2d(out, momentum=BN_MOMENTUM)
        self.skip = nn.Conv2d(inp, out, kernel_size=1)
        self.down = nn.Conv2d(out, out, kernel_size=(3, 1), stride=(3, 1))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Size]:
        y = F.leaky_relu(self.bn1(self.conv1(x)))
        skip = pointwise_from_one_channel(self.skip, x) if x.shape[1] == 1 else self.skip(x)
        y = F.leaky_relu(self.bn2(self.conv2(y))) + skip
        return self.down(y), y.shape


class DecoderBlock(nn.Module):
    """block.py ``d_block``: upsample frequency to the skip's size, concat it, two transposed 3x3."""

    def __init__(self, inp: int, out: int, last: bool):
        super().__init__()
        self.last = last
        mid = inp // 2
        up_ch = inp if last else inp - out
        self.up = nn.ConvTranspose2d(up_ch, up_ch, kernel_size=(3, 1), stride=(3, 1))
        self.conv1 = nn.ConvTranspose2d(inp, mid, kernel_size=3, padding=1)
        self.bn1 = BatchNorm2d(mid, momentum=BN_MOMENTUM)
        self.conv2 = nn.ConvTranspose2d(mid, out, kernel_size=3, padding=1)
        self.bn2 = None if last else BatchNorm2d(out, momentum=BN_MOMENTUM)

    def forward(self, x: torch.Tensor, size: torch.Size, skip: torch.Tensor | None) -> torch.Tensor:
        x = frequency_upsampling(self.up, x, size)
        if skip is not None:
            x = torch.cat((x, skip), 1)
        x = self.bn1(F.leaky_relu(transposed_conv3x3(self.conv1, x)))
        if self.last:
            return transposed_conv3x3(self.conv2, x)
        return self.bn2(F.leaky_relu(transposed_conv3x3(self.conv2, x)))


class Encoder(nn.Module):
    """block.py ``Encode``: three residual blocks; conv3x3 on the first two outputs as skips."""

    def __init__(self, channels: tuple[int, int, int]):
        super().__init__()
        c1, c2, c3 = channels
        self.block1 = ResidualBlock(1, c1)
        self.block2 = ResidualBlock(c1, c2)
        self.block3 = ResidualBlock(c2, c3)
        self.skip2 = nn.Conv2d(c2, c2, kernel_size=3, padding=1)
        self.skip1 = nn.Conv2d(c1, c1, kernel_size=3, padding=1)

    def forward(self, x):
        x1, s1 = self.block1(x)
        x2, s2 = self.block2(x1)
        x3, s3 = self.block3(x2)
        return x3, (s1, s2, s3), (self.skip1(x1), self.skip2(x2))


class Decoder(nn.Module):
    """block.py ``Decode``: (c3+c2 -> c2), (c2+c1 -> c1), (c1 -> n_out) at 1/9, 1/3, 1 resolution."""

    def __init__(self, channels: tuple[int, int, int], n_out: int):
        super().__init__()
        c1, c2, c3 = channels
        self.block3 = DecoderBlock(c3 + c2, c2, last=False)
        self.block2 = DecoderBlock(c2 + c1, c1, last=False)
        self.block1 = DecoderBlock(c1, n_out, last=True)

    def forward(self, x, sizes, skips):
        s1, s2, s3 = sizes
        k1, k2 = skips
        x = self.block3(x, s3, k2)
        x = self.block2(x, s2, k1)
        return self.block1(x, s1, None)


class ActivityHead(nn.Module):
    """block.py ``InstDecoder``: (3,1) stride-(3,1) conv+BN over the latent's frequency axis (three
    of them while the latent has the bins), then one conv spanning the remaining bins: a logit per
    frame and target (paper: 55 -> 18 -> 6 -> 2 -> 1)."""

    def __init__(self, channels: tuple[int, int, int], latent_bins: int, n_targets: int):
        super().__init__()
        c1, c2, c3 = channels
        chans = [c3, c2, c1, c1]
        layers: list[nn.Module] = []
        bins = latent_bins
        for cin, cout in zip(chans[:-1], chans[1:]):
            if bins < 3:  # only in toy configurations; the paper's 55 bins take all three
                chans[-1] = cin
                break
            layers += [nn.Conv2d(cin, cout, kernel_size=(3, 1), stride=(3, 1)),
                       BatchNorm2d(cout, momentum=BN_MOMENTUM)]
            bins = (bins - 3) // 3 + 1
        self.convs = nn.Sequential(*layers)
        self.out = nn.Conv2d(chans[-1], n_targets, kernel_size=(bins, 1), stride=(bins, 1))

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        """(B, C, bins, T) -> (B, n_targets, T)."""
        return self.out(self.convs(latent)).squeeze(2)


class TargetLinear(nn.Module):
    """One Linear(in -> out) over frequency per target (``nn.Linear`` init)."""

    def __init__(self, n_targets: int, in_features: int, out_features: int):
        super().__init__()
        bound = 1.0 / math.sqrt(in_features)
        self.weight = nn.Parameter(torch.empty(n_targets, in_features, out_features).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(n_targets, out_features).uniform_(-bound, bound))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, K, T, in) -> (B, K, T, out)."""
        if x.shape[1] == 1:  # one target: a plain matmul (no einsum dispatch)
            return (x[:, 0] @ self.weight[0] + self.bias[0]).unsqueeze(1)
        return torch.einsum("bkti,kio->bkto", x, self.weight) + self.bias[None, :, None, :]

    def over_frequency(self, x: torch.Tensor) -> torch.Tensor:
        """The same map on the decoder's layout: (B, K, in, T) -> (B, K, out, T), contiguous.
        Computed as a 1x1 convolution with one group per target (oneDNN, the library of the
        network's convolutions; on CPU torch's matmul is MKL's sgemm, which reaches about half
        of oneDNN's speed on AVX-512 AMD machines). Its output is laid out as the mask is used
        (frequency, then time), so the mask and the loss run over contiguous memory instead of
        a transposed view (bench/bench_model.py)."""
        b, k, n_in, t = x.shape
        w = self.weight.transpose(1, 2).reshape(k * self.weight.shape[2], n_in, 1, 1)
        y = F.conv2d(x.reshape(b, k * n_in, t, 1), w, self.bias.reshape(-1), groups=k)
        return y.view(b, k, -1, t)


def frequency_sizes(max_bin: int, levels: int = 3) -> list[int]:
    """Bins after each (3,1) stride-(3,1) downsampling: 1487 -> [495, 165, 55]."""
    out, bins = [], max_bin
    for _ in range(levels):
        bins = (bins - 3) // 3 + 1
        out.append(bins)
    return out


class IASSNet(nn.Module):
    """The IASS U-Net for ``n_targets`` targets (1 = the paper's network)."""

    def __init__(self, n_fft: int = 4096, max_bin: int = 1487, channels=(16, 32, 48),
                 n_targets: int = 1, pitch: bool = False):
        super().__init__()
        self.n_fft = int(n_fft)
        self.nb_output_bins = self.n_fft // 2 + 1
        self.nb_bins = int(max_bin)
        self.n_targets = int(n_targets)
        channels = tuple(int(c) for c in channels)
        self.input_mean = nn.Parameter(torch.zeros(self.nb_bins))
        self.input_scale = nn.Parameter(torch.ones(self.nb_bins))
        self.encoder = Encoder(channels)
        self.decoder = Decoder(channels, self.n_targets)
        self.activity = ActivityHead(channels, frequency_sizes(self.nb_bins)[-1], self.n_targets)
        self.last = TargetLinear(self.n_targets, self.nb_bins, self.nb_output_bins)
        self.output_scale = nn.Parameter(torch.ones(self.n_targets, self.nb_output_bins))
        self.output_mean = nn.Parameter(torch.ones(self.n_targets, self.nb_output_bins))
        # created last: the parameters above are drawn exactly as without the head
        self.pitch = TargetLinear(self.n_targets, self.nb_bins, PITCH_KEYS) if pitch else None
        # channels-last convolution weights: every activation follows (oneDNN's native layout;
        # the paper preset's training step ~1.35x faster on CPU than in the contiguous layout)
        self.to(memory_format=torch.channels_last)

    @property
    def has_pitch(self) -> bool:
        return self.pitch is not None

    def set_input_statistics(self, mean: torch.Tensor, scale: torch.Tensor) -> None:
        """Initialise the input normalisation from training-set statistics (mono magnitude)."""
        with torch.no_grad():
            self.input_mean.copy_(torch.as_tensor(mean)[: self.nb_bins])
            self.input_scale.copy_(torch.as_tensor(scale)[: self.nb_bins])

    def outputs(self, mix_mag: torch.Tensor):
        """mix_mag (B, C, F, T) -> mask (B, K, F, T) >= 0, activity logits (B, K, T), pitch
        logits (B, K, T, 88) or None (no pitch head)."""
        x = mix_mag.mean(1, keepdim=True)[:, :, : self.nb_bins]  # mono, as the authors
        x = (x - self.input_mean[:, None]) / self.input_scale[:, None]
        latent, sizes, skips = self.encoder(x)
        logits = self.activity(latent)
        features = self.decoder(latent, sizes, skips)             # (B, K, bins, T)
        x = self.last.over_frequency(features)                    # (B, K, F, T)
        x = x * self.output_scale[:, :, None] + self.output_mean[:, :, None]
        pitch = self.pitch(features.transpose(2, 3)) if self.pitch is not None else None
        return F.relu(x), logits, pitch

    def masks(self, mix_mag: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """mix_mag (B, C, F, T) -> mask (B, K, F, T) >= 0, activity logits (B, K, T)."""
        mask, logits, _ = self.outputs(mix_mag)
        return mask, logits

    def forward(self, mix_mag: torch.Tensor):
        """-> estimate magnitudes (B, K, C, F, T) = mask x mixture, activity logits (B, K, T)
        (and, with a pitch head, its logits (B, K, T, 88) third)."""
        mask, logits, pitch = self.outputs(mix_mag)
        if pitch is None:
            return mask[:, :, None] * mix_mag[:, None], logits
        return mask[:, :, None] * mix_mag[:, None], logits, pitch


class IASSModel(nn.Module):
    """All targets of a run: one multi-target ``IASSNet`` or one single-target net per target."""

    def __init__(self, targets: list[str], n_fft: int, max_bin: int, channels, multi_target: bool,
                 pitch: bool = False):
        super().__init__()
        self.targets = list(targets)
        self.multi_target = bool(multi_target)
        self.has_pitch = bool(pitch)
        if self.multi_target:
            self.net = IASSNet(n_fft, max_bin, channels, n_targets=len(self.targets), pitch=pitch)
        else:
            self.nets = nn.ModuleDict({t: IASSNet(n_fft, max_bin, channels, 1, pitch) for t in self.targets})

    def _nets(self) -> list[IASSNet]:
        return [self.net] if self.multi_target else [self.nets[t] for t in self.targets]

    def set_input_statistics(self, mean, scale) -> None:
        for net in self._nets():
            net.set_input_statistics(mean, scale)

    def masks(self, mix_mag: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """-> mask (B, K, F, T), logits (B, K, T)."""
        outs = [net.masks(mix_mag) for net in self._nets()]
        if len(outs) == 1:
            return outs[0]
        return torch.cat([m for m, _ in outs], 1), torch.cat([a for _, a in outs], 1)

    def outputs(self, mix_mag: torch.Tensor):
        """-> mask (B, K, F, T), logits (B, K, T), pitch logits (B, K, T, 88) or None."""
        outs = [net.outputs(mix_mag) for net in self._nets()]
        if len(outs) == 1:
            return outs[0]
        pitch = torch.cat([p for _, _, p in outs], 1) if self.has_pitch else None
        return torch.cat([m for m, _, _ in outs], 1), torch.cat([a for _, a, _ in outs], 1), pitch

    def forward(self, mix_mag: torch.Tensor):
        """-> estimates (B, K, C, F, T), logits (B, K, T) (and pitch logits (B, K, T, 88) with
        a pitch head: the training loss reads them from the forward, which DDP wraps)."""
        if not self.has_pitch:
            mask, logits = self.masks(mix_mag)
            return mask[:, :, None] * mix_mag[:, None], logits
        mask, logits, pitch = self.outputs(mix_mag)
        return mask[:, :, None] * mix_mag[:, None], logits, pitch


def build_iass(cfg: dict, targets: list[str]) -> IASSModel:
    return IASSModel(targets, cfg["n_fft"], cfg["max_bin"], cfg["channels"], cfg["multi_target"],
                     pitch=float(cfg.get("pitch_weight", 0.0)) > 0)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def optimize_for_inference(model: nn.Module) -> nn.Module:
    """Eval-only speed-ups, same outputs (to float rounding): BatchNorm folded into the
    convolution before it where the design has conv -> BN (encoder blocks, activity head), and
    channels-last memory (the network is built channels-last already; a model from elsewhere
    becomes so). Folding is not for training, where BatchNorm normalises with the batch's
    statistics. Returns the model, modified in place and set to eval mode."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    model.eval()
    for module in model.modules():
        if isinstance(module, ResidualBlock):
            if isinstance(module.bn1, nn.BatchNorm2d):
                module.conv1 = fuse_conv_bn_eval(module.conv1, module.bn1)
                module.bn1 = nn.Identity()
            if isinstance(module.bn2, nn.BatchNorm2d):
                module.conv2 = fuse_conv_bn_eval(module.conv2, module.bn2)
                module.bn2 = nn.Identity()
        elif isinstance(module, ActivityHead):
            layers = list(module.convs)
            fused: list[nn.Module] = []
            i = 0
            while i < len(layers):
                if (i + 1 < len(layers) and isinstance(layers[i], nn.Conv2d)
                        and isinstance(layers[i + 1], nn.BatchNorm2d)):
                    fused.append(fuse_conv_bn_eval(layers[i], layers[i + 1]))
                    i += 2
                else:
                    fused.append(layers[i])
                    i += 1
            module.convs = nn.Sequential(*fused)
    return model.to(memory_format=torch.channels_last)
