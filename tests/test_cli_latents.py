"""``genzoo reconstruct`` and ``genzoo interpolate`` end to end on a tiny trained NVAE run (4
latent groups over 2 scales, BatchNorm in its cells), through ``genzoo.cli.main`` in-process.

Grids are read back tile by tile (16x16 images, 2 pixels apart, as ``torchvision``'s
``save_image`` lays them out; ``genzoo.experiment.trained.latents.grid_png``) and compared with the run's dataset and the Python API.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch
from PIL import Image

import genzoo
from genzoo.cli import main
from genzoo.experiment.report.sampling import load_run_model
from genzoo.experiment.trained.latents import default_keep_groups

torch.set_num_threads(1)

TINY_NVAE = """\
name: tiny
seeds: [3]
data:
  dataset: {key: data.shapes, image_size: 16, channels: 1, num_bits: 1, num_train: 16, num_test: 8}
training: {steps: 2, batch_size: 8, lr: 0.005, lr_warmup_steps: 1, precision: fp32, progress_bar: false,
           cpu_threads: 1}
evaluation: {batch_size: 8, iw_samples: 0, temperatures: [1.0], num_samples: 0, bn_readjust_iters: 2,
             bn_readjust_batch_size: 4, num_reconstructions: 0, speed_batches: 0}
variants:
  nvae:
    hierarchy: {key: nvae.hierarchy, num_channels: 8, num_latent_scales: 2, num_groups_per_scale: 2,
                latent_chs: 4, num_preprocess_cells: 1, num_postprocess_cells: 1,
                num_cells_per_group_enc: 1, num_cells_per_group_dec: 1}
"""
SEED = 3  # the run's seed: the commands' default
NUM_GROUPS = 4
SIDE, PAD = 16, 2


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A finished tiny NVAE run, trained once for the module (2 steps: the weights need not be
    good, only the run's)."""
    root = tmp_path_factory.mktemp("latents")
    (root / "tiny.yaml").write_text(TINY_NVAE)
    assert main(["run", str(root / "tiny.yaml"), "--out", str(root / "out")]) == 0
    return root / "out" / "tiny" / "runs" / "nvae" / "seed3"


@pytest.fixture(scope="module")
def test_images():
    """The run's test split (binary shapes, read deterministically)."""
    dataset = genzoo.get_registry().create(
        "dataset", "data.shapes", image_size=16, channels=1, num_bits=1, num_train=16, num_test=8
    )
    split = dataset.split("test")
    return torch.stack([split[i] for i in range(len(split))])


def genzoo_cli(capsys, *args) -> tuple[int, str, str]:
    rc = main([str(a) for a in args])
    captured = capsys.readouterr()
    return rc, captured.out.strip(), captured.err.strip()


def folder_hashes(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir() if p.is_file()}


def tiles(path, rows: int, cols: int) -> np.ndarray:
    """The grid's images as ``(rows, cols, 16, 16)`` grey levels, checking the grid's size."""
    with Image.open(path) as image:
        assert image.mode == "L"  # one channel, as the model's images
        pixels = np.asarray(image)
    assert pixels.shape[:2] == (PAD + rows * (SIDE + PAD), PAD + cols * (SIDE + PAD))
    step = SIDE + PAD
    return np.stack(
        [
            np.stack(
                [
                    pixels[PAD + r * step : PAD + r * step + SIDE, PAD + c * step : PAD + c * step + SIDE]
                    for c in range(cols)
                ]
            )
            for r in range(rows)
        ]
    )


def as_pixels(images: torch.Tensor) -> np.ndarray:
    """Images ``(N, 1, H, W)`` in [0, 1] as ``save_image`` writes them."""
    return images[:, 0].mul(255).add(0.5).clamp(0, 255).to(torch.uint8).numpy()


# -- reconstructions -------------------------------------------------------------------------------
def test_the_default_rows_keep_1_2_4_groups_below_the_depth():
    assert default_keep_groups(30) == [1, 2, 4, 8, 16]
    assert default_keep_groups(4) == [1, 2] and default_keep_groups(1) == []


def test_reconstruct_writes_inputs_reconstructions_and_top_k_rows(run_dir, test_images, capsys):
    before = folder_hashes(run_dir)
    rc, out, err = genzoo_cli(
        capsys, "reconstruct", run_dir, "test:0", "test:1", "test:2", "--keep-groups", "0,1,4"
    )
    assert rc == 0, err
    assert out == str(run_dir / "reconstructions_cli.png")
    grid = tiles(out, rows=5, cols=3)
    assert (grid[0] == as_pixels(test_images[:3])).all()  # the inputs
    model = load_run_model(run_dir)
    torch.manual_seed(SEED)  # the commands' draws start from the run's seed
    expected = model.reconstruct(test_images[:3])
    assert np.abs(grid[1].astype(int) - as_pixels(expected)).max() <= 1  # full reconstructions
    assert (grid[4] == grid[1]).all()  # keeping all 4 groups is the full reconstruction
    assert not (grid[2] == grid[1]).all() and not (grid[3] == grid[2]).all()
    after = folder_hashes(run_dir)
    assert after.pop("reconstructions_cli.png") and after == before  # nothing else changed

    rc, again, err = genzoo_cli(
        capsys, "reconstruct", run_dir, "test:0", "test:1", "test:2", "--keep-groups", "0,1,4"
    )
    assert again == str(run_dir / "reconstructions_cli-1.png")  # a new name; the first is kept
    assert (tiles(again, rows=5, cols=3) == grid).all()  # the same seed, the same grid


