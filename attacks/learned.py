"""The learned parts of the meta attacks: a coordinate-wise recurrent optimizer and a meta-initialisation.

Both are resolution-free, so one trained pair serves tasks of any input size:

* :class:`LearnedOptimizer` sees each coordinate of the perturbation
  independently (shared weights, own hidden state), like Andrychowicz et al.
  (2016).  Features per coordinate: the gradient normalised by its RMS over
  the tensor, its sign, a running average of the normalised gradient, the
  current value in units of the budget scale ``s`` (``eps`` for Linf,
  ``eps / sqrt(d)`` for L2) and the run's progress ``t``.  The update is a
  descent step along ``base(g)`` (the gradient sign for Linf, the
  RMS-normalised gradient for L2) of learned size ``a_t`` (Meta-SGD style),
  modulated per coordinate by the recurrent net:
  ``s * -a_t * base(g) * (1 + 0.5 * tanh(head(h)))`` (``correction="gate"``,
  the default; the gate is bounded so the net cannot stop a coordinate: an
  unbounded gate learned to freeze after three steps on the meta-training
  tasks, which did not transfer), or ``s * (-a_t * base(g) + 0.5 *
  tanh(head(h)))`` (``correction="add"``).  ``a_t`` is a learned schedule
  over the run's *relative* progress ``t = k / (T - 1)`` (piecewise linear
  between ``KNOTS`` learned log step sizes), so a run longer or shorter than
  the meta-training horizon stretches the schedule (it keeps annealing)
  rather than repeating the last step.  The schedule starts as uap-pgd's
  cosine decay from ``a_max`` (a full-budget first step) to ``0.05 * a_max``
  and the head at zero, so an untrained optimizer *is* sign-PGD with a
  cosine schedule; meta-training learns the schedule, the gates and (with
  MAML) the start.  Steps are in budget units at every resolution.
* :class:`MetaInit` is a perturbation at a fixed base resolution, in budget
  units (``tanh``-bounded), bilinearly resized to a task's size and
  re-projected.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from attacks.norms import coordinate_scale, project
from attacks.uap import cosine_fraction

N_FEATURES = 5


class LearnedOptimizer(torch.nn.Module):
    """Coordinate-wise 2-layer LSTM mapping gradient features to perturbation updates."""

    KNOTS = 11  # learned log step sizes at t = 0, 0.1, ..., 1

    CORRECTIONS = ("gate", "add")

    def __init__(self, hidden: int = 20, out_scale: float = 0.5, a_max: float = 1.0,
                 correction: str = "gate") -> None:
        super().__init__()
        if correction not in self.CORRECTIONS:
            raise ValueError(f"unknown correction {correction!r} (choices: {', '.join(self.CORRECTIONS)})")
        self.correction = correction
        self.gate_range = 0.5  # a gate cannot stop a coordinate (a learned early stop does not transfer)
        self.hidden = int(hidden)
        self.cell1 = torch.nn.LSTMCell(N_FEATURES, self.hidden)
        self.cell2 = torch.nn.LSTMCell(self.hidden, self.hidden)
        self.head = torch.nn.Linear(self.hidden, 1)
        self.out_scale = float(out_scale)
        start = [math.log(a_max * cosine_fraction(j / (self.KNOTS - 1))) for j in range(self.KNOTS)]
        self.log_step = torch.nn.Parameter(torch.tensor(start))
        torch.nn.init.zeros_(self.head.bias)
        torch.nn.init.zeros_(self.head.weight)

    def init_state(self, numel: int) -> dict[str, torch.Tensor]:
        z = torch.zeros(numel, self.hidden)
        return {"h1": z, "c1": z, "h2": z, "c2": z, "avg": torch.zeros(numel)}

    def forward(self, grad: torch.Tensor, v: torch.Tensor, state: dict[str, torch.Tensor], t: float, *,
                norm: str, eps: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Update for ``v`` given ``grad`` (both ``[C, H, W]``); returns ``(delta, new_state)``.

        ``grad`` is the gradient of the loss to *minimise*; ``t`` in [0, 1] is
        the run's progress (0 at the first step, 1 at the last).
        """
        g = grad.reshape(-1)
        s = coordinate_scale(norm, eps, g.numel())
        gn = (g / g.pow(2).mean().sqrt().clamp_min(1e-12)).clamp(-10, 10)
        avg = 0.7 * state["avg"] + 0.3 * gn
        feats = torch.stack([gn, gn.sign(), avg, v.reshape(-1) / s,
                             torch.full_like(gn, float(t))], dim=1)
        h1, c1 = self.cell1(feats, (state["h1"], state["c1"]))
        h2, c2 = self.cell2(h1, (state["h2"], state["c2"]))
        base = gn.sign() if norm == "linf" else gn.clamp(-3, 3)
        a_t = self.step_size(t)
        out = self.head(h2).squeeze(1)
        if self.correction == "gate":  # per-coordinate step of (1 +- gate_range) x a_t, along the gradient
            delta = -s * a_t * base * (1 + self.gate_range * torch.tanh(out))
        else:  # free additive correction of at most out_scale per coordinate
            delta = s * (-a_t * base + self.out_scale * torch.tanh(out))
        return delta.view_as(grad), {"h1": h1, "c1": c1, "h2": h2, "c2": c2, "avg": avg}

    def step_size(self, t: float) -> torch.Tensor:
        """The learned step size at progress ``t`` in [0, 1], in budget units (differentiable)."""
        pos = min(max(float(t), 0.0), 1.0) * (self.KNOTS - 1)
        lo = min(int(pos), self.KNOTS - 2)
        frac = pos - lo
        return ((1 - frac) * self.log_step[lo] + frac * self.log_step[lo + 1]).exp()


class MetaInit(torch.nn.Module):
    """A learned initial perturbation ``[C, base, base]`` in budget units, resized per task."""

    def __init__(self, channels: int = 3, base: int = 32) -> None:
        super().__init__()
        self.theta = torch.nn.Parameter(torch.zeros(channels, base, base))

    def forward(self, shape: tuple[int, int, int], *, norm: str, eps: float) -> torch.Tensor:
        c, h, w = shape
        unit = torch.tanh(self.theta)
        if unit.shape[0] != c:  # e.g. a grey task: average the colour channels
            unit = unit.mean(0, keepdim=True).expand(c, -1, -1)
        v = F.interpolate(unit.unsqueeze(0), size=(h, w), mode="bilinear", align_corners=False).squeeze(0)
        return project(v * coordinate_scale(norm, eps, c * h * w), norm, eps)
