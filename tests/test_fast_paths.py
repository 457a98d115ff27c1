"""The fast paths of NVAE's decoder cell give the naive reference's results (fp32 to 1e-5, fp64 to 1e-9).

The reference is ``genzoo_plugins.nvae.naive_cells``: the same math as a plain ``nn.Sequential`` in
NCHW with separate BatchNorm and Swish modules. Each test gives both the same weights and the
same input and compares outputs, the gradients of the input and of every parameter, and the
BatchNorm running statistics the step leaves behind.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from genzoo.layers import activations, cpu_kernels
from genzoo_plugins.nvae import fused
from genzoo_plugins.nvae.decoder_cell import SeparableCell
from genzoo_plugins.nvae.encoder_cell import ResidualCell
from genzoo_plugins.nvae.hierarchy import NVAEHierarchy
from genzoo_plugins.nvae.naive_cells import NaiveSeparableCell, naive_model
from genzoo_plugins.nvae.se import SqueezeExcitation
from genzoo_plugins.nvae.skip import FactorizedReduce

TOL = dict(rtol=1e-5, atol=1e-5)
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(params=DEVICES)
def device(request):
    """Each test on the CPU, and on CUDA where there is one, in true fp32 (no TF32 in cuDNN or
    cuBLAS, which would round inputs to 10-bit mantissas)."""
    if request.param == "cuda":
        saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
        yield torch.device("cuda")
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved
    else:
        yield torch.device("cpu")


FAST_OPTIONS = [
    dict(channels_last=True, fused=True, checkpoint=False),  # the default
    dict(channels_last=False, fused=True, checkpoint=False),
    dict(channels_last=True, fused=False, checkpoint=False),
    dict(channels_last=True, fused=True, checkpoint=True),
    dict(channels_last=False, fused=False, checkpoint=True),
]


def _ids(options: dict) -> str:
    return "-".join(name for name, on in options.items() if on) or "plain"


def _perturb_bn(module: torch.nn.Module) -> None:
    """Non-trivial BatchNorm affine parameters and running statistics (fresh ones are 1 and 0,
    which would hide a scale or shift applied in the wrong place)."""
    generator = torch.Generator().manual_seed(1)
    for m in module.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            with torch.no_grad():
                m.weight.copy_(0.5 + torch.rand(m.weight.shape, generator=generator))
                m.bias.copy_(0.2 * torch.randn(m.bias.shape, generator=generator))
                if m.track_running_stats:
                    m.running_mean.copy_(0.1 * torch.randn(m.running_mean.shape, generator=generator))
                    m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=generator))


def _step(module, x: torch.Tensor, cotangent: torch.Tensor, owner: torch.nn.Module | None = None):
    """Forward and backward of ``module`` (a callable when ``owner`` holds the parameters)."""
    x = x.clone().requires_grad_()
    y = module(x)
    y.backward(cotangent)
    grads = {name: p.grad.clone() for name, p in (owner or module).named_parameters()}
    return y.detach(), x.grad, grads


def _assert_same_buffers(fast: torch.nn.Module, naive: torch.nn.Module, tol: dict) -> None:
    fast_bn = [m for m in fast.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    naive_bn = [m for m in naive.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(fast_bn) == len(naive_bn) > 0
    for a, b in zip(fast_bn, naive_bn):
        torch.testing.assert_close(a.running_mean, b.running_mean, **tol)
        torch.testing.assert_close(a.running_var, b.running_var, **tol)
        assert int(a.num_batches_tracked) == int(b.num_batches_tracked)


def _same_grads(fast_grads: dict, naive_grads: dict, *, dtype: torch.dtype = torch.float32) -> None:
    """The parameter gradients agree: in float64 elementwise to 1e-9; in float32 as one vector,
    ||fast - naive|| <= 1e-5 ||naive||. (A weight or bias gradient is a sum over the batch and
    every pixel, so its float32 rounding depends on the summation order, which the memory format
    and the thread split change; elementwise 1e-5 sits at that noise floor for gradients of size
    one, and a gradient that is zero in exact arithmetic, such as a BatchNorm bias followed by
    another BatchNorm, is pure rounding noise.) The two modules name their parts differently but
    hold them in the same order."""
    assert len(fast_grads) == len(naive_grads)
    pairs = list(zip(fast_grads.items(), naive_grads.values()))
    if dtype == torch.float64:
        for (name, a), b in pairs:
            torch.testing.assert_close(
                a, b, rtol=1e-9, atol=1e-9, msg=lambda m, name=name: f"grad of {name}: {m}"
            )
        return
    a = torch.cat([g.flatten() for (_, g), _ in pairs])
    b = torch.cat([g.flatten() for _, g in pairs])
    worst = max(pairs, key=lambda p: (p[0][1] - p[1]).abs().max().item())[0][0]
    error = ((a - b).norm() / b.norm()).item()
    assert error <= 1e-5, f"parameter gradients differ by {error:.2e} (relative norm); worst: {worst}"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["fp32", "fp64"])
@pytest.mark.parametrize("options", FAST_OPTIONS, ids=_ids)
@pytest.mark.parametrize("resample", ["none", "up", "down"])
def test_decoder_cell_fast_paths_match_the_naive_reference(options, resample, device, dtype):
    torch.manual_seed(0)
    in_chs, out_chs = (8, 8) if resample == "none" else ((8, 4) if resample == "up" else (8, 16))
    fast = SeparableCell(in_chs, out_chs, resample=resample, gate_layer=SqueezeExcitation, **options)
    _perturb_bn(fast)
    fast.to(device, dtype)
    naive = NaiveSeparableCell.from_cell(fast)
    x = torch.randn(4, in_chs, 12, 12).to(device, dtype)
    size = {"none": 12, "up": 24, "down": 6}[resample]
    cotangent = torch.randn(4, out_chs, size, size).to(device, dtype)
    tol = TOL if dtype == torch.float32 else dict(rtol=1e-9, atol=1e-9)

    y_fast, gx_fast, g_fast = _step(fast.train(), x, cotangent)
    y_naive, gx_naive, g_naive = _step(naive.train(), x, cotangent)
    torch.testing.assert_close(y_fast, y_naive, **tol)
    torch.testing.assert_close(gx_fast, gx_naive, **tol)
    _same_grads(g_fast, g_naive, dtype=dtype)
    _assert_same_buffers(fast, naive, tol)  # a checkpointed branch counts the batch once

    with torch.no_grad():  # evaluation mode: running statistics, no fused kernel
        torch.testing.assert_close(fast.eval()(x), naive.eval()(x), **tol)


def test_the_fast_paths_are_the_defaults():
    cell = SeparableCell(8, 8)
    assert (cell.channels_last, cell.fused, cell.checkpoint) == (True, True, False)


def test_fused_step_saves_only_its_input():
    """The reason for the fused step: autograd keeps the BatchNorm input (plus per-channel
    statistics), not the normalized tensor and its Swish."""
    torch.manual_seed(0)
    bn, conv = torch.nn.BatchNorm2d(6), torch.nn.Conv2d(6, 6, 5, padding=2, groups=6, bias=False)
    x = torch.randn(2, 6, 8, 8, requires_grad=True)
    large = []

    def pack(t):
        if t.numel() >= x.numel():
            large.append(t)
        return t

    for without_bn in (False, True):
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            fused.swish_conv(x, conv) if without_bn else fused.bn_swish_conv(x, bn, conv)
        assert len(large) == 1 and large[0] is x
        large.clear()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        conv(torch.nn.functional.silu(bn(x)))
    assert len(large) >= 2  # the unfused modules keep the BN output and the Swish output


def test_fused_path_steps_aside_where_it_would_not_be_exact():
    x = torch.randn(2, 4, 6, 6)
    bn, conv = torch.nn.BatchNorm2d(4), torch.nn.Conv2d(4, 4, 3, padding=1)
    assert fused.can_fuse(x, bn, conv)
    assert not fused.can_fuse(x, bn.eval(), conv)  # running statistics: the modules run
    bn.train()
    assert not fused.can_fuse(x.double(), bn, conv)  # mixed dtypes
    assert not fused.can_fuse(x, bn, torch.nn.Conv2d(4, 4, 3, padding=1, padding_mode="reflect"))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not fused.can_fuse(x, bn, conv)


def test_fused_step_gradients_against_finite_differences():
    torch.manual_seed(0)
    bn = torch.nn.BatchNorm2d(3).double()
    conv = torch.nn.Conv2d(3, 3, 3, padding=1, groups=3).double()
    x = torch.randn(2, 3, 5, 5, dtype=torch.double, requires_grad=True)

    def f(x, *params):
        return fused.bn_swish_conv(x, bn, conv, update_stats=False)

    assert torch.autograd.gradcheck(f, (x, bn.weight, bn.bias, conv.weight, conv.bias))

    def g(x, *params):
        return fused.swish_conv(x, conv)

    assert torch.autograd.gradcheck(g, (x, conv.weight, conv.bias))
    before = x.detach().clone()
    fused.swish_conv(x, conv).sum().backward()  # the Swish never overwrites its input
    assert torch.equal(x.detach(), before)


def _bn_conv_bn(chs: int, hidden: int, *, conv_bias: bool = False, **bn_options):
    """A perturbed BN -> 1x1 conv -> BN, as the cell's first three layers."""
    layers = torch.nn.Sequential(
        torch.nn.BatchNorm2d(chs, **bn_options),
        torch.nn.Conv2d(chs, hidden, 1, bias=conv_bias),
        torch.nn.BatchNorm2d(hidden, **bn_options),
    )
    _perturb_bn(layers)
    return layers


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["fp32", "fp64"])
@pytest.mark.parametrize(
    "options",
    [
        dict(),
        dict(conv_bias=True),
        dict(momentum=None),  # a cumulative average: the factor counts num_batches_tracked
        dict(track_running_stats=False),
        dict(eps=0.1),
    ],
    ids=["plain", "conv-bias", "cumulative", "untracked", "eps"],
)
@pytest.mark.parametrize(
    "memory_format", [torch.contiguous_format, torch.channels_last], ids=["nchw", "nhwc"]
)
def test_folded_expansion_matches_the_modules(options, memory_format, dtype):
    """bn_conv_bn: output, input and parameter gradients, running statistics and batch counts
    as from the three modules, two steps in a row (the second starts from updated buffers)."""
    torch.manual_seed(0)
    layers = _bn_conv_bn(5, 30, **options).to(dtype)
    reference = _bn_conv_bn(5, 30, **options).to(dtype)
    reference.load_state_dict(layers.state_dict())
    tol = TOL if dtype == torch.float32 else dict(rtol=1e-9, atol=1e-9)
    for _ in range(2):
        x = (3.0 + 2.0 * torch.randn(6, 5, 7, 9, dtype=dtype)).to(memory_format=memory_format)
        assert fused.can_fold(x, *layers)
        cotangent = torch.randn(6, 30, 7, 9, dtype=dtype)
        y, gx, grads = _step(lambda x: fused.bn_conv_bn(x, *layers), x, cotangent, layers)
        y_ref, gx_ref, grads_ref = _step(reference, x, cotangent)
        torch.testing.assert_close(y, y_ref, **tol)
        torch.testing.assert_close(gx, gx_ref, **tol)
        # bn0's bias and the conv bias have zero gradient (bn1 subtracts the shift they add):
        # exactly zero here, rounding noise from the modules (_same_grads allows for it in fp32)
        _same_grads(grads, grads_ref, dtype=dtype)
        assert not grads["0.bias"].any()
        for a, b in zip(layers.buffers(), reference.buffers()):
            torch.testing.assert_close(a, b, **tol)
        for module in (layers, reference):
            module.zero_grad()


