"""Synthetic dual-camera (RGB + NIR) recording: the embedded default data of mmkd_ros.

Why a simulator: cross-modal distillation needs a world where the privileged modality (NIR) truly
carries information that RGB lacks, and where RGB still holds weaker cues that a student can be
taught to use. This module builds such a world from physics, not from label-dependent noise.

Generative model (per scene, then per frame)
--------------------------------------------
1. Materials. Seven surfaces with reflectance in four bands (R ~650 nm, G ~550 nm, B ~470 nm,
   NIR ~850 nm), close to spectral-library values. The physics that matters:
   - living vegetation: chlorophyll absorbs red and blue, leaf cell structure scatters NIR
     strongly (the "red edge": NIR ~0.5 while green is ~0.13);
   - artificial turf (green polyethylene) and green paint (lawn colourant on dormant grass) are
     pigmented to match grass in the visible, but pigments do not have the red edge: NIR ~0.08
     and ~0.25;
   - water absorbs NIR almost completely (~0.015); asphalt is dark and flat (~0.08 in NIR);
   - dry (senescent) vegetation keeps a high NIR plateau (~0.48) while soil rises only slowly
     with wavelength (~0.28), though both look brown.
   So in RGB, {live_vegetation, artificial_turf, green_paint}, {dry_vegetation, soil} and
   {water, asphalt} overlap. The NIR/visible reflectance ratio (~0.3 water, ~1 turf and asphalt,
   ~1.8 soil, ~2.9 paint, ~3.2 dry vegetation, ~6 living vegetation) splits every RGB group, and
   RGB colour splits every NIR group, so RGB+NIR separates all seven.
   Each scene draws its own reflectance per material (log-normal: a common brightness factor,
   e.g. canopy density or moisture, plus a small per-band factor).
2. Layout. A scene is one *dominant* material (the label) covering most of the ground, mixed
   with 0-2 other materials in soft-edged blobs from thresholded low-frequency noise.
3. Texture and relief. Per material, a texture field modulates albedo, a chroma field varies the
   hue (grass blades yellow at the tips; pigment is uniform), and a height field gives relief.
   These are the *subtle RGB cues*, drawn per scene from overlapping ranges: turf has
   manufacturing rows and little hue variation; paint keeps the grass texture but evens the hue;
   living grass has more relief and hue variation; water has ripples, sky reflection and glints;
   wet asphalt is glossy too; soil has clods and pebbles, dry vegetation long straws.
4. Illumination. Sun direction, intensity and colour temperature per scene; blue, NIR-poor
   skylight; overcast scenes (mostly diffuse light); cast shadows ``S_b`` of buildings (opaque)
   or trees (a canopy passes ~40 % of NIR but little visible light).
   Radiance per band b: ``L_b = rho_b * (E_sun_b * S_b * shade_b + E_sky_b * (0.6 + 0.4 n_z))
   + gloss * E_sky_b``, with Lambertian ``shade = max(n . s, 0)`` from the height field,
   softened by multiple scattering (a bright surface fills its own shadows: ``shade_b =
   (1 - rho_b) * shade + rho_b * mean(shade)``, which is why grass looks flatter in NIR), and
   sun glints on steep water ripples.
5. Cameras. A rig auto-exposure sets one exposure from the RGB scene brightness (partial
   compensation) for both cameras, as a master camera driving a slave does; so the NIR/visible
   ratio survives while absolute brightness does not. RGB: auto white balance (neutralises the
   illuminant up to a few percent of error), vignetting, shot + read noise, sRGB-like gamma,
   8 bit. NIR: its own gain and per-scene drift, stronger vignetting, linear, 8 bit or 12 bit in
   16 (mono16). The NIR camera sits a few pixels off the RGB one (two lenses), and the rig
   drifts over the ground, so each frame is cropped from the scene canvas at its own capture
   time.
6. Timing. RGB at ``rgb_rate_hz`` with exact trigger stamps; NIR at ``nir_rate_hz`` with stamps
   jittered uniformly within ``+-nir_jitter_s`` and frames dropped with ``nir_drop_prob``; the
   bag receive time trails the header stamp by a few milliseconds. ``/scene/label``
   (``std_msgs/String``) is published at each scene change, at the scene's start time.

Everything is deterministic for a seed: scene ``k`` draws from ``default_rng([seed, k])`` and
frame ``i`` of a camera from ``default_rng([seed, camera, i])``, independent of render order.
"""
from __future__ import annotations

import math
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

from mmkd_ros.core.errors import BagError
from mmkd_ros.core.topics import LABEL_TOPIC, NIR_TOPIC, RGB_COMPRESSED_TOPIC, RGB_TOPIC  # noqa: F401 (re-exported)
from mmkd_ros.data.ros_images import array_to_compressed_msg, array_to_image_msg

CLASSES: tuple[str, ...] = ("artificial_turf", "asphalt", "dry_vegetation", "green_paint",
                            "live_vegetation", "soil", "water")
RGB_FRAME_ID = "camera_color_optical_frame"
NIR_FRAME_ID = "camera_nir_optical_frame"

