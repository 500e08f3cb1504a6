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

# ----------------------------------------------------------------- sources
sources.register("digits16", "suite.core.sources.embedded:digits16", aliases=("digits",), embedded=True,
                 description="[embedded, default] sklearn digits upsampled to 16x16, grey as RGB")
sources.register("digits-photo32", "suite.core.sources.embedded:digits_photo32", aliases=("mnistm", "digits-m"),
                 embedded=True,
                 description="[embedded] MNIST-M style digits blended over sample-photo crops, 32x32")
sources.register("digits-affine24", "suite.core.sources.embedded:digits_affine24", embedded=True,
                 description="[embedded] digits under random affine warps, colours and noise, 24x24")
sources.register("cifar10", "suite.core.sources.disk:load_cifar10", needs_data_root=True,
                 description="CIFAR-10 python batches on disk (--data-root DIR/cifar-10-batches-py)")
sources.register("cifar100", "suite.core.sources.disk:load_cifar100", needs_data_root=True,
                 description="CIFAR-100 python files on disk (--data-root DIR/cifar-100-python), fine labels")
sources.register("svhn", "suite.core.sources.disk:load_svhn", needs_data_root=True,
                 description="SVHN cropped digits .mat files on disk (train_32x32.mat, test_32x32.mat)")
sources.register("stl10", "suite.core.sources.disk:load_stl10", aliases=("stl-10",), needs_data_root=True,
                 description="STL-10 binary files on disk (--data-root DIR/stl10_binary), 96x96")
sources.register("imagefolder", "suite.core.sources.disk:load_imagefolder", aliases=("folder",),
                 needs_data_root=True,
                 description="any ImageFolder tree root/<class>/*.png|jpg (optional train/ test/)")
sources.register("fashion-mnist", "suite.core.sources.idx:load_fashion_mnist",
                 aliases=("fmnist", "fashionmnist"),
                 description="Fashion-MNIST IDX files, 28x28 grey (Debian dataset-fashion-mnist, or --data-root)")
sources.register("mnist", "suite.core.sources.idx:load_mnist", needs_data_root=True,
                 description="MNIST IDX files on disk (--data-root DIR with train-images-idx3-ubyte[.gz], ...)")

DEFAULT_SOURCE = "digits16"
