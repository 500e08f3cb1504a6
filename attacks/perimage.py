"""Per-image robustness baselines via torchattacks: ``pgd``, ``fgsm``, ``cw``, ``autoattack``.

Each crafts one adversarial example per image (white box) and reports robust
accuracy (budget sweeps: :mod:`attacks.sweep`).  torchattacks
does the optimisation; this module adapts settings, query counting, budget
checks and results to the suite's contract.  ``autoattack`` is robust
accuracy as the field reports it (RobustBench): AutoAttack "standard" on a
fixed subset of the held-out test split (``n_images``), clean and robust
accuracy side by side.
"""

from __future__ import annotations

from typing import Any

import torch

from attacks.base import Attack, AttackResult, QueryCounter, Stopwatch, canonical_norm
from attacks.metrics import label_metrics
from attacks.norms import NORMS, norms_of
from attacks.victim import Model, as_module, labels_of, logits_of
from suite.core.errors import ConfigError
from suite.core.settings import Field


class PerImageAttack(Attack):
    """Base for torchattacks-backed attacks; ``craft(model, x, y)`` attacks each image."""

    universal = False
    batch_size = 128

    def _build(self, module: torch.nn.Module, num_classes: int):  # pragma: no cover - abstract
        raise NotImplementedError

    def craft(self, model: Model, x: torch.Tensor, y: torch.Tensor | None = None, *,
              track: Any = None) -> AttackResult:
        """Attack ``x`` ``[N, C, H, W]`` with true labels ``y`` ``[N]`` (clean predictions if None)."""
        module = as_module(model)
        counter = QueryCounter(module).eval()  # torchattacks reads the device from its parameters
        watch = Stopwatch()
        clean_logits = logits_of(module, x)
        clean = clean_logits.argmax(dim=1) if len(x) else torch.zeros(0, dtype=torch.long)
        y = clean if y is None else y
        atk = self._build(counter, int(clean_logits.shape[1]) if len(x) else 0)
        atk.set_device("cpu")
        if self.target is not None:
            self._check_target(int(clean.max()) + 1 if len(clean) else 0)
            atk.set_mode_targeted_by_function(lambda images, labels: torch.full_like(labels, self.target))
        torch.manual_seed(self.seed)
        advs = [atk(x[i:i + self.batch_size], y[i:i + self.batch_size]).detach()
                for i in range(0, len(x), self.batch_size)]
        adv_x = torch.cat(advs) if advs else x.clone()
        adv = labels_of(module, adv_x)
        metrics = label_metrics(clean, adv, y, self.target)
        delta = norms_of(adv_x - x, self.norm)
        metrics["achieved_norm"] = float(delta.max()) if len(delta) else 0.0
        metrics["median_norm"] = float(delta.median()) if len(delta) else 0.0
        success = (adv == self.target) if self.target is not None else (adv != y)
        return AttackResult(self.name, self.norm, self.eps, adversarials=adv_x, success=success, metrics=metrics,
                            converged=True, steps=getattr(self, "steps", 1), grad_queries=counter.grad_queries,
                            queries=counter.queries, seconds=watch(), target=self.target)


class PGD(PerImageAttack):
    """Projected gradient descent (Madry et al.) per image, Linf or L2, random start."""

    name = "pgd"
    SETTINGS = Attack.SETTINGS.extend(
        steps=Field(20, int, gt=0), step_size=Field(0.25, float, gt=0, doc="fraction of eps"),
        random_start=Field(True, bool), profiles={"smoke": {"steps": 3}})

    def _build(self, module, num_classes):
        import torchattacks

        cls = torchattacks.PGD if self.norm == "linf" else torchattacks.PGDL2
        return cls(module, eps=self.eps, alpha=self.step_size * self.eps, steps=self.steps,
                   random_start=self.random_start)


class FGSM(PerImageAttack):
    """Fast gradient sign method (one Linf step of size eps)."""

    name = "fgsm"

    def validate(self) -> None:
        super().validate()
        if self.norm != "linf":
            raise ConfigError("fgsm is an Linf attack; use pgd with norm=l2 for L2")

    def _build(self, module, num_classes):
        import torchattacks

        return torchattacks.FGSM(module, eps=self.eps)