def test_folded_expansion_is_as_accurate_as_the_modules_in_float32():
    """At a real cell's size (8192 values per channel) and with inputs far from zero mean, the
    fold's float32 output and input gradient are as close to a float64 reference as the
    modules' float32 results are (the statistics come from a covariance, not from the output)."""
    torch.manual_seed(0)
    layers = _bn_conv_bn(32, 192).double()
    x = (4.0 + 0.5 * torch.randn(8, 32, 32, 32, dtype=torch.double)).to(memory_format=torch.channels_last)
    cotangent = torch.randn(8, 192, 32, 32, dtype=torch.double)
    exact, gx_exact, _ = _step(layers, x, cotangent)
    single = layers.float()
    y_fold, gx_fold, _ = _step(lambda x: fused.bn_conv_bn(x, *single), x.float(), cotangent.float(), single)
    y_mod, gx_mod, _ = _step(single, x.float(), cotangent.float())

    def error(a, b):
        return ((a.double() - b).norm() / b.norm()).item()

    # (convolving the uncentred x with a folded bias loses ~2x to cancellation at mean 4)
    assert error(y_fold, exact) <= 1.5 * error(y_mod, exact)
    assert error(gx_fold, gx_exact) <= 1.5 * error(gx_mod, gx_exact)


def test_folded_expansion_gradients_against_finite_differences():
    torch.manual_seed(0)
    bn_in, conv, bn_out = _bn_conv_bn(3, 7, conv_bias=True).double()
    x = torch.randn(2, 3, 4, 5, dtype=torch.double, requires_grad=True)

    def f(x, *params):
        return fused.bn_conv_bn(x, bn_in, conv, bn_out, update_stats=False)

    params = (bn_in.weight, bn_in.bias, conv.weight, conv.bias, bn_out.weight, bn_out.bias)
    assert torch.autograd.gradcheck(f, (x, *params))
    before = [b.clone() for b in (*bn_in.buffers(), *bn_out.buffers())]
    f(x)
    assert all(torch.equal(a, b) for a, b in zip(before, (*bn_in.buffers(), *bn_out.buffers())))


