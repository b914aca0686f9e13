"""A deterministic synthetic 2D "abdominal phantom": segmentation data with no download.

Each case is an axial-slice-like image: a body outline (a deformed ellipse) containing organs
drawn as deformed ellipses (liver, kidneys, spleen, then stomach, aorta, vertebra, pancreas
as more classes are asked for), each with its own intensity and a smooth inhomogeneity; then a
smooth multiplicative bias field and Rician noise. A random affine (rotation, scale, shift) per
case moves the whole anatomy. Shapes are rendered analytically in the transformed coordinates,
so there is no resampling and rendering is vectorised numpy: 64 cases of 64x64 take about
0.1 s.

Case ``i`` depends only on ``(seed, i, size, num_classes, in_channels)``, never on ``n``:
``phantom:8`` is the first 8 cases of ``phantom:64``.
"""

from __future__ import annotations

import numpy as np

from msnas_graph.data.case import Case
from msnas_graph.data.dataset import SegmentationDataset
from msnas_graph.errors import DataError
from msnas_graph.limits import CASE_OBJECTS, case_bytes, check_fits

__all__ = ["ORGANS", "phantom_case", "phantom_dataset"]

#: (name, [(centre_x, centre_y, half_axis_x, half_axis_y), ...], mean intensity), in the
#: canonical body frame (x to the image right, y down, the body spans about [-0.9, 0.9]).
#: Label ``k`` is ``ORGANS[k - 1]``; organs are painted in this order (later ones on top).
ORGANS: tuple[tuple[str, tuple[tuple[float, float, float, float], ...], float], ...] = (
    ("liver", ((-0.33, -0.12, 0.36, 0.28),), 0.62),
    ("kidney", ((-0.42, 0.38, 0.10, 0.14), (0.42, 0.38, 0.10, 0.14)), 0.82),
    ("spleen", ((0.52, -0.12, 0.14, 0.19),), 0.70),
    ("stomach", ((0.20, -0.32, 0.18, 0.13),), 0.45),
    ("aorta", ((0.05, 0.30, 0.06, 0.06),), 0.95),
    ("vertebra", ((0.0, 0.55, 0.13, 0.10),), 1.0),
    ("pancreas", ((0.05, 0.10, 0.22, 0.06),), 0.55),
)

_PIXEL_FOV_MM = 320.0  # the phantom's field of view, so that pixel_size = 320 / size mm


def _deformed_ellipse(
    x: np.ndarray,
    y: np.ndarray,
    params: tuple[float, float, float, float],
    rng: np.random.Generator,
    wobble: float,
) -> np.ndarray:
    cx, cy, ax, ay = params
    cx += rng.uniform(-0.04, 0.04)
    cy += rng.uniform(-0.04, 0.04)
    ax *= rng.uniform(0.88, 1.12)
    ay *= rng.uniform(0.88, 1.12)
    dx, dy = (x - cx) / ax, (y - cy) / ay
    rho = np.hypot(dx, dy)
    theta = np.arctan2(dy, dx)
    radius = 1.0 + sum(
        rng.uniform(-wobble, wobble) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
        for k in (2, 3, 4)
    )
    return rho < radius


def _smooth_field(
    x: np.ndarray, y: np.ndarray, rng: np.random.Generator, amplitude: float
) -> np.ndarray:
    """A sum of three low-frequency random plane waves."""
    field = np.zeros_like(x)
    for _ in range(3):
        fx, fy = rng.uniform(-3, 3, size=2)
        field += np.sin(fx * x + fy * y + rng.uniform(0, 2 * np.pi))
    return amplitude * field / 3.0


