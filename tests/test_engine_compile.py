"""Compiled training (``training.compile``, ``training.cuda_graphs``) and the device defaults of
NVAE's decoder cell.

``compile: cells`` compiles every cell and latent group in place; instances of a class share
one compilation, so a deeper model compiles nothing more. A compiled step gives the eager
step's results within fp32 rounding. The default-run tests use dynamo's cheap backends
(``eager`` traces only, ``aot_eager`` also builds the backward graph); the ones marked ``slow``
run inductor's generated code on the CPU, and the CUDA graph tests need a GPU.
"""

from __future__ import annotations

import copy
import textwrap

import pytest
import torch
from engine_helpers import ToyImages
from torch._dynamo.testing import CompileCounter
from torch._dynamo.utils import counters

import genzoo
from genzoo import ConfigError, PluginHost
from genzoo.engine import EvalConfig, TrainConfig, compilation, train
from genzoo.experiment.config.spec import load_experiment
from genzoo.layers import distributions
from genzoo_plugins.nvae.decoder_cell import SeparableCell, resolve_fast_path
from genzoo_plugins.nvae.weight_norm import wn_conv2d

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA device")


def tiny_nvae(groups: int = 2, *, seed: int = 0) -> genzoo.Hierarchy:
    """NVAE on 1x8x8 binary images: one scale of ``groups`` groups, two cells per group in each
    tower, no pre/post-processing (few distinct blocks, so compiling it is quick)."""
    torch.manual_seed(seed)
    return genzoo.create(
        "hierarchy",
        "nvae.hierarchy",
        image_shape=(1, 8, 8),
        num_channels=8,
        num_groups_per_scale=groups,
        latent_chs=4,
        num_preprocess_blocks=0,
        num_postprocess_blocks=0,
        latent_group={"key": "nvae.residual_normal", "num_flows": 1},
    )


def loss_and_grads(model: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    torch.manual_seed(1)  # the same reparameterization noise for every model
    out = model.train()(x)
    loss = (torch.stack(out.kl, dim=1).sum(1) - out.log_px).mean()
    loss.backward()
    return loss.detach(), {n: p.grad for n, p in model.named_parameters() if p.grad is not None}


# tiny models: one CPU thread (more only add synchronization, on a shared machine)
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def fresh_dynamo():
    """Dynamo's caches and counters emptied before and after the test."""
    torch._dynamo.reset()
    counters.clear()
    yield
    torch._dynamo.reset()
    counters.clear()


# -- the options ---------------------------------------------------------------------------------
def test_compile_takes_false_cells_or_model_and_true_means_model():
    assert [TrainConfig(compile=v).compile_mode for v in (False, "cells", "model", True)] == [
        None, "cells", "model", "model"
    ]  # fmt: skip
    assert TrainConfig(compile="cells", cuda_graphs=True).cuda_graphs


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (dict(compile="cell"), r"TrainConfig\.compile='cell'; expected false, 'cells' or 'model'"),
        (dict(compile=1), r"TrainConfig\.compile=1; expected false, 'cells' or 'model'"),
        (dict(cuda_graphs="yes"), r"TrainConfig\.cuda_graphs='yes'; expected true or false"),
        (dict(cuda_graphs=True), r"TrainConfig\.cuda_graphs=True; expected false unless compile is"),
        (dict(cuda_graphs=True, compile="cells", device="cpu"), r"cuda_graphs=True; .*device='cpu'"),
    ],
)
def test_bad_compile_and_cuda_graph_settings_name_the_field(changes, message):
    with pytest.raises(ConfigError, match=message):
        TrainConfig(**changes)


