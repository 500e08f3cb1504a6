"""The suite's six registries and their built-in entries.

Targets are lazy ``"module:attr"`` strings: listing entries (``suite ls``)
imports nothing heavy, and TVM / ONNX Runtime are imported only by a run that
uses them.  Later stages add entries here, never special cases in the pipeline.

Factory contracts
-----------------
models:       ``f(num_classes, width, in_channels) -> torch.nn.Module`` taking
              ``[N, C, H, W]`` in [0, 1], returning logits ``[N, num_classes]``.
sources:      ``f(data_root: str | None, **kwargs) -> ImageSource``.
compressors:  ``f(**settings) -> Compressor`` (see ``compression.base``).
backends:     ``f(**settings) -> Backend`` (see ``suite.predictor``).
attacks:      ``f(**settings) -> Attack``.
fingerprints: ``f(**settings) -> FingerprintMethod``.
"""

from __future__ import annotations

from suite.registry import Registry

models = Registry("models", "model")
sources = Registry("sources", "source")
compressors = Registry("compressors", "compressor")
backends = Registry("backends", "backend")
attacks = Registry("attacks", "attack")
fingerprints = Registry("fingerprints", "fingerprint method")

REGISTRIES: dict[str, Registry] = {
    r.kind: r for r in (models, sources, compressors, backends, attacks, fingerprints)
}

# ------------------------------------------------------------------ models
models.register("vgg16", "suite.zoo.vgg:build_vgg16", aliases=("vgg16-bn", "vgg16_bn"),
                description="CIFAR-style VGG16 with batch norm (13 conv + 1 FC), any input >= 16 px")
models.register("resnet18", "suite.zoo.resnet:build_resnet18",
                description="CIFAR-style ResNet-18 (3x3 stem, BasicBlocks 2-2-2-2)")
models.register("resnet20", "suite.zoo.resnet:build_resnet20",
                description="CIFAR ResNet-20 (He et al. 2016, 3 stages x 3 BasicBlocks, 16-32-64)")
models.register("mobilenetv2", "suite.zoo.mobilenetv2:build_mobilenetv2", aliases=("mobilenet-v2",),
                description="CIFAR-style MobileNetV2 (inverted residuals, stride-1 stem)")

# ----------------------------------------------------------------- sources
sources.register("digits16", "suite.sources.embedded:digits16", aliases=("digits",), embedded=True,
                 description="[embedded, default] sklearn digits upsampled to 16x16, grey as RGB")
sources.register("digits-photo32", "suite.sources.embedded:digits_photo32", aliases=("mnistm", "digits-m"),
                 embedded=True,
                 description="[embedded] MNIST-M style digits blended over sample-photo crops, 32x32")
sources.register("digits-affine24", "suite.sources.embedded:digits_affine24", embedded=True,
                 description="[embedded] digits under random affine warps, colours and noise, 24x24")
sources.register("cifar10", "suite.sources.disk:load_cifar10", needs_data_root=True,
                 description="CIFAR-10 python batches on disk (--data-root DIR/cifar-10-batches-py)")
sources.register("cifar100", "suite.sources.disk:load_cifar100", needs_data_root=True,
                 description="CIFAR-100 python files on disk (--data-root DIR/cifar-100-python), fine labels")
sources.register("svhn", "suite.sources.disk:load_svhn", needs_data_root=True,
                 description="SVHN cropped digits .mat files on disk (train_32x32.mat, test_32x32.mat)")
sources.register("stl10", "suite.sources.disk:load_stl10", aliases=("stl-10",), needs_data_root=True,
                 description="STL-10 binary files on disk (--data-root DIR/stl10_binary), 96x96")
sources.register("imagefolder", "suite.sources.disk:load_imagefolder", aliases=("folder",),
                 needs_data_root=True,
                 description="any ImageFolder tree root/<class>/*.png|jpg (optional train/ test/)")

# ------------------------------------------------------------- compressors
compressors.register("none", "compression.none:NoCompression", aliases=("dense",), default_sparsity=0.0,
                     description="no compression: the trained dense model as is")
compressors.register("unstructured", "compression.factories:unstructured", aliases=("magnitude",),
                     default_sparsity=0.75,
                     description="magnitude pruning of single weights, layer-wise or global (scope=global)")
compressors.register("block", "compression.factories:block", aliases=("block-based",), default_sparsity=0.75,
                     description="block-based: whole columns of r x c GEMM blocks, balanced per row-block (r=8,c=16)")