def test_folded_expansion_saves_no_expanded_tensor():
    """The fold's point: the expanded output is neither normalized nor kept for backward; what
    autograd keeps is of the input's size (the input, its centred copy) or per channel."""
    torch.manual_seed(0)
    layers = _bn_conv_bn(4, 24)
    x = torch.randn(2, 4, 8, 8, requires_grad=True)
    sizes = []

    def pack(t):
        sizes.append(t.numel())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        y = fused.bn_conv_bn(x, *layers)
    assert y.numel() == 6 * x.numel()
    assert max(sizes) == x.numel()


def test_fold_steps_aside_where_it_would_not_be_exact():
    x = torch.randn(2, 4, 6, 6)
    bn_in, conv, bn_out = _bn_conv_bn(4, 8)
    assert fused.can_fold(x, bn_in, conv, bn_out)
    assert not fused.can_fold(x, bn_in, conv, bn_out.eval())  # running statistics
    bn_out.train()
    assert not fused.can_fold(x, bn_in, torch.nn.Conv2d(4, 8, 3, padding=1), bn_out)
    assert not fused.can_fold(x, bn_in, torch.nn.Conv2d(4, 8, 1, stride=2), bn_out)
    assert not fused.can_fold(x, bn_in, torch.nn.Conv2d(4, 8, 1, groups=2), bn_out)
    half = [m.to(torch.bfloat16) for m in (bn_in, conv, bn_out)]
    assert not fused.can_fold(x.to(torch.bfloat16), *half)  # statistics only in fp32 / fp64
    bn_in, conv, bn_out = (m.float() for m in half)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not fused.can_fold(x, bn_in, conv, bn_out)
    previous = torch.get_float32_matmul_precision()
    try:  # TF32 / bf16 matrix products would round the covariance
        torch.set_float32_matmul_precision("high")
        assert not fused.can_fold(x, bn_in, conv, bn_out)
        assert fused.can_fold(x.double(), *(m.double() for m in (bn_in, conv, bn_out)))
    finally:
        torch.set_float32_matmul_precision(previous)
        for m in (bn_in, conv, bn_out):
            m.float()
    assert fused.can_fold(x, bn_in, conv, bn_out)
    one = torch.randn(1, 4, 1, 1)  # one value per channel: BatchNorm's own error, as unfused
    assert not fused.can_fold(one, bn_in, conv, bn_out)
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        fused.bn_conv_bn(one, bn_in, conv, bn_out)


