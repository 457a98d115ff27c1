"""The built-in datasets (plugin ``data``): every split yields float images (C, H, W) in [0, 1]
on the dataset's bit grid, and a missing file is a ConfigError that says what to put where.

No test touches the network or files outside ``tmp_path``: downloads go through stand-ins for
torchvision's dataset classes that write the files (or fail) as the real ones would.
"""

from __future__ import annotations

import gzip
import struct
import time
from pathlib import Path
from urllib.error import URLError

import numpy as np
import pytest
import torch
import torchvision.datasets
from PIL import Image
from torch.utils.data import DataLoader

import genzoo
from genzoo_plugins import data
from genzoo_plugins.data.celeba64 import CelebA64
from genzoo_plugins.data.cifar10 import CIFAR10, FILES, FOLDER
from genzoo_plugins.data.idx import IdxImages, read_idx
from genzoo_plugins.data.image_folder import ImageFolder
from genzoo_plugins.data.image_tensors import to_grid
from genzoo_plugins.data.mnist import MNIST
from genzoo_plugins.data.npz import NpzImages
from genzoo_plugins.data.shapes import Shapes


@pytest.fixture(autouse=True)
def no_data_env(monkeypatch):
    """Default roots as a user's clone has them, whatever the caller's environment says."""
    monkeypatch.delenv("GENZOO_DATA", raising=False)


@pytest.fixture
def registry() -> genzoo.Registry:
    reg = genzoo.Registry()
    data.genzoo_register(reg)
    return reg


def all_items(split) -> torch.Tensor:
    return torch.stack([split[i] for i in range(len(split))])


def write_idx(path, array: np.ndarray, *, compress: bool) -> None:
    """An IDX file written from the format's definition (independent of the reader)."""
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(payload) if compress else payload)


def test_every_dataset_is_registered_under_the_dataset_kind(registry):
    assert registry.keys("dataset") == [
        "data.celeba64",
        "data.cifar10",
        "data.idx",
        "data.image_folder",
        "data.mnist",
        "data.npz",
        "data.shapes",
    ]
    shapes = registry.create("dataset", "data.shapes", num_train=4, num_test=2, image_size=16)
    assert isinstance(shapes, genzoo.ImageDataset)
    assert shapes.image_shape == (3, 16, 16) and shapes.num_bits == 8


# -- the embedded shapes dataset --------------------------------------------------------------
def test_shapes_are_deterministic_given_the_seed():
    a = all_items(Shapes(num_train=64, num_test=16, seed=3).split("train"))
    b = all_items(Shapes(num_train=64, num_test=16, seed=3).split("train"))
    c = all_items(Shapes(num_train=64, num_test=16, seed=4).split("train"))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_shapes_test_split_is_held_out_and_fixed():
    small = Shapes(num_train=200, num_test=50)
    train, test = all_items(small.split("train")), all_items(small.split("test"))
    # no test image equals any train image
    same = (rearrange_flat(test)[:, None] == rearrange_flat(train)[None]).all(-1)
    assert not same.any()
    # the splits come from different random streams, even when they are the same size
    even = Shapes(num_train=50, num_test=50)
    assert not (all_items(even.split("train")) == all_items(even.split("test"))).flatten(1).all(1).any()
    # the held-out set does not depend on how many training images are drawn
    larger = Shapes(num_train=400, num_test=50)
    assert torch.equal(test, all_items(larger.split("test")))


