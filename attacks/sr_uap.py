"""Universal adversarial perturbation against a super-resolution model (issue 18, point 6).

Threat model: one small perturbation ``delta`` ``[1, 3, p, p]`` (Linf <= ``eps`` on
the LR input, [0, 1] pixel units) is added to *every* low-resolution frame the
SR model sees; the attacker wants the SR output to be as wrong as possible.

Universality and frame size
---------------------------
``delta`` is a ``p x p`` tile.  It is applied to a frame of any size ``h x w`` by
*tiling*: repeated from the frame's top-left corner over the whole frame and
cut at the right / bottom edges (:func:`tile`), then the sum is clipped to the
valid image range [0, 1] (:func:`apply_uap`).  So one ``delta`` serves every
frame size; |perturbed - clean| <= eps holds pixel-wise after the clip too.

Crafting (:meth:`SRUAP.craft`)
------------------------------
PGD on ``delta`` maximising the output distortion
``MSE(SR(apply_uap(x, delta)), SR(x))`` -- the distance to the model's own
*clean* output (no HR needed: the attacker only has LR frames) -- over random
mini-batches of the LR training crops ``train_lr`` ``[N, 3, h, w]``: sign
steps of ``step_size`` (``eps / 8`` by default), projection to the Linf ball
after every step, a uniform random start inside the ball (at ``delta = 0`` the
loss has zero gradient), every draw from one seeded ``torch.Generator``.  The
model comes at call time; the settings object holds only settings.

Evaluation (:func:`evaluate`)
-----------------------------
Any :class:`~suite.core.sr.predictor.SRPredictor` (the white-box model, a
pruned copy, a black-box ONNX / TVM deployment: transfer) on LR / HR pairs of
a held-out split: PSNR-Y of the attacked output against the clean output and
against HR, the PSNR-Y *drop* against HR (clean minus attacked, dB), and the
same numbers for the random-sign noise baseline of the same Linf norm
(``+-eps`` per pixel, seeded), reported beside every attack.  Outputs are
clamped to [0, 1] before scoring (as :func:`suite.core.sr.train.evaluate`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from suite.core.errors import ConfigError
from suite.core.sr.photos import crop_side, lr_crops  # noqa: F401 - lr_crops re-exported
from suite.core.sr.metrics import psnr_y, ssim_y
from suite.core.sr.predictor import SRPredictor


@dataclass(frozen=True)
class SRUAPSettings:
    """Settings of :class:`SRUAP`.

    eps: Linf budget on the LR input ([0, 1] units; default 8/255).
    steps: PGD steps.  step_size: sign-step size (``None``: ``eps / 8``).
    batch: LR crops per step (drawn with replacement).  patch: side ``p`` of the tile.
    seed: seeds the random start and the batch draws.
    """

    eps: float = 8 / 255
    steps: int = 200
    step_size: float | None = None
    batch: int = 16
    patch: int = 32
    seed: int = 0

    def validate(self) -> "SRUAPSettings":
        if not (isinstance(self.eps, (int, float)) and math.isfinite(self.eps) and 0 < self.eps <= 1):
            raise ConfigError(f"SR UAP eps must be in (0, 1], got {self.eps!r}")
        for name in ("steps", "batch", "patch"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(f"SR UAP {name} must be a positive integer, got {v!r}")
        if self.step_size is not None and not (isinstance(self.step_size, (int, float)) and self.step_size > 0):
            raise ConfigError(f"SR UAP step_size must be a positive number or None, got {self.step_size!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ConfigError(f"SR UAP seed must be a non-negative integer, got {self.seed!r}")
        return self

    @property
    def alpha(self) -> float:
        """The step size actually used."""
        return float(self.eps / 8 if self.step_size is None else self.step_size)

    def as_dict(self) -> dict:
        return {**asdict(self), "step_size": self.alpha}


@dataclass
class SRUAPResult:
    """A crafted perturbation: ``delta`` float32 ``[1, 3, p, p]`` with ``|delta| <= eps``.

    losses: the craft objective (output MSE, [0, 1]^2 units) of every step's batch.
    """

    delta: torch.Tensor
    settings: dict
    seconds: float
    losses: list[float] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"settings": self.settings, "seconds": round(self.seconds, 3), "shape": list(self.delta.shape),
                "linf": float(self.delta.abs().max()),
                "first_loss": self.losses[0] if self.losses else None,
                "last_loss": self.losses[-1] if self.losses else None}


def tile(delta: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """``delta`` ``[1, C, p, q]`` repeated from the top-left corner to cover ``h x w``, cut there: ``[1, C, h, w]``."""
    if delta.ndim != 4 or delta.shape[0] != 1:
        raise ConfigError(f"a UAP tile must be [1, C, p, p], got {tuple(delta.shape)}")
    p, q = delta.shape[-2:]
    reps = (1, 1, -(-h // p), -(-w // q))
    return delta.repeat(*reps)[..., :h, :w]


def apply_uap(x: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """``clip(x + tile(delta), 0, 1)`` for LR frames ``x`` ``[N, 3, h, w]`` of any size."""
    return (x + tile(delta.to(x.dtype), x.shape[-2], x.shape[-1])).clamp(0.0, 1.0)


class SRUAP:
    """PGD universal perturbation against an SR model (see the module docstring)."""

    name = "sr-uap-pgd"

    def __init__(self, settings: SRUAPSettings | None = None, **kwargs) -> None:
        if settings is not None and kwargs:
            raise ConfigError("give SRUAP either a settings object or keyword settings, not both")
        self.settings = (settings or SRUAPSettings(**kwargs)).validate()

    def craft(self, model: nn.Module, train_lr: torch.Tensor) -> SRUAPResult:
        """Craft ``delta`` ``[1, 3, p, p]`` on LR crops ``train_lr`` ``[N, 3, h, w]`` in [0, 1] (white box).

        The model is put in eval mode, its parameters get no gradients, ``train_lr`` is not modified.
        Deterministic given the settings' seed (and the number of torch threads).
        """
        s = self.settings
        if train_lr.ndim != 4 or train_lr.shape[1] != 3 or len(train_lr) == 0:
            raise ConfigError(f"train_lr must be non-empty [N, 3, h, w], got {tuple(train_lr.shape)}")
        was_training = model.training
        model.eval()
        req = [p.requires_grad for p in model.parameters()]
        for p in model.parameters():
            p.requires_grad_(False)
        gen = torch.Generator().manual_seed(s.seed)
        eps, alpha = float(s.eps), s.alpha
        delta = (torch.rand(1, 3, s.patch, s.patch, generator=gen) * 2 - 1) * eps
        losses: list[float] = []
        start = time.perf_counter()
        try:
            x_all = train_lr.detach().float()
            for _ in range(s.steps):
                idx = torch.randint(0, len(x_all), (s.batch,), generator=gen)
                x = x_all[idx]
                with torch.no_grad():
                    clean = model(x)
                d = delta.clone().requires_grad_(True)
                loss = F.mse_loss(model(apply_uap(x, d)), clean)
                (grad,) = torch.autograd.grad(loss, d)
                delta = (delta + alpha * grad.sign()).clamp(-eps, eps)
                losses.append(float(loss.detach()))
        finally:
            for p, r in zip(model.parameters(), req):
                p.requires_grad_(r)
            model.train(was_training)
        return SRUAPResult(delta.detach().clone(), s.as_dict(), time.perf_counter() - start, losses)


def random_sign_noise(shape: Sequence[int], eps: float, gen: torch.Generator) -> torch.Tensor:
    """``+-eps`` per element with probability 1/2 each (the same-Linf-norm noise baseline)."""
    return (torch.randint(0, 2, tuple(shape), generator=gen).float() * 2 - 1) * float(eps)


def _r(v: float, nd: int = 4) -> float | None:
    return None if not math.isfinite(v) else round(float(v), nd)


@torch.no_grad()
def evaluate(predictor: SRPredictor, delta: torch.Tensor, lr_images: Sequence[torch.Tensor] | torch.Tensor,
             hr_images: Sequence[torch.Tensor] | torch.Tensor, border: int, *, noise_seed: int = 0,
             names: Sequence[str] | None = None) -> dict:
    """Score the UAP ``delta`` (and the same-norm random-sign noise) on a predictor.

    lr_images / hr_images: per image ``[1, 3, h, w]`` / ``[1, 3, h s, w s]`` in [0, 1] (sizes may differ), or
        stacked tensors.  border: pixels cropped before PSNR (the scale).  noise_seed: seeds the noise baseline
        (one full-frame ``+-eps`` draw per image, ``eps = max |delta|``).
    Returns a JSON-ready dict; every PSNR is PSNR-Y in dB, means over images:

    * ``clean_psnr_hr``: clean output vs HR;
    * ``uap``/``noise``: ``psnr_vs_clean`` (attacked output vs clean output; lower = more distortion),
      ``psnr_hr`` (attacked output vs HR), ``drop_db`` (``clean_psnr_hr - psnr_hr``; higher = stronger),
      ``ssim_hr``;
    * ``uap_minus_noise_drop_db``: how much more the UAP costs than noise;
    * ``per_image``: the same per image.
    """
    lrs = list(lr_images) if not isinstance(lr_images, torch.Tensor) else [t.unsqueeze(0) for t in lr_images]
    hrs = list(hr_images) if not isinstance(hr_images, torch.Tensor) else [t.unsqueeze(0) for t in hr_images]
    if len(lrs) != len(hrs) or not lrs:
        raise ConfigError(f"need as many LR as HR images (and at least one), got {len(lrs)} and {len(hrs)}")
    eps = float(delta.abs().max())
    gen = torch.Generator().manual_seed(noise_seed)
    rows = []
    for i, (lr, hr) in enumerate(zip(lrs, hrs)):
        lr, hr = lr.float(), hr.float()
        noise = random_sign_noise(lr.shape, eps, gen)
        clean = predictor.upscale(lr).float().clamp(0, 1)
        adv = predictor.upscale(apply_uap(lr, delta)).float().clamp(0, 1)
        noisy = predictor.upscale((lr + noise).clamp(0, 1)).float().clamp(0, 1)
        c_hr = float(psnr_y(clean, hr, border)[0])
        row = {"image": names[i] if names is not None else i, "clean_psnr_hr": c_hr}
        for key, out in (("uap", adv), ("noise", noisy)):
            p_hr = float(psnr_y(out, hr, border)[0])
            row[key] = {"psnr_vs_clean": float(psnr_y(out, clean, border)[0]), "psnr_hr": p_hr,
                        "drop_db": c_hr - p_hr, "ssim_hr": float(ssim_y(out, hr, border)[0])}
        rows.append(row)

    def mean(get) -> float:
        return float(np.mean([get(r) for r in rows]))

    out: dict = {"images": len(rows), "eps": _r(eps, 6), "eps_255": _r(eps * 255, 3),
                 "clean_psnr_hr": _r(mean(lambda r: r["clean_psnr_hr"]))}
    for key in ("uap", "noise"):
        out[key] = {m: _r(mean(lambda r, m=m: r[key][m])) for m in ("psnr_vs_clean", "psnr_hr", "drop_db", "ssim_hr")}
    out["uap_minus_noise_drop_db"] = _r(out["uap"]["drop_db"] - out["noise"]["drop_db"])
    out["per_image"] = [{"image": r["image"], "clean_psnr_hr": _r(r["clean_psnr_hr"]),
                         **{k: {m: _r(v) for m, v in r[k].items()} for k in ("uap", "noise")}} for r in rows]
    return out


__all__ = ["SRUAPSettings", "SRUAPResult", "SRUAP", "tile", "apply_uap", "random_sign_noise", "evaluate", "lr_crops"]


# --------------------------------------------------------------------------- the run's stage (--task sr --attacks sr-uap)

SR_UAP_NAME = "sr-uap"
# Per profile: PGD steps, LR crops to craft on, batch, tile side; the step size is eps / 4 (bench/bench_sr_robustness.py
# chose eps/4 on the val photo among eps/16, eps/8, eps/4 at 150 steps).
SR_UAP_PROFILES: dict[str, dict] = {
    "smoke": {"steps": 5, "craft_crops": 16, "batch": 4, "patch": 16},
    "default": {"steps": 150, "craft_crops": 256, "batch": 16, "patch": 32},
    "full": {"steps": 300, "craft_crops": 512, "batch": 16, "patch": 32},
}
SR_UAP_KEYS = ("eps", "steps", "step_size", "batch", "patch", "seed", "craft_crops", "crop")


def sr_uap_settings(cfg) -> tuple[SRUAPSettings, dict]:
    """``(SRUAPSettings, stage settings)`` of a run: the profile's sizes under ``--attack-args`` (``eps=``,
    ``steps=``, ``step_size=``, ``batch=``, ``patch=``, ``seed=``, ``craft_crops=``, ``crop=``; ``sr-uap.KEY`` works
    too).  Unknown keys are a one-line ConfigError."""
    args: dict = {}
    for key, value in dict(cfg.attack_args or {}).items():
        bare = key.split(".", 1)[1] if key.startswith(SR_UAP_NAME + ".") else key
        if bare not in SR_UAP_KEYS:
            raise ConfigError(f"unknown --attack-args key {key!r} for {SR_UAP_NAME} (keys: {', '.join(SR_UAP_KEYS)})")
        args[bare] = value
    prof = {**SR_UAP_PROFILES.get(cfg.profile, SR_UAP_PROFILES["default"]), **args}
    eps = prof.get("eps", 8 / 255)
    if isinstance(eps, str) and "/" in eps:  # "8/255"
        num, den = eps.split("/", 1)
        try:
            eps = float(num) / float(den)
        except ValueError:
            raise ConfigError(f"SR UAP eps must be a number or a fraction like 8/255, got {eps!r}") from None
    step_size = prof.get("step_size")
    settings = SRUAPSettings(eps=eps, steps=prof["steps"], batch=prof["batch"], patch=prof["patch"],
                             step_size=eps / 4 if step_size is None and isinstance(eps, (int, float)) else step_size,
                             seed=int(prof.get("seed", cfg.seed))).validate()
    stage = {"craft_crops": prof["craft_crops"], "crop": prof.get("crop")}
    for name in ("craft_crops", "crop"):
        v = stage[name]
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
            raise ConfigError(f"SR UAP {name} must be a positive integer, got {v!r}")
    return settings, stage


class SRUAPStage:
    """``--task sr --attacks sr-uap``: the UAP crafted on the dense model, scored on every subject.

    Crafted white box on the DENSE model over seeded LR crops of the *train* photos (Linf ``eps`` on the LR input,
    default 8/255); evaluated on the *test* photos (whole images) against the dense model, the compressed model
    and the deployment (transfer: dense -> pruned -> compiled; the deployment is a black box queried through its
    predictor), beside random-sign noise of the same Linf norm.  One record entry per evaluated subject
    (``sr-uap:dense-><role>``, as :mod:`attacks.stage`), a ``transfer`` row (PSNR-Y drop, dB) and headline metrics
    on what the run ships (``sr_uap_drop_db``, ``sr_uap_noise_drop_db``, ...).
    """

    name = "attack"

    def enabled(self, config) -> bool:
        if SR_UAP_NAME not in tuple(config.attacks or ()):
            return False
        sr_uap_settings(config)  # bad --attack-args fail before any training
        return True

    def run(self, inp):
        from suite.core.sr.train import torch_threads
        from suite.core.stages import StageOutput

        cfg = inp.config
        settings, stage = sr_uap_settings(cfg)
        source = inp.source
        scale = int(cfg.scale)
        size = crop_side(source.train, scale, stage["crop"])
        train_lr = lr_crops(source.train, scale, size, stage["craft_crops"], seed=settings.seed)
        if settings.patch > size:
            settings = SRUAPSettings(**{**asdict(settings), "patch": size}).validate()
        dense = inp.subjects["dense"]
        start = time.perf_counter()
        with torch_threads(int(cfg.threads or 1)):
            result = SRUAP(settings).craft(dense.module, train_lr)
            inp.log(f"sr-uap: crafted on dense in {result.seconds:.1f} s ({settings.steps} steps, "
                    f"loss {result.losses[0]:.2e} -> {result.losses[-1]:.2e})")
            pairs = list(source.test.pairs(scale))
            lrs, hrs = [p[0] for p in pairs], [p[1] for p in pairs]
            names = [c.photo for c in source.test.crops]
            results = {}
            for role, subject in inp.subjects.items():
                t0 = time.perf_counter()
                r = evaluate(subject.predictor, result.delta, lrs, hrs, scale, noise_seed=settings.seed, names=names)
                r["seconds"] = round(time.perf_counter() - t0, 4)
                r["black_box"] = subject.module is None
                results[role] = r
                inp.log(f"sr-uap: dense -> {role}: drop {r['uap']['drop_db']:.2f} dB "
                        f"(noise {r['noise']['drop_db']:.2f} dB), clean {r['clean_psnr_hr']:.2f} dB")
        shipped = next(r for r in ("deployed", "compressed", "dense") if r in results)
        head = results[shipped]
        seconds = round(time.perf_counter() - start, 4)
        given = {k.split(".")[-1] for k in cfg.attack_args or {}}
        entries = []
        for role, r in results.items():  # one entry per (crafted_on, evaluated_on), as attacks/stage.py
            entries.append({
                "id": f"{SR_UAP_NAME}:dense->{role}", "attack": SR_UAP_NAME, "method": SRUAP.name, "task": "sr",
                "universal": True, "norm": "linf", "eps": float(settings.eps),
                "eps_255": round(settings.eps * 255, 3), "eps_origin": "given" if "eps" in given else "default",
                "budget_reference": "Linf on the LR input in [0, 1] pixel units (default 8/255)",
                "source": source.name, "crafted_on": "dense", "evaluated_on": role, "shipped": role == shipped,
                "black_box": r["black_box"], "craft_split": "train", "eval_split": "test",
                "craft_images": int(len(train_lr)), "craft_crop": [3, size, size], "eval_images": r["images"],
                "settings": result.settings, "craft": result.as_dict(), "steps": settings.steps,
                "clean_psnr_hr": r["clean_psnr_hr"], "drop_db": r["uap"]["drop_db"],
                "noise_drop_db": r["noise"]["drop_db"], "uap_minus_noise_drop_db": r["uap_minus_noise_drop_db"],
                "uap": r["uap"], "noise": r["noise"], "per_image": r["per_image"],
                "noise_baseline": "random-sign +-eps per LR pixel, same Linf norm (seeded)",
                "eval_seconds": r["seconds"], "seconds": round(result.seconds + r["seconds"], 4),
                "stage_seconds": seconds,
            })
        metrics = {"sr_uap_drop_db": head["uap"]["drop_db"], "sr_uap_noise_drop_db": head["noise"]["drop_db"],
                   "sr_uap_psnr_hr": head["uap"]["psnr_hr"], "sr_uap_dense_drop_db": results["dense"]["uap"]["drop_db"],
                   "sr_uap_minus_noise_drop_db": head["uap_minus_noise_drop_db"]}
        metrics = {k: float(v) for k, v in metrics.items() if v is not None}
        higher = {"sr_uap_drop_db": False, "sr_uap_noise_drop_db": False, "sr_uap_psnr_hr": True,
                  "sr_uap_dense_drop_db": False, "sr_uap_minus_noise_drop_db": False}
        roles = list(results)
        transfer = {SR_UAP_NAME: {"metric": "drop_db", "rows": ["dense"], "cols": roles,
                                  "values": [[results[k]["uap"]["drop_db"] for k in roles]]}}
        return StageOutput(attacks=entries, transfer=transfer, metrics=metrics,
                           higher_is_better={k: v for k, v in higher.items() if k in metrics})


SR_UAP_STAGE = SRUAPStage()
"""The SR attack stage (``suite.app.sr_pipeline.SR_STAGES``): runs when ``config.attacks`` lists ``sr-uap``."""

__all__ += ["SR_UAP_NAME", "SR_UAP_STAGE", "SRUAPStage", "sr_uap_settings"]
