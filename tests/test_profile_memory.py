"""benchmarks/profile_sconv.py's account of what a forward saves for the backward pass, on a hand-made case (CPU):
the bytes each child module saved, each storage once, the parameters left out."""

import torch
from torch import nn

from benchmarks.profile_sconv import saved_tensor_bytes


class TwoLayers(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(5, 7)
        self.act = nn.Sigmoid()

    def forward(self, x):
        return self.act(self.lin(x)).double() * 2  # the cast and the product run between children


def test_saved_tensor_bytes_by_hand():
    model = TwoLayers()
    x = torch.randn(3, 5)
    saved = saved_tensor_bytes(model, lambda: model(x).sum())
    # Linear saves its input (the weight is a parameter, left out); Sigmoid saves its output; the cast saves
    # nothing and the product by a number saves nothing.
    assert saved == {("lin", "float32"): 3 * 5 * 4, ("act", "float32"): 3 * 7 * 4}
    # y * y saves y twice: it counts once
    saved = saved_tensor_bytes(model, lambda: (lambda y: (y * y).sum())(model.lin(x)))
    assert saved == {("lin", "float32"): 3 * 5 * 4, ("-", "float32"): 3 * 7 * 4}