def rearrange_flat(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(len(x), -1)


@pytest.mark.parametrize("num_bits", [8, 3, 1])
def test_shapes_lie_in_unit_range_on_the_bit_grid(num_bits):
    dataset = Shapes(num_train=32, num_test=8, num_bits=num_bits, channels=1, image_size=16)
    x = all_items(dataset.split("train"))
    assert x.shape == (32, *dataset.image_shape) == (32, 1, 16, 16)
    assert x.dtype == torch.float32 and x.min() >= 0 and x.max() <= 1
    levels = x * (2**num_bits - 1)
    assert torch.equal(levels, levels.round())
    if num_bits == 1:
        assert set(x.unique().tolist()) == {0.0, 1.0}


def neighbour_correlation(x: torch.Tensor) -> float:
    """Correlation of horizontally adjacent pixels over a batch."""
    left, right = x[..., :-1].flatten(), x[..., 1:].flatten()
    return torch.corrcoef(torch.stack([left, right]))[0, 1].item()


def test_shapes_are_structured_not_noise():
    x = all_items(Shapes(num_train=128, num_test=8).split("train"))
    noise = torch.rand_like(x)
    assert neighbour_correlation(noise) < 0.1  # the statistic does tell noise apart
    assert neighbour_correlation(x) > 0.8
    # every image holds something besides its background: bright shape pixels
    assert (x.amax(dim=(1, 2, 3)) > 0.6).all()
    assert (x.std(dim=(1, 2, 3)) > 0.05).all()


def test_shapes_generate_ten_thousand_images_in_seconds():
    start = time.perf_counter()
    train = Shapes(num_train=10_000, num_test=10).split("train")
    assert len(train) == 10_000
    assert time.perf_counter() - start < 5.0


def test_shapes_options_are_validated():
    with pytest.raises(genzoo.ConfigError, match="'channels'"):
        Shapes(channels=2)
    with pytest.raises(ValueError, match="'num_bits' = 9"):
        Shapes(num_bits=9)
    with pytest.raises(genzoo.ConfigError, match="data.shapes: unknown split 'valid'"):
        Shapes(num_train=2, num_test=2).split("valid")


# -- bit depth, binarization and flips --------------------------------------------------------
def test_bit_depth_keeps_the_top_bits_as_nvae_does():
    codes = torch.arange(256, dtype=torch.uint8).reshape(1, 16, 16)
    reference = (np.arange(256) >> 5) / 7  # 3 bits: floor(k / 32) / (2**3 - 1)
    assert np.allclose(to_grid(codes, num_bits=3).flatten().numpy(), reference)
    assert torch.equal(to_grid(codes), codes.float() / 255)


def test_random_flips_show_both_orientations():
    codes = torch.arange(12, dtype=torch.uint8).reshape(1, 3, 4)
    torch.manual_seed(0)
    seen = {tuple(to_grid(codes, hflip=True).flatten().tolist()) for _ in range(40)}
    assert seen == {
        tuple(to_grid(codes).flatten().tolist()),
        tuple(to_grid(codes.flip(-1)).flatten().tolist()),
    }


# -- IDX files ---------------------------------------------------------------------------------
@pytest.mark.parametrize("compress", [True, False])
def test_idx_round_trip(tmp_path, compress):
    images = np.random.default_rng(0).integers(0, 256, size=(6, 5, 7), dtype=np.uint8)
    write_idx(tmp_path / "images.idx", images, compress=compress)
    assert np.array_equal(read_idx(tmp_path / "images.idx").numpy(), images)

    dataset = IdxImages(root=tmp_path, train_file="images.idx", train_range=[0, 4], test_range=[4, 6])
    assert dataset.image_shape == (1, 5, 7) and dataset.num_bits == 8
    assert torch.equal(all_items(dataset.split("train")), torch.from_numpy(images[:4, None]).float() / 255)
    assert torch.equal(all_items(dataset.split("test")), torch.from_numpy(images[4:, None]).float() / 255)


def test_idx_finds_the_gzip_copy_of_a_named_file(tmp_path):
    write_idx(tmp_path / "train.idx.gz", np.zeros((2, 3, 3)), compress=True)
    write_idx(tmp_path / "test.idx", np.full((1, 3, 3), 255), compress=False)
    dataset = IdxImages(root=tmp_path, train_file="train.idx", test_file="test.idx.gz")
    assert len(dataset.split("train")) == 2 and dataset.split("test")[0].min() == 1


def test_idx_rejects_files_that_are_not_uint8_images(tmp_path):
    (tmp_path / "float.idx").write_bytes(struct.pack(">BBBB3I", 0, 0, 0x0D, 3, 1, 2, 2) + bytes(16))
    with pytest.raises(genzoo.ConfigError, match="float.idx.*type code 0x0d"):
        IdxImages(root=tmp_path, train_file="float.idx", test_range=[0, 1])
    (tmp_path / "short.idx").write_bytes(struct.pack(">BBBB3I", 0, 0, 0x08, 3, 2, 2, 2) + bytes(3))
    with pytest.raises(genzoo.ConfigError, match="short.idx.*holds 3 bytes"):
        read_idx(tmp_path / "short.idx")
    write_idx(tmp_path / "labels.idx", np.zeros(5), compress=False)
    with pytest.raises(genzoo.ConfigError, match=r"labels.idx.*\(count, rows, cols\)"):
        IdxImages(root=tmp_path, train_file="labels.idx", test_range=[0, 1])


# -- MNIST -------------------------------------------------------------------------------------
@pytest.fixture
def mnist_root(tmp_path):
    """A stand-in for MNIST: 6 training and 4 test images, 28x28, with the official file names."""
    rng = np.random.default_rng(1)
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", rng.integers(0, 256, (6, 28, 28)), compress=True)
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", rng.integers(0, 256, (10, 28, 28)), compress=True)
    return tmp_path


def test_mnist_is_dynamically_binarized_28x28(mnist_root):
    dataset = MNIST(root=mnist_root)
    assert dataset.image_shape == (1, 28, 28) and dataset.num_bits == 1  # not padded to 32
    first, again = dataset.split("train")[0], dataset.split("train")[0]
    assert set(first.unique().tolist()) == {0.0, 1.0}
    assert not torch.equal(first, again)  # a fresh draw at every read
    assert len(dataset.split("train")) == 6 and len(dataset.split("test")) == 10


def test_dynamic_binarization_mean_matches_intensity(tmp_path):
    intensities = np.array([0, 64, 191, 255], dtype=np.uint8).repeat(7 * 28).reshape(1, 28, 28)
    write_idx(tmp_path / "train-images-idx3-ubyte", intensities, compress=False)
    write_idx(tmp_path / "t10k-images-idx3-ubyte", intensities, compress=False)
    split = MNIST(root=tmp_path).split("train")
    torch.manual_seed(0)
    mean = torch.stack([split[0] for _ in range(200)]).mean(dim=(0, 1, 3))  # per row, 200 x 28 draws
    p = torch.from_numpy(intensities[0, :, 0]).double() / 255
    std = (p * (1 - p) / (200 * 28)).sqrt()
    assert (mean.double() - p).abs().max() <= 4 * std.max()
    assert mean[:7].eq(0).all() and mean[-7:].eq(1).all()  # intensity 0 and 255 never flip


def test_mnist_grey_and_index_ranges_of_one_file(mnist_root):
    dataset = MNIST(
        root=mnist_root,
        train_file="t10k-images-idx3-ubyte",
        train_range=[0, 7],
        test_range=[7, 10],
        binarize=False,
    )
    assert dataset.num_bits == 8
    t10k = read_idx(mnist_root / "t10k-images-idx3-ubyte.gz").float().unsqueeze(1) / 255
    assert torch.equal(all_items(dataset.split("train")), t10k[:7])
    assert torch.equal(all_items(dataset.split("test")), t10k[7:])


def test_mnist_ranges_are_validated(mnist_root):
    with pytest.raises(genzoo.ConfigError, match="overlap"):
        MNIST(root=mnist_root, train_file="t10k-images-idx3-ubyte", train_range=[0, 8], test_range=[7, 10])
    with pytest.raises(ValueError, match=r"'test_range' = \[8, 11\].*<= 10"):
        MNIST(root=mnist_root, test_range=[8, 11])


def test_mnist_reads_the_torchvision_layout(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    write_idx(raw / "train-images-idx3-ubyte", np.zeros((3, 28, 28)), compress=False)
    write_idx(raw / "t10k-images-idx3-ubyte", np.zeros((2, 28, 28)), compress=False)
    assert len(MNIST(root=tmp_path).split("test")) == 2


def test_missing_mnist_files_name_the_file_and_the_folder(tmp_path):
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", np.zeros((4, 28, 28)), compress=True)
    with pytest.raises(genzoo.ConfigError) as error:
        MNIST(root=tmp_path)
    message = str(error.value)
    assert message.startswith("data.mnist: option 'train_file'")
    assert "train-images-idx3-ubyte" in message and str(tmp_path) in message
    assert "train_range" in message  # the way out when only the test file is there


class DownloadedMNIST:
    """torchvision's MNIST where the network would be: its download writes the IDX files."""

    def __init__(self, root: str, *, train: bool, download: bool) -> None:
        raw = Path(root) / "MNIST" / "raw"
        raw.mkdir(parents=True, exist_ok=True)
        name, count = ("train-images-idx3-ubyte", 3) if train else ("t10k-images-idx3-ubyte", 2)
        write_idx(raw / name, np.zeros((count, 28, 28)), compress=False)


class Offline:
    """A torchvision dataset class without network: every construction fails as a download would."""

    calls = 0

    def __init__(self, *args, **kwargs) -> None:
        Offline.calls += 1
        raise URLError("[Errno -3] Temporary failure in name resolution")


def test_mnist_downloads_through_torchvision_only_when_asked(tmp_path, monkeypatch):
    monkeypatch.setattr(torchvision.datasets, "MNIST", Offline)
    Offline.calls = 0
    with pytest.raises(genzoo.ConfigError, match="was not found"):
        MNIST(root=tmp_path)  # download is off by default: the network is never tried
    assert Offline.calls == 0
    monkeypatch.setattr(torchvision.datasets, "MNIST", DownloadedMNIST)
    dataset = MNIST(root=tmp_path, download=True)
    assert len(dataset.split("train")) == 3 and len(dataset.split("test")) == 2
    assert dataset.files["train"] == tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte"


def test_failed_mnist_download_says_what_to_put_where(tmp_path, monkeypatch):
    monkeypatch.setattr(torchvision.datasets, "MNIST", Offline)
    with pytest.raises(genzoo.ConfigError) as error:
        MNIST(root=tmp_path, train_file="t10k-images-idx3-ubyte", test_range=[8000, 10000], download=True)
    message = str(error.value)
    assert message.startswith("data.mnist: downloading MNIST") and "URLError" in message
    # only the file this configuration reads, the folder, and the two ways to point elsewhere
    assert f"the IDX file t10k-images-idx3-ubyte (raw or .gz) in {str(tmp_path)!r}" in message
    assert "--set data.dataset.root=PATH" in message and "GENZOO_DATA" in message


# -- the data folder: data/... relative to where genzoo runs, or $GENZOO_DATA ----------------------
def test_default_roots_are_in_the_data_folder_where_genzoo_runs(tmp_path, monkeypatch):
    mnist = tmp_path / "data" / "mnist"
    mnist.mkdir(parents=True)
    write_idx(mnist / "train-images-idx3-ubyte.gz", np.zeros((3, 28, 28)), compress=True)
    write_idx(mnist / "t10k-images-idx3-ubyte.gz", np.zeros((2, 28, 28)), compress=True)
    monkeypatch.chdir(tmp_path)
    assert MNIST().files["test"] == Path("data/mnist/t10k-images-idx3-ubyte.gz")


def test_genzoo_data_stands_for_the_data_folder(tmp_path, monkeypatch):
    shared = tmp_path / "datasets"
    (shared / "mnist").mkdir(parents=True)
    write_idx(shared / "mnist" / "t10k-images-idx3-ubyte.gz", np.zeros((10, 28, 28)), compress=True)
    monkeypatch.chdir(tmp_path)  # no data/ here
    monkeypatch.setenv("GENZOO_DATA", str(shared))
    one_file = {"train_file": "t10k-images-idx3-ubyte", "train_range": [0, 8], "test_range": [8, 10]}
    for root in ({}, {"root": "data/mnist"}):  # the default, and the experiment files' root
        assert MNIST(**root, **one_file).root == shared / "mnist"
    with pytest.raises(genzoo.ConfigError) as error:
        MNIST(root="elsewhere/mnist", **one_file)  # other roots are taken as given
    assert "'elsewhere/mnist'" in str(error.value) and f"it is {str(shared)!r} now" in str(error.value)
    with pytest.raises(genzoo.ConfigError, match="cifar-10-batches-py") as error:
        CIFAR10()
    assert str(shared / "cifar10" / "cifar-10-batches-py") in str(error.value)
    with pytest.raises(genzoo.ConfigError) as error:
        CelebA64()
    assert str(shared / "celeba" / "celeba" / "img_align_celeba") in str(error.value)


# -- NumPy .npz --------------------------------------------------------------------------------
def test_npz_round_trip_nhwc_uint8_and_nchw_float(tmp_path):
    rng = np.random.default_rng(2)
    train = rng.integers(0, 256, (5, 8, 6, 3), dtype=np.uint8)  # NHWC
    test = rng.integers(0, 256, (2, 3, 8, 6)).astype(np.float32) / 255  # NCHW floats
    np.savez(tmp_path / "images.npz", train=train, test=test)
    dataset = NpzImages(file=tmp_path / "images.npz")
    assert dataset.image_shape == (3, 8, 6)
    assert torch.equal(all_items(dataset.split("train")), torch.from_numpy(train).permute(0, 3, 1, 2) / 255)
    assert torch.allclose(all_items(dataset.split("test")), torch.from_numpy(test), atol=1e-6)


def test_npz_grey_and_custom_keys(tmp_path):
    np.savez(tmp_path / "g.npz", a=np.zeros((3, 4, 4), np.uint8), b=np.ones((2, 4, 4), bool))
    dataset = NpzImages(file=tmp_path / "g.npz", train_key="a", test_key="b", num_bits=1)
    assert dataset.image_shape == (1, 4, 4) and dataset.num_bits == 1
    assert all_items(dataset.split("test")).eq(1).all()


@pytest.mark.parametrize(
    "arrays, options, message",
    [
        ({"train": np.zeros((2, 4, 4), np.uint8)}, {}, r"option 'test_key'.*no array 'test'.*'train'"),
        (
            {"train": np.full((2, 4, 4), 1.5), "test": np.zeros((1, 4, 4))},
            {},
            r"array 'train'.*outside \[0, 1\]",
        ),
        (
            {"train": np.zeros((2, 4, 4), np.int64), "test": np.zeros((1, 4, 4))},
            {},
            "dtype int64; expected uint8",
        ),
        (
            {"train": np.zeros((2, 3, 4, 3), np.uint8), "test": np.zeros((1, 3, 4, 3), np.uint8)},
            {},
            "ambiguous",
        ),
        ({"train": np.zeros((2, 4, 4), np.uint8), "test": np.zeros((1, 5, 5), np.uint8)}, {}, "same shape"),
        (
            {"train": np.zeros((2, 4, 4), np.uint8), "test": np.zeros((1, 4, 4))},
            {"layout": "hwc"},
            "'layout'",
        ),
    ],
)
def test_npz_errors_name_the_file_key_and_expectation(tmp_path, arrays, options, message):
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(genzoo.ConfigError, match=message) as error:
        NpzImages(file=tmp_path / "bad.npz", **options)
    assert str(error.value).startswith("data.npz:")


def test_npz_missing_file(tmp_path):
    with pytest.raises(genzoo.ConfigError, match=r"option 'file'.*nothing\.npz"):
        NpzImages(file=tmp_path / "nothing.npz")


# -- image folders -----------------------------------------------------------------------------
def test_image_folder_resizes_center_crops_and_holds_out_a_seeded_fraction(tmp_path):
    (tmp_path / "sub").mkdir()
    for i in range(10):
        # 48x32, black in 5 columns at each side: a center crop leaves only white (squeezing the
        # whole image into the square would not), even with the resize filter's support
        pixels = np.zeros((32, 48, 3), np.uint8)
        pixels[:, 5:43] = 255
        folder = tmp_path / "sub" if i % 2 else tmp_path
        Image.fromarray(pixels).save(folder / f"img{i}.png")
    (tmp_path / "notes.txt").write_text("not an image")
    dataset = ImageFolder(root=tmp_path, image_size=16, test_fraction=0.3, seed=5)
    assert dataset.image_shape == (3, 16, 16)
    train, test = dataset.split("train"), dataset.split("test")
    assert (len(train), len(test)) == (7, 3)
    assert set(train.paths).isdisjoint(test.paths) and len(set(train.paths) | set(test.paths)) == 10
    assert all_items(train).eq(1).all()
    assert ImageFolder(root=tmp_path, test_fraction=0.3, seed=5).files == dataset.files
    grey = ImageFolder(root=tmp_path, image_size=8, mode="L")
    assert grey.split("test")[0].shape == (1, 8, 8)


def test_image_folder_errors(tmp_path):
    with pytest.raises(genzoo.ConfigError, match=r"option 'root'.*holds 0 image"):
        ImageFolder(root=tmp_path)
    with pytest.raises(ValueError, match="'test_fraction' = 1.5"):
        ImageFolder(root=tmp_path, test_fraction=1.5)
    Image.new("RGB", (4, 4)).save(tmp_path / "a.png")
    (tmp_path / "b.png").write_bytes(b"not a png")
    dataset = ImageFolder(root=tmp_path, test_fraction=0.5, seed=0)
    broken = next(s for s in ("train", "test") if dataset.files[s][0].name == "b.png")
    with pytest.raises(genzoo.ConfigError, match="cannot read the image file.*b.png"):
        dataset.split(broken)[0]


# -- CIFAR-10 and CelebA 64 --------------------------------------------------------------------
def test_cifar10_offline_error_lists_the_expected_layout(tmp_path):
    with pytest.raises(genzoo.ConfigError) as error:
        CIFAR10(root=tmp_path, download=False)
    message = str(error.value)
    assert message.startswith("data.cifar10:")
    assert str(tmp_path / "cifar-10-batches-py") in message
    assert "data_batch_1" in message and "test_batch" in message and "download: true" in message


def test_celeba64_offline_error_lists_the_expected_layout(tmp_path):
    with pytest.raises(genzoo.ConfigError) as error:
        CelebA64(root=tmp_path, download=False)
    message = str(error.value)
    assert message.startswith("data.celeba64:")
    assert str(tmp_path / "celeba" / "img_align_celeba") in message and "list_eval_partition.txt" in message


def test_cifar10_and_celeba64_missing_files_say_how_to_point_elsewhere(tmp_path):
    for dataset in (CIFAR10, CelebA64):
        with pytest.raises(genzoo.ConfigError) as error:
            dataset(root=tmp_path)
        assert "--set data.dataset.root=PATH" in str(error.value) and "GENZOO_DATA" in str(error.value)


class DownloadedCIFAR10:
    """torchvision's CIFAR10 where the network would be: writes the batch files, two images each."""

    def __init__(self, root: str, *, train: bool, download: bool = False) -> None:
        folder = Path(root) / FOLDER
        folder.mkdir(parents=True, exist_ok=True)
        for name in FILES:
            (folder / name).write_bytes(b"")
        self.data = np.zeros((2, 32, 32, 3), np.uint8)


def test_cifar10_downloads_through_torchvision_when_asked(tmp_path, monkeypatch):
    monkeypatch.setattr(torchvision.datasets, "CIFAR10", DownloadedCIFAR10)
    dataset = CIFAR10(root=tmp_path, download=True)
    assert (tmp_path / FOLDER / "test_batch").is_file() and len(dataset.split("test")) == 2
    monkeypatch.setattr(torchvision.datasets, "CIFAR10", Offline)
    with pytest.raises(genzoo.ConfigError) as error:
        CIFAR10(root=tmp_path / "offline", download=True)
    message = str(error.value)
    assert message.startswith("data.cifar10: downloading CIFAR-10") and "URLError" in message
    assert str(tmp_path / "offline" / FOLDER) in message and "data_batch_1" in message


class DownloadedCelebA:
    """torchvision's CelebA where Google Drive would be: writes four aligned images and the partition."""

    def __init__(self, root: str, *, split: str, download: bool) -> None:
        folder = Path(root) / "celeba"
        (folder / "img_align_celeba").mkdir(parents=True)
        for number in range(1, 5):
            Image.new("RGB", (178, 218)).save(folder / "img_align_celeba" / f"{number:06d}.jpg")
        partition = "".join(f"{number:06d}.jpg {code}\n" for number, code in ((1, 0), (2, 0), (3, 1), (4, 2)))
        (folder / "list_eval_partition.txt").write_text(partition)


class DriveQuota:
    def __init__(self, *args, **kwargs) -> None:
        raise RuntimeError("File not found or corrupted.")  # what torchvision says on Drive's quota page


def test_celeba64_downloads_through_torchvision_and_names_google_drive_when_it_fails(tmp_path, monkeypatch):
    monkeypatch.setattr(torchvision.datasets, "CelebA", DownloadedCelebA)
    dataset = CelebA64(root=tmp_path, download=True)
    assert [p.name for p in dataset.split("train").paths] == ["000001.jpg", "000002.jpg"]
    monkeypatch.setattr(torchvision.datasets, "CelebA", DriveQuota)
    with pytest.raises(genzoo.ConfigError) as error:
        CelebA64(root=tmp_path / "offline", download=True)
    message = str(error.value)
    assert message.startswith("data.celeba64: downloading CelebA") and "Google Drive" in message
    assert str(tmp_path / "offline" / "celeba" / "img_align_celeba") in message


def face_image() -> Image.Image:
    """An aligned-size image, white exactly inside NVAE's 148x148 face box, black elsewhere."""
    pixels = np.zeros((218, 178, 3), np.uint8)
    pixels[40:188, 15:163] = 255
    return Image.fromarray(pixels)


def test_celeba64_crops_the_face_box_and_follows_the_partition_file(tmp_path):
    images = tmp_path / "celeba" / "img_align_celeba"
    images.mkdir(parents=True)
    for name in ("a.png", "b.png", "c.png", "d.png"):
        face_image().save(images / name)
    (tmp_path / "celeba" / "list_eval_partition.txt").write_text("a.png 0\nb.png 0\nc.png 1\nd.png 2\n")
    dataset = CelebA64(root=tmp_path, hflip=False)
    assert dataset.image_shape == (3, 64, 64)
    assert [p.name for p in dataset.split("train").paths] == ["a.png", "b.png"]
    assert [p.name for p in dataset.split("test").paths] == ["c.png"]  # NVAE tests on "valid"
    assert [p.name for p in CelebA64(root=tmp_path, test_split="test").split("test").paths] == ["d.png"]
    # the official box, not a centred 148 crop (which would take in black rows at the top)
    assert all_items(dataset.split("train")).eq(1).all()


def test_celeba64_without_partition_file_splits_by_file_number(tmp_path):
    images = tmp_path / "img_align_celeba"  # root may be the celeba folder itself
    images.mkdir()
    for number in (1, 162770, 162771, 182638):
        Image.new("RGB", (178, 218)).save(images / f"{number:06d}.png")
    dataset = CelebA64(root=tmp_path)
    assert [p.name for p in dataset.split("train").paths] == ["000001.png", "162770.png"]
    assert [p.name for p in dataset.split("test").paths] == ["162771.png"]


# -- loading in batches ------------------------------------------------------------------------
def test_splits_batch_into_image_tensors(mnist_root):
    for dataset in (Shapes(num_train=10, num_test=4), MNIST(root=mnist_root)):
        loader = DataLoader(dataset.split("train"), batch_size=4, shuffle=True, num_workers=0)
        batch = next(iter(loader))
        assert batch.shape == (4, *dataset.image_shape) and batch.dtype == torch.float32
