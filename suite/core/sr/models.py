"""Super-resolution models in plain torch, and a weight-sharing supernet.

Contract of every model here: ``forward(x)`` maps ``[N, 3, h, w]`` RGB in
``[0, 1]`` to ``[N, 3, h * scale, w * scale]`` RGB, nominally in ``[0, 1]``
but not clamped (clamp at evaluation; training sees the raw output).  The
input normalisation is inside the model: ``sub_mean`` subtracts a per-channel
mean (DIV2K's RGB mean by default) at the start and ``add_mean`` adds it back
at the end; both are buffers, saved with the state dict.  Attributes ``arch``
and ``scale`` describe the model.  Only ``Conv2d``, ``ConvTranspose2d``,
``PReLU``, ``ReLU``, ``Tanh``, ``PixelShuffle`` and additions are used, so
``torch.export`` / ONNX / TVM can take the models unchanged.

* :class:`ESPCN` -- Shi et al. (CVPR 2016): conv5x5 64, tanh, conv3x3 32, tanh,
  conv3x3 3*scale^2, pixel shuffle (on RGB here; the paper works on Y).
* :class:`FSRCNN` -- Dong et al. (ECCV 2016), FSRCNN(d, s, m): conv5x5 d,
  conv1x1 s (shrinking), m x conv3x3 s (mapping), conv1x1 d (expanding), each
  followed by a per-channel PReLU, then a 9x9 transposed conv with stride scale.
* :class:`EDSR` -- EDSR-baseline style (Lim et al., CVPRW 2017): conv3x3 head,
  residual blocks conv-ReLU-conv without batch norm, a conv3x3, the global
  residual, a pixel-shuffle upsampler (one x2 / x3 stage, or two x2 stages for
  x4) and a conv3x3 to RGB.  ``width`` and ``depth`` multiply the baseline's 64
  features and 16 blocks.
* :class:`SRSupernet` -- a weight-sharing supernet over depth (number of
  residual blocks), width (trunk channels, a prefix slice of the full weights)
  and the kernel size of each block (3 or 5; a 3x3 kernel is the centre of the
  5x5 one).  :meth:`SRSupernet.extract` returns a standalone
  :class:`ResidualSR` whose forward equals the supernet's forward under that
  choice exactly.  Both carry, by default, a global nearest-neighbour
  *anchor* (:func:`nearest_anchor`): the input, repeated ``scale^2`` times per
  channel in pixel-shuffle order, is added to the tail conv's output before the
  pixel shuffle, so the output is ``nearest-upsampled input + learned residual``
  (arch names ``residual-sr-nn`` / ``sr-supernet-nn``; ``anchor=False`` gives
  the plain ``residual-sr`` / ``sr-supernet``).

:func:`build_sr_model` builds by name; the names are listed in
:data:`SR_ZOO` (and in the lazy registry ``suite.core.sr.sr_models``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from suite.core.errors import ConfigError, UnknownNameError
from suite.core.sr.degrade import check_scale

#: RGB mean of the DIV2K training set (EDSR's MeanShift), subtracted inside every model.
DIV2K_MEAN = (0.4488, 0.4371, 0.4040)


class MeanShift(nn.Module):
    """``x + sign * mean`` with a per-channel ``mean`` buffer ``[1, 3, 1, 1]``."""

    def __init__(self, mean: Sequence[float] = DIV2K_MEAN, sign: float = -1.0) -> None:
        super().__init__()
        if len(mean) != 3:
            raise ConfigError(f"mean must have 3 values (RGB), got {len(mean)}")
        self.register_buffer("mean", torch.tensor([float(m) for m in mean], dtype=torch.float32).view(1, 3, 1, 1))
        self.sign = float(sign)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.sign * self.mean

    def extra_repr(self) -> str:
        return f"sign={self.sign:+g}, mean=({', '.join(f'{v:g}' for v in self.mean.flatten().tolist())})"


def _channels(base: int, width: float) -> int:
    return max(1, int(round(base * width)))


def _check_mult(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 16:
        raise ConfigError(f"{name} must be a number in (0, 16], got {value!r}")
    return float(value)


class ESPCN(nn.Module):
    """ESPCN: conv5x5 -> tanh -> conv3x3 -> tanh -> conv3x3 (3 scale^2) -> pixel shuffle.

    Input ``[N, 3, h, w]`` in [0, 1]; output ``[N, 3, h s, w s]`` (not clamped).
    """

    arch = "espcn"

    def __init__(self, scale: int, width: float = 1.0, mean: Sequence[float] = DIV2K_MEAN) -> None:
        super().__init__()
        self.scale = check_scale(scale)
        f1, f2 = _channels(64, width), _channels(32, width)
        self.sub_mean = MeanShift(mean, -1.0)
        self.body = nn.Sequential(
            nn.Conv2d(3, f1, 5, padding=2), nn.Tanh(),
            nn.Conv2d(f1, f2, 3, padding=1), nn.Tanh(),
            nn.Conv2d(f2, 3 * scale * scale, 3, padding=1),
        )
        self.upsample = nn.PixelShuffle(scale)
        self.add_mean = MeanShift(mean, 1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.add_mean(self.upsample(self.body(self.sub_mean(x))))


class FSRCNN(nn.Module):
    """FSRCNN(d, s, m) with PReLU; deconvolution 9x9, stride ``scale``.

    Input ``[N, 3, h, w]`` in [0, 1]; output ``[N, 3, h s, w s]`` (not clamped).
    The transposed conv has padding 4 and output padding ``scale - 1``, so the
    output is exactly ``scale`` times the input.
    """

    arch = "fsrcnn"

    def __init__(self, scale: int, d: int = 56, s: int = 12, m: int = 4, mean: Sequence[float] = DIV2K_MEAN) -> None:
        super().__init__()
        self.scale = check_scale(scale)
        for label, v in (("d", d), ("s", s), ("m", m)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(f"FSRCNN {label} must be a positive integer, got {v!r}")
        self.sub_mean = MeanShift(mean, -1.0)
        layers: list[nn.Module] = [nn.Conv2d(3, d, 5, padding=2), nn.PReLU(d),
                                   nn.Conv2d(d, s, 1), nn.PReLU(s)]
        for _ in range(m):
            layers += [nn.Conv2d(s, s, 3, padding=1), nn.PReLU(s)]
        layers += [nn.Conv2d(s, d, 1), nn.PReLU(d)]
        self.body = nn.Sequential(*layers)
        for conv in self.body:  # the paper's initialisation: He et al. (2015) for the convs before a PReLU
            if isinstance(conv, nn.Conv2d):
                nn.init.kaiming_normal_(conv.weight, a=0.25, nonlinearity="leaky_relu")
                nn.init.zeros_(conv.bias)
        self.deconv = nn.ConvTranspose2d(d, 3, 9, stride=scale, padding=4, output_padding=scale - 1)
        nn.init.normal_(self.deconv.weight, std=0.001)  # the paper's initialisation of the deconvolution
        nn.init.zeros_(self.deconv.bias)
        self.add_mean = MeanShift(mean, 1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.add_mean(self.deconv(self.body(self.sub_mean(x))))


class ResBlock(nn.Module):
    """``x + conv(relu(conv(x)))`` with ``channels`` in and out, ``kernel`` x ``kernel`` convs, no BN."""

    def __init__(self, channels: int, kernel: int = 3) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, kernel, padding=kernel // 2)
        self.act = nn.ReLU()
        self.conv2 = nn.Conv2d(channels, channels, kernel, padding=kernel // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(self.act(self.conv1(x)))


def _edsr_upsampler(scale: int, channels: int) -> nn.Sequential:
    if scale == 4:
        return nn.Sequential(nn.Conv2d(channels, 4 * channels, 3, padding=1), nn.PixelShuffle(2),
                             nn.Conv2d(channels, 4 * channels, 3, padding=1), nn.PixelShuffle(2))
    return nn.Sequential(nn.Conv2d(channels, scale * scale * channels, 3, padding=1), nn.PixelShuffle(scale))


class EDSR(nn.Module):
    """EDSR-baseline style: head, ``blocks`` residual blocks, conv, global residual, upsampler, conv to RGB.

    Input ``[N, 3, h, w]`` in [0, 1]; output ``[N, 3, h s, w s]`` (not clamped).
    """

    arch = "edsr"

    def __init__(self, scale: int, channels: int = 64, blocks: int = 16, mean: Sequence[float] = DIV2K_MEAN) -> None:
        super().__init__()
        self.scale = check_scale(scale)
        if channels < 1 or blocks < 1:
            raise ConfigError(f"EDSR needs channels >= 1 and blocks >= 1, got {channels} and {blocks}")
        self.channels, self.blocks = channels, blocks
        self.sub_mean = MeanShift(mean, -1.0)
        self.head = nn.Conv2d(3, channels, 3, padding=1)
        self.body = nn.Sequential(*[ResBlock(channels, 3) for _ in range(blocks)])
        self.body_end = nn.Conv2d(channels, channels, 3, padding=1)
        self.upsample = _edsr_upsampler(scale, channels)
        self.tail = nn.Conv2d(channels, 3, 3, padding=1)
        self.add_mean = MeanShift(mean, 1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.head(self.sub_mean(x))
        h = h + self.body_end(self.body(h))
        return self.add_mean(self.tail(self.upsample(h)))


# --------------------------------------------------------------------------- supernet


def nearest_anchor(x: torch.Tensor, scale: int) -> torch.Tensor:
    """``x [N, C, h, w]`` repeated ``scale^2`` times per channel: ``[N, C scale^2, h, w]``.

    Channel ``c scale^2 + k`` equals ``x[:, c]`` for every ``k < scale^2``, the
    order :class:`torch.nn.PixelShuffle` reads, so ``PixelShuffle(scale)`` of the
    result is the nearest-neighbour upsampling of ``x`` (``[N, C, h scale, w scale]``).
    Only unsqueeze / expand / flatten: exports through torch.export, ONNX and TVM.
    """
    s2 = int(scale) * int(scale)
    return x.unsqueeze(2).expand(-1, -1, s2, -1, -1).flatten(1, 2)


@dataclass(frozen=True)
class SRChoice:
    """One sub-network of :class:`SRSupernet`: trunk ``width`` and one kernel size per residual block.

    ``depth`` is ``len(kernels)``; block ``i`` uses ``kernels[i]`` x ``kernels[i]`` convs.
    """

    width: int
    kernels: tuple[int, ...]

    @property
    def depth(self) -> int:
        return len(self.kernels)

    def as_dict(self) -> dict:
        return {"width": self.width, "depth": self.depth, "kernels": list(self.kernels)}


class ResidualSR(nn.Module):
    """A plain residual SR network, the stand-alone form of a supernet sub-network.

    sub_mean -> head conv3x3 (3 -> width) -> residual blocks (per-block kernel)
    -> conv3x3 -> + head output -> conv3x3 (width -> 3 scale^2) [+ anchor] -> pixel shuffle -> add_mean.
    anchor: add :func:`nearest_anchor` of the mean-subtracted input to the tail's
    output (the net then learns the residual over nearest-neighbour upsampling);
    ``arch`` is ``residual-sr-nn`` with it, ``residual-sr`` without.
    Input ``[N, 3, h, w]`` in [0, 1]; output ``[N, 3, h s, w s]`` (not clamped).
    """

    def __init__(self, scale: int, width: int, kernels: Sequence[int], mean: Sequence[float] = DIV2K_MEAN,
                 anchor: bool = True) -> None:
        super().__init__()
        self.scale = check_scale(scale)
        self.anchor = bool(anchor)
        self.arch = "residual-sr-nn" if self.anchor else "residual-sr"
        self.choice = SRChoice(int(width), tuple(int(k) for k in kernels))
        self.sub_mean = MeanShift(mean, -1.0)
        self.head = nn.Conv2d(3, width, 3, padding=1)
        self.body = nn.Sequential(*[ResBlock(width, k) for k in self.choice.kernels])
        self.body_end = nn.Conv2d(width, width, 3, padding=1)
        self.tail = nn.Conv2d(width, 3 * scale * scale, 3, padding=1)
        self.upsample = nn.PixelShuffle(scale)
        self.add_mean = MeanShift(mean, 1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.sub_mean(x)
        h = self.head(x)
        h = h + self.body_end(self.body(h))
        y = self.tail(h)
        if self.anchor:
            y = y + nearest_anchor(x, self.scale)
        return self.add_mean(self.upsample(y))


class DynamicConv2d(nn.Module):
    """A conv whose weight ``[max_out, max_in, max_k, max_k]`` is shared by smaller convs.

    A sub-conv with ``out`` outputs, ``in`` inputs and kernel ``k`` uses
    ``weight[:out, :in, c - k//2 : c + k//2 + 1, same]`` (``c = max_k // 2``:
    the centre of the kernel) and ``bias[:out]``; stride 1, padding ``k // 2``.
    """

    def __init__(self, max_in: int, max_out: int, max_k: int) -> None:
        super().__init__()
        if max_k % 2 == 0:
            raise ConfigError(f"kernel sizes must be odd, got {max_k}")
        # Initialise like nn.Conv2d of the full size.
        ref = nn.Conv2d(max_in, max_out, max_k)
        self.weight = nn.Parameter(ref.weight.detach().clone())
        self.bias = nn.Parameter(ref.bias.detach().clone())
        self.max_in, self.max_out, self.max_k = max_in, max_out, max_k

    def sliced(self, in_ch: int, out_ch: int, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(weight [out, in, k, k], bias [out])`` of the sub-conv, contiguous (autograd flows to the full tensors)."""
        if not (0 < in_ch <= self.max_in and 0 < out_ch <= self.max_out and 0 < k <= self.max_k and k % 2):
            raise ConfigError(f"sub-conv ({in_ch} -> {out_ch}, k={k}) does not fit in "
                              f"({self.max_in} -> {self.max_out}, k={self.max_k})")
        lo = self.max_k // 2 - k // 2
        w = self.weight[:out_ch, :in_ch, lo:lo + k, lo:lo + k].contiguous()
        return w, self.bias[:out_ch].contiguous()

    def forward(self, x: torch.Tensor, out_ch: int, k: int) -> torch.Tensor:
        w, b = self.sliced(int(x.shape[1]), out_ch, k)
        return F.conv2d(x, w, b, padding=k // 2)

    def to_conv(self, in_ch: int, out_ch: int, k: int) -> nn.Conv2d:
        """A plain ``nn.Conv2d`` holding a copy of the sub-conv's weights."""
        w, b = self.sliced(in_ch, out_ch, k)
        conv = nn.Conv2d(in_ch, out_ch, k, padding=k // 2)
        with torch.no_grad():
            conv.weight.copy_(w)
            conv.bias.copy_(b)
        return conv


class SRSupernet(nn.Module):
    """Weight-sharing supernet of :class:`ResidualSR` networks.

    widths: allowed trunk widths (channels); the largest is the full width.
    max_depth / min_depth: the allowed numbers of residual blocks.
    kernel_sizes: allowed per-block kernel sizes (odd; the largest is stored).
    A sub-network takes the first ``depth`` blocks, the first ``width``
    channels of every trunk weight, and the centre ``k x k`` of each block's
    kernels; head, body_end and tail are 3x3.  ``forward(x, choice)`` runs one
    sub-network (default: the active choice, see :meth:`set_choice`, initially
    the largest).  anchor: the global nearest-neighbour anchor of :class:`ResidualSR`
    (``arch`` ``sr-supernet-nn`` with it, ``sr-supernet`` without; extracted
    sub-networks inherit it).  Input ``[N, 3, h, w]`` in [0, 1]; output ``[N, 3, h s, w s]``.
    """

    def __init__(self, scale: int, widths: Sequence[int] = (16, 24, 32, 48, 64), max_depth: int = 8,
                 min_depth: int = 1, kernel_sizes: Sequence[int] = (3, 5), mean: Sequence[float] = DIV2K_MEAN,
                 anchor: bool = True) -> None:
        super().__init__()
        self.scale = check_scale(scale)
        self.anchor = bool(anchor)
        self.arch = "sr-supernet-nn" if self.anchor else "sr-supernet"
        self.widths = tuple(sorted({int(w) for w in widths}))
        self.kernel_sizes = tuple(sorted({int(k) for k in kernel_sizes}))
        if not self.widths or self.widths[0] < 1:
            raise ConfigError(f"supernet widths must be positive integers, got {widths!r}")
        if not self.kernel_sizes or any(k < 1 or k % 2 == 0 for k in self.kernel_sizes):
            raise ConfigError(f"supernet kernel sizes must be odd positive integers, got {kernel_sizes!r}")
        if not 1 <= min_depth <= max_depth:
            raise ConfigError(f"supernet needs 1 <= min_depth <= max_depth, got {min_depth} and {max_depth}")
        self.min_depth, self.max_depth = int(min_depth), int(max_depth)
        wmax, kmax = self.widths[-1], self.kernel_sizes[-1]
        self.mean = tuple(float(m) for m in mean)
        self.sub_mean = MeanShift(mean, -1.0)
        self.head = DynamicConv2d(3, wmax, 3)
        self.blocks = nn.ModuleList(
            nn.ModuleDict({"conv1": DynamicConv2d(wmax, wmax, kmax), "conv2": DynamicConv2d(wmax, wmax, kmax)})
            for _ in range(self.max_depth)
        )
        self.body_end = DynamicConv2d(wmax, wmax, 3)
        self.tail = DynamicConv2d(wmax, 3 * scale * scale, 3)
        self.upsample = nn.PixelShuffle(scale)
        self.add_mean = MeanShift(mean, 1.0)
        self.active = self.max_choice()

    # -- the search space ------------------------------------------------
    def max_choice(self) -> SRChoice:
        return SRChoice(self.widths[-1], (self.kernel_sizes[-1],) * self.max_depth)

    def min_choice(self) -> SRChoice:
        return SRChoice(self.widths[0], (self.kernel_sizes[0],) * self.min_depth)

    def check_choice(self, choice: SRChoice) -> SRChoice:
        """``choice`` if it is in the search space; ConfigError naming what is wrong otherwise."""
        if choice.width not in self.widths:
            raise ConfigError(f"width {choice.width} not in the supernet's widths {self.widths}")
        if not self.min_depth <= choice.depth <= self.max_depth:
            raise ConfigError(f"depth {choice.depth} outside the supernet's {self.min_depth}..{self.max_depth}")
        bad = [k for k in choice.kernels if k not in self.kernel_sizes]
        if bad:
            raise ConfigError(f"kernel sizes {bad} not in the supernet's {self.kernel_sizes}")
        return choice

    def sample(self, rng: np.random.Generator) -> SRChoice:
        """A uniformly random choice (width, depth, then each block's kernel) drawn from ``rng``."""
        width = int(self.widths[int(rng.integers(len(self.widths)))])
        depth = int(rng.integers(self.min_depth, self.max_depth + 1))
        kernels = tuple(int(self.kernel_sizes[int(i)]) for i in rng.integers(len(self.kernel_sizes), size=depth))
        return SRChoice(width, kernels)

    def set_choice(self, choice: SRChoice) -> None:
        """Make ``choice`` the sub-network that ``forward(x)`` runs."""
        self.active = self.check_choice(choice)

    # -- running and extracting -----------------------------------------
    def forward(self, x: torch.Tensor, choice: SRChoice | None = None) -> torch.Tensor:
        c = self.active if choice is None else self.check_choice(choice)
        x = self.sub_mean(x)
        h = self.head(x, c.width, 3)
        t = h
        for block, k in zip(self.blocks, c.kernels):
            t = t + block["conv2"](F.relu(block["conv1"](t, c.width, k)), c.width, k)
        h = h + self.body_end(t, c.width, 3)
        y = self.tail(h, 3 * self.scale * self.scale, 3)
        if self.anchor:
            y = y + nearest_anchor(x, self.scale)
        return self.add_mean(self.upsample(y))

    def extract(self, choice: SRChoice) -> ResidualSR:
        """A stand-alone :class:`ResidualSR` with copies of ``choice``'s weights (same forward, exactly)."""
        c = self.check_choice(choice)
        net = ResidualSR(self.scale, c.width, c.kernels, self.mean, anchor=self.anchor)
        net.head = self.head.to_conv(3, c.width, 3)
        for i, k in enumerate(c.kernels):
            net.body[i].conv1 = self.blocks[i]["conv1"].to_conv(c.width, c.width, k)
            net.body[i].conv2 = self.blocks[i]["conv2"].to_conv(c.width, c.width, k)
        net.body_end = self.body_end.to_conv(c.width, c.width, 3)
        net.tail = self.tail.to_conv(c.width, 3 * self.scale * self.scale, 3)
        net.sub_mean.mean.copy_(self.sub_mean.mean)
        net.add_mean.mean.copy_(self.add_mean.mean)
        return net.to(self.head.weight.device).train(self.training)


# --------------------------------------------------------------------------- builders


def build_espcn(scale: int, width: float = 1.0, depth: float = 1.0) -> ESPCN:
    """ESPCN (64-32 features at width 1; ``depth`` is accepted for the common signature and must be 1)."""
    _check_mult("width", width)
    if depth != 1.0:
        raise ConfigError(f"ESPCN has a fixed depth of 3 convs; depth must be 1, got {depth!r}")
    return ESPCN(scale, width)


def build_fsrcnn(scale: int, width: float = 1.0, depth: float = 1.0) -> FSRCNN:
    """FSRCNN(56, 12, 4): ``width`` scales d and s, ``depth`` scales m (the mapping layers)."""
    _check_mult("width", width)
    _check_mult("depth", depth)
    return FSRCNN(scale, d=_channels(56, width), s=_channels(12, width), m=_channels(4, depth))


def build_edsr(scale: int, width: float = 1.0, depth: float = 1.0) -> EDSR:
    """EDSR-baseline: 64 features x ``width``, 16 residual blocks x ``depth``."""
    _check_mult("width", width)
    _check_mult("depth", depth)
    return EDSR(scale, channels=_channels(64, width), blocks=_channels(16, depth))


def build_sr_supernet(scale: int, width: float = 1.0, depth: float = 1.0) -> SRSupernet:
    """Supernet with widths (16, 24, 32, 48, 64) x ``width``, 1..8 x ``depth`` blocks, kernels 3 / 5."""
    _check_mult("width", width)
    _check_mult("depth", depth)
    widths = sorted({_channels(b, width) for b in (16, 24, 32, 48, 64)})
    return SRSupernet(scale, widths=widths, max_depth=_channels(8, depth))


SR_ZOO: dict[str, tuple[Callable[..., nn.Module], str]] = {
    "espcn": (build_espcn, "ESPCN (Shi et al. 2016): conv5x5 64, conv3x3 32, conv3x3 3s^2, pixel shuffle; tanh"),
    "fsrcnn": (build_fsrcnn, "FSRCNN(56, 12, 4) (Dong et al. 2016): PReLU, 9x9 deconvolution with stride s"),
    "edsr": (build_edsr, "EDSR-baseline style (Lim et al. 2017): 64 features, 16 residual blocks, no BN, pixel shuffle"),
    "sr-supernet": (build_sr_supernet, "weight-sharing supernet over depth, width and kernel size (extract sub-networks)"),
}


def build_sr_model(name: str, scale: int, width: float = 1.0, depth: float = 1.0) -> nn.Module:
    """Build SR model ``name`` from :data:`SR_ZOO` for ``scale`` (2, 3 or 4)."""
    if not isinstance(name, str) or name not in SR_ZOO:
        raise UnknownNameError(f"unknown SR model {name!r}; choose one of: {', '.join(sorted(SR_ZOO))}")
    return SR_ZOO[name][0](scale, width, depth)
