"""Deploy super-resolution models: torch eager, ONNX Runtime, TVM (our conv kernels, dense or block-sparse).

An SR model maps ``[N, 3, h, w]`` float32 RGB in [0, 1] to ``[N, 3, h*s, w*s]``
(not clamped; see :mod:`suite.core.sr.models`).  This module takes such a model
through the deployment paths the classifiers use, and adds what SR needs:

* :func:`lower_for_deploy` -- a copy of the model with every
  ``ConvTranspose2d`` rewritten as the equivalent sub-pixel convolution
  (``Conv2d`` to ``Co * s^2`` channels + ``PixelShuffle(s)``), exact up to
  float summation order.  TVM's own lowering of ``conv2d_transpose`` is an
  unscheduled scalar loop nest (hundreds of ms per 720p frame); as a conv it
  runs through our row-block conv template like every other conv.
* :func:`block_prune_sr` -- block pruning (the ``block`` scheme of
  :mod:`compression.schemes`, row-blocks of ``r`` filters keeping the same
  columns) of an SR model's convs with fixed masks (a :class:`MaskSet`);
  :func:`fine_tune_masked` recovers PSNR with the masks held fixed.
* :func:`compile_sr_tvm` -- ``torch.export`` -> Relax -> our conv rewrite
  (:func:`compression.tvm_backend.compile.rewrite_convs`: compact kernel for
  pruned convs where it measures faster, the dense template otherwise) ->
  ``tvm.compile`` with the CPU pipeline plus one extra pass: every remaining
  injective kernel (tanh, PReLU's ``where``, the mean shifts, pixel shuffle's
  reshape / transpose) is scheduled parallel + vectorised
  (:func:`compression.tvm_backend.other_ops.cpu_relax_pipeline`), and ``tanh`` uses TVM's fast rational
  approximation (``FastMathTransform``; max error 3.2e-7).  TVM's default CPU
  pipeline leaves those as single-threaded loops, and its ``tanh`` is a scalar
  libm call per element: 2 x 60 ms of an ESPCN 720p frame on one core.
* :class:`SRRuntime` -- one deployment as the user calls it, a frame at a
  time: numpy ``[1, 3, h, w]`` in, numpy ``[1, 3, h s, w s]`` out (input
  conversion, the call and the output copy included), built by
  :func:`eager_runtime`, :func:`onnx_runtime` and :func:`tvm_runtime`;
  :func:`max_abs_diff` / :func:`time_interleaved` compare and time them side
  by side in one process; :func:`measure_tvm_frame` builds and times one
  frame the way the benchmark measures a searched model (the SR search's
  verify rounds); :class:`RuntimeModule` lets
  :func:`suite.core.sr.train.evaluate` score a deployment (PSNR / SSIM) on
  whole photos of any size (one build per input shape).
"""

from __future__ import annotations

import copy
import os
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from compression.masks import MaskSet
from suite.core.errors import ConfigError


# --------------------------------------------------------------------------- deconvolution -> sub-pixel conv