_RGB, _NIR = 0, 1  # camera ids in frame seeds
_BASE_TIME_NS = 1_700_000_000 * 1_000_000_000  # a fixed epoch start keeps bags deterministic


@dataclass(frozen=True)
class Material:
    """Optical properties of one surface; ranges are sampled once per scene."""

    reflectance: tuple[float, float, float, float]  # mean (R, G, B, NIR)
    texture: tuple[float, float]  # albedo texture amplitude (log units)
    chroma: tuple[float, float]  # per-pixel hue variation amplitude
    relief: tuple[float, float]  # height-field amplitude (pixels at 640 px width)
    gloss: tuple[float, float]  # specular sky-reflection weight


MATERIALS: dict[str, Material] = {
    "live_vegetation": Material((0.060, 0.130, 0.050, 0.50), (0.16, 0.32), (0.04, 0.13),
                                (1.3, 2.8), (0.0, 0.01)),
    "artificial_turf": Material((0.062, 0.132, 0.056, 0.08), (0.14, 0.30), (0.0, 0.08),
                                (0.9, 2.2), (0.01, 0.04)),
    "green_paint": Material((0.066, 0.134, 0.058, 0.25), (0.16, 0.32), (0.01, 0.09),
                            (1.1, 2.6), (0.0, 0.03)),
    "water": Material((0.045, 0.055, 0.055, 0.015), (0.06, 0.18), (0.0, 0.04),
                      (0.4, 1.2), (0.02, 0.07)),
    "asphalt": Material((0.070, 0.068, 0.064, 0.080), (0.08, 0.24), (0.0, 0.04),
                        (0.3, 0.8), (0.0, 0.01)),
    "dry_vegetation": Material((0.190, 0.168, 0.092, 0.48), (0.18, 0.34), (0.04, 0.12),
                               (1.0, 2.2), (0.0, 0.01)),
    "soil": Material((0.205, 0.166, 0.112, 0.28), (0.16, 0.32), (0.03, 0.11),
                     (0.9, 2.0), (0.0, 0.01)),
}
assert tuple(sorted(MATERIALS)) == CLASSES


@dataclass(frozen=True)
class SyntheticConfig:
    """What the simulated recording looks like; defaults give the demo bag."""

    seed: int = 0
    duration_s: float = 90.0
    width: int = 640
    height: int = 480
    rgb_rate_hz: float = 15.0
    nir_rate_hz: float = 15.0
    nir_jitter_s: float = 0.020
    nir_drop_prob: float = 0.05
    scene_min_s: float = 1.2
    scene_max_s: float = 2.6
    nir_encoding: str = "mono8"  # mono8 | mono16
    compressed_rgb: bool = False  # CompressedImage jpeg on RGB_COMPRESSED_TOPIC
    jpeg_quality: int = 90
    storage: str = "mcap"  # mcap | sqlite3
    # Share of the scenes whose label is published; the others get an empty label ("": nobody
    # labelled them), spread evenly over the drive (0.25: every 4th scene), as in a field recording.
    label_share: float = 1.0

    def __post_init__(self) -> None:
        if self.nir_encoding not in ("mono8", "mono16"):
            raise ValueError(f"nir_encoding must be mono8 or mono16, got {self.nir_encoding!r}")
        if self.storage not in ("mcap", "sqlite3"):
            raise ValueError(f"storage must be mcap or sqlite3, got {self.storage!r}")
        if self.width < 16 or self.height < 16:
            raise ValueError("width and height must be at least 16 pixels")
        if not 0 < self.scene_min_s <= self.scene_max_s or self.duration_s <= 0:
            raise ValueError("need 0 < scene_min_s <= scene_max_s and duration_s > 0")
        if not 0.0 < self.label_share <= 1.0:
            raise ValueError(f"label_share must be in (0, 1], got {self.label_share}")

    def labelled(self, scene_index: int) -> bool:
        """Whether scene ``scene_index`` gets its label published (``label_share`` of them, evenly spread)."""
        share = self.label_share
        return math.floor((scene_index + 1) * share + 1e-9) > math.floor(scene_index * share + 1e-9)


@dataclass(frozen=True)
class Scene:
    """One stretch of the recording with a dominant material (its label)."""

    index: int
    label: str
    start_ns: int
    end_ns: int


@dataclass(frozen=True)
class FrameEvent:
    """A message of the recording: which topic, header stamp, bag receive time."""

    kind: str  # "rgb" | "nir" | "label"
    stamp_ns: int
    log_ns: int
    index: int  # frame index within its camera (scene index for labels)


@dataclass
class RecordingPlan:
    """Scenes and message times of a recording, before any pixel is rendered."""

    scenes: list[Scene]
    events: list[FrameEvent]  # sorted by log time
    dropped_nir: list[int] = field(default_factory=list)  # nominal NIR frame indices dropped


# --------------------------------------------------------------------------------------------
# Timeline


