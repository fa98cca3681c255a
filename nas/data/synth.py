"""Synthetic depth scenes in the MAI 2021 layout, rendered by ray casting with numpy.

Each scene is a room (floor, walls, optional ceiling) or an open street (floor, side facades, sky),
filled with boxes and spheres standing on the floor, every surface carrying a procedural texture
(checker, stripes, value noise) under Lambertian shading. That gives a network the cues real depth
estimation learns from: perspective of the floor and walls, occlusion, texture gradients, shading
and the size of familiar shapes. Depth is the camera-frame z distance in millimetres, stored as
uint16 with 0 where unknown (sky, closer than 0.4 m, beyond range, and stereo-like holes at
occlusion edges), as a ZED camera records it. Deterministic for a seed.
"""

from __future__ import annotations

import contextlib
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

WIDTH, HEIGHT = 640, 480
MIN_DEPTH_M, MAX_DEPTH_M = 0.4, 40.0
SPLITS = ("train", "validation", "test")


@dataclass
class Surface:
    """Appearance of one primitive: two colours and a procedural pattern in its own (u, v)."""

    pattern: str
    scale: float
    color_a: np.ndarray
    color_b: np.ndarray
    noise_seed: int


class Plane:
    """Infinite plane n.x = offset, textured with two in-plane axes."""

    def __init__(self, normal, offset, axes, surface: Surface):
        self.normal = np.asarray(normal, float)
        self.offset = float(offset)
        self.axes = axes
        self.surface = surface

    def intersect(self, d: np.ndarray) -> np.ndarray:
        denom = d @ self.normal
        with np.errstate(divide="ignore", invalid="ignore"):
            t = self.offset / denom
        return np.where((np.abs(denom) > 1e-9) & (t > 0), t, np.inf)

    def normal_uv(self, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        n = np.broadcast_to(self.normal, p.shape)
        return n, p[:, list(self.axes)]


class Box:
    """Axis-aligned box (slab test)."""

    def __init__(self, lo, hi, surface: Surface):
        self.lo, self.hi = np.asarray(lo, float), np.asarray(hi, float)
        self.surface = surface

    def intersect(self, d: np.ndarray) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            inv = 1.0 / d
            t1, t2 = self.lo * inv, self.hi * inv
        tmin = np.nanmax(np.minimum(t1, t2), axis=1)
        tmax = np.nanmin(np.maximum(t1, t2), axis=1)
        hit = (tmax >= tmin) & (tmin > 0)
        return np.where(hit, tmin, np.inf)

    def normal_uv(self, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        centre, half = (self.lo + self.hi) / 2, (self.hi - self.lo) / 2
        q = (p - centre) / half
        axis = np.argmax(np.abs(q), axis=1)
        n = np.zeros_like(p)
        n[np.arange(len(p)), axis] = np.sign(q[np.arange(len(p)), axis])
        other = np.array([[1, 2], [0, 2], [0, 1]])[axis]
        uv = np.take_along_axis(p, other, axis=1)
        return n, uv


class Sphere:
    def __init__(self, centre, radius, surface: Surface):
        self.centre, self.radius = np.asarray(centre, float), float(radius)
        self.surface = surface

    def intersect(self, d: np.ndarray) -> np.ndarray:
        # Ray from the origin: |t d - c|^2 = r^2.
        a = np.einsum("ij,ij->i", d, d)
        b = -2 * d @ self.centre
        c = self.centre @ self.centre - self.radius**2
        disc = b * b - 4 * a * c
        with np.errstate(invalid="ignore"):
            t = (-b - np.sqrt(disc)) / (2 * a)
        return np.where((disc >= 0) & (t > 0), t, np.inf)

    def normal_uv(self, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        n = (p - self.centre) / self.radius
        uv = np.stack([np.arctan2(n[:, 0], n[:, 2]), np.arcsin(np.clip(n[:, 1], -1, 1))], 1)
        return n, uv * self.radius * 2


def _value_noise(uv: np.ndarray, seed: int) -> np.ndarray:
    """Smooth noise in [0, 1] from a random lattice, bilinearly interpolated and wrapped."""
    grid = np.random.default_rng(seed).random((32, 32))
    i0 = np.floor(uv).astype(int)
    f = uv - i0
    f = f * f * (3 - 2 * f)
    x0, y0 = i0[:, 0] % 32, i0[:, 1] % 32
    x1, y1 = (x0 + 1) % 32, (y0 + 1) % 32
    top = grid[x0, y0] * (1 - f[:, 0]) + grid[x1, y0] * f[:, 0]
    bottom = grid[x0, y1] * (1 - f[:, 0]) + grid[x1, y1] * f[:, 0]
    return top * (1 - f[:, 1]) + bottom * f[:, 1]


def _albedo(surface: Surface, uv: np.ndarray) -> np.ndarray:
    s = uv / surface.scale
    if surface.pattern == "checker":
        mix = (np.floor(s[:, 0]) + np.floor(s[:, 1])) % 2
    elif surface.pattern == "stripes":
        mix = (np.floor(s[:, 0] * 2) % 2) * 0.8 + 0.2 * _value_noise(s * 4, surface.noise_seed)
    else:
        mix = _value_noise(s * 2, surface.noise_seed) * 0.7 + 0.3 * _value_noise(s * 9, surface.noise_seed + 1)
    return surface.color_a * (1 - mix[:, None]) + surface.color_b * mix[:, None]


def _random_surface(rng: np.random.Generator) -> Surface:
    base = rng.random(3) * 0.8 + 0.1
    other = np.clip(base * rng.uniform(0.3, 1.6) + rng.normal(0, 0.15, 3), 0.02, 1.0)
    return Surface(pattern=str(rng.choice(["checker", "stripes", "noise"])), scale=float(rng.uniform(0.2, 1.5)),
                   color_a=base, color_b=other, noise_seed=int(rng.integers(1 << 30)))


def _scene(rng: np.random.Generator) -> tuple[list, bool]:
    """Primitives in camera-height coordinates: x right, y down, z forward; floor at y = cam_height."""
    street = rng.random() < 0.35
    cam_h = rng.uniform(1.0, 1.8)
    half_w = rng.uniform(2.0, 4.0) if not street else rng.uniform(5.0, 10.0)
    far = rng.uniform(6.0, 14.0) if not street else rng.uniform(25.0, 60.0)
    prims: list = [
        Plane((0, 1, 0), cam_h, (0, 2), _random_surface(rng)),  # floor
        Plane((1, 0, 0), half_w * rng.uniform(0.6, 1.0), (2, 1), _random_surface(rng)),  # right wall
        Plane((1, 0, 0), -half_w * rng.uniform(0.6, 1.0), (2, 1), _random_surface(rng)),  # left wall
    ]
    if not street:
        prims.append(Plane((0, 0, 1), far, (0, 1), _random_surface(rng)))  # back wall
        prims.append(Plane((0, 1, 0), cam_h - rng.uniform(2.4, 3.5), (0, 2), _random_surface(rng)))  # ceiling
    for _ in range(int(rng.integers(2, 9))):
        z = rng.uniform(1.0, min(far, 25.0) - 0.5)
        x = rng.uniform(-half_w * 0.8, half_w * 0.8)
        if rng.random() < 0.55:
            w, h, dz = rng.uniform(0.3, 1.5), rng.uniform(0.3, 2.2), rng.uniform(0.3, 1.5)
            prims.append(Box((x - w / 2, cam_h - h, z), (x + w / 2, cam_h, z + dz), _random_surface(rng)))
        else:
            r = rng.uniform(0.2, 0.9)
            prims.append(Sphere((x, cam_h - r, z + r), r, _random_surface(rng)))
    return prims, street


def render_scene(seed: int, width: int = WIDTH, height: int = HEIGHT) -> tuple[np.ndarray, np.ndarray]:
    """Render one scene: (RGB uint8 H×W×3, depth uint16 millimetres H×W, 0 = unknown)."""
    rng = np.random.default_rng(seed)
    prims, street = _scene(rng)
    focal = width * rng.uniform(0.75, 0.95)
    pitch, yaw = np.radians(rng.uniform(-8, 12)), np.radians(rng.uniform(-15, 15))
    ys, xs = np.mgrid[0:height, 0:width].astype(float)
    cam_dirs = np.stack([(xs + 0.5 - width / 2) / focal, (ys + 0.5 - height / 2) / focal,
                         np.ones_like(xs)], -1).reshape(-1, 3)
    cp, sp, cy, sy = np.cos(pitch), np.sin(pitch), np.cos(yaw), np.sin(yaw)
    rot = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]]) @ np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])
    d = cam_dirs @ rot.T  # world directions with camera-frame z = 1, so the hit parameter t is z-depth

    ts = np.stack([p.intersect(d) for p in prims])
    hit_id = np.argmin(ts, axis=0)
    t = ts[hit_id, np.arange(len(d))]
    light = np.array([rng.uniform(-0.6, 0.6), -1.0, rng.uniform(-0.8, 0.3)])
    light /= np.linalg.norm(light)
    ambient = rng.uniform(0.25, 0.45)
    sky = np.array([0.55, 0.7, 0.95]) * rng.uniform(0.7, 1.0)
    rgb = np.tile(sky, (len(d), 1))
    for k, prim in enumerate(prims):
        sel = (hit_id == k) & np.isfinite(t)
        if not sel.any():
            continue
        p = d[sel] * t[sel, None]
        normal, uv = prim.normal_uv(p)
        # Face the camera, so back faces shade like front faces.
        normal = np.where((np.einsum("ij,ij->i", normal, d[sel]) > 0)[:, None], -normal, normal)
        diffuse = np.clip(normal @ -light, 0, None)
        fade = np.exp(-t[sel] / 60.0)[:, None]  # a little atmosphere: far things go pale
        shaded = _albedo(prim.surface, uv) * (ambient + (1 - ambient) * diffuse)[:, None]
        rgb[sel] = shaded * fade + sky * (1 - fade)
    rgb = rgb.reshape(height, width, 3) + rng.normal(0, 0.01, (height, width, 3))
    rgb8 = (np.clip(rgb, 0, 1) * 255 + 0.5).astype(np.uint8)

    depth = t.reshape(height, width)
    known = np.isfinite(depth) & (depth >= MIN_DEPTH_M) & (depth <= MAX_DEPTH_M)
    # Stereo matching fails at occlusion edges: drop a random part of the pixels next to a jump.
    safe = np.where(np.isfinite(depth), depth, MAX_DEPTH_M * 2)
    jump = np.zeros_like(known)
    jump[:, 1:] |= np.abs(np.diff(safe, axis=1)) > 0.08 * safe[:, 1:]
    jump[1:, :] |= np.abs(np.diff(safe, axis=0)) > 0.08 * safe[1:, :]
    jump = jump | np.roll(jump, 1, axis=1) | np.roll(jump, -1, axis=1)
    known &= ~(jump & (rng.random(jump.shape) < 0.7))
    depth_mm = np.where(known, np.round(depth * 1000.0), 0).astype(np.uint16)
    if street and not known.any():
        depth_mm[-1, -1] = 1000  # never write a map with no valid pixel
    return rgb8, depth_mm