def _phase_taps(kernel: int, stride: int, pad: int, phase: int) -> tuple[int, int, int]:
    """For output phase ``a`` of a transposed conv: ``(q, r, T)``.

    Output ``y[s*Y + a]`` reads input ``x[Y + q - t]`` with kernel tap
    ``k = s*t + r`` for ``t = 0 .. T-1`` (``q = (a + pad) // s``,
    ``r = (a + pad) % s``, ``T`` = number of taps ``k < kernel`` with ``k = r mod s``).
    """
    q, r = divmod(phase + pad, stride)
    taps = 0 if r >= kernel else -(-(kernel - r) // stride)
    return q, r, taps


def subpixel_from_deconv(deconv: nn.ConvTranspose2d) -> nn.Sequential:
    """``Conv2d(Ci, Co*s^2, 2P+1, padding=P)`` + ``PixelShuffle(s)`` computing exactly ``deconv``.

    Needs: ``groups == 1``, dilation 1, equal strides ``s``, square kernel
    ``K``, symmetric padding ``p``, equal output paddings ``op`` and
    ``K - 2p + op == s`` (the output is then exactly ``s`` times the input,
    FSRCNN's case).  Output channel ``co*s^2 + a*s + b`` of the conv is output
    phase ``(a, b)`` of channel ``co``: its weight at offset ``(dy, dx)`` from
    the centre is the deconvolution's tap ``(s*(q_a - dy) + r_a, s*(q_b - dx) + r_b)``
    where that tap exists, else 0 (see :func:`_phase_taps`).
    Raises ConfigError for a transposed conv outside these conditions.
    """
    s = int(deconv.stride[0])
    k = int(deconv.kernel_size[0])
    p = int(deconv.padding[0])
    op = int(deconv.output_padding[0])
    ok = (deconv.groups == 1 and tuple(deconv.dilation) == (1, 1) and tuple(deconv.stride) == (s, s)
          and tuple(deconv.kernel_size) == (k, k) and tuple(deconv.padding) == (p, p)
          and tuple(deconv.output_padding) == (op, op) and k - 2 * p + op == s
          and isinstance(deconv.padding, tuple) and deconv.padding_mode == "zeros")
    if not ok:
        raise ConfigError(f"cannot rewrite {deconv} as a sub-pixel conv: needs groups 1, dilation 1, square kernel, "
                          "symmetric padding, zero padding mode and kernel - 2*padding + output_padding == stride")
    phases = [_phase_taps(k, s, p, a) for a in range(s)]
    lo = min(q - t + 1 for q, _, t in phases if t)  # smallest input offset read (Y + lo)
    hi = max(q for q, _, t in phases if t)  # largest
    pad = max(0, -lo, hi)
    kc = 2 * pad + 1
    wt = deconv.weight.detach()  # [Ci, Co, K, K]
    ci, co = wt.shape[0], wt.shape[1]
    w = torch.zeros(co, s, s, ci, kc, kc, dtype=wt.dtype)
    for a, (qa, ra, ta) in enumerate(phases):
        for b, (qb, rb, tb) in enumerate(phases):
            for t in range(ta):
                for u in range(tb):
                    dy, dx = qa - t, qb - u  # input offset of tap (s t + ra, s u + rb)
                    w[:, a, b, :, dy + pad, dx + pad] = wt[:, :, s * t + ra, s * u + rb].t()
    conv = nn.Conv2d(ci, co * s * s, kc, padding=pad, bias=deconv.bias is not None)
    with torch.no_grad():
        conv.weight.copy_(w.reshape(co * s * s, ci, kc, kc))
        if deconv.bias is not None:
            conv.bias.copy_(deconv.bias.detach().repeat_interleave(s * s))
    return nn.Sequential(conv, nn.PixelShuffle(s))


def lower_for_deploy(model: nn.Module) -> nn.Module:
    """An eval-mode CPU copy of ``model`` with every ``ConvTranspose2d`` replaced by :func:`subpixel_from_deconv`.

    The input model is not modified.  Every other module is kept as it is.
    """
    out = copy.deepcopy(model).cpu().eval()
    for name, module in list(out.named_modules()):
        if isinstance(module, nn.ConvTranspose2d):
            parent_name, _, child = name.rpartition(".")
            parent = out.get_submodule(parent_name) if parent_name else out
            setattr(parent, child, subpixel_from_deconv(module))
    return out


# --------------------------------------------------------------------------- block pruning with fixed masks


def sr_conv_names(model: nn.Module, input_shape: tuple[int, int, int] = (3, 24, 24), *, keep_first: bool = True,
                  keep_last: bool = True) -> list[str]:
    """Module names of the ``Conv2d`` layers (``groups == 1``) a scheme may prune, in execution order.

    keep_first: keep the first conv (3 input channels: few GEMM columns, every pixel depends on it).
    keep_last: keep the last conv (it writes the image, or its sub-pixel channels); when the model
    has a ``ConvTranspose2d`` (FSRCNN), that writes the image instead and the last conv is prunable.
    Transposed convs are never listed (FSRCNN's deconvolution stays dense).
    """
    from compression.layers import list_layers

    convs = [l for l in list_layers(model, input_shape) if l.kind == "conv" and l.groups == 1]
    names = [l.name for l in convs]
    if keep_first and names:
        names = names[1:]
    has_deconv = any(isinstance(m, nn.ConvTranspose2d) for m in model.modules())
    if keep_last and not has_deconv and convs and names and names[-1] == convs[-1].name:
        names = names[:-1]
    return names


def block_prune_sr(model: nn.Module, sparsity: float, *, r: int = 8, c: int = 16, names: list[str] | None = None,
                   input_shape: tuple[int, int, int] = (3, 24, 24)) -> tuple[nn.Module, MaskSet]:
    """A copy of ``model`` with the ``block`` scheme's masks at ``sparsity`` applied; and the masks.

    sparsity: fraction in [0, 1) of each listed conv's weights removed (the
    scheme's granularity: whole GEMM columns of each row-block of ``r`` filters;
    ``balance="row-block"``, so every row-block keeps the same number of
    columns and the compiler's compact kernel has static shapes).
    names: the convs to prune (default :func:`sr_conv_names`).
    ``r`` should equal the TVM backend's kernel block rows (8) so that the
    compact kernel skips exactly the pruned columns.
    """
    from compression.schemes import make_scheme

    if not 0.0 <= float(sparsity) < 1.0:
        raise ConfigError(f"sparsity must be in [0, 1), got {sparsity!r}")
    pruned = copy.deepcopy(model).cpu().eval()
    names = sr_conv_names(pruned, input_shape) if names is None else list(names)
    scheme = make_scheme("block", r=r, c=c)
    masks = MaskSet({n: scheme.mask(pruned.get_submodule(n).weight.detach(), float(sparsity)) for n in names})
    masks.apply(pruned)
    return pruned, masks


def fine_tune_masked(model: nn.Module, masks: MaskSet, train, scale: int, recipe, *, seed: int,
                     threads: int | None = None, log: Callable[[str], None] | None = None, log_every: int = 0):
    """Fine-tune ``model`` in place (L1, :func:`suite.core.sr.train.train_sr`) with ``masks`` held fixed.

    Pruned weights get zero gradients (hooks) and are re-zeroed before every
    step and at the end, so they are exactly 0 afterwards.  Returns the
    training report.
    """
    from suite.core.sr.train import train_sr

    masks.attach(model)
    try:
        report = train_sr(model, train, scale, recipe, seed=seed, threads=threads,
                          before_step=lambda _step: masks.apply(model), log=log, log_every=log_every)
    finally:
        masks.detach()
    masks.apply(model)
    model.eval()
    return report


@dataclass
class SRBuild:
    """A compiled SR model: the Relax executable and what the compiler did.

    layers: :class:`compression.tvm_backend.compile.LayerChoice` per conv (graph order).
    compile_seconds: wall time of the whole build; tuning_seconds: of the conv rewrite (tile search).
    """

    executable: Any
    layers: list
    compile_seconds: float
    tuning_seconds: float
    input_shape: tuple[int, int, int]
    sparse: bool
    scheduled_elementwise: bool
    fast_math: bool

    def sparse_layers(self) -> int:
        return sum(1 for c in self.layers if c.kernel == "sparse")


def compile_sr_tvm(model: nn.Module, input_shape: tuple[int, int, int], *, target: dict | None = None,
                   db=None, sparse: bool = True, measure: bool = True, r: int = 8,
                   schedule_elementwise: bool = True, fast_math: bool = True,
                   lower_deconv: bool = True) -> SRBuild:
    """Compile an SR model for batch 1 and a fixed LR input ``input_shape`` ``(3, h, w)``.

    sparse: let pruned convs use the compact row-block kernel (``False``: every
    conv through the dense template: the "TVM dense" baseline of the same model).
    measure: time tiles (cached in ``db``, a
    :class:`compression.tvm_backend.tuning.TuningDB`) and keep the compact
    kernel of a conv only where it measures faster than dense; ``False``: no
    timing (default tile; compact kernel where under 70 % of the columns are
    kept) -- for tests and for builds at extra shapes.
    schedule_elementwise: use :func:`compression.tvm_backend.other_ops.cpu_relax_pipeline` (else TVM's default pipeline);
    fast_math: its fast ``tanh`` (only with ``schedule_elementwise``).
    lower_deconv: apply :func:`lower_for_deploy` first (else ``conv2d_transpose``
    goes through TVM's default lowering).
    target: TVM JSON target (default: this host, 1 core).
    """
    import tvm

    from compression.tvm_backend.compile import PASS_CONFIG, export_relax, rewrite_convs
    from compression.tvm_backend.other_ops import cpu_relax_pipeline
    from compression.tvm_backend.target import host_target_dict
    from compression.tvm_backend.tuning import TuningDB

    target = target or host_target_dict(1)
    db = db or TuningDB(None)
    start = time.perf_counter()
    model = lower_for_deploy(model) if lower_deconv else copy.deepcopy(model).cpu().eval()
    mod = export_relax(model, tuple(input_shape), 1)
    t_tune = time.perf_counter()
    mod, choices = rewrite_convs(mod, 1, target, db, r=r, allow_sparse=sparse, measure=measure)
    tuning_seconds = time.perf_counter() - t_tune
    db.save()
    tvm_target = tvm.target.Target(target)
    with tvm.transform.PassContext(opt_level=3, config=PASS_CONFIG):
        if schedule_elementwise:
            exe = tvm.compile(mod, target=tvm_target, relax_pipeline=cpu_relax_pipeline(tvm_target, fast_math=fast_math))
        else:
            exe = tvm.compile(mod, target=tvm_target)
    return SRBuild(exe, choices, time.perf_counter() - start, tuning_seconds, tuple(input_shape), sparse,
                   schedule_elementwise, schedule_elementwise and fast_math)


# --------------------------------------------------------------------------- runtimes, agreement, timing


@dataclass
class SRRuntime:
    """One deployment as a user calls it: ``call(x)`` with ``x`` float32 ``[1, 3, h, w]`` -> ``[1, 3, h s, w s]``.

    ``input_shape``: the ``(3, h, w)`` it was built for (``None``: any shape, eager torch).
    ``info``: JSON-ready facts (backend, kernels chosen, compile seconds...).
    """

    name: str
    call: Callable[[np.ndarray], np.ndarray]
    input_shape: tuple[int, int, int] | None = None
    info: dict[str, Any] = field(default_factory=dict)


def eager_runtime(model: nn.Module, name: str = "eager") -> SRRuntime:
    """PyTorch eager under ``inference_mode`` (threads: the caller's ``torch.set_num_threads``)."""
    model = copy.deepcopy(model).cpu().eval()

    def call(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return model(torch.from_numpy(x)).numpy()

    return SRRuntime(name, call, None, {"backend": "torch", "torch": torch.__version__})


def onnx_runtime(model: nn.Module, input_shape: tuple[int, int, int], *, threads: int = 2,
                 workdir: str | os.PathLike | None = None, name: str = "onnxruntime") -> SRRuntime:
    """ONNX export (:func:`compression.backends.onnx_backend.export_onnx`) run by ONNX Runtime on CPU.

    threads: intra-op threads (inter-op 1), all graph optimisations.  The
    graph is exported for ``input_shape`` (batch dynamic); ``ConvTranspose2d``
    and ``PixelShuffle`` export as ONNX ``ConvTranspose`` / ``DepthToSpace``.
    """
    import onnxruntime as ort

    from compression.backends.onnx_backend import export_onnx

    tmp = None
    if workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="suite-sr-onnx-")
        workdir = tmp.name
    path = Path(workdir) / f"sr_{'x'.join(map(str, input_shape))}.onnx"
    start = time.perf_counter()
    exporter = export_onnx(model, tuple(input_shape), path)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = int(threads)
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    session = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    if tmp is not None:
        tmp.cleanup()  # the session holds the graph in memory
    input_name = session.get_inputs()[0].name

    def call(x: np.ndarray) -> np.ndarray:
        return session.run(None, {input_name: np.ascontiguousarray(x, dtype=np.float32)})[0]

    return SRRuntime(name, call, tuple(input_shape), {"backend": "onnxruntime", "threads": int(threads),
                                                       "exporter": exporter, "onnxruntime": ort.__version__,
                                                       "export_seconds": round(time.perf_counter() - start, 3)})


def tvm_runtime(model: nn.Module, input_shape: tuple[int, int, int], *, name: str | None = None,
                **compile_kwargs: Any) -> SRRuntime:
    """:func:`compile_sr_tvm` then a Relax VM: numpy -> ``tvm.runtime.tensor`` -> ``main`` -> numpy.

    TVM's thread pool is the process's (``TVM_NUM_THREADS``, or
    :func:`compression.tvm_backend.runtime.tvm_threads`).
    """
    import tvm
    from tvm import relax

    from compression.tvm_backend.compile import choices_as_dicts

    build = compile_sr_tvm(model, input_shape, **compile_kwargs)
    vm = relax.VirtualMachine(build.executable, tvm.cpu())
    main = vm["main"]

    def call(x: np.ndarray) -> np.ndarray:
        out = main(tvm.runtime.tensor(np.ascontiguousarray(x, dtype=np.float32)))
        if not hasattr(out, "numpy"):
            out = out[0]
        return out.numpy()

    info = {"backend": "tvm", "tvm": tvm.__version__, "sparse": build.sparse,
            "sparse_layers": build.sparse_layers(), "compile_seconds": round(build.compile_seconds, 2),
            "tuning_seconds": round(build.tuning_seconds, 2), "scheduled_elementwise": build.scheduled_elementwise, "fast_math": build.fast_math,
            "layers": choices_as_dicts(build.layers)}
    return SRRuntime(name or ("tvm-sparse" if build.sparse else "tvm-dense"), call, tuple(input_shape), info)


def max_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    """``max |a - b|`` over all pixels and channels (same shapes required), as a Python float."""
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {a.shape} vs {b.shape}")
    return float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64))))