compressors.register("block-punched", "compression.factories:block_punched", aliases=("punched",),
                     default_sparsity=0.75,
                     description="conv kernel positions pruned across r filters x c channels (r=8,c=4)")
compressors.register("pattern", "compression.factories:pattern", default_sparsity=0.75,
                     description="3x3 kernels keep a library pattern (4 of 9) + connectivity pruning")
compressors.register("nm", "compression.factories:nm", aliases=("n:m", "2:4"), default_sparsity=0.5,
                     description="N:M fine-grained structured sparsity along GEMM columns (n=2,m=4)")
compressors.register("filter", "compression.channel_compressor:FilterPruning", aliases=("channel",),
                     default_sparsity=0.5,
                     description="filter/channel pruning with physical removal (torch-pruning dependency graph)")
compressors.register("pas", "compression.channel_compressor:PaSPruning", aliases=("pruning-as-search",),
                     default_sparsity=0.5,
                     description="Pruning-as-Search: learned per-layer widths (binary gates, STE, MACs target)")
compressors.register("auto", "compression.factories:auto", default_sparsity=0.75,
                     description="per-layer scheme/block/ratio mapping (--mapping rule|search) + recovery")

# ---------------------------------------------------------------- backends
backends.register("torch", "compression.backends.torch_eager:TorchBackend", aliases=("eager",),
                  description="PyTorch eager execution (gradients available)")
backends.register("tvm", "compression.tvm_backend.backend:TVMBackend", aliases=("apache-tvm",),
                  description="Apache TVM Relax + our compact sparse conv kernels; isolated black-box predictor")
backends.register("onnx", "compression.backends.onnx_backend:OnnxBackend", aliases=("onnxruntime", "ort"),
                  description="ONNX export + ONNX Runtime (CPU); isolated black-box predictor")

# ------------------------------------------------------------ fingerprints
fingerprints.register("c-examples", "fingerprints.generators:CExamples", aliases=("c", "ce"),
                      description="characteristic examples: sign-gradient steps to a target label (owner only)")
fingerprints.register("rc-examples", "fingerprints.generators:RCExamples", aliases=("rc",),
                      description="robust CEs: input gradient summed over K weight-noised owner copies")
fingerprints.register("ltrc-examples", "fingerprints.generators:LTRCExamples", aliases=("ltrc",),
                      description="low-transfer robust CEs: RC + FFT high-pass projection of the perturbation")
fingerprints.register("ipguard", "fingerprints.generators:IPGuard",
                      description="[baseline] IPGuard: data points pushed just past the decision boundary")
fingerprints.register("misclassified", "fingerprints.generators:Misclassified", aliases=("misclassified-inputs",),
                      description="[baseline] inputs the owner gets wrong, compared by label agreement")

# ----------------------------------------------------------------- attacks
attacks.register("uap-pgd", "attacks.uap:UAPPGD", aliases=("uap",),
                 description="universal perturbation by stochastic PGD over mini-batches (Linf/L2)")
attacks.register("uap-deepfool", "attacks.uap:UAPDeepFool", aliases=("uap-original",),
                 description="original UAP algorithm (Moosavi-Dezfooli 2017), foolbox DeepFool inner step")
attacks.register("uap-meta", "attacks.meta:UAPMeta",
                 description="few-shot UAP: MAML-meta-trained learned optimizer + init across sources")
attacks.register("uap-maml", "attacks.meta:UAPMAML",
                 description="ablation: MAML-learned initial UAP (resized per task), plain gradient steps")
attacks.register("uap-l2o", "attacks.meta:UAPL2O",
                 description="ablation: learned optimizer (coordinate-wise LSTM) without the MAML outer loop")
attacks.register("noise-uniform", "attacks.uap:NoiseUniform", aliases=("noise",),
                 description="baseline: random +-eps noise (Linf) or random direction (L2) at the budget")
attacks.register("noise-checkerboard", "attacks.uap:NoiseCheckerboard", aliases=("checkerboard",),
                 description="baseline: +-eps checkerboard (structured noise) at the budget")
attacks.register("pgd", "attacks.perimage:PGD", description="per-image PGD via torchattacks (robust accuracy)")
attacks.register("fgsm", "attacks.perimage:FGSM", description="per-image FGSM via torchattacks (Linf)")
attacks.register("cw", "attacks.perimage:CW", aliases=("carlini-wagner",),
                 description="per-image Carlini-Wagner L2 via torchattacks, counted within the L2 budget")

DEFAULT_SOURCE = "digits16"
