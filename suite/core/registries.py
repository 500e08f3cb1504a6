"""The suite's six registries, the core's own entries (models, sources) and the plugin loader.

Targets are lazy ``"module:attr"`` strings: listing entries (``suite ls``)
imports nothing heavy, and TVM / ONNX Runtime are imported only by a run that
uses them.  Compressors and backends register in ``compression/entries.py``,
attacks in ``attacks/entries.py``, fingerprint methods in
``fingerprints/entries.py``: each package next to its code, loaded through
the ``suite.entries`` entry-point group, never special cases in the pipeline.

Factory contracts
-----------------
models:       ``f(num_classes, width, in_channels) -> torch.nn.Module`` taking
              ``[N, C, H, W]`` in [0, 1], returning logits ``[N, num_classes]``.
sources:      ``f(data_root: str | None, **kwargs) -> ImageSource``.
compressors:  ``f(**settings) -> Compressor`` (see ``compression.base``).
backends:     ``f(**settings) -> Backend`` (see ``suite.core.predictor``).
attacks:      ``f(**settings) -> Attack``.
fingerprints: ``f(**settings) -> FingerprintMethod``.
"""

from __future__ import annotations

from suite.core.errors import SuiteError
from suite.core.registry import Registry
from suite.core.budgets import ThreatModel

models = Registry("models", "model")
sources = Registry("sources", "source")
compressors = Registry("compressors", "compressor")
backends = Registry("backends", "backend")
attacks = Registry("attacks", "attack")
fingerprints = Registry("fingerprints", "fingerprint method")


def load_entries() -> None:
    """Import every registered entry module of the ``suite.entries`` entry-point group (once).

    The packages above the core (compression, attacks, fingerprints, and any
    third-party plugin) register their entries in their own ``entries``
    module; a registry calls this before its first lookup, so the core names
    none of them.
    """
    global _LOADED
    if _LOADED:
        return
    _LOADED = True
    from importlib.metadata import entry_points

    found = sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name)
    if not found:
        raise SuiteError(f"no {ENTRY_POINT_GROUP!r} entry points: the suite is not installed "
                         f"(run: pip install -e . from the repository root)")
    for ep in found:
        ep.load()


ENTRY_POINT_GROUP = "suite.entries"
_LOADED = False
for _registry in (compressors, backends, attacks, fingerprints):
    _registry.loader = load_entries

REGISTRIES: dict[str, Registry] = {
    r.kind: r for r in (models, sources, compressors, backends, attacks, fingerprints)
}

# ------------------------------------------------------------------ models
models.register("vgg16", "suite.core.zoo.vgg:build_vgg16", aliases=("vgg16-bn", "vgg16_bn"),
                description="CIFAR-style VGG16 with batch norm (13 conv + 1 FC), any input >= 16 px")
models.register("resnet18", "suite.core.zoo.resnet:build_resnet18",
                description="CIFAR-style ResNet-18 (3x3 stem, BasicBlocks 2-2-2-2)")
models.register("resnet20", "suite.core.zoo.resnet:build_resnet20",
                description="CIFAR ResNet-20 (He et al. 2016, 3 stages x 3 BasicBlocks, 16-32-64)")
models.register("mobilenetv2", "suite.core.zoo.mobilenetv2:build_mobilenetv2", aliases=("mobilenet-v2",),
                description="CIFAR-style MobileNetV2 (inverted residuals, stride-1 stem)")
models.register("plaincnn", "suite.core.zoo.foreign:build_plaincnn",
                description="plain 4-layer CNN (32-64-128-128, two max-pools): a foreign family for fingerprint negatives")
models.register("wideshallow", "suite.core.zoo.foreign:build_wideshallow",
                description="wide shallow net (conv5x5 128 -> conv3x3 256): a foreign family for fingerprint negatives")

# ----------------------------------------------------------------- sources
# ``threat=``: the source's standard budgets (see suite.core.threat and the README's "Threat models").
_MNIST = ThreatModel(0.3, 2.0, "MNIST standard: Linf 0.3 (Madry et al. 2018), L2 2.0")
_FASHION = ThreatModel(0.1, 1.5, "Fashion-MNIST standard in the robustness literature: Linf 0.1, L2 1.5")
_ROBUSTBENCH = "RobustBench (Croce et al. 2021) CIFAR-10 threat models: Linf 8/255, L2 0.5"
_CIFAR = ThreatModel(8 / 255, 0.5, _ROBUSTBENCH)
_SVHN = ThreatModel(8 / 255, 0.5, "SVHN: the CIFAR-10 threat models (same 3x32x32 shape): Linf 8/255, L2 0.5")
_STL = ThreatModel(8 / 255, 0.5, "STL-10: Linf 8/255 (as CIFAR-10, the common choice), L2 0.5")
_DIGITS16 = ThreatModel(
    0.3, 1.979, "derived: full-contrast grey digits like MNIST, so MNIST's Linf 0.3; L2 2.0 at MNIST's "
    "per-coordinate RMS over 3x16x16 coordinates: 2.0*sqrt(768/784)", derived=True)
