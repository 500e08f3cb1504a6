"""Compressors that remove whole channels: ``filter`` (magnitude) and ``pas`` (learned widths).

Both shrink the dense tensors physically (torch-pruning's dependency graph),
then fine-tune the smaller dense model.  ``--sparsity`` means the fraction of
the prunable layers' *weights* removed for ``filter`` and of their *MACs*
removed for ``pas`` (its search targets MACs); both are recorded.
"""

from __future__ import annotations

import copy
import json
import time
from typing import Any

from torch import nn

from compression.base import CompressionResult
from compression.channel import channel_plan_json, export_shapes, prune_channels
from compression.compressor import PROFILE_EPOCHS
from suite.core.config import TrainRecipe
from suite.core.errors import ConfigError
from suite.core.settings import Configurable, Field, SettingsSpec
from suite.core.sources.base import ImageSource
from suite.core.training import accuracy, train_model
from suite.core.zoo.profile import count_macs, count_params


def _finetune(model: nn.Module, source: ImageSource, epochs: int, lr: float, batch_size: int, *, seed: int,
              device: str, quiet: bool) -> list[float]:
    if epochs <= 0:
        return []
    recipe = TrainRecipe(epochs=epochs, batch_size=batch_size, lr=lr, warmup_epochs=0)
    return train_model(model, source.train, source.val, recipe, seed=seed, device=device, quiet=quiet,
                       desc="fine-tune").val_acc


def _per_layer(widths: dict[str, Any], scheme: str) -> list[dict[str, Any]]:
    rows = []
    for name, w in widths.items():
        before, after = (w[0], w[1]) if isinstance(w, (list, tuple)) else (w.out_before, w.out_after)
        rows.append({"name": name, "scheme": scheme if after < before else "dense", "block": None,
                     "out_channels": [before, after], "sparsity": round(1.0 - after / max(1, before), 6)})
    return rows


def _dense_baseline(model: nn.Module, source: ImageSource) -> tuple[nn.Module, dict[str, Any]]:
    """A CPU eval copy of ``model`` plus its accuracy, params and MACs before pruning."""
    model = copy.deepcopy(model).cpu().eval()
    return model, {"acc_dense": accuracy(model, source.test), "params_dense": count_params(model),
                   "macs_dense": count_macs(model, source.shape)}


def _recover(method: str, model: nn.Module, source: ImageSource, dense: dict[str, Any], *, sparsity: float,
             achieved: float, unit: str, epochs: int, lr: float, batch_size: int, seed: int, device: str,
             quiet: bool, start: float, per_layer: list[dict[str, Any]]) -> dict[str, Any]:
    """Fine-tune the channel-pruned model in place and return the record's ``compression`` section."""
    acc_before = accuracy(model.cpu().eval(), source.test)
    val = _finetune(model.to(device), source, epochs, lr, batch_size, seed=seed, device=device, quiet=quiet)
    model.cpu().eval()
    macs = count_macs(model, source.shape)
    return {
        "method": method, "scheme": method, "recovery": "finetune", "target_sparsity": sparsity,
        "sparsity": sparsity, "achieved_sparsity": round(achieved, 6), "sparsity_unit": unit,
        "params": count_params(model), "params_dense": dense["params_dense"], "macs": macs,
        "macs_dense": dense["macs_dense"], "macs_ratio": round(macs / dense["macs_dense"], 6),
        "acc_dense": dense["acc_dense"], "acc_pruned_before_finetune": acc_before,
        "recovery_log": {"val_acc": val, "epochs": epochs}, "per_layer": per_layer, "schemes_used": [method],
        "seconds": round(time.perf_counter() - start, 3),
    }