def _onednn_weight_grad(x, grad_out, weight, stride, padding):
    return torch.ops.aten.convolution_backward(
        grad_out, x, weight, None, [stride] * 2, [padding] * 2, [1, 1], False, [0, 0], x.shape[1],
        [False, True, False],
    )[1]  # fmt: skip


@pytest.mark.parametrize("stride,padding,kernel", [(1, 2, 5), (2, 2, 5), (1, 1, 3), (2, 0, 3)])
def test_cpu_depthwise_kernel_matches_onednn(stride, padding, kernel):
    """genzoo's compiled depthwise weight gradient against oneDNN's: fp64 elementwise to 1e-10;
    in fp32 no further from the fp64 result than oneDNN's fp32 one, bar rounding (odd sizes,
    stride 2, no padding included)."""
    if cpu_kernels.load() is None:
        pytest.skip("the CPU kernel could not be built here (see the warning)")
    torch.manual_seed(0)
    x = torch.randn(3, 20, 11, 13, dtype=torch.float64).contiguous(memory_format=torch.channels_last)
    weight = torch.randn(20, 1, kernel, kernel, dtype=torch.float64)
    grad_out = torch.randn_like(torch.nn.functional.conv2d(x, weight, None, stride, padding, 1, 20))
    conv = ((stride,) * 2, (padding,) * 2, (1, 1), 20)
    assert cpu_kernels.applies(x, weight, *conv)
    exact = _onednn_weight_grad(x, grad_out, weight, stride, padding)
    mine = cpu_kernels.depthwise_weight_grad(x, grad_out, weight, *conv)
    torch.testing.assert_close(mine, exact, rtol=1e-10, atol=1e-10)

    x, grad_out, weight = (t.float() for t in (x, grad_out, weight))
    x = x.contiguous(memory_format=torch.channels_last)
    mine = cpu_kernels.depthwise_weight_grad(x, grad_out, weight, *conv)
    onednn = _onednn_weight_grad(x, grad_out, weight, stride, padding)

    def error(a):
        return ((a.double() - exact).norm() / exact.norm()).item()

    assert mine.dtype == torch.float32 and error(mine) <= max(2 * error(onednn), 1e-6)