def phantom_case(
    index: int, size: int = 64, num_classes: int = 4, seed: int = 0, in_channels: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """Render phantom case ``index``: ``(image float32 (C, size, size), mask int64 (size, size))``.

    >>> img, mask = phantom_case(0, size=32)
    >>> img.shape, mask.shape, int(mask.max()) <= 3
    ((1, 32, 32), (32, 32), True)
    """
    rng = np.random.default_rng([seed, index, size, num_classes])
    coords = (np.arange(size, dtype=np.float64) + 0.5) / size * 2.0 - 1.0
    gy, gx = np.meshgrid(coords, coords, indexing="ij")

    # random affine: canonical coordinates u, v of every pixel
    angle = rng.uniform(-0.25, 0.25)
    scale = rng.uniform(0.88, 1.08)
    tx, ty = rng.uniform(-0.06, 0.06, size=2)
    cos, sin = np.cos(angle), np.sin(angle)
    px, py = (gx - tx) / scale, (gy - ty) / scale
    u, v = cos * px + sin * py, -sin * px + cos * py

    body = _deformed_ellipse(u, v, (0.0, 0.05, 0.88, 0.68), rng, wobble=0.04)
    mask = np.zeros((size, size), dtype=np.int64)
    image = np.full((size, size), 0.02)
    image[body] = rng.uniform(0.30, 0.38) + _smooth_field(u, v, rng, 0.04)[body]
    for label, (_name, ellipses, intensity) in enumerate(ORGANS[: num_classes - 1], start=1):
        organ = np.zeros_like(body)
        for params in ellipses:
            organ |= _deformed_ellipse(u, v, params, rng, wobble=0.08)
        organ &= body
        mask[organ] = label
        level = intensity + rng.normal(0.0, 0.03)
        image[organ] = level + _smooth_field(u, v, rng, 0.05)[organ]

    # smooth multiplicative bias field in image coordinates, then Rician noise
    c = rng.uniform(-0.15, 0.15, size=4)
    image *= 1.0 + c[0] * gx + c[1] * gy + c[2] * gx * gy + c[3] * (gx**2 - gy**2)
    sigma = rng.uniform(0.025, 0.06)
    noise = rng.normal(0.0, sigma, size=(2, in_channels, size, size))
    gains = 1.0 + 0.1 * np.arange(in_channels)  # channels differ slightly when there are several
    stack = image[None] * gains[:, None, None]
    noisy = np.sqrt((stack + noise[0]) ** 2 + noise[1] ** 2)
    return noisy.astype(np.float32), mask


def phantom_dataset(
    n: int = 64, size: int = 64, num_classes: int = 4, seed: int = 0, *, in_channels: int = 1
) -> SegmentationDataset:
    """The built-in synthetic dataset (``load_dataset("phantom")``), held in memory.

    ``num_classes`` counts the background: 2..8 (labels ``1..num_classes-1`` are the first
    organs of :data:`ORGANS`). Every case is its own group. Same arguments, same arrays.

    >>> ds = phantom_dataset(4, size=32)
    >>> len(ds), ds.num_classes, ds.label_names
    (4, 4, ['background', 'liver', 'kidney', 'spleen'])
    >>> bool((ds[0].image == phantom_dataset(4, size=32)[0].image).all())
    True
    """
    if not 2 <= num_classes <= len(ORGANS) + 1:
        raise DataError(
            f"phantom: num_classes={num_classes} is out of range: use 2..{len(ORGANS) + 1}"
        )
    if n < 1 or size < 8 or in_channels < 1:
        raise DataError(
            f"phantom: n={n}, size={size}, in_channels={in_channels}: use n >= 1, size >= 8, "
            "in_channels >= 1"
        )
    per_case = case_bytes(size * size, in_channels) + CASE_OBJECTS
    check_fits(n * per_case, f"phantom:{n} ({n} cases of {size}x{size})")
    cases = []
    for i in range(n):
        image, mask = phantom_case(i, size, num_classes, seed, in_channels)
        case_id = f"phantom_{i:03d}"
        cases.append(
            Case(
                case_id=case_id,
                image=image,
                mask=mask,
                group=case_id,
                pixel_size=_PIXEL_FOV_MM / size,
                source=f"phantom:{seed}:{i}",
                meta={
                    "format": "phantom",
                    "file_name": case_id,
                    "original_shape": (size, size),
                    "seed": seed,
                    "index": i,
                },
            )
        )
    names = ["background"] + [name for name, _, _ in ORGANS[: num_classes - 1]]
    return SegmentationDataset.from_cases(
        cases,
        name="phantom",
        num_classes=num_classes,
        in_channels=in_channels,
        label_names=names,
        format="phantom",
    )