class FilterPruning(Configurable):
    """Magnitude filter pruning with physical removal, then fine-tuning.

    sparsity: fraction of the prunable layers' weights removed; importance: l2 | l1;
    epochs / lr / batch_size: fine-tuning (epochs default from the profile).
    """

    name = "filter"
    SETTINGS = SettingsSpec({
        "sparsity": Field(0.5, float, ge=0, lt=1), "importance": Field("l2", str, choices=("l1", "l2")),
        "epochs": Field(None, int, optional=True, ge=0, doc="fine-tuning epochs (None: the profile's)"),
        "lr": Field(0.01, float), "batch_size": Field(64, int), "keep_first": Field(True, bool),
        "keep_classifier": Field(True, bool)})

    def __init__(self, sparsity: float = 0.5, **settings: Any) -> None:
        super().__init__(sparsity=sparsity, **settings)

    def compress(self, model: nn.Module, source: ImageSource, *, seed: int, device: str = "cpu",
                 profile: str = "default", quiet: bool = True, **_: Any) -> CompressionResult:
        start = time.perf_counter()
        model, dense = _dense_baseline(model, source)
        report = prune_channels(model, source.shape, self.sparsity, importance=self.importance,
                                keep_first=self.keep_first, keep_classifier=self.keep_classifier)
        epochs = PROFILE_EPOCHS.get(profile, 10) if self.epochs is None else self.epochs
        info = _recover("filter", model, source, dense, sparsity=self.sparsity, achieved=report.achieved_sparsity,
                        unit="weights", epochs=epochs, lr=self.lr, batch_size=self.batch_size, seed=seed,
                        device=device, quiet=quiet, start=start,
                        per_layer=_per_layer({r.name: r for r in report.layers}, "filter"))
        info["channel_ratio"] = report.channel_ratio
        plan = channel_plan_json(report)
        return CompressionResult(model, info, shapes=export_shapes(model),
                                 extra={"channel_plan.json": json.dumps(plan, indent=1) + "\n"})


class PaSPruning(Configurable):
    """Pruning-as-Search: learned per-layer widths under a MACs target, channel removal, fine-tuning.

    sparsity: fraction of the prunable layers' MACs removed.  Search knobs:
    search_epochs, alpha (MACs-loss weight), gate_lr, search_lr, batch_size.
    The defaults suit the small embedded sources (a few hundred steps per search).
    """

    name = "pas"
    SETTINGS = SettingsSpec({
        "sparsity": Field(0.5, float, ge=0, lt=1, doc="fraction of the prunable layers' MACs removed"),
        "search_epochs": Field(None, int, optional=True, doc="None: the profile's (1 smoke, 6 default)"),
        "alpha": Field(20.0, float, gt=0), "gate_lr": Field(0.5, float, gt=0), "search_lr": Field(0.01, float, gt=0),
        "batch_size": Field(32, int), "epochs": Field(None, int, optional=True), "lr": Field(0.01, float, gt=0),
        "keep_first": Field(True, bool), "keep_classifier": Field(True, bool)})

    def __init__(self, sparsity: float = 0.5, **settings: Any) -> None:
        super().__init__(sparsity=sparsity, **settings)

    def validate(self) -> None:
        if self.sparsity == 0.0:
            raise ConfigError("pas needs --sparsity in (0, 1) (fraction of MACs to remove)")

    def compress(self, model: nn.Module, source: ImageSource, *, seed: int, device: str = "cpu",
                 profile: str = "default", quiet: bool = True, **_: Any) -> CompressionResult:
        from compression.pas import pas_prune

        start = time.perf_counter()
        model, dense = _dense_baseline(model, source)
        search_epochs = self.search_epochs if self.search_epochs is not None else (1 if profile == "smoke" else 6)
        report = pas_prune(model, source, source.shape, self.sparsity, epochs=search_epochs, alpha=self.alpha,
                           lr=self.search_lr, gate_lr=self.gate_lr, batch_size=self.batch_size, seed=seed,
                           device=device, quiet=quiet, keep_first=self.keep_first,
                           keep_classifier=self.keep_classifier)
        epochs = PROFILE_EPOCHS.get(profile, 10) if self.epochs is None else self.epochs
        info = _recover("pas", model, source, dense, sparsity=self.sparsity, achieved=report.achieved_sparsity,
                        unit="macs", epochs=epochs, lr=self.lr, batch_size=self.batch_size, seed=seed,
                        device=device, quiet=quiet, start=start, per_layer=_per_layer(report.widths, "pas"))
        summary = report.as_dict()
        info["search"] = {k: summary[k] for k in summary if k not in ("widths", "epoch_log")}
        plan = {"widths": report.widths, "epoch_log": report.epoch_log, "history": report.history}
        return CompressionResult(model, info, shapes=export_shapes(model),
                                 extra={"channel_plan.json": json.dumps(plan, indent=1, default=str) + "\n"})
