"""The measurement behind docs/training.md, "Learning rate": the curvature of the loss in the U-Net's last layer.

``tools/lr_stability.py`` finds it by power iteration on Hessian-vector products; here it is checked against the
explicit Hessian of the quadratic ``SphereMSE(conv7(x; w), t)`` in ``w``: ``H = J^T D J`` with ``J`` the Jacobian of
conv7's output in its weight (conv7 is linear in it) and ``D = diag(2 A_i / B)`` (``A_i`` a pixel's solid angle),
evaluated in full.
"""

import importlib.util
import os

import pytest
import torch
from torch import nn
from torch.func import functional_call

from sconv.functional.common import pixel_solid_angle
from sconv.module.sconv import SphericalConv
from sconv.module.smse import SphereMSE

_PATH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools", "lr_stability.py")
_SPEC = importlib.util.spec_from_file_location("lr_stability", _PATH)
lr_stability = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(lr_stability)


class LastLayerOnly(nn.Module):
    """A stand-in for the U-Net with the same interface: ``conv7`` over [frame, previous map, their product]."""

    def __init__(self, conv7):
        super().__init__()
        self.conv7 = conv7

    def forward(self, frame, previous_map):
        return self.conv7(torch.cat([frame, previous_map, frame * previous_map], dim=1).relu())


@pytest.mark.parametrize(
    "conv7",
    [
        lambda: SphericalConv(7, 1, kernel_rad=torch.pi / 4, kernel_size=(4, 8)),
        lambda: nn.Conv2d(7, 1, 5, padding=2, bias=False),
    ],
    ids=["sconv", "planar"],
)
def test_last_layer_curvature_matches_explicit_hessian(conv7):
    torch.manual_seed(0)
    h, w, b = 8, 16, 2
    model = LastLayerOnly(conv7()).double()
    frames = torch.rand(b, 3, h, w, dtype=torch.float64)
    previous_maps = torch.rand(b, 1, h, w, dtype=torch.float64)
    targets = torch.rand(b, 1, h, w, dtype=torch.float64)
    got = lr_stability.last_layer_curvature(model, frames, previous_maps, targets, SphereMSE(h, w), iterations=30)

    features = []
    hook = model.conv7.register_forward_hook(lambda module, inputs, output: features.append(inputs[0]))
    with torch.no_grad():
        model(frames, previous_maps)
    hook.remove()
    weight = model.conv7.weight
    count = weight.numel()
    one_hot = torch.eye(count, dtype=torch.float64).view(count, *weight.shape[1:])
    with torch.no_grad():  # column k of J: conv7's output for the k-th one-hot weight (it is linear in the weight)
        jacobian = functional_call(model.conv7, {"weight": one_hot}, (features[0],))  # [B, count, H, W]
    jacobian = jacobian.permute(0, 2, 3, 1).reshape(-1, count)  # rows: (n, i, j)
    scale = (2 * pixel_solid_angle(h, w, dtype=torch.float64) / b)[None, :, None].expand(b, h, w).reshape(-1, 1)
    expected = torch.linalg.eigvalsh(jacobian.T @ (scale * jacobian))[-1]
    assert torch.isfinite(torch.tensor(got))
    torch.testing.assert_close(torch.tensor(got, dtype=torch.float64), expected, rtol=1e-6, atol=0)