def plan_recording(config: SyntheticConfig) -> RecordingPlan:
    """Scene boundaries, labels and every message time; cheap and deterministic for the seed.

    Labels cycle through shuffled permutations of :data:`CLASSES` so every class appears about
    equally often and no scene repeats the previous label.
    """
    rng = np.random.default_rng([config.seed, 7])
    end_ns = _BASE_TIME_NS + int(config.duration_s * 1e9)
    scenes: list[Scene] = []
    start, order = _BASE_TIME_NS, []
    while start < end_ns:
        if not order:
            order = list(rng.permutation(len(CLASSES)))
            if scenes and CLASSES[order[0]] == scenes[-1].label:
                order.append(order.pop(0))
        length = int(rng.uniform(config.scene_min_s, config.scene_max_s) * 1e9)
        stop = min(start + length, end_ns)
        scenes.append(Scene(len(scenes), CLASSES[order.pop(0)], start, stop))
        start = stop

    events = [FrameEvent("label", s.start_ns, s.start_ns, s.index) for s in scenes]
    rgb_period = 1e9 / config.rgb_rate_hz
    for i in range(int(config.duration_s * config.rgb_rate_hz)):
        stamp = _BASE_TIME_NS + int(round(i * rgb_period))
        events.append(FrameEvent("rgb", stamp, stamp + int(rng.uniform(2e6, 12e6)), i))
    nir_period = 1e9 / config.nir_rate_hz
    jitter_ns = int(config.nir_jitter_s * 1e9)
    dropped = []
    for i in range(int(config.duration_s * config.nir_rate_hz)):
        stamp = _BASE_TIME_NS + int(round(i * nir_period)) + int(rng.integers(-jitter_ns,
                                                                              jitter_ns + 1))
        latency = int(rng.uniform(2e6, 12e6))
        if rng.random() < config.nir_drop_prob:
            dropped.append(i)
            continue
        events.append(FrameEvent("nir", max(stamp, _BASE_TIME_NS), max(stamp, _BASE_TIME_NS)
                                 + latency, i))
    events.sort(key=lambda e: (e.log_ns, e.kind != "label"))
    return RecordingPlan(scenes, events, dropped)


# --------------------------------------------------------------------------------------------
# Texture fields: float32 [H, W], zero mean, unit standard deviation


def _standardize(x: np.ndarray) -> np.ndarray:
    x = x - x.mean()
    return (x / (x.std() + 1e-6)).astype(np.float32)


def _smooth(rng: np.random.Generator, shape: tuple[int, int], cell: float) -> np.ndarray:
    """Band-limited noise with features about ``cell`` pixels wide (bicubic-upsampled grid)."""
    height, width = shape
    gh, gw = max(2, math.ceil(height / cell) + 2), max(2, math.ceil(width / cell) + 2)
    grid = rng.standard_normal((gh, gw)).astype(np.float32)
    up = cv2.resize(grid, (int(gw * cell), int(gh * cell)), interpolation=cv2.INTER_CUBIC)
    return _standardize(up[:height, :width])


def _fine(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """Grain: white noise blurred by a Gaussian of ``sigma`` pixels."""
    noise = rng.standard_normal(shape).astype(np.float32)
    return _standardize(cv2.GaussianBlur(noise, (0, 0), max(sigma, 0.3)))


def _line_kernel(length: float, angle_deg: float) -> np.ndarray:
    size = max(3, int(length) | 1)
    kernel = np.zeros((size, size), np.float32)
    c, r = size // 2, (size - 1) / 2
    dx, dy = math.cos(math.radians(angle_deg)), math.sin(math.radians(angle_deg))
    for t in np.linspace(-r, r, 2 * size):
        kernel[int(round(c + t * dy)), int(round(c + t * dx))] = 1.0
    return kernel / kernel.sum()


def _strands(rng: np.random.Generator, shape: tuple[int, int], length: float,
             angle_deg: float, spread_deg: float) -> np.ndarray:
    """Grass blades / straws: white noise smeared along lines around ``angle_deg``."""
    total = np.zeros(shape, np.float32)
    for offset in (-spread_deg, 0.0, spread_deg):
        noise = rng.standard_normal(shape).astype(np.float32)
        angle = angle_deg + offset + rng.uniform(-10, 10)
        total += cv2.filter2D(noise, -1, _line_kernel(length, angle))
    return _standardize(total)


def _pebbles(rng: np.random.Generator, shape: tuple[int, int], density: float,
             size: float) -> np.ndarray:
    """Sparse round stones (aggregate in asphalt, gravel in soil)."""
    impulses = (rng.random(shape) < density).astype(np.float32)
    return _standardize(cv2.GaussianBlur(impulses, (0, 0), max(size, 0.3)))


def _rows(shape: tuple[int, int], period: float, angle_deg: float, phase: float) -> np.ndarray:
    """Parallel rows of tufts (artificial turf is stitched in rows)."""
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]].astype(np.float32)
    a = math.radians(angle_deg)
    return (np.sin(2 * np.pi * (xx * math.cos(a) + yy * math.sin(a)) / period + phase)
            * math.sqrt(2)).astype(np.float32)


