"""The learned parts of the meta attacks: a coordinate-wise recurrent optimizer and a meta-initialisation.

Both are resolution-free, so one trained pair serves tasks of any input size:

* :class:`LearnedOptimizer` sees each coordinate of the perturbation
  independently (shared weights, own hidden state), like Andrychowicz et al.
  (2016).  Features per coordinate: the gradient normalised by its RMS over
  the tensor, its sign, a running average of the normalised gradient, the
  current value in units of the budget scale ``s`` (``eps`` for Linf,
  ``eps / sqrt(d)`` for L2) and the step fraction ``t / T``.  The update is
  ``s * out_scale * tanh(head(h))``, so steps are in budget units at every
  resolution.
* :class:`MetaInit` is a perturbation at a fixed base resolution, in budget
  units (``tanh``-bounded), bilinearly resized to a task's size and
  re-projected.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from attacks.norms import coordinate_scale, project

N_FEATURES = 5


class LearnedOptimizer(torch.nn.Module):
    """Coordinate-wise 2-layer LSTM mapping gradient features to perturbation updates."""

    def __init__(self, hidden: int = 20, out_scale: float = 0.5) -> None:
        super().__init__()
        self.hidden = int(hidden)
        self.cell1 = torch.nn.LSTMCell(N_FEATURES, self.hidden)
        self.cell2 = torch.nn.LSTMCell(self.hidden, self.hidden)
        self.head = torch.nn.Linear(self.hidden, 1)
        self.out_scale = float(out_scale)
        torch.nn.init.zeros_(self.head.bias)
        torch.nn.init.normal_(self.head.weight, std=0.1)

    def init_state(self, numel: int) -> dict[str, torch.Tensor]:
        z = torch.zeros(numel, self.hidden)
        return {"h1": z, "c1": z, "h2": z, "c2": z, "avg": torch.zeros(numel)}

    def forward(self, grad: torch.Tensor, v: torch.Tensor, state: dict[str, torch.Tensor], t: float, *,
                norm: str, eps: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Update for ``v`` given ``grad`` (both ``[C, H, W]``); returns ``(delta, new_state)``.

        ``grad`` is the gradient of the loss to *minimise*; ``t`` in [0, 1].
        """
        g = grad.reshape(-1)
        s = coordinate_scale(norm, eps, g.numel())
        gn = (g / g.pow(2).mean().sqrt().clamp_min(1e-12)).clamp(-10, 10)
        avg = 0.7 * state["avg"] + 0.3 * gn
        feats = torch.stack([gn, gn.sign(), avg, v.reshape(-1) / s,
                             torch.full_like(gn, float(t))], dim=1)
        h1, c1 = self.cell1(feats, (state["h1"], state["c1"]))
        h2, c2 = self.cell2(h1, (state["h2"], state["c2"]))
        delta = s * self.out_scale * torch.tanh(self.head(h2).squeeze(1))
        return delta.view_as(grad), {"h1": h1, "c1": c1, "h2": h2, "c2": c2, "avg": avg}


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