def test_cpu_depthwise_kernel_applies_only_where_it_computes_the_same(monkeypatch):
    x = torch.randn(2, 8, 6, 6).contiguous(memory_format=torch.channels_last)
    w = torch.randn(8, 1, 3, 3)
    args = ((1, 1), (1, 1), (1, 1), 8)
    assert cpu_kernels.applies(x, w, *args)
    assert not cpu_kernels.applies(x.contiguous(), w, *args)  # NCHW: oneDNN as before
    assert not cpu_kernels.applies(x.to(torch.bfloat16), w, *args)
    assert not cpu_kernels.applies(x, torch.randn(8, 2, 3, 3), (1, 1), (1, 1), (1, 1), 4)  # grouped
    assert not cpu_kernels.applies(x, w, (1, 1), (1, 1), (2, 2), 8)  # dilated
    assert not cpu_kernels.applies(x, w, (1, 2), (1, 1), (1, 1), 8)
    assert not cpu_kernels.applies(x, w, (1, 1), "same", (1, 1), 8)
    monkeypatch.setenv(cpu_kernels.ENV_SWITCH, "0")
    assert cpu_kernels.load() is None
    assert cpu_kernels.depthwise_weight_grad(x, x, w, *args) is None


def test_a_failed_kernel_build_warns_once_and_falls_back(monkeypatch):
    """Without a compiler the cell still trains (oneDNN's kernel), with one warning saying why."""
    from torch.utils import cpp_extension

    def no_compiler(**kwargs):
        raise RuntimeError("no C++ compiler here")

    monkeypatch.setattr(cpp_extension, "load", no_compiler)
    monkeypatch.setattr(cpu_kernels, "_built", {})
    with pytest.warns(RuntimeWarning, match="no C\\+\\+ compiler here"):
        assert cpu_kernels.load() is None
    assert cpu_kernels.load() is None  # tried once: no second warning, no second attempt
    cell = SeparableCell(4, 4).train()
    cell(torch.randn(2, 4, 6, 6)).sum().backward()
    assert cell.depthwise.weight.grad is not None