@dataclass
class _Layers:
    """What one material contributes to a scene canvas."""

    reflectance: np.ndarray  # [H, W, 4] per band
    height: np.ndarray  # [H, W] relief in pixels
    gloss: np.ndarray  # [H, W] specular weight


def _material_layers(name: str, rng: np.random.Generator, shape: tuple[int, int],
                     scale: float) -> _Layers:
    """Per-pixel reflectance, relief and gloss of one material over the canvas.

    ``scale`` = image width / 640 keeps features the same size relative to the frame, so a small
    test bag looks like a downsized demo bag.
    """
    mat = MATERIALS[name]

    def u(lo_hi: tuple[float, float]) -> float:
        """One per-scene draw from a parameter range."""
        return float(rng.uniform(*lo_hi))

    s = scale
    brightness = math.exp(rng.normal(0.0, 0.12))  # canopy density / moisture: all bands
    # Per-band reflectance spread: turbidity varies the hue of water a lot, bitumen is grey.
    tint = {"water": 0.12, "asphalt": 0.04}.get(name, 0.07)
    rho = np.array(mat.reflectance, np.float32) * brightness * np.exp(
        rng.normal(0.0, tint, 4)).astype(np.float32)  # [4]
    blade_angle = rng.uniform(60, 120)  # blades stand roughly upright in the image
    gloss = np.zeros(shape, np.float32)
    if name in ("live_vegetation", "green_paint", "artificial_turf", "dry_vegetation"):
        long = {"dry_vegetation": 20.0, "artificial_turf": 12.0}.get(name, 15.0)
        blades = _strands(rng, shape, long * s * rng.uniform(0.7, 1.3), blade_angle,
                          35 if name != "artificial_turf" else 20)
        clumps = _smooth(rng, shape, 40 * s)
        texture = 0.8 * blades + 0.5 * clumps
        if name == "artificial_turf":
            texture += u((0.0, 0.6)) * _rows(shape, rng.uniform(30, 50) * s, rng.uniform(0, 180),
                                             rng.uniform(0, 2 * np.pi))
        if name == "dry_vegetation":
            texture += u((0.0, 0.8)) * _smooth(rng, shape, 12 * s)  # bare soil between straws
        hue_field = blades  # blade tips dry out: hue follows the blades
        height = blades + 0.5 * clumps
    elif name == "soil":
        clods = _smooth(rng, shape, 12 * s)
        texture = 0.7 * clods + 0.4 * _smooth(rng, shape, 50 * s) + 0.4 * _pebbles(
            rng, shape, 0.004, 1.5 * s)
        texture += u((0.0, 0.8)) * _strands(rng, shape, 18 * s, blade_angle, 60)  # residue
        hue_field = _smooth(rng, shape, 60 * s)  # moisture patches
        height = clods
    elif name == "asphalt":
        grain = _fine(rng, shape, 0.8 * s)
        texture = 0.8 * grain + 0.3 * _smooth(rng, shape, 60 * s) + 0.4 * _pebbles(
            rng, shape, 0.01, 0.8 * s)
        hue_field = grain
        height = grain
        if rng.random() < 0.35:  # wet asphalt: darker and glossy, still brighter in NIR
            rho *= rng.uniform(0.6, 0.8)
            gloss += rng.uniform(0.02, 0.06)
    else:  # water
        angle = rng.uniform(0, 180)
        ripples = _strands(rng, shape, 40 * s, angle, 15) + 0.5 * _smooth(rng, shape, 25 * s)
        texture = _smooth(rng, shape, 30 * s)  # turbidity
        hue_field = texture
        height = _standardize(ripples)
    texture = _standardize(texture)
    amp = u(mat.texture)
    chroma = u(mat.chroma)
    # Hue variation pushes R and G against B (yellowing); NIR follows the albedo texture only.
    hue_gain = np.array([1.0, 0.4, -0.6, 0.0], np.float32) * chroma  # [4]
    reflectance = rho[None, None, :] * np.exp(
        amp * texture[:, :, None] + hue_gain[None, None, :] * hue_field[:, :, None])  # [H, W, 4]
    gloss += u(mat.gloss)
    # Physical reflectance stays below 1 (texture is log-normal, so clip its far tail).
    reflectance = np.clip(reflectance, 0.0, 0.95)
    return _Layers(reflectance.astype(np.float32), (u(mat.relief) * s * height).astype(
        np.float32), gloss)


# --------------------------------------------------------------------------------------------
# Scenes and cameras


@dataclass
class _SceneCanvas:
    """A rendered scene: radiance over a canvas larger than the frame, plus camera settings."""

    radiance_rgb: np.ndarray  # [Hc, Wc, 3] linear radiance R, G, B (contiguous: fast crops)
    radiance_nir: np.ndarray  # [Hc, Wc] linear NIR radiance
    origin: tuple[float, float]  # (y, x) of the RGB crop at the scene start
    velocity: tuple[float, float]  # (vy, vx) pixels per second of rig drift
    start_ns: int
    exposure: float  # rig auto-exposure, shared by both cameras
    white_balance: np.ndarray  # [3] auto white balance RGB gains (with an error)
    nir_gain: float  # NIR gain times per-scene drift
    noise_rgb: np.ndarray  # [K, H, W, 3] standard normal sensor noise (reused across frames)
    noise_nir: np.ndarray  # [K, H, W]