def time_interleaved(runtimes: dict[str, SRRuntime], x: np.ndarray, *, reps: int = 10,
                     warmup: int = 2) -> dict[str, dict[str, Any]]:
    """Milliseconds per ``call(x)`` of each runtime, round-robin over them (load changes hit all alike).

    ``warmup`` untimed calls each first, then ``reps`` rounds.  Returns
    ``{name: {"median_ms", "min_ms", "max_ms", "samples_ms"}}``.
    """
    if reps < 1:
        raise ConfigError(f"reps must be >= 1, got {reps}")
    for rt in runtimes.values():
        for _ in range(warmup):
            rt.call(x)
    samples: dict[str, list[float]] = {k: [] for k in runtimes}
    for _ in range(reps):
        for name, rt in runtimes.items():
            t0 = time.perf_counter()
            rt.call(x)
            samples[name].append((time.perf_counter() - t0) * 1e3)
    return {k: {"median_ms": statistics.median(v), "min_ms": min(v), "max_ms": max(v), "samples_ms": v}
            for k, v in samples.items()}


def conv_kernels_ms(layers: list[dict]) -> float:
    """Sum of a TVM build's own per-conv kernel times (ms; the kernel it kept per conv, sparse or dense).

    layers: ``tvm_runtime(...).info["layers"]`` (``kernel``, ``sparse_ms``, ``dense_ms`` per conv).
    """
    return float(sum((l["sparse_ms"] if l["kernel"] == "sparse" and l["sparse_ms"] is not None else l["dense_ms"])
                     or 0.0 for l in layers))