def test_the_cell_uses_the_cpu_kernel_where_it_can(monkeypatch):
    if cpu_kernels.load() is None:
        pytest.skip("the CPU kernel could not be built here (see the warning)")
    calls = []
    original = cpu_kernels.depthwise_weight_grad

    def counted(*args):
        out = original(*args)
        calls.append(out is not None)
        return out

    monkeypatch.setattr(cpu_kernels, "depthwise_weight_grad", counted)
    SeparableCell(4, 4).train()(torch.randn(2, 4, 6, 6)).sum().backward()
    assert calls.count(True) == 1  # the depthwise convolution (the 1x1 ones are oneDNN's)


@pytest.mark.parametrize("checkpoint", [False, True])
def test_whole_nvae_training_step_matches_the_naive_model(checkpoint, device):
    """The default model against the same model built from the naive cells: loss, every
    parameter gradient, and the BatchNorm statistics after one step."""
    torch.manual_seed(0)
    options = dict(
        image_shape=(3, 16, 16),
        num_channels=8,
        num_latent_scales=2,
        num_groups_per_scale=2,
        latent_chs=4,
        num_preprocess_blocks=1,
        num_postprocess_blocks=1,
    )
    if checkpoint:
        options["decoder_cell"] = {"key": "nvae.separable_cell", "checkpoint": True}
        options["postprocess_cell"] = {"key": "nvae.separable_cell", "checkpoint": True}
    model = NVAEHierarchy(**options)
    _perturb_bn(model)
    model.to(device)
    naive = naive_model(model)
    assert any(isinstance(m, NaiveSeparableCell) for m in naive.modules())
    x = (torch.randint(0, 256, (4, 3, 16, 16)).float() / 255).to(device)

    def loss_of(m):
        torch.manual_seed(2)  # the same reparameterization noise for both
        out = m.train()(x)
        loss = (torch.stack(out.kl, dim=1).sum(1) - out.log_px).mean()
        loss.backward()
        return loss.detach(), {n: p.grad for n, p in m.named_parameters()}

    loss_fast, grads_fast = loss_of(model)
    loss_naive, grads_naive = loss_of(naive)
    torch.testing.assert_close(loss_fast, loss_naive, **TOL)
    _same_grads(grads_fast, grads_naive)
    _assert_same_buffers(model, naive, TOL)


# -- ELU (genzoo's CPU kernel) ------------------------------------------------------------------
def _kernels_or_skip():
    if cpu_kernels.load() is None:
        pytest.skip("the CPU kernels could not be built here (see the warning)")


@pytest.mark.parametrize(
    "memory_format", [torch.contiguous_format, torch.channels_last], ids=["nchw", "nhwc"]
)
def test_elu_kernel_matches_torch(memory_format):
    """Values within float rounding of torch's (fp32: 2 units in the last place of a float64
    reference, as torch's own; fp64 to 1e-12), NaN and infinities as torch, gradients to 1e-5 /
    1e-12, and gradcheck in fp64; any dense layout, kept in the output."""
    _kernels_or_skip()
    torch.manual_seed(0)
    x = torch.cat([torch.linspace(-30, 10, 4000), torch.tensor([0.0, -0.0, 1e-30, -1e-30, -0.5, -0.4999])])
    x = torch.cat([x, torch.tensor([float("nan"), float("inf"), -float("inf")])])
    y, exact = activations.elu(x), torch.nn.functional.elu(x.double())
    assert torch.equal(y.isnan(), exact.isnan()) and torch.equal(y[-2:], exact[-2:].float())
    finite = ~exact.isnan() & exact.isfinite()
    assert ((y.double() - exact).abs() <= 2 * 2**-24 * exact.abs())[finite].all()
    for dtype, tol in ((torch.float32, TOL), (torch.float64, dict(rtol=1e-12, atol=1e-12))):
        x = (2 * torch.randn(3, 5, 7, 9, dtype=dtype)).contiguous(memory_format=memory_format)
        assert activations.kernel_applies(x)
        a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
        ya, yb = activations.elu(a), torch.nn.functional.elu(b)
        assert ya.is_contiguous(memory_format=memory_format)
        torch.testing.assert_close(ya, yb, **tol)
        cotangent = torch.randn_like(ya)
        ya.backward(cotangent), yb.backward(cotangent)
        torch.testing.assert_close(a.grad, b.grad, **tol)
    x = torch.randn(2, 3, 4, 5, dtype=torch.float64).contiguous(memory_format=memory_format)
    assert torch.autograd.gradcheck(activations.elu, (x.requires_grad_(),))


