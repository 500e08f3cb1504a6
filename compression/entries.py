"""Registry entries of the compression layer: compressors and deployment backends.

Loaded by :mod:`suite.core.registries` through the ``suite.entries`` entry point
group (see ``pyproject.toml``); targets stay lazy ``module:attr`` strings.
"""

from __future__ import annotations

from suite.core import registries as reg

# ------------------------------------------------------------- compressors
reg.compressors.register("none", "compression.none:NoCompression", aliases=("dense",), default_sparsity=0.0,
                         description="no compression: the trained dense model as is")
reg.compressors.register("unstructured", "compression.factories:unstructured", aliases=("magnitude",),
                         default_sparsity=0.75,
                         description="magnitude pruning of single weights, layer-wise or global (scope=global)")
reg.compressors.register("block", "compression.factories:block", aliases=("block-based",), default_sparsity=0.75,
                         description="block-based: whole columns of r x c GEMM blocks, balanced per row-block (r=8,c=16)")
reg.compressors.register("block-punched", "compression.factories:block_punched", aliases=("punched",),
                         default_sparsity=0.75,
                         description="conv kernel positions pruned across r filters x c channels (r=8,c=4)")
reg.compressors.register("pattern", "compression.factories:pattern", default_sparsity=0.75,
                         description="3x3 kernels keep a library pattern (4 of 9) + connectivity pruning")
reg.compressors.register("nm", "compression.factories:nm", aliases=("n:m", "2:4"), default_sparsity=0.5,
                         description="N:M fine-grained structured sparsity along GEMM columns (n=2,m=4)")
reg.compressors.register("filter", "compression.channel_compressor:FilterPruning", aliases=("channel",),
                         default_sparsity=0.5,
                         description="filter/channel pruning with physical removal (torch-pruning dependency graph)")
reg.compressors.register("pas", "compression.channel_compressor:PaSPruning", aliases=("pruning-as-search",),
                         default_sparsity=0.5,
                         description="Pruning-as-Search: learned per-layer widths (binary gates, STE, MACs target)")
reg.compressors.register("auto", "compression.factories:auto", default_sparsity=0.75,
                         description="per-layer scheme/block/ratio mapping (--mapping rule|search) + recovery")

# ---------------------------------------------------------------- backends
reg.backends.register("torch", "compression.backends.torch_eager:TorchBackend", aliases=("eager",),
                      description="PyTorch eager execution (gradients available)")
reg.backends.register("tvm", "compression.tvm_backend.backend:TVMBackend", aliases=("apache-tvm",),
                      description="Apache TVM Relax + our compact sparse conv kernels; isolated black-box predictor")
reg.backends.register("onnx", "compression.backends.onnx_backend:OnnxBackend", aliases=("onnxruntime", "ort"),
                      description="ONNX export + ONNX Runtime (CPU); isolated black-box predictor")