def test_reconstruct_reads_image_files_and_converts_them_when_asked(run_dir, test_images, tmp_path, capsys):
    exact = tmp_path / "exact.png"
    Image.fromarray(as_pixels(test_images[5:6])[0]).save(exact)
    rgb = tmp_path / "big.png"
    Image.fromarray(np.stack([as_pixels(test_images[5:6])[0].repeat(2, 0).repeat(2, 1)] * 3, -1)).save(rgb)
    target = tmp_path / "grid.png"
    rc, out, err = genzoo_cli(
        capsys,
        "reconstruct",
        run_dir,
        exact,
        "test:5",
        rgb,
        "--resize",
        "--convert",
        "--out",
        target,
        "--keep-groups",
        "2",
    )
    assert rc == 0, err
    assert out == str(target)
    grid = tiles(target, rows=3, cols=3)
    assert (grid[0, 0] == grid[0, 1]).all() and (grid[0, 2] == grid[0, 1]).all()  # 2x nearest resizes back
    assert (grid[0, 1] == as_pixels(test_images[5:6])[0]).all()


# -- interpolation and traversal -----------------------------------------------------------------
def test_interpolate_goes_from_a_to_b_in_every_group(run_dir, test_images, capsys):
    rc, out, err = genzoo_cli(capsys, "interpolate", run_dir, "test:0", "test:1", "--steps", "4")
    assert rc == 0, err
    assert out == str(run_dir / "interpolation_cli.png")
    row = tiles(out, rows=1, cols=6)[0]
    assert (row[0] == as_pixels(test_images[0:1])[0]).all() and (
        row[5] == as_pixels(test_images[1:2])[0]
    ).all()
    model = load_run_model(run_dir)
    torch.manual_seed(SEED)
    ends = as_pixels(model.reconstruct(test_images[:2]))  # the first and last frames: A's and B's draws
    assert np.abs(row[1].astype(int) - ends[0]).max() <= 1 and np.abs(row[4].astype(int) - ends[1]).max() <= 1
    assert not (row[2] == row[1]).all()

    rc, out, err = genzoo_cli(
        capsys, "interpolate", run_dir, "test:0", "test:1", "--steps", "3", "--groups", "1"
    )
    assert rc == 0, err
    assert out == str(run_dir / "interpolation_cli-1.png")
    tiles(out, rows=1, cols=5)


def test_traverse_moves_one_group_of_each_image(run_dir, test_images, capsys):
    rc, out, err = genzoo_cli(
        capsys, "interpolate", run_dir, "test:0", "test:3", "--traverse", "2", "--steps", "3"
    )
    assert rc == 0, err
    assert out == str(run_dir / "traversal_cli.png")
    grid = tiles(out, rows=2, cols=4)
    assert (grid[:, 0] == as_pixels(test_images[[0, 3]])).all()
    assert not (grid[0, 1] == grid[0, 3]).all()  # -span and +span differ
    rc, one, err = genzoo_cli(capsys, "interpolate", run_dir, "test:0", "--traverse", "0", "--steps", "2")
    assert rc == 0, err
    tiles(one, rows=1, cols=3)


# -- what is refused -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def wrong_image(tmp_path_factory):
    path = tmp_path_factory.mktemp("images") / "rgb32.png"
    Image.fromarray(np.zeros((32, 32, 3), dtype=np.uint8)).save(path)
    return path


@pytest.mark.parametrize(
    "args, message",
    [
        (["reconstruct", "{tmp}", "test:0"], "not a trained run folder"),
        (
            ["reconstruct", "{run}", "{wrong}"],
            "the model expects 1x16x16 (grey) images; got 3x32x32 RGB; pass --convert to convert it to grey "
            "and --resize to resize it to 16x16",
        ),
        (["reconstruct", "{run}", "{wrong}", "--convert"], "got 3x32x32 RGB; pass --resize to resize it"),
        (["reconstruct", "{run}", "nothing.png"], "nothing.png: no such image file"),
        (
            ["reconstruct", "{run}", "test:8"],
            "test:8: index 8 is out of range; the run's test split has 8 images",
        ),
        (
            ["reconstruct", "{run}", "test:0", "--keep-groups", "5"],
            "--keep-groups 5: the model has 4 latent groups",
        ),
        (
            ["reconstruct", "{run}", "test:0", "--keep-groups", "1,x"],
            "--keep-groups 1,x: expected group counts",
        ),
        (
            ["reconstruct", "{run}", "test:0", "--out", "{run}/config.yaml"],
            "the file exists; genzoo never overwrites",
        ),
        (["reconstruct", "{run}", "test:0", "-t", "0"], "--temperature 0.0: expected a number > 0"),
        (
            ["interpolate", "{run}", "test:0", "test:1", "--steps", "1"],
            "--steps 1: expected at least 2 frames",
        ),
        (
            ["interpolate", "{run}", "test:0", "test:1", "--groups", "5"],
            "--groups 5: the model has 4 latent groups",
        ),
        (
            ["interpolate", "{run}", "test:0", "--traverse", "4"],
            "expected a group index from 0 (the top group) to 3",
        ),
        (["interpolate", "{run}", "test:0"], "name two images A B (or one with --traverse GROUP)"),
    ],
)
def test_bad_input_is_named_with_exit_code_2(run_dir, wrong_image, tmp_path, capsys, args, message):
    before = folder_hashes(run_dir)
    values = {"run": run_dir, "wrong": wrong_image, "tmp": tmp_path}
    rc, out, err = genzoo_cli(capsys, *(a.format(**values) for a in args))
    assert rc == 2 and message in err, err
    assert out == "" and folder_hashes(run_dir) == before
