"""torch.export and torch.jit.trace of the spherical layers and both networks, and the registered operators
(``sconv::spherical_conv``, ``sconv::spherical_pool``) that make them work, checked with ``torch.library.opcheck``."""

import math
import warnings

import pytest
import torch

from models import SphericalConvLSTMNet, SphericalUNet
from sconv.functional.spool import spherical_pool
from sconv.module.sconv import SphericalConv
from sconv.module.spool import SphericalPooling


def _ops(program):
    return {str(node.target) for node in program.graph.nodes if node.op == "call_function"}


@pytest.mark.parametrize(
    "stride, padding_mode", [(1, "sphere"), ((2, 1), "zeros"), (2, 0.5), (1, "reflect")], ids=str
)
def test_layer_export_matches_eager(stride, padding_mode):
    torch.manual_seed(0)
    layer = SphericalConv(3, 4, kernel_rad=0.7, kernel_size=(3, 6), stride=stride, padding_mode=padding_mode, bias=True)
    program = torch.export.export(layer, (torch.randn(2, 3, 8, 16),))
    assert "sconv.spherical_conv.default" in _ops(program)  # one operator: no geometry in the graph
    x = torch.randn(2, 3, 8, 16)  # other values than the ones exported with
    torch.testing.assert_close(program.module()(x), layer(x), rtol=1e-5, atol=1e-6)


def test_export_with_a_dynamic_batch_and_its_gradients():
    torch.manual_seed(1)
    layer = SphericalConv(2, 3, kernel_rad=1.1, kernel_size=(3, 4), bias=True).double()
    pool = SphericalPooling("max")
    model = torch.nn.Sequential(layer, pool)
    batch = torch.export.Dim("batch", min=1, max=8)
    program = torch.export.export(model, (torch.randn(2, 2, 8, 16, dtype=torch.float64),), dynamic_shapes=({0: batch},))
    exported = program.module()
    for size in (1, 3):
        x = torch.randn(size, 2, 8, 16, dtype=torch.float64, requires_grad=True)
        got = exported(x)
        expected = model(x)
        torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
        grad = torch.randn_like(expected)
        params = [p for name, p in exported.named_parameters()]
        got_grads = torch.autograd.grad(got, [x, *params], grad)
        expected_grads = torch.autograd.grad(expected, [x, layer.weight, layer.bias], grad)
        assert len(got_grads) == len(expected_grads)
        for g, e in zip(got_grads, expected_grads):
            torch.testing.assert_close(g, e, rtol=1e-12, atol=1e-12)


def _unet_inputs(batch=1, size=(16, 32)):
    return torch.randn(batch, 3, *size), torch.rand(batch, 1, *size)


def _lstm_inputs(batch=1):
    return torch.randn(batch, 2, 3, 16, 32), torch.rand(batch, 2, 1, 16, 32)


@pytest.mark.parametrize("net, inputs", [(SphericalUNet, _unet_inputs), (SphericalConvLSTMNet, _lstm_inputs)],
                         ids=["unet", "convlstm"])  # fmt: skip
def test_networks_export_matches_eager(net, inputs):
    torch.manual_seed(2)
    model = net((16, 32)).eval()
    program = torch.export.export(model, inputs())
    assert {"sconv.spherical_conv.default", "sconv.spherical_pool.default"} <= _ops(program)
    args = inputs()
    got, expected = program.module()(*args), model(*args)
    if net is SphericalConvLSTMNet:  # (logits, hidden state: per layer (h, c))
        got, expected = [got[0], *sum(got[1], ())], [expected[0], *sum(expected[1], ())]
    else:
        got, expected = [got], [expected]
    for g, e in zip(got, expected, strict=True):
        torch.testing.assert_close(g, e, rtol=1e-5, atol=1e-5)


def test_jit_trace_gives_the_eager_outputs():
    torch.manual_seed(3)
    layer = SphericalConv(2, 3, kernel_rad=math.pi / 4, kernel_size=(4, 8), bias=True).double()
    model = SphericalUNet((32, 64)).eval()  # traced before the operators existed: 111% off at this size
    with warnings.catch_warnings():
        # Tracing warns about the argument checks that read sizes (a trace holds for the traced sizes only).
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        traced_layer = torch.jit.trace(layer, (torch.randn(1, 2, 8, 16, dtype=torch.float64),))
        # check_trace re-traces to compare graphs; skipped for time: the outputs are compared below.
        traced_model = torch.jit.trace(model, _unet_inputs(size=(32, 64)), check_trace=False)
    assert "sconv::spherical_conv" in str(traced_model.inlined_graph)  # the geometry is not in the trace
    x = torch.randn(1, 2, 8, 16, dtype=torch.float64)
    torch.testing.assert_close(traced_layer(x), layer(x), rtol=1e-12, atol=1e-12)
    args = _unet_inputs(size=(32, 64))
    torch.testing.assert_close(traced_model(*args), model(*args), rtol=1e-5, atol=1e-5)


def test_opcheck_spherical_conv():
    torch.manual_seed(4)
    op = torch.ops.sconv.spherical_conv.default
    x = torch.randn(2, 2, 6, 12, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(3, 2, 3, 4, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(3, dtype=torch.float64, requires_grad=True)
    for args in [
        (x, weight, bias, [1, 1], "sphere", 0.0, 0.9),
        (x, weight, None, [2, 3], "constant", 0.25, math.pi),
    ]:
        torch.library.opcheck(op, args)


def test_opcheck_spherical_pool():
    torch.manual_seed(5)
    x = torch.randn(2, 3, 8, 16, dtype=torch.float64, requires_grad=True)
    for mode in ("max", "avg"):
        torch.library.opcheck(torch.ops.sconv.spherical_pool.default, (x, mode))
        # The operator is the eager pooling, gradient included.
        got = torch.ops.sconv.spherical_pool(x, mode)
        expected = spherical_pool(x, mode)
        torch.testing.assert_close(got, expected, rtol=0, atol=0)
        grad = torch.randn_like(got)
        torch.testing.assert_close(torch.autograd.grad(got, x, grad)[0], torch.autograd.grad(expected, x, grad)[0])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (the Triton kernels)")
def test_cuda_export_trace_and_opcheck():
    torch.manual_seed(6)
    model = SphericalUNet((32, 64)).eval().cuda()
    args = tuple(t.cuda() for t in _unet_inputs(size=(32, 64)))
    program = torch.export.export(model, args)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        traced = torch.jit.trace(model, args, check_trace=False)
    other = tuple(t.cuda() for t in _unet_inputs(size=(32, 64)))
    expected = model(*other)
    torch.testing.assert_close(program.module()(*other), expected, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(traced(*other), expected, rtol=1e-4, atol=1e-4)
    x = torch.randn(2, 8, 16, 32, device="cuda", requires_grad=True)
    weight = torch.randn(16, 8, 3, 8, device="cuda", requires_grad=True)
    bias = torch.randn(16, device="cuda", requires_grad=True)
    torch.library.opcheck(torch.ops.sconv.spherical_conv.default, (x, weight, bias, [1, 1], "sphere", 0.0, 0.4))
    torch.library.opcheck(torch.ops.sconv.spherical_pool.default, (x, "max"))