def test_elu_keeps_only_its_output_and_steps_aside(monkeypatch):
    """Backward needs only the output (which the next convolution keeps anyway); where the
    kernel does not apply (turned off, bf16, not dense) it is torch's ELU."""
    _kernels_or_skip()
    x = torch.randn(2, 4, 6, 6, requires_grad=True)
    kept = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: kept.append(t) or t, lambda t: t):
        y = activations.elu(x)
    assert len(kept) == 1 and kept[0] is y
    assert not activations.kernel_applies(x.to(torch.bfloat16))
    assert not activations.kernel_applies(x[:, :, ::2])
    assert torch.equal(activations.elu(x[:, :, ::2]), torch.nn.functional.elu(x[:, :, ::2]))
    monkeypatch.setenv(cpu_kernels.ENV_SWITCH, "0")
    with torch.autograd.graph.saved_tensors_hooks(lambda t: kept.append(t) or t, lambda t: t):
        activations.elu(x)
    assert kept[-1] is x  # torch's ELU keeps its input


def test_the_kernels_bring_no_openmp_runtime_of_their_own():
    """One OpenMP runtime serves the process: torch's (issue 15: two runtimes' idle threads
    spinning against each other)."""
    _kernels_or_skip()
    maps = Path("/proc/self/maps")
    if not maps.is_file():
        pytest.skip("needs /proc/self/maps (Linux)")
    runtimes = {
        line.split()[-1] for line in maps.read_text().splitlines() if "gomp" in line or "libomp" in line
    }
    assert len(runtimes) <= 1, runtimes


def test_cpu_depthwise_kernel_does_not_depend_on_scheduling():
    """The same thread count gives the same bits, whatever the scheduling; another thread count
    the same values up to rounding."""
    _kernels_or_skip()
    torch.manual_seed(0)
    x = torch.randn(4, 24, 9, 9).contiguous(memory_format=torch.channels_last)
    grad_out, weight = torch.randn(4, 24, 9, 9), torch.randn(24, 1, 5, 5)
    conv = ((1, 1), (2, 2), (1, 1), 24)
    first = cpu_kernels.depthwise_weight_grad(x, grad_out, weight, *conv)
    assert torch.equal(first, cpu_kernels.depthwise_weight_grad(x, grad_out, weight, *conv))
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        torch.testing.assert_close(
            cpu_kernels.depthwise_weight_grad(x, grad_out, weight, *conv), first, **TOL
        )
    finally:
        torch.set_num_threads(threads)


# -- the encoder cell and the decoder cell's expanded tensor -----------------------------------
@pytest.mark.parametrize(
    "options,dtype",
    [(dict(), torch.float32), (dict(fused=True), torch.float32), (dict(fused=True), torch.float64)],
    ids=["default-fp32", "fused-fp32", "fused-fp64"],
)
@pytest.mark.parametrize("resample", ["none", "down", "up"])
def test_encoder_cell_fast_paths_match_the_modules(options, resample, dtype):
    """nvae.residual_cell with channels_last (default) and the fused BN -> Swish -> conv steps
    (off by default: a memory saving) against the same cell run through its modules in NCHW."""
    torch.manual_seed(0)
    out_chs = {"none": 8, "down": 16, "up": 4}[resample]
    fast = ResidualCell(8, out_chs, resample=resample, gate_layer=SqueezeExcitation, **options).to(dtype)
    _perturb_bn(fast)
    plain = ResidualCell(8, out_chs, resample=resample, gate_layer=SqueezeExcitation, channels_last=False)
    plain.to(dtype).load_state_dict(fast.state_dict())
    tol = TOL if dtype == torch.float32 else dict(rtol=1e-9, atol=1e-9)
    x = torch.randn(4, 8, 8, 8, dtype=dtype)
    cotangent = torch.randn_like(plain(x.clone()))
    plain.load_state_dict(fast.state_dict())  # the call above moved the running statistics
    y, gx, grads = _step(fast, x, cotangent)
    y_ref, gx_ref, grads_ref = _step(plain, x, cotangent)
    torch.testing.assert_close(y, y_ref, **tol)
    torch.testing.assert_close(gx, gx_ref, **tol)
    _same_grads(grads, grads_ref, dtype=dtype)
    _assert_same_buffers(fast, plain, tol)