def write_pair(rgb: np.ndarray, depth_mm: np.ndarray, root: Path, split: str, stem: str) -> None:
    (root / split / "rgb").mkdir(parents=True, exist_ok=True)
    (root / split / "depth").mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb, "RGB").save(root / split / "rgb" / f"{stem}.png")
    Image.fromarray(depth_mm.astype(np.uint16)).save(root / split / "depth" / f"{stem}.png")


def _render_and_write(job: tuple[int, int, int, Path, str, str]) -> None:
    scene_seed, width, height, out, split, stem = job
    rgb, depth = render_scene(scene_seed, width, height)
    write_pair(rgb, depth, out, split, stem)


def synthesize(out: Path, counts: dict[str, int], seed: int = 0, width: int = WIDTH, height: int = HEIGHT,
               progress=None, workers: int = 1) -> None:
    """Write `counts[split]` scenes per split under `out`; scene seeds differ per split and index.

    `workers` > 1 renders in that many processes (same files: each scene depends on its seed alone).
    """
    jobs = [((seed * 1_000_003 + split_index * 100_003 + i) & 0xFFFFFFFF, width, height, out, split, f"{i:05d}")
            for split_index, split in enumerate(SPLITS) for i in range(counts.get(split, 0))]
    with contextlib.ExitStack() as stack:
        if workers > 1:
            pool = stack.enter_context(ProcessPoolExecutor(workers))
            finished = pool.map(_render_and_write, jobs, chunksize=4)
        else:
            finished = map(_render_and_write, jobs)
        for done, _ in enumerate(finished, start=1):
            if progress:
                progress(done, len(jobs))
