import json
from importlib import resources

import numpy as np
import pytest

from suite.core import registries as reg
from suite.core.sources import embedded
from suite.core.sources.splits import indices_digest, stratified_split

NAMES = ["digits16", "digits-photo32", "digits-affine24"]
RESOLUTION = {"digits16": 16, "digits-photo32": 32, "digits-affine24": 24}


@pytest.mark.parametrize("name", NAMES)
def test_shapes_ranges_and_splits(name):
    src = reg.sources.build(name, None)
    assert src.shape == (3, RESOLUTION[name], RESOLUTION[name])
    assert src.num_classes == 10 and len(src.class_names) == 10
    sizes = (len(src.train), len(src.val), len(src.test))
    assert sum(sizes) == 1797 and sizes == (1258, 180, 359)
    idx = [src.train.indices, src.val.indices, src.test.indices]
    allidx = np.concatenate(idx)
    assert len(np.unique(allidx)) == 1797  # disjoint and covering
    for split in (src.train, src.val, src.test):
        assert split.images.dtype == np.uint8
        assert set(np.unique(split.labels)) == set(range(10))  # stratified: every class everywhere
        x, y = split.tensors(slice(0, 8))
        assert x.dtype.is_floating_point and 0.0 <= float(x.min()) and float(x.max()) <= 1.0
        assert x.shape == (8, *src.shape) and y.shape == (8,)


@pytest.mark.parametrize("name", NAMES)
def test_written_split_files_match_seeded_recomputation(name):
    data = json.loads(resources.files("suite.data").joinpath("splits", f"{name}.json").read_text())
    labels = embedded._digits()[1]
    recomputed = embedded.compute_splits(labels, data["seed"])
    for split in ("train", "val", "test"):
        assert recomputed[split].tolist() == data["indices"][split]
    assert indices_digest(recomputed) == data["digest"]


def test_sources_differ_in_resolution_and_content():
    shapes = {reg.sources.build(n, None).shape for n in NAMES}
    assert len(shapes) == 3
    a = reg.sources.build("digits16", None)
    # Same digits, different rendering: labels agree at the same pool index.
    b = reg.sources.build("digits-photo32", None)
    pool_a = dict(zip(a.train.indices.tolist(), a.train.labels.tolist()))
    for i, lab in zip(b.test.indices.tolist(), b.test.labels.tolist()):
        if i in pool_a:
            assert pool_a[i] == lab


def test_generation_is_deterministic():
    embedded._build.cache_clear()
    first = {n: embedded.load_embedded(n).fingerprint() for n in NAMES}
    embedded._build.cache_clear()
    second = {n: embedded.load_embedded(n).fingerprint() for n in NAMES}
    assert first == second


def test_limit_takes_a_prefix():
    src = embedded.load_embedded("digits16", limit=20)
    full = embedded.load_embedded("digits16")
    assert len(src.train) == len(src.test) == 20
    assert np.array_equal(src.train.images, full.train.images[:20])
    assert src.meta["limit"] == 20


def test_stratified_split_properties():
    labels = np.repeat(np.arange(5), 40)
    s1 = stratified_split(labels, {"a": 0.5, "b": 0.25, "c": 0.25}, seed=3)
    s2 = stratified_split(labels, {"a": 0.5, "b": 0.25, "c": 0.25}, seed=3)
    s3 = stratified_split(labels, {"a": 0.5, "b": 0.25, "c": 0.25}, seed=4)
    assert all(np.array_equal(s1[k], s2[k]) for k in s1)
    assert not np.array_equal(s1["a"], s3["a"])
    assert [len(s1[k]) for k in "abc"] == [100, 50, 50]
    for k in "abc":
        assert np.all(np.bincount(labels[s1[k]], minlength=5) == len(s1[k]) // 5)


def test_pixels_do_not_depend_on_the_thread_count():
    import subprocess
    import sys

    code = ("import torch, sys; torch.set_num_threads(int(sys.argv[1])); "
            "from suite.core.sources.embedded import load_embedded; "
            "print(*(load_embedded(n).fingerprint() for n in ('digits16', 'digits-photo32', 'digits-affine24')))")
    outs = {subprocess.run([sys.executable, "-c", code, str(t)], capture_output=True, text=True,
                           check=True).stdout for t in (1, 2)}
    assert len(outs) == 1