def measure_tvm_frame(model: nn.Module, input_shape: tuple[int, int, int], *, threads: int = 2,
                      target: dict | None = None, db=None, reps: int = 5, warmup: int = 2,
                      seed: int = 0) -> dict[str, Any]:
    """Build ``model`` the way the SR benchmark measures a searched model and time one frame.

    The build is :func:`tvm_runtime` with ``sparse=True`` (compact kernel for a pruned
    conv where it measures faster; tile timings cached in ``db``, a
    :class:`compression.tvm_backend.tuning.TuningDB`) for the LR ``input_shape``
    ``(3, h, w)``, on ``target`` (default: this host with ``threads`` cores) and
    ``threads`` TVM threads; the frame is seeded uniform noise in [0, 1] (a
    conv's time does not depend on pixel values).  ``warmup`` untimed calls, then
    ``reps`` timed calls (numpy in / numpy out, :func:`time_interleaved`).
    Returns ``{"median_ms", "samples_ms", "compile_seconds", "tuning_seconds",
    "sparse_layers", "kernels_ms"}`` -- ``kernels_ms``: the compiler's own
    per-conv kernel times (tuning database) summed, milliseconds.
    """
    from compression.tvm_backend.runtime import tvm_threads
    from compression.tvm_backend.target import host_target_dict

    target = target or host_target_dict(int(threads))
    x = np.random.default_rng(seed).random((1, *(int(v) for v in input_shape)), dtype=np.float32)
    with tvm_threads(int(threads)):
        rt = tvm_runtime(model, tuple(int(v) for v in input_shape), target=target, db=db, sparse=True)
        tm = time_interleaved({"frame": rt}, x, reps=reps, warmup=warmup)["frame"]
    kernels = conv_kernels_ms(rt.info["layers"])
    return {"median_ms": float(tm["median_ms"]), "samples_ms": [round(float(v), 3) for v in tm["samples_ms"]],
            "compile_seconds": rt.info["compile_seconds"], "tuning_seconds": rt.info["tuning_seconds"],
            "sparse_layers": rt.info["sparse_layers"], "kernels_ms": round(float(kernels), 3)}


class RuntimeModule(nn.Module):
    """An nn.Module face for a deployment, so :func:`suite.core.sr.train.evaluate` can score it.

    factory(input_shape) -> :class:`SRRuntime` builds the deployment for one
    LR shape ``(3, h, w)``; builds are cached per shape.  ``forward`` takes
    ``[N, 3, h, w]`` float32 and runs the frames one at a time (no gradients).
    """

    def __init__(self, factory: Callable[[tuple[int, int, int]], SRRuntime], scale: int) -> None:
        super().__init__()
        self.factory = factory
        self.scale = int(scale)
        self.builds: dict[tuple[int, int, int], SRRuntime] = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        arr = x.detach().cpu().numpy().astype(np.float32)
        shape = tuple(int(v) for v in arr.shape[1:])
        if shape not in self.builds:
            self.builds[shape] = self.factory(shape)
        outs = [self.builds[shape].call(arr[i:i + 1]) for i in range(len(arr))]
        return torch.from_numpy(np.concatenate(outs))
