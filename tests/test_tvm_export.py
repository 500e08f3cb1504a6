"""export_relax folds BN in torch and constant layouts in numpy: same function, nothing left for LLVM to fold."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from compression.tvm_backend.compile import export_relax, fold_batchnorm, fold_constant_layouts


def _net() -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(2, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
                        nn.Conv2d(8, 8, 1), nn.BatchNorm2d(8), nn.Flatten(), nn.Linear(8 * 6 * 6, 5))
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2.0)
            nn.init.uniform_(m.weight, 0.5, 1.5)
            nn.init.uniform_(m.bias, -0.5, 0.5)
    with torch.no_grad():
        net[0].weight[:, :, 0, :] = 0.0  # pruned zeros must stay zeros after folding
    return net.eval()


def test_fold_batchnorm_removes_bn_keeps_function_and_zeros():
    net = _net()
    folded = fold_batchnorm(net)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    assert any(isinstance(m, nn.BatchNorm2d) for m in net.modules())  # the caller's model is untouched
    x = torch.rand(3, 2, 6, 6)
    torch.testing.assert_close(folded(x), net(x), rtol=1e-5, atol=1e-5)
    conv = next(m for m in folded.modules() if isinstance(m, nn.Conv2d))
    assert bool((conv.weight[:, :, 0, :] == 0).all())


def test_fold_batchnorm_leaves_untraceable_models_alone():
    class Branchy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.bn = nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2)

        def forward(self, x):
            if x.sum() > 0:  # data-dependent control flow: torch.fx cannot trace it
                return self.bn(self.conv(x))
            return self.conv(x)

    net = Branchy().eval()
    assert fold_batchnorm(net) is net


def test_export_relax_has_no_constant_layout_ops_left_and_matches_eager():
    import tvm
    from tvm import relax

    net = _net()
    mod = export_relax(net, (2, 6, 6), 1)
    left = []

    def visit(e):
        if isinstance(e, relax.Call) and getattr(e.op, "name", "") in ("relax.reshape", "relax.permute_dims") \
                and isinstance(e.args[0], tvm.ir.Constant):
            left.append(e.op.name)

    for func in mod.functions.values():
        if isinstance(func, relax.Function):
            relax.analysis.post_order_visit(func.body, visit)
    assert left == []
    assert fold_constant_layouts(mod) is not None
    ex = tvm.compile(mod, target="llvm")
    vm = relax.VirtualMachine(ex, tvm.cpu())
    x = torch.rand(1, 2, 6, 6)
    out = vm["main"](tvm.runtime.tensor(x.numpy()))[0]  # the exported program returns a tuple
    np.testing.assert_allclose(out.numpy(), net(x).detach().numpy(), rtol=1e-4, atol=1e-4)
