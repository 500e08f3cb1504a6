"""``suite audit`` on the suspects a thief ships, built here with outside tools (onnxruntime.quantization,
torch-pruning, a plain fine-pruning loop), and on independent models of foreign architectures."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
import torch.nn.utils.prune  # noqa: F401 - the fine-pruning suspect masks a conv with it

from suite.app.cli import main
from suite.core import registries as reg

FP_ARGS = "count=32,steps=60,step_size=0.02,confidence=4,k=2,noise=0.5,radius=0.1"

pytestmark = [pytest.mark.usefixtures("one_torch_thread"), pytest.mark.slow]


@pytest.fixture(scope="module")
def owner_run(tmp_path_factory, audit_owner_cache):
    """A small owner run (VGG16 w0.25, smoke profile, 600 digits) with ltrc fingerprints and 10 negatives cached.

    The cache is shared with test_audit.py's owner run: the owner model, its fingerprints and the first 6
    negatives are built once.
    """
    from suite.app.pipeline import run
    from suite.core.config import RunConfig, TrainRecipe, parse_kv

    cache = audit_owner_cache
    cfg = RunConfig(model="vgg16", compress="none", profile="smoke", limit=600, cache_dir=str(cache),
                    output_dir=str(tmp_path_factory.mktemp("runs")), quiet=True, threads=1,
                    recipe=TrainRecipe(epochs=5, batch_size=32, lr=0.05, warmup_epochs=0), attacks=(),
                    fingerprints=("ltrc-examples",), negatives=10,
                    fingerprint_args=parse_kv(FP_ARGS + ",zoo.negative_epochs=5"))
    path, record = run(cfg)
    source = reg.sources.build("digits16", None, limit=600)
    rec = json.loads((path / "result.json").read_text())
    model = reg.models.build("vgg16", num_classes=10, width=0.25, in_channels=3)
    model.load_state_dict(torch.load(Path(rec["model"]["cache_dir"]) / "model.pt", weights_only=True))
    return path, cache, source, model.eval()


def _export(model, path, shape=(3, 16, 16)):
    with torch.no_grad():
        torch.onnx.export(copy.deepcopy(model).eval(), (torch.rand(2, *shape),), str(path), input_names=["x"],
                          output_names=["y"], dynamic_axes={"x": {0: "n"}, "y": {0: "n"}}, dynamo=False)
    return path


@pytest.fixture(scope="module")
def thief_suspects(owner_run, tmp_path_factory):
    """Built with the field's tools, not with the suite's zoo code."""
    import torch_pruning as tp
    from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType, quantize_dynamic,
                                          quantize_static)
    from onnxruntime.transformers.float16 import convert_float_to_float16
    import onnx

    from suite.core.config import TrainRecipe
    from suite.core.training import train_model

    _, _, source, owner = owner_run
    out = tmp_path_factory.mktemp("thief")
    fp32 = _export(owner, out / "owner.onnx")
    # int8: static (QDQ, calibrated on 128 train images) and dynamic
    calib = source.train.tensors()[0][:128].numpy()

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter([{"x": calib[i:i + 32]} for i in range(0, len(calib), 32)])

        def get_next(self):
            return next(self.it, None)

    quantize_static(str(fp32), str(out / "int8_static.onnx"), Reader(), quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8, per_channel=True)
    quantize_dynamic(str(fp32), str(out / "int8_dynamic.onnx"), weight_type=QuantType.QInt8)
    onnx.save(convert_float_to_float16(onnx.load(str(fp32)), keep_io_types=False), str(out / "fp16.onnx"))
    # torch-pruning: 30% of the channels (the zoo's tp-channel-0.3), then 2 epochs of fine-tuning
    cp = copy.deepcopy(owner)
    pruner = tp.pruner.MagnitudePruner(cp, torch.rand(2, 3, 16, 16), importance=tp.importance.MagnitudeImportance(p=1),
                                       pruning_ratio=0.3, ignored_layers=[cp.classifier])
    pruner.step()
    train_model(cp, source.train, None, TrainRecipe(epochs=2, batch_size=32, lr=0.01, warmup_epochs=0), seed=3,
                quiet=True)
    _export(cp, out / "tp_channel_ft.onnx")
    # fine-pruning by hand: zero the half least active channels of the last conv on clean images, fine-tune
    fpr = copy.deepcopy(owner)
    conv = [m for m in fpr.modules() if isinstance(m, torch.nn.Conv2d)][-1]
    acts = []
    h = conv.register_forward_hook(lambda _m, _i, o: acts.append(torch.relu(o).mean((0, 2, 3))))
    with torch.no_grad():
        fpr(source.train.tensors()[0][:200])
    h.remove()
    mask = torch.ones_like(conv.weight)
    mask[torch.argsort(acts[0])[:conv.out_channels // 2]] = 0
    torch.nn.utils.prune.custom_from_mask(conv, "weight", mask)
    train_model(fpr, source.train, None, TrainRecipe(epochs=1, batch_size=32, lr=0.01, warmup_epochs=0), seed=4,
                quiet=True)
    torch.nn.utils.prune.remove(conv, "weight")
    torch.save(fpr.eval().state_dict(), out / "fine_pruned.pth")
    # independent: a foreign architecture trained from scratch
    torch.manual_seed(91)
    foreign = reg.models.build("plaincnn", num_classes=10, width=0.5, in_channels=3)
    train_model(foreign, source.train, None, TrainRecipe(epochs=5, batch_size=32, warmup_epochs=0), seed=91,
                quiet=True)
    _export(foreign.eval(), out / "foreign.onnx")
    # independent: transfer-learned (pre-trained on digits-affine24, fine-tuned on the owner's task)
    related = reg.sources.build("digits-affine24", None, limit=600)
    torch.manual_seed(92)
    tl = reg.models.build("resnet20", num_classes=10, width=0.5, in_channels=3)
    train_model(tl, related.train, None, TrainRecipe(epochs=4, batch_size=32, warmup_epochs=0), seed=92, quiet=True)
    tl.classifier.reset_parameters()
    train_model(tl, source.train, None, TrainRecipe(epochs=3, batch_size=32, lr=0.02, warmup_epochs=0), seed=93,
                quiet=True)
    torch.save(tl.eval().state_dict(), out / "transfer.pth")
    return out


def _audit(capsys, run_dir, cache, suspect, *extra):
    code = main(["audit", "--owner", str(run_dir), "--suspect", str(suspect), "--cache-dir", str(cache), "--quiet",
                 "--json", *extra])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return json.loads(captured.out)


@pytest.mark.parametrize("name,extra,truth,precision", [
    ("int8_static.onnx", (), "derived", "int8"),
    ("int8_dynamic.onnx", (), "derived", "int8"),
    ("fp16.onnx", (), "derived", "fp16"),
    ("tp_channel_ft.onnx", (), "derived", "fp32"),
    ("fine_pruned.pth", ("--arch", "vgg16"), "derived", None),
    ("foreign.onnx", (), "independent", "fp32"),
    ("transfer.pth", ("--arch", "resnet20"), "independent", None),
])
def test_audit_thief_suspects(owner_run, thief_suspects, capsys, name, extra, truth, precision):
    run_dir, cache, _, _ = owner_run
    r = _audit(capsys, run_dir, cache, thief_suspects / name, *extra)
    assert r["verdict"] == truth, {k: r[k] for k in ("match_rate", "threshold", "p_value", "negatives")}
    if precision is not None:
        assert r["suspect_details"]["precision"] == precision
    if truth == "derived":
        assert r["resembles"] is not None and 0 <= r["resembles"]["similarity"] <= 1
        assert r["resembles"]["kind"] in r["resembles"]["by_kind"]
    else:
        assert r["resembles"] is None