def test_a_bad_compile_value_in_an_experiment_file_points_at_its_line(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text(
        textwrap.dedent(
            """\
            name: demo
            data:
              dataset: {key: data.shapes, image_size: 16}
            training:
              steps: 10
              compile: cell
            variants:
              vae: {hierarchy: baselines.standard_vae}
            """
        )
    )
    with pytest.raises(
        ConfigError, match=r"exp\.yaml:6:\d+: training\.compile: expected bool or one of 'cells', 'model'"
    ):
        load_experiment(path)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks a machine without CUDA")
def test_cuda_graphs_on_a_machine_without_cuda_stop_the_run_at_its_start(tmp_path):
    config = TrainConfig(steps=2, batch_size=8, compile="cells", cuda_graphs=True, progress_bar=False)
    with pytest.raises(
        ConfigError, match=r"cuda_graphs=True needs a CUDA device, but this run trains on cpu"
    ):
        train(tiny_nvae(), ToyImages(16), None, config, tmp_path, host=PluginHost())
    assert not (tmp_path / "results.json").exists()  # a setting to fix, not a failed run


# -- compile: cells ------------------------------------------------------------------------------
def test_weight_normalized_convolutions_share_one_class():
    """torch's parametrize makes a class per module; dynamo guards on a submodule's class, so
    genzoo's weight-normalized convolutions share one (else every cell compiles again)."""
    a, b = wn_conv2d(4, 8, 3), wn_conv2d(8, 8, 1)
    assert type(a) is type(b) and isinstance(a, torch.nn.Conv2d)
    assert set(a.state_dict()) == {
        "bias",
        "parametrizations.weight.original0",
        "parametrizations.weight.original1",
    }
    copied = copy.deepcopy(a)
    assert type(copied) is type(a) and torch.equal(copied.weight, a.weight)


def test_compiled_cells_train_as_eager_ones_and_each_class_compiles_once(tmp_path, monkeypatch, fresh_dynamo):
    """The engine with ``compile: cells`` against the same run in eager mode: the same losses
    and weights after two steps, the compile time recorded, the evaluation run eagerly (its
    batch size would compile again), the blocks eager again afterwards.
    Every instance of a block class reuses one compilation: 18 blocks, a handful of graphs,
    however deep the model. (Dynamo's traced graphs run as they are here, counted; the code
    inductor generates from them is checked against eager by the slow test below.)"""
    counter = CompileCounter()
    monkeypatch.setattr(compilation, "BACKEND", counter)
    data = ToyImages(16)
    eager_model, compiled_model = tiny_nvae(groups=4), tiny_nvae(groups=4)
    config = TrainConfig(steps=2, batch_size=8, precision="fp32", checkpoint_every=0, progress_bar=False)
    evaluation = EvalConfig(
        batch_size=4, iw_samples=0, num_samples=0, num_reconstructions=0, bn_readjust=False, speed_batches=0
    )
    runs = {}
    for name, model, settings in (
        ("eager", eager_model, config),
        ("cells", compiled_model, config.replace(compile="cells")),
    ):
        runs[name] = train(
            model,
            data,
            ToyImages(8, seed=1),
            settings,
            tmp_path / name,
            eval_config=evaluation,
            host=PluginHost(),
        )
    eager, compiled = runs["eager"], runs["cells"]
    assert compiled["final_loss"] == pytest.approx(eager["final_loss"], rel=1e-5)
    assert compiled["test_nats_elbo"] == pytest.approx(eager["test_nats_elbo"], rel=1e-5)
    for (name, a), b in zip(compiled_model.state_dict().items(), eager_model.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=lambda m, name=name: f"{name}: {m}")
    assert eager["compile_time_s"] is None and compiled["compile_time_s"] >= 0

    blocks = compilation.repeated_blocks(compiled_model)
    assert {type(b).__name__ for b in blocks} == {"ResidualCell", "SeparableCell", "ResidualNormal"}
    assert len(blocks) == 18  # 8 encoder cells, 6 decoder cells (none before the top group), 4 groups
    # encoder and decoder cells twice each (they see NCHW inputs from the stem and the decoder's
    # input, channels_last ones from the cells before them), the top group, the other groups
    assert 0 < counter.frame_count <= 6
    assert not counters["graph_break"], dict(counters["graph_break"])
    assert all(b._compiled_call_impl is None for b in blocks)


def test_compile_clock_takes_the_steady_steps_out_of_the_first_ones():
    clock = compilation.CompileClock()
    assert clock.seconds is None
    for seconds in (30.0, 5.0, 1.5):  # compile forward and backward, record graphs, run
        clock.record(seconds)
    assert clock.seconds == pytest.approx(36.5)  # no steady step yet: the whole time
    for seconds in (1.0, 1.2, 0.8):
        clock.record(seconds)
    assert clock.seconds == pytest.approx(36.5 - 3 * 1.0)


@pytest.mark.slow
def test_inductor_compiled_step_equals_the_eager_step_on_cpu(fresh_dynamo):
    """The default backend's generated C++ (about a minute or two to compile here): loss and
    every gradient of one step against eager, in fp32."""
    x = torch.rand(4, 1, 8, 8).round()
    eager, compiled = tiny_nvae(), tiny_nvae()
    with torch._inductor.config.patch(fallback_random=True):  # eager's random numbers
        compilation.compile_blocks(compiled, backend="inductor")
        loss_c, grads_c = loss_and_grads(compiled, x)
    loss_e, grads_e = loss_and_grads(eager, x)
    torch.testing.assert_close(loss_c, loss_e, rtol=1e-5, atol=1e-5)
    assert grads_c.keys() == grads_e.keys()
    a = torch.cat([g.flatten() for g in grads_c.values()])
    b = torch.cat([g.flatten() for g in grads_e.values()])
    assert ((a - b).norm() / b.norm()).item() <= 1e-5


# -- CUDA graphs (GPU only) ----------------------------------------------------------------------
@needs_cuda
@pytest.mark.parametrize("compile_mode", ["cells", "model"])
def test_cuda_graph_steps_give_the_eager_steps_loss(tmp_path, monkeypatch, compile_mode, fresh_dynamo):
    """Three training steps replayed as CUDA graphs against eager, in true fp32 (no TF32), with
    the reparameterization noise fixed (the same numbers for both, whichever random number
    generator the graphs use): the same loss; and the graphs were really used."""
    monkeypatch.setattr(distributions, "normal_noise", lambda like: torch.full_like(like, 0.5))
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        data = ToyImages(24)
        config = TrainConfig(
            steps=3, batch_size=8, device="cuda", precision="fp32", checkpoint_every=0, progress_bar=False
        )
        eager = train(tiny_nvae(), data, None, config, tmp_path / "eager", host=PluginHost())
        graphs = train(
            tiny_nvae(),
            data,
            None,
            config.replace(compile=compile_mode, cuda_graphs=True),
            tmp_path / "graphs",
            host=PluginHost(),
        )
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved
    assert graphs["status"] == "finished" and graphs["compile_time_s"] > 0
    assert graphs["final_loss"] == pytest.approx(eager["final_loss"], rel=1e-4)
    skips = counters["inductor"]["cudagraph_skips"]
    assert skips == 0, f"inductor ran {skips} graph(s) without CUDA graphs (TORCH_LOGS=perf_hints says why)"


@needs_cuda
def test_cuda_graph_replays_draw_fresh_noise(fresh_dynamo):
    """A replayed graph must not reuse the noise it was recorded with: the same weights and
    input give another sample on every step."""
    model = tiny_nvae().cuda().train()
    blocks = compilation.compile_blocks(model, cuda_graphs=True)
    x = torch.rand(8, 1, 8, 8, device="cuda").round()
    samples = []
    for _ in range(4):  # warm-up, recording, then replays
        torch.compiler.cudagraph_mark_step_begin()
        out = model(x)
        (torch.stack(out.kl, dim=1).sum(1) - out.log_px).mean().backward()
        samples.append(out.latents[-1].z.detach().clone())
    compilation.release(blocks)
    assert not torch.equal(samples[2], samples[3])
    assert counters["inductor"]["cudagraph_skips"] == 0


# -- the decoder cell's device defaults ----------------------------------------------------------
def test_the_decoder_cells_fast_paths_are_chosen_by_device():
    """``"auto"``: on for the CPU, where they were measured faster; off on CUDA, where the
    model with them was measured slower than with plain modules (benchmarks/README.md)."""
    cpu, cuda, meta = torch.device("cpu"), torch.device("cuda"), torch.device("meta")
    assert resolve_fast_path("auto", cpu) and not resolve_fast_path("auto", cuda)
    assert not resolve_fast_path("auto", meta)  # other devices: the plain modules
    assert resolve_fast_path(True, cuda) and not resolve_fast_path(False, cpu)
    cell = SeparableCell(8, 8)
    assert (cell.channels_last_option, cell.fused_option) == ("auto", "auto")
    assert cell.fast_paths(cpu) == (True, True) and cell.fast_paths(cuda) == (False, False)
    assert SeparableCell(8, 8, fused=True, channels_last=True).fast_paths(cuda) == (True, True)
    with pytest.raises(ConfigError, match=r"fused='yes'; expected true, false or 'auto'"):
        SeparableCell(8, 8, fused="yes")


def test_a_compiled_cell_traces_whole_on_the_cpu(fresh_dynamo):
    """Under torch.compile ``fused: auto`` takes the plain modules (the fused steps would split
    the graph at each autograd function around genzoo's C++ kernel)."""
    counter = CompileCounter()
    cell = SeparableCell(8, 8).train()
    cell.compile(backend=counter)
    cell(torch.randn(2, 8, 6, 6)).sum().backward()
    assert counter.frame_count == 1 and not counters["graph_break"]
