"""An embedded dataset: coloured shapes drawn on the fly, so a quickstart needs no download.

Each image is a dark background (a random colour with a gentle vertical gradient) with one to
``max_shapes`` shapes (circles, squares, triangles, crosses) of random colour, size, position
and rotation, painted in order with anti-aliased edges. The images are structured (a small VAE
learns them in minutes on a CPU) and fully determined by ``seed``: the train split is drawn from
the generator stream ``2 * seed``, the test split from ``2 * seed + 1``, so the two splits never
share a stream and the held-out set is fixed. Generating 10,000 images of 32x32 takes well
under a second (vectorized over images).
"""

from __future__ import annotations

import math

import torch
from einops import rearrange
from torch.utils.data import Dataset

import genzoo
from genzoo.interfaces import ImageDataset
from genzoo.io.validation import check_choice, check_int
from genzoo_plugins.data.image_tensors import UInt8Images
from genzoo_plugins.data.options import check_split

KEY = "data.shapes"
KINDS = ("circle", "square", "triangle", "cross")
PIXELS_PER_CHUNK = 512 * 32 * 32  # painted at once: bounds memory, not the result


def _hsv_to_rgb(h: torch.Tensor, s: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """HSV in [0, 1] (any shape ``S``) -> RGB ``(*S, 3)``, the standard piecewise-linear map."""
    channels = []
    for n in (5.0, 3.0, 1.0):
        k = (n + h * 6) % 6
        channels.append(v - v * s * torch.clamp(torch.minimum(k, 4 - k), 0, 1))
    return torch.stack(channels, dim=-1)


def _colours(h: torch.Tensor, s: torch.Tensor, v: torch.Tensor, channels: int) -> torch.Tensor:
    """Colours ``(*S, channels)``: RGB, or the HSV value alone for grey images."""
    return _hsv_to_rgb(h, s, v) if channels == 3 else v.unsqueeze(-1)


def _signed_distances(
    kind: torch.Tensor, dx: torch.Tensor, dy: torch.Tensor, radius: torch.Tensor, angle: torch.Tensor
) -> torch.Tensor:
    """Signed distance in pixels (negative inside) from each pixel to each shape.

    ``dx, dy``: pixel centre minus shape centre, ``(n, S, H, W)``; the other inputs
    ``(n, S, 1, 1)``. Squares, triangles and crosses are measured in the shape's rotated frame.
    """
    cos, sin = torch.cos(angle), torch.sin(angle)
    qx, qy = dx * cos + dy * sin, -dx * sin + dy * cos
    circle = torch.sqrt(dx**2 + dy**2) - radius
    square = torch.maximum(qx.abs(), qy.abs()) - 0.8 * radius  # 0.8: similar area to the circle
    # equilateral triangle of circumradius r: its edges lie r/2 from the centre
    normals = [2 * math.pi * k / 3 + math.pi / 2 for k in range(3)]
    triangle = torch.stack([qx * math.cos(a) + qy * math.sin(a) for a in normals]).amax(0) - radius / 2
    arm, width = radius, radius / 3
    cross = torch.minimum(
        torch.maximum(qx.abs() - arm, qy.abs() - width),
        torch.maximum(qx.abs() - width, qy.abs() - arm),
    )
    by_kind = torch.stack([circle, square, triangle, cross])
    return by_kind.gather(0, kind.expand_as(circle).unsqueeze(0)).squeeze(0)


def _draw_parameters(
    count: int, *, image_size: int, channels: int, max_shapes: int, generator: torch.Generator
) -> dict[str, torch.Tensor]:
    """Every random choice of ``count`` images; per-image tensors lead with ``count``."""
    size = float(image_size)

    def uniform(low: float, high: float, *shape: int) -> torch.Tensor:
        return low + (high - low) * torch.rand(*shape, generator=generator)

    slots = (count, max_shapes)
    # background: dark, any hue, with a vertical gradient
    bg = _colours(uniform(0, 1, count), uniform(0, 1, count), uniform(0.05, 0.3, count), channels)
    gradient = uniform(-0.15, 0.15, count)
    # shapes: slot j is drawn when j < the image's shape count
    num_shapes = torch.randint(1, max_shapes + 1, (count, 1), generator=generator)
    kind = torch.randint(0, len(KINDS), slots, generator=generator)
    colour = _colours(uniform(0, 1, *slots), uniform(0.6, 1, *slots), uniform(0.65, 1, *slots), channels)
    radius = uniform(0.12, 0.3, *slots) * size
    cx = radius + uniform(0, 1, *slots) * (size - 2 * radius)
    cy = radius + uniform(0, 1, *slots) * (size - 2 * radius)
    angle = uniform(0, 2 * math.pi, *slots)
    active = (torch.arange(max_shapes) < num_shapes).float()
    return dict(
        bg=bg,
        gradient=gradient,
        kind=kind,
        colour=colour,
        radius=radius,
        cx=cx,
        cy=cy,
        angle=angle,
        active=active,
    )


def _paint(p: dict[str, torch.Tensor], image_size: int) -> torch.Tensor:
    """Float images ``(n, C, H, W)`` in [0, 1] from the parameters ``p`` of ``n`` images."""
    size = float(image_size)
    pixel = torch.arange(image_size, dtype=torch.float32) + 0.5
    ramp = rearrange(p["gradient"], "n -> n 1 1 1") * (rearrange(pixel, "h -> 1 1 h 1") / size - 0.5)
    image = (rearrange(p["bg"], "n c -> n c 1 1") + ramp).expand(-1, -1, image_size, image_size).clamp(0, 1)
    shape = {k: rearrange(p[k], "n s -> n s 1 1") for k in ("kind", "radius", "cx", "cy", "angle", "active")}
    dx = rearrange(pixel, "w -> 1 1 1 w") - shape["cx"]
    dy = rearrange(pixel, "h -> 1 1 h 1") - shape["cy"]
    distance = _signed_distances(shape["kind"], dx, dy, shape["radius"], shape["angle"])
    # coverage ramps over one pixel across the edge: anti-aliasing, so edges are learnable
    coverage = (0.5 - distance).clamp(0, 1) * shape["active"]
    for j in range(coverage.shape[1]):
        cover = coverage[:, j : j + 1]
        image = image * (1 - cover) + rearrange(p["colour"][:, j], "n c -> n c 1 1") * cover
    return image


def render_shapes(
    count: int,
    *,
    image_size: int,
    channels: int,
    max_shapes: int,
    generator: torch.Generator,
) -> torch.Tensor:
    """``count`` images of shapes as 8-bit codes ``(count, channels, image_size, image_size)``.

    Every random parameter is drawn before painting, so the images depend on the generator's
    state only (not on how painting is chunked).
    """
    params = _draw_parameters(
        count, image_size=image_size, channels=channels, max_shapes=max_shapes, generator=generator
    )
    chunk = max(1, PIXELS_PER_CHUNK // image_size**2)
    chunks = []
    for start in range(0, count, chunk):
        part = {k: v[start : start + chunk] for k, v in params.items()}
        chunks.append(torch.round(_paint(part, image_size) * 255).to(torch.uint8))
    return torch.cat(chunks)


@genzoo.component("dataset", KEY, description="coloured shapes generated on the fly (no download)")
class Shapes(ImageDataset):
    """Coloured shapes generated on the fly: structured, learnable, no download.

    :param image_size: height and width in pixels (>= 8).
    :param channels: 3 (colour) or 1 (grey).
    :param num_train, num_test: number of images in each split.
    :param num_bits: bit depth, 1 to 8 (1: binarized by thresholding at 1/2, deterministically).
    :param seed: the seed of both splits (train: stream ``2 * seed``, test: ``2 * seed + 1``).
    :param max_shapes: each image holds 1 to ``max_shapes`` shapes.
    """

    def __init__(
        self,
        *,
        image_size: int = 32,
        channels: int = 3,
        num_train: int = 10000,
        num_test: int = 2000,
        num_bits: int = 8,
        seed: int = 0,
        max_shapes: int = 2,
    ) -> None:
        check_int("image_size", image_size, minimum=8, component=KEY)
        check_choice(
            "channels", check_int("channels", channels, minimum=1, component=KEY), (1, 3), component=KEY
        )
        self.sizes = {
            "train": check_int("num_train", num_train, minimum=1, component=KEY),
            "test": check_int("num_test", num_test, minimum=1, component=KEY),
        }
        self.num_bits = check_int("num_bits", num_bits, minimum=1, maximum=8, component=KEY)
        self.seed = check_int("seed", seed, minimum=0, component=KEY)
        self.max_shapes = check_int("max_shapes", max_shapes, minimum=1, maximum=8, component=KEY)
        self.image_shape = (channels, image_size, image_size)
        self._splits: dict[str, Dataset] = {}

    def split(self, name: str) -> Dataset:
        """The ``"train"`` or ``"test"`` split, rendered on first use and kept."""
        check_split(KEY, name)
        if name not in self._splits:
            stream = 2 * self.seed + (0 if name == "train" else 1)
            codes = render_shapes(
                self.sizes[name],
                image_size=self.image_shape[1],
                channels=self.image_shape[0],
                max_shapes=self.max_shapes,
                generator=torch.Generator().manual_seed(stream),
            )
            self._splits[name] = UInt8Images(codes, num_bits=self.num_bits)
        return self._splits[name]