_DIGITS_PHOTO32 = ThreatModel(
    8 / 255, 0.5, "derived: colour digits over photos, 3x32x32 like SVHN, so SVHN's Linf 8/255 and L2 0.5",
    derived=True)
_DIGITS_AFFINE24 = ThreatModel(
    8 / 255, 0.375, "derived: colour warped digits with noise like SVHN, so Linf 8/255; L2 0.5 at SVHN's "
    "per-coordinate RMS over 3x24x24 coordinates: 0.5*sqrt(1728/3072)", derived=True)

_FASHION_PHOTO32 = ThreatModel(
    8 / 255, 0.5, "derived: colour garments over photos, 3x32x32 like SVHN (as digits-photo32), so Linf 8/255 "
    "and L2 0.5", derived=True)
_FASHION_AFFINE24 = ThreatModel(
    8 / 255, 0.375, "derived: colour warped garments with noise (as digits-affine24), so Linf 8/255; L2 0.5 at "
    "SVHN's per-coordinate RMS over 3x24x24 coordinates: 0.5*sqrt(1728/3072)", derived=True)

# ``family``: the dataset a source's images come from; sources of one family share content (digits,
# garments), so held-out evaluation of meta-learned attacks leaves a whole family out.
sources.register("digits16", "suite.core.sources.embedded:digits16", aliases=("digits",), embedded=True,
                 family="digits", threat=_DIGITS16, description="[embedded, default] sklearn digits upsampled to 16x16, grey as RGB")
sources.register("digits-photo32", "suite.core.sources.embedded:digits_photo32", aliases=("mnistm", "digits-m"),
                 embedded=True, family="digits", threat=_DIGITS_PHOTO32,
                 description="[embedded] MNIST-M style digits blended over sample-photo crops, 32x32")
sources.register("digits-affine24", "suite.core.sources.embedded:digits_affine24", embedded=True,
                 family="digits", threat=_DIGITS_AFFINE24,
                 description="[embedded] digits under random affine warps, colours and noise, 24x24")
sources.register("cifar10", "suite.core.sources.disk:load_cifar10", needs_data_root=True, threat=_CIFAR,
                 description="CIFAR-10 python batches on disk (--data-root DIR/cifar-10-batches-py)")
sources.register("cifar100", "suite.core.sources.disk:load_cifar100", needs_data_root=True,
                 threat=ThreatModel(8 / 255, 0.5, _ROBUSTBENCH.replace("CIFAR-10", "CIFAR-100")),
                 description="CIFAR-100 python files on disk (--data-root DIR/cifar-100-python), fine labels")
sources.register("svhn", "suite.core.sources.disk:load_svhn", needs_data_root=True, threat=_SVHN,
                 description="SVHN cropped digits .mat files on disk (train_32x32.mat, test_32x32.mat)")
sources.register("stl10", "suite.core.sources.disk:load_stl10", aliases=("stl-10",), needs_data_root=True,
                 threat=_STL, description="STL-10 binary files on disk (--data-root DIR/stl10_binary), 96x96")
sources.register("imagefolder", "suite.core.sources.disk:load_imagefolder", aliases=("folder",),
                 needs_data_root=True,
                 description="any ImageFolder tree root/<class>/*.png|jpg (optional train/ test/); "
                             "budgets derived from CIFAR's by image size")
sources.register("fashion-mnist", "suite.core.sources.idx:load_fashion_mnist",
                 aliases=("fmnist", "fashionmnist"), family="fashion", threat=_FASHION,
                 description="Fashion-MNIST IDX files, 28x28 grey (Debian dataset-fashion-mnist, or --data-root)")
sources.register("fashion-photo32", "suite.core.sources.fashion_variants:fashion_photo32", family="fashion",
                 threat=_FASHION_PHOTO32,
                 description="Fashion-MNIST garments blended over sample-photo crops, 32x32 colour (needs the "
                             "fashion-mnist files)")
sources.register("fashion-affine24", "suite.core.sources.fashion_variants:fashion_affine24", family="fashion",
                 threat=_FASHION_AFFINE24,
                 description="Fashion-MNIST garments under random affine warps, colours and noise, 24x24 "
                             "(needs the fashion-mnist files)")
sources.register("mnist", "suite.core.sources.idx:load_mnist", needs_data_root=True, family="digits",
                 threat=_MNIST,
                 description="MNIST IDX files on disk (--data-root DIR with train-images-idx3-ubyte[.gz], ...)")

DEFAULT_SOURCE = "digits16"