class SceneRenderer:
    """Renders scene canvases and camera frames of a :class:`SyntheticConfig` recording."""

    NIR_OFFSET = (3.0, -4.0)  # (y, x) pixels at 640 px: the NIR lens sits beside the RGB lens

    def __init__(self, config: SyntheticConfig) -> None:
        self.config = config
        self.scale = config.width / 640.0
        self.margin = int(math.ceil(70 * self.scale)) + 8
        height, width = config.height, config.width
        yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
        radius2 = ((yy - height / 2) ** 2 + (xx - width / 2) ** 2) / (
            (height / 2) ** 2 + (width / 2) ** 2)
        self.vignette_rgb = (1.0 - 0.25 * radius2)[:, :, None]  # [H, W, 1]
        self.vignette_nir = (1.0 - 0.35 * radius2)  # [H, W]
        self.gamma_lut = np.round(255.0 * np.power(np.linspace(0, 1, 4096), 1 / 2.2)).astype(
            np.uint8)  # linear 12 bit -> display 8 bit
        rig = np.random.default_rng([config.seed, 3])
        self.rig_nir_gain = float(rig.uniform(0.6, 0.7))

    def render_scene(self, scene: Scene, mixture: bool = True) -> _SceneCanvas:
        """Radiance canvas of a scene; ``mixture=False`` renders the dominant material alone."""
        cfg, s = self.config, self.scale
        rng = np.random.default_rng([cfg.seed, scene.index])
        shape = (cfg.height + 2 * self.margin, cfg.width + 2 * self.margin)

        # Layout: the dominant material with 0-2 others in soft blobs.
        names = [scene.label]
        weights = [np.ones(shape, np.float32)]
        n_others = int(rng.choice([0, 0, 1, 1, 1, 2])) if mixture else 0
        others = [c for c in CLASSES if c != scene.label]
        for name in rng.choice(others, size=n_others, replace=False):
            field_ = _smooth(rng, shape, rng.uniform(80, 160) * s)
            cover = rng.uniform(0.03, 0.09)
            blob = (field_ > np.quantile(field_[::8, ::8], 1 - cover)).astype(np.float32)
            blob = cv2.GaussianBlur(blob, (0, 0), 3 * s + 0.5)
            weights[0] -= blob
            names.append(str(name))
            weights.append(blob)
        weights[0] = np.clip(weights[0], 0.0, 1.0)
        total = np.sum(weights, axis=0)
        reflectance = np.zeros(shape + (4,), np.float32)  # [Hc, Wc, 4]
        height = np.zeros(shape, np.float32)
        gloss = np.zeros(shape, np.float32)
        for name, weight in zip(names, weights):
            layers = _material_layers(name, rng, shape, s)
            w = weight / total
            reflectance += layers.reflectance * w[:, :, None]
            height += layers.height * w
            gloss += layers.gloss * w

        radiance, illuminant = self._illuminate(rng, reflectance, height, gloss,
                                                scene.label == "water")
        # Rig auto-exposure from the RGB brightness, compensating only partly (exponent < 1).
        luminance = float(radiance[::8, ::8, :3].mean())
        exposure = float(np.clip((0.18 / max(luminance, 1e-4)) ** 0.8, 0.3, 8.0))
        speed = rng.uniform(5, 15) * s
        heading = rng.uniform(0, 2 * np.pi)
        velocity = (speed * math.sin(heading), speed * math.cos(heading))
        duration = (scene.end_ns - scene.start_ns) / 1e9
        # Start so that the drift over the scene stays inside the canvas.
        origin = tuple(self.margin - velocity[k] * duration / 2 for k in range(2))
        return _SceneCanvas(
            radiance_rgb=np.ascontiguousarray(radiance[:, :, :3]),
            radiance_nir=np.ascontiguousarray(radiance[:, :, 3]),
            origin=origin,
            velocity=velocity,
            start_ns=scene.start_ns,
            exposure=exposure,
            white_balance=self._white_balance(rng, illuminant),
            nir_gain=self.rig_nir_gain * float(rng.uniform(0.95, 1.05)),
            noise_rgb=rng.standard_normal((3, cfg.height, cfg.width, 3), dtype=np.float32),
            noise_nir=rng.standard_normal((3, cfg.height, cfg.width), dtype=np.float32),
        )

    def _illuminate(self, rng: np.random.Generator, reflectance: np.ndarray, height: np.ndarray,
                    gloss: np.ndarray, water: bool) -> tuple[np.ndarray, np.ndarray]:
        """Sun + sky + shadows + relief shading -> linear radiance ``[Hc, Wc, 4]``.

        Also returns the scene's mean irradiance colour ``[4]`` (what auto white balance sees).
        """
        shape = height.shape
        elevation = math.radians(rng.uniform(25, 70))
        azimuth = rng.uniform(0, 2 * np.pi)
        sun_dir = np.array([math.cos(elevation) * math.cos(azimuth),
                            math.cos(elevation) * math.sin(azimuth), math.sin(elevation)],
                           np.float32)
        intensity = rng.uniform(0.8, 1.2)
        warm = rng.uniform(-1, 1)  # colour temperature: low sun is redder and richer in NIR
        sun = intensity * np.array([1 + 0.12 * warm, 1.0, 1 - 0.12 * warm, 0.95 + 0.08 * warm],
                                   np.float32)  # [4]
        if rng.random() < 0.2:  # overcast: weak direct sun, bright neutral-ish sky
            sky = intensity * rng.uniform(0.5, 0.8) * np.array([0.95, 1.0, 1.05, 0.8], np.float32)
            sun = sun * 0.15
        else:  # clear: blue skylight with little NIR
            sky = intensity * rng.uniform(0.15, 0.3) * np.array([0.75, 0.9, 1.15, 0.45],
                                                                 np.float32)
        # Relief shading (Lambert), from the height field's normals.
        gy = cv2.Sobel(height, cv2.CV_32F, 0, 1, ksize=3) / 8.0
        gx = cv2.Sobel(height, cv2.CV_32F, 1, 0, ksize=3) / 8.0
        norm = np.sqrt(gx * gx + gy * gy + 1.0)
        cos_sun = np.clip((-gx * sun_dir[0] - gy * sun_dir[1] + sun_dir[2]) / norm, 0.0, 1.0)
        sky_view = 0.6 + 0.4 / norm  # n_z: steep facets see less sky
        # Multiple scattering fills shadows in proportion to reflectance (per band).
        mean_cos = float(cos_sun.mean())
        shade = ((1.0 - reflectance) * cos_sun[:, :, None]
                 + reflectance * mean_cos)  # [Hc, Wc, 4]
        # Cast shadows block the direct sun. A tree canopy transmits NIR (leaves absorb visible
        # light but pass ~40 % of NIR), a building transmits nothing.
        shadow = np.ones(shape + (4,), np.float32)  # [Hc, Wc, 4] direct-sun transmittance
        if rng.random() < 0.3:
            field_ = _smooth(rng, shape, 150 * self.scale)
            cover = rng.uniform(0.1, 0.25)
            mask = (field_ > np.quantile(field_[::8, ::8], 1 - cover)).astype(np.float32)
            mask = cv2.GaussianBlur(mask, (0, 0), 4 * self.scale + 0.5)
            tree = rng.random() < 0.6
            transmit = np.array([0.05, 0.07, 0.04, 0.40] if tree else [0.02] * 4, np.float32)
            shadow -= mask[:, :, None] * (1.0 - transmit)[None, None, :]
        radiance = reflectance * (sun[None, None, :] * shadow * shade
                                  + sky[None, None, :] * sky_view[:, :, None])
        radiance += gloss[:, :, None] * sky[None, None, :] * 2.0  # specular skylight
        if water and sun[1] > 0.5 and rng.random() < 0.5:
            # Sun glints where ripples tilt towards the mirror direction (sunny, rippled water).
            glint = np.clip((cos_sun - np.quantile(cos_sun[::4, ::4], 0.995)) * 40.0, 0.0, 1.0)
            radiance += glint[:, :, None] * shadow * sun[None, None, :] * 0.5
        illuminant = sun * float(cos_sun.mean()) * shadow.mean(axis=(0, 1)) + sky * 0.9  # [4]
        return radiance.astype(np.float32), illuminant

    @staticmethod
    def _white_balance(rng: np.random.Generator, illuminant: np.ndarray) -> np.ndarray:
        """Auto white balance: RGB gains that neutralise the illuminant (warm sun, blue sky),
        up to a few percent of per-scene error."""
        gains = illuminant[1] / illuminant[:3]  # [3] green stays, red/blue are matched to it
        return (gains * np.exp(rng.normal(0.0, 0.03, 3))).astype(np.float32)

    def _crop(self, canvas: _SceneCanvas, stamp_ns: int,
              offset: tuple[float, float]) -> tuple[int, int]:
        t = (stamp_ns - canvas.start_ns) / 1e9
        limit_y = canvas.radiance_nir.shape[0] - self.config.height
        limit_x = canvas.radiance_nir.shape[1] - self.config.width
        y = int(round(canvas.origin[0] + canvas.velocity[0] * t + offset[0] * self.scale))
        x = int(round(canvas.origin[1] + canvas.velocity[1] * t + offset[1] * self.scale))
        return int(np.clip(y, 0, limit_y)), int(np.clip(x, 0, limit_x))

    def rgb_frame(self, canvas: _SceneCanvas, stamp_ns: int, index: int) -> np.ndarray:
        """RGB camera frame ``[H, W, 3]`` uint8 captured at ``stamp_ns``."""
        cfg = self.config
        rng = np.random.default_rng([cfg.seed, _RGB, index])
        y, x = self._crop(canvas, stamp_ns, (0.0, 0.0))
        view = canvas.radiance_rgb[y:y + cfg.height, x:x + cfg.width]  # [H, W, 3]
        gain = canvas.exposure * rng.uniform(0.99, 1.01)
        signal = view * (self.vignette_rgb * (gain * canvas.white_balance)[None, None, :])
        noise = canvas.noise_rgb[int(rng.integers(len(canvas.noise_rgb)))]
        # Poisson-Gaussian sensor noise: variance = shot * signal + read^2 (linear units).
        signal += np.sqrt(np.maximum(signal * 2e-4 + 1e-6, 0.0)) * noise
        codes = np.clip(signal * 4095.0, 0, 4095).astype(np.uint16)
        return np.take(self.gamma_lut, codes)  # np.take: ~5x faster than lut[codes]

    def nir_frame(self, canvas: _SceneCanvas, stamp_ns: int, index: int) -> np.ndarray:
        """NIR camera frame ``[H, W, 1]``: uint8 (mono8) or 12 bit in uint16 (mono16)."""
        cfg = self.config
        rng = np.random.default_rng([cfg.seed, _NIR, index])
        y, x = self._crop(canvas, stamp_ns, self.NIR_OFFSET)
        view = canvas.radiance_nir[y:y + cfg.height, x:x + cfg.width]  # [H, W]
        gain = canvas.exposure * canvas.nir_gain * rng.uniform(0.99, 1.01)
        signal = view * (self.vignette_nir * gain)
        noise = canvas.noise_nir[int(rng.integers(len(canvas.noise_nir)))]
        signal += np.sqrt(np.maximum(signal * 3e-4 + 4e-6, 0.0)) * noise
        if cfg.nir_encoding == "mono16":
            codes = np.clip(signal * 4095.0, 0, 4095).astype(np.uint16) << 4
        else:
            codes = np.clip(signal * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return codes[:, :, None]


def render_pair(label: str, seed: int = 0, height: int = 480, width: int = 640,
                mixture: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """One RGB ``[H, W, 3]`` uint8 and NIR ``[H, W, 1]`` frame of a random scene of ``label``.

    For tests and benchmarks that need labelled images without writing a bag; each ``seed`` is a
    different scene (material draw, lighting, layout).
    """
    if label not in MATERIALS:
        raise ValueError(f"unknown class {label!r}; classes: {', '.join(CLASSES)}")
    config = SyntheticConfig(seed=seed, width=width, height=height)
    renderer = SceneRenderer(config)
    # The class index as scene index: scenes of different classes draw different layouts.
    scene = Scene(CLASSES.index(label), label, _BASE_TIME_NS, _BASE_TIME_NS + 1_000_000_000)
    canvas = renderer.render_scene(scene, mixture=mixture)
    return renderer.rgb_frame(canvas, scene.start_ns, 0), renderer.nir_frame(
        canvas, scene.start_ns, 0)


def _scene_of(plan: RecordingPlan) -> dict[int, int]:
    """Scene index of each camera event (by its capture stamp), keyed by the event's position in ``plan.events``."""
    starts = np.array([s.start_ns for s in plan.scenes], np.int64)
    return {i: int(np.searchsorted(starts, e.stamp_ns, side="right") - 1)
            for i, e in enumerate(plan.events) if e.kind != "label"}


_WORKER_RENDERER: dict[SyntheticConfig, "SceneRenderer"] = {}


def _scene_frames(renderer: "SceneRenderer", scene: Scene, events: list[FrameEvent]) -> list[np.ndarray]:
    """The camera frames of one scene, in the order of its events."""
    canvas = renderer.render_scene(scene)
    return [renderer.rgb_frame(canvas, e.stamp_ns, e.index) if e.kind == "rgb"
            else renderer.nir_frame(canvas, e.stamp_ns, e.index) for e in events]


def _scene_frames_in_worker(task: tuple[SyntheticConfig, Scene, list[FrameEvent]]) -> list[np.ndarray]:
    """:func:`_scene_frames` in a render worker process (one renderer per config and process)."""
    config, scene, events = task
    renderer = _WORKER_RENDERER.get(config) or _WORKER_RENDERER.setdefault(config, SceneRenderer(config))
    return _scene_frames(renderer, scene, events)


def iter_messages(config: SyntheticConfig, plan: RecordingPlan | None = None,
                  workers: int = 1) -> Iterator[tuple[FrameEvent, object]]:
    """Yield ``(event, payload)`` in bag order: RGB/NIR arrays or the label string.

    Renders each scene once and crops every frame from it at the frame's own capture time (a
    jittered NIR frame can still belong to the previous scene after the next one started).
    ``workers > 1`` renders scenes in that many processes, in order; the frames are the same,
    since every draw is seeded by scene and frame index, not by render order.
    """
    plan = plan or plan_recording(config)
    scene_of = _scene_of(plan)
    by_scene: dict[int, list[FrameEvent]] = {}
    for i, k in scene_of.items():
        by_scene.setdefault(k, []).append(plan.events[i])
    if workers > 1:
        import multiprocessing  # deferred: only a parallel render needs it

        pool = multiprocessing.get_context("spawn").Pool(workers)  # spawn: the caller may hold torch/DDS threads
        rendered = zip(by_scene, pool.imap(_scene_frames_in_worker, ((config, plan.scenes[k], events)
                                                                  for k, events in by_scene.items()), chunksize=4))
    else:
        pool = None
        renderer = SceneRenderer(config)
        rendered = ((k, _scene_frames(renderer, plan.scenes[k], events)) for k, events in by_scene.items())
    frames: dict[int, Iterator[np.ndarray]] = {}  # scene -> its frames not yet yielded (at most two scenes)
    try:
        for i, event in enumerate(plan.events):
            if event.kind == "label":
                yield event, plan.scenes[event.index].label if config.labelled(event.index) else ""
                continue
            k = scene_of[i]
            while k not in frames:
                done, payloads = next(rendered)
                frames = {j: f for j, f in frames.items() if j >= done - 1}
                frames[done] = iter(payloads)
            yield event, next(frames[k])
    finally:
        if pool is not None:
            pool.terminate()


@dataclass(frozen=True)
class BagSummary:
    """What :func:`write_bag` wrote."""

    path: Path
    scenes: list[Scene]
    counts: dict[str, int]  # messages per topic
    dropped_nir: int


def write_bag(out: str | Path, config: SyntheticConfig = SyntheticConfig(),
              progress: bool = False, workers: int = 1) -> BagSummary:
    """Write the simulated recording as a rosbag2 (mcap or sqlite3) at ``out`` (a new folder).

    ``workers``: processes that render scenes (:func:`iter_messages`); the bag is the same for any number.

    Messages use ROS 2 Jazzy type definitions (``sensor_msgs/Image``, ``CompressedImage`` and
    ``std_msgs/String`` are identical in Humble and Jazzy); bag format version 9.
    """
    out = Path(out)
    if out.exists():
        raise BagError(f"{out} exists already: choose a new --out path or delete it first")
    # Written into a temporary folder beside ``out`` and renamed when complete: a failed or
    # interrupted run leaves no half bag at ``out`` for a later run to take as finished.
    out.parent.mkdir(parents=True, exist_ok=True)
    # (The bag keeps its own name inside the staging folder: rosbag2 names its files after it.)
    staging = out.parent / f".{out.name}.{os.getpid()}-writing"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        summary = _write_bag(staging / out.name, config, progress, workers)
        (staging / out.name).rename(out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return BagSummary(out, summary.scenes, summary.counts, summary.dropped_nir)


def _write_bag(out: Path, config: SyntheticConfig, progress: bool, workers: int) -> BagSummary:
    """:func:`write_bag` into ``out`` as it is (no staging)."""
    typestore = get_typestore(Stores.ROS2_JAZZY)
    plan = plan_recording(config)
    plugin = StoragePlugin.MCAP if config.storage == "mcap" else StoragePlugin.SQLITE3
    image_type = "sensor_msgs/msg/Image"
    rgb_topic, rgb_type = (RGB_COMPRESSED_TOPIC, "sensor_msgs/msg/CompressedImage") \
        if config.compressed_rgb else (RGB_TOPIC, image_type)
    string_cls = typestore.types["std_msgs/msg/String"]
    counts = {rgb_topic: 0, NIR_TOPIC: 0, LABEL_TOPIC: 0}
    messages = iter_messages(config, plan, workers)
    if progress:
        from tqdm import tqdm

        messages = tqdm(messages, total=len(plan.events), desc="writing bag", unit="msg")
    with Writer(out, version=9, storage_plugin=plugin) as writer:
        connections = {
            "rgb": (writer.add_connection(rgb_topic, rgb_type, typestore=typestore), rgb_type),
            "nir": (writer.add_connection(NIR_TOPIC, image_type, typestore=typestore),
                    image_type),
            "label": (writer.add_connection(LABEL_TOPIC, "std_msgs/msg/String",
                                            typestore=typestore), "std_msgs/msg/String"),
        }
        for event, payload in messages:
            if event.kind == "label":
                msg = string_cls(data=payload)
                topic = LABEL_TOPIC
            elif event.kind == "rgb" and config.compressed_rgb:
                msg = array_to_compressed_msg(payload, "jpeg", event.stamp_ns, RGB_FRAME_ID,
                                              typestore, config.jpeg_quality)
                topic = rgb_topic
            elif event.kind == "rgb":
                msg = array_to_image_msg(payload, "rgb8", event.stamp_ns, RGB_FRAME_ID,
                                         typestore)
                topic = rgb_topic
            else:
                msg = array_to_image_msg(payload, config.nir_encoding, event.stamp_ns,
                                         NIR_FRAME_ID, typestore)
                topic = NIR_TOPIC
            connection, msgtype = connections[event.kind]
            writer.write(connection, event.log_ns, typestore.serialize_cdr(msg, msgtype))
            counts[topic] += 1
    return BagSummary(out, plan.scenes, counts, len(plan.dropped_nir))