def test_the_factorized_reduction_runs_in_nchw():
    """oneDNN corrupts the heap computing channels_last weight gradients of 1x1 stride-2
    convolutions with few channels (plugins/nvae/skip.py): the reduction's convolutions get
    NCHW inputs whatever the cell's format."""
    reduce = FactorizedReduce(2, 4)
    strides = []
    for conv in reduce.convs:
        conv.register_forward_pre_hook(lambda module, args: strides.append(args[0].stride(1)))
    reduce(torch.randn(2, 2, 8, 8).contiguous(memory_format=torch.channels_last))
    assert strides == [64] * 4  # the channel stride of NCHW, not channels_last's 1


def test_the_decoder_cell_keeps_one_expanded_tensor():
    """BN -> expand -> BN -> Swish -> depthwise is one step that keeps the centred input and the
    folded weights; the expanded tensor is recomputed in backward. What the cell keeps at six
    times its input's size is the depthwise output alone (which the next step needs)."""
    torch.manual_seed(0)
    cell = SeparableCell(4, 4).train()
    x = torch.randn(2, 4, 8, 8, requires_grad=True)
    expanded = []

    def pack(t):
        if t.numel() >= 6 * x.numel():
            expanded.append(t)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        cell(x)
    assert len(expanded) == 1


# -- a whole training step against the reference path -----------------------------------------
def test_whole_training_step_matches_the_reference_path(monkeypatch):
    """Issue 15's check: every fast path of a whole NVAE training step (the objective with KL
    balancing, spectral and BatchNorm regularization; fused encoder cells too) against the same
    weights and inputs with every fast path off: naive decoder cells, encoder cells through
    their modules in NCHW, torch's ELU and oneDNN's depthwise gradient
    (``GENZOO_CPU_KERNELS=0``). Loss to 1e-5, every gradient, and the BatchNorm statistics."""
    from genzoo.engine.schedules import balanced_kl, kl_balance_alpha
    from genzoo_plugins.nvae.bn_penalty import BatchNormPenalty
    from genzoo_plugins.nvae.spectral import SpectralRegularizer

    torch.manual_seed(0)
    options = dict(
        image_shape=(3, 16, 16), num_channels=8, num_latent_scales=2, num_groups_per_scale=2, latent_chs=4,
        num_preprocess_blocks=1, num_postprocess_blocks=1,
        encoder_cell={"key": "nvae.residual_cell", "fused": True},
        latent_group={"key": "nvae.residual_normal", "num_flows": 1},
    )  # fmt: skip
    model = NVAEHierarchy(**options)
    _perturb_bn(model)
    reference = naive_model(model)
    for cell in reference.modules():
        if isinstance(cell, ResidualCell):
            cell.fused = cell.channels_last = False
    x = torch.randint(0, 256, (4, 3, 16, 16)).float() / 255
    alpha = kl_balance_alpha(model.groups)

    def step(m):
        torch.manual_seed(2)  # the same reparameterization noise for both
        out = m.train()(x)
        kl_term, _ = balanced_kl(torch.stack(out.kl, dim=1), 0.3, alpha)
        regularizers = (SpectralRegularizer(), BatchNormPenalty())
        loss = (kl_term - out.log_px).mean() + sum(1e-2 * r.penalty(m) for r in regularizers)
        loss.backward()
        return loss.detach(), {n: p.grad for n, p in m.named_parameters()}

    loss_fast, grads_fast = step(model)
    with monkeypatch.context() as patch:
        patch.setenv(cpu_kernels.ENV_SWITCH, "0")
        loss_ref, grads_ref = step(reference)
    torch.testing.assert_close(loss_fast, loss_ref, **TOL)
    _same_grads(grads_fast, grads_ref)
    _assert_same_buffers(model, reference, TOL)
