"""Crafted attacks are cached artifacts: a second craft with the same settings, model and images loads the
tensor (and says so); anything that changes the craft misses; a corrupt entry is crafted again."""

from __future__ import annotations

import torch

from suite.core import registries as reg


def _model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 10)).eval()


def _images(n: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, 8, 8, generator=torch.Generator().manual_seed(seed))


def test_universal_craft_is_reused_and_marked(tmp_path):
    from attacks.craft_cache import cached_craft

    attack = reg.attacks.build("uap-pgd", eps=0.1, steps=5, seed=0)
    model, x = _model(), _images()
    first = cached_craft(attack, model, x, cache_dir=tmp_path)
    again = cached_craft(attack, model, x, cache_dir=tmp_path)
    assert not first.cached and again.cached
    assert torch.equal(first.perturbation, again.perturbation)
    assert again.steps == first.steps and again.grad_queries == first.grad_queries
    # a different model, other images or other settings are other crafts
    assert not cached_craft(attack, _model(1), x, cache_dir=tmp_path).cached
    assert not cached_craft(attack, model, _images(seed=1), cache_dir=tmp_path).cached
    other = reg.attacks.build("uap-pgd", eps=0.2, steps=5, seed=0)
    assert not cached_craft(other, model, x, cache_dir=tmp_path).cached


def test_per_image_craft_is_reused(tmp_path):
    from attacks.craft_cache import cached_craft

    attack = reg.attacks.build("pgd", eps=0.1, steps=3, seed=0)
    model, x = _model(), _images(8)
    y = model(x).argmax(1)
    first = cached_craft(attack, model, x, y, cache_dir=tmp_path)
    again = cached_craft(attack, model, x, y, cache_dir=tmp_path)
    assert again.cached and torch.equal(first.adversarials, again.adversarials)
    assert not cached_craft(attack, model, x, (y + 1) % 10, cache_dir=tmp_path).cached


def test_corrupt_entry_is_crafted_again(tmp_path):
    from attacks.craft_cache import NAMESPACE, TENSOR_FILE, cached_craft

    attack = reg.attacks.build("uap-pgd", eps=0.1, steps=5, seed=0)
    model, x = _model(), _images()
    first = cached_craft(attack, model, x, cache_dir=tmp_path)
    (entry,) = [p.parent for p in (tmp_path / NAMESPACE).rglob(TENSOR_FILE)]
    (entry / TENSOR_FILE).write_bytes(b"not a tensor file")
    said = []
    again = cached_craft(attack, model, x, cache_dir=tmp_path, warn=said.append)
    assert not again.cached and torch.equal(first.perturbation, again.perturbation)
    assert len(said) == 1 and "crafting again" in said[0]


def test_black_box_crafts_are_never_cached(tmp_path):
    from attacks.craft_cache import NAMESPACE, cached_craft

    class Predictor:  # a compiled deployment: no module state to identify it by
        def __init__(self, module):
            self.module = module

        def predict(self, x):
            with torch.no_grad():
                return self.module(x)

    attack = reg.attacks.build("uap-zo", eps=0.1, queries=2000, seed=0)
    cached_craft(attack, Predictor(_model()), _images(), cache_dir=tmp_path)
    assert not (tmp_path / NAMESPACE).exists()