class CW(PerImageAttack):
    """Carlini-Wagner L2 (minimal-norm); success counts only within ``eps`` (L2).

    torchattacks' CW is unbounded; examples whose L2 distortion exceeds
    ``eps`` are replaced by the clean image, so robust accuracy is at budget.
    """

    name = "cw"
    SETTINGS = Attack.SETTINGS.extend(
        norm=Field("l2", str, choices=NORMS, parse=canonical_norm), eps=Field(1.0, float, gt=0),
        c=Field(1.0, float, gt=0), kappa=Field(0.0, float, ge=0), steps=Field(100, int, gt=0),
        lr=Field(0.01, float, gt=0), profiles={"smoke": {"steps": 10}})

    def validate(self) -> None:
        super().validate()
        if self.norm != "l2":
            raise ConfigError("cw is an L2 attack (norm=l2)")

    def _build(self, module, num_classes):
        import torchattacks

        inner = torchattacks.CW(module, c=self.c, kappa=self.kappa, steps=self.steps, lr=self.lr)
        eps = self.eps

        class _AtBudget:
            def __init__(self) -> None:
                self.inner = inner

            def set_device(self, device: str) -> None:
                inner.set_device(device)

            def set_mode_targeted_by_function(self, fn) -> None:
                inner.set_mode_targeted_by_function(fn)

            def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
                adv = inner(x, y)
                over = norms_of(adv - x, "l2") > eps
                adv[over] = x[over]
                return adv

        return _AtBudget()


N_IMAGES = Field(256, int, gt=0, doc="held-out test images attacked: the first N of the test order "
                 "(capped by the stage's eval_limit); the record keeps their count and an indices digest")


class AutoAttack(PerImageAttack):
    """AutoAttack (Croce & Hein 2020) via torchattacks: per-image worst case of an ensemble.

    ``version=standard``: APGD-CE, APGD-T (every other class as target),
    FAB-T (multi-targeted) and Square, each run on the images the previous
    ones did not fool (torchattacks' ``MultiAttack``); Linf or L2 (``norm``),
    ``eps``, ``n_classes`` read from the model's logits, ``seed`` for every
    member.  torchattacks builds its members with 10 iterations; ``steps``
    (default 100, as the reference implementation) and ``square_queries``
    (default 5000) set them explicitly.  Untargeted only (the targeted members
    pick their own targets).  The stage attacks the first ``n_images`` held-out
    test images.
    """

    name = "autoattack"
    sweepable = False  # one point is a full AutoAttack run
    SETTINGS = Attack.SETTINGS.extend(
        version=Field("standard", str, choices=("standard", "plus", "rand"),
                      doc="torchattacks AutoAttack version (standard: APGD-CE, APGD-T, FAB-T, Square)"),
        steps=Field(100, int, gt=0, doc="iterations of APGD-CE, APGD-T (per target) and FAB-T (per target)"),
        square_queries=Field(5000, int, gt=0, doc="query budget per image of the Square member"),
        n_images=N_IMAGES,
        profiles={"smoke": {"steps": 5, "square_queries": 100, "n_images": 32}})

    def validate(self) -> None:
        super().validate()
        if self.target is not None:
            raise ConfigError("autoattack is untargeted (APGD-T and FAB-T choose their own targets); "
                              "drop target=")

    def _build(self, module, num_classes):
        import torchattacks

        atk = torchattacks.AutoAttack(module, norm="Linf" if self.norm == "linf" else "L2", eps=self.eps,
                                      version=self.version, n_classes=max(2, num_classes), seed=self.seed)
        for member in atk._autoattack.attacks:  # members take no step settings through AutoAttack
            if isinstance(member, torchattacks.Square):
                member.n_queries = self.square_queries
            elif hasattr(member, "steps"):
                member.steps = self.steps
        return atk
