import json
import pickle

import pytest
import torch

from suite.core.cache import CacheMiss, ModelCache, ModelKey


def _key(**kw):
    base = dict(arch="tiny", width=1.0, in_channels=3, num_classes=4, source="s", source_sha256="ab",
                seed=0, recipe={"epochs": 1})
    base.update(kw)
    return ModelKey.make(**base)



def _tiny():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 4))


def _trainer(calls):
    def train(model):
        calls.append(1)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(1.0)
        return {"train": {"epochs": 1}}
    return train


def test_key_digest_depends_on_every_field():
    base = _key()
    variants = [_key(arch="other"), _key(width=0.5), _key(source="t"), _key(source_sha256="cd"),
                _key(seed=1), _key(recipe={"epochs": 2}), _key(num_classes=5)]
    digests = {base.digest()} | {v.digest() for v in variants}
    assert len(digests) == len(variants) + 1
    assert base.digest() == _key().digest()


def test_miss_then_hit_returns_identical_weights(tmp_path):
    cache, key, calls = ModelCache(tmp_path), _key(), []
    m1, meta1, hit1 = cache.get_or_create(key, _tiny, _trainer(calls))
    m2, meta2, hit2 = cache.get_or_create(key, _tiny, _trainer(calls))
    assert (hit1, hit2) == (False, True) and len(calls) == 1
    for a, b in zip(m1.state_dict().values(), m2.state_dict().values()):
        assert torch.equal(a, b)
    assert meta1["sha256"] == meta2["sha256"]
    assert not any(p.name.startswith(".") and p.is_dir() for p in cache.entry_dir(key).parent.iterdir())


def _corrupt_truncate(d):
    data = (d / "model.pt").read_bytes()
    (d / "model.pt").write_bytes(data[: len(data) // 2])


def _corrupt_meta_json(d):
    (d / "meta.json").write_text("{not json")


def _corrupt_meta_key(d):
    meta = json.loads((d / "meta.json").read_text())
    meta["key"]["seed"] = 99
    (d / "meta.json").write_text(json.dumps(meta))


def _corrupt_bitflip(d):
    data = bytearray((d / "model.pt").read_bytes())
    data[-20] ^= 0xFF
    (d / "model.pt").write_bytes(bytes(data))


def _corrupt_missing(d):
    (d / "model.pt").unlink()


class _Boom:
    def __reduce__(self):
        return (exec, ("open('/tmp/suite_pwned_by_cache', 'w').write('x')",))


def _corrupt_malicious_pickle(d):
    """A pickle that would run code; must be refused (weights_only) even if its hash is 'right'."""
    torch.save({"weight": _Boom()}, d / "model.pt", pickle_module=pickle)
    from suite.core.cache import sha256_file

    meta = json.loads((d / "meta.json").read_text())
    meta["sha256"] = sha256_file(d / "model.pt")
    (d / "meta.json").write_text(json.dumps(meta))


def _corrupt_wrong_shapes(d):
    torch.save({"1.weight": torch.zeros(2, 2), "1.bias": torch.zeros(2)}, d / "model.pt")
    from suite.core.cache import sha256_file

    meta = json.loads((d / "meta.json").read_text())
    meta["sha256"] = sha256_file(d / "model.pt")
    (d / "meta.json").write_text(json.dumps(meta))


@pytest.mark.parametrize("corrupt", [_corrupt_truncate, _corrupt_meta_json, _corrupt_meta_key,
                                     _corrupt_bitflip, _corrupt_missing, _corrupt_malicious_pickle,
                                     _corrupt_wrong_shapes])
def test_corrupt_entry_is_detected_and_rebuilt(tmp_path, corrupt):
    import os

    cache, key, calls = ModelCache(tmp_path), _key(), []
    cache.get_or_create(key, _tiny, _trainer(calls))
    corrupt(cache.entry_dir(key))
    with pytest.raises(CacheMiss) as info:
        cache.load(key, _tiny())
    assert info.value.corrupt
    warnings = []
    model, meta, hit = cache.get_or_create(key, _tiny, _trainer(calls), warn=warnings.append)
    assert not hit and len(calls) == 2
    assert len(warnings) == 1 and "corrupt" in warnings[0]
    assert not os.path.exists("/tmp/suite_pwned_by_cache")
    # the rebuilt entry is valid again
    _, _, hit3 = cache.get_or_create(key, _tiny, _trainer(calls))
    assert hit3 and len(calls) == 2


def test_save_is_atomic_on_failure(tmp_path, monkeypatch):
    cache, key = ModelCache(tmp_path), _key()

    def fail(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr("suite.core.cache.atomic_write_text", fail)
    with pytest.raises(KeyboardInterrupt):
        cache.save(key, _tiny(), {})
    assert not cache.entry_dir(key).exists()
    assert [p for p in cache.entry_dir(key).parent.iterdir() if p.is_dir()] == []
