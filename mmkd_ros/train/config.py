"""Training configuration: typed frozen dataclasses; defaults, then a YAML file, then ``a.b=value``.

Unknown keys, values of the wrong type or range, and settings of an objective term that the
chosen method does not use are :class:`~mmkd_ros.core.errors.ConfigError` one-liners (a typo such
as ``distill.w_adb=0.5``, or ``distill.w_kd=2`` under ``method=adv``, must not silently train
with the default). The resolved config is saved with every run and checkpoint (``to_dict``), so a
result can be reproduced.

:data:`METHODS` is the one table of distillation methods: each is a row of objective terms
(:mod:`mmkd_ros.train.objectives` builds them from it).
"""
from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Sequence
from typing import Any, Literal

import yaml

from mmkd_ros.core.atomic import write_atomic
from mmkd_ros.core.errors import ConfigError

#: Distillation methods: the objective terms of the student's loss, all at the same budget. Terms
#: (one class each in mmkd_ros/train/objectives.py):
#:   ce        cross-entropy on the labelled pairs (every method; alone it is the RGB-only baseline)
#:   kd        Hinton KD on the teacher's logits
#:   feat      FitNets: MSE between the projected student feature and the teacher's raw fused feature
#:   feat_std  per-sample regression in standardised teacher units, predictability-weighted (focus.py)
#:   adv       discriminator on raw fused features (the seed's method)
#:   adv_std   discriminator on standardised, predictability-weighted features
#:   adv_task  discriminator with a task (Garcia et al. TPAMI 2019): 2K-way, class x teacher/student
#:   adv_task_std  the same on standardised, predictability-weighted features
#:   hall      hallucination stream (Hoffman et al. CVPR 2016): the student's mid-level map, through a
#:             1x1 adapter, regresses the teacher's NIR-branch map per sample and location
METHODS: dict[str, tuple[str, ...]] = {
    "ce": ("ce",),
    "kd": ("ce", "kd"),
    "feat_l2": ("ce", "feat"),
    "adv": ("ce", "adv"),
    "adv+kd": ("ce", "adv", "kd"),
    "adv+kd+feat": ("ce", "adv_std", "kd", "feat_std"),
    "adv_task": ("ce", "adv_task"),
    "adv_task+kd+feat": ("ce", "adv_task_std", "kd", "feat_std"),
    "kd+hall": ("ce", "kd", "hall"),
    "adv+kd+feat+hall": ("ce", "adv_std", "kd", "feat_std", "hall"),
}
_ADV_FIELDS = ("w_adv", "gan_loss", "d_steps", "lr_disc", "disc_hidden", "disc_layers", "disc_spectral_norm",
               "disc_condition", "gp", "gp_weight", "adv_warmup_epochs", "projector_hidden")
_FOCUS_FIELDS = ("focus_floor", "focus_momentum", "focus_start")
# The task discriminator's 2K-way cross-entropy replaces the GAN loss and its penalties, and it
# needs no condition: the class it must name is its target.
_ADV_TASK_FIELDS = tuple(f for f in _ADV_FIELDS if f not in ("gan_loss", "gp", "gp_weight", "disc_condition"))
# ce_start (the teacher's terms alone first) is read by the ce term, but means something only
# beside a teacher term: listed under those, so ``ce`` alone refuses it and a study's ce baseline
# goes back to labels from the start.
_TEACHER_FIELDS = ("ce_start",)
#: The DistillConfig fields that only some terms read; a method without those terms refuses them.
TERM_FIELDS: dict[str, tuple[str, ...]] = {
    "ce": (),
    "kd": ("w_kd", "kd_temperature", "kd_filter", *_TEACHER_FIELDS),
    "feat": ("w_feat", "projector_hidden", *_TEACHER_FIELDS),
    "feat_std": ("w_feat", "projector_hidden", *_FOCUS_FIELDS, *_TEACHER_FIELDS),
    "adv": (*_ADV_FIELDS, *_TEACHER_FIELDS),
    "adv_std": (*_ADV_FIELDS, *_FOCUS_FIELDS, *_TEACHER_FIELDS),
    "adv_task": (*_ADV_TASK_FIELDS, *_TEACHER_FIELDS),
    "adv_task_std": (*_ADV_TASK_FIELDS, *_FOCUS_FIELDS, *_TEACHER_FIELDS),
    "hall": ("w_hall", *_TEACHER_FIELDS),
}


@dataclass(frozen=True)
class DataConfig:
    """How pairs are loaded, split and augmented."""

    input_size: tuple[int, int] = (96, 96)  # (h, w) the models see
    batch_size: int = 32
    num_workers: int = 0  # images are cached in memory: workers rarely pay off on 2 cores
    augment: bool = True
    class_balanced: bool = False  # sample each class equally often (WeightedRandomSampler)
    # Distillation also learns from training pairs without a label (teacher terms only, no CE);
    # false drops them. The teacher and the ``ce`` baseline never see them (nothing to learn).
    unlabelled: bool = True
    # The most of the training draws that pairs without a label may take when they are most of the
    # data (a robot's drive): the rest go to labelled pairs, which alone carry the cross-entropy.
    max_unlabelled_share: float = 0.5
    # Distillation raises that cap to this share where the teacher is as sure of the unlabelled
    # pairs as of validation pairs (mmkd_ros.train.data.unlabelled_cap); equal to
    # max_unlabelled_share: no rule.
    trusted_unlabelled_share: float = 0.75
    val_fraction: float = 0.15  # used when the manifest has no split column
    test_fraction: float = 0.15

    def __post_init__(self) -> None:
        _check_integers("data", self, batch_size=1, num_workers=0)
        if min(self.input_size) < 8:
            raise ConfigError(f"data.input_size={list(self.input_size)} is too small; use at least [8, 8]")
        _check_numbers("data", self, unit=("val_fraction", "test_fraction", "max_unlabelled_share",
                                           "trusted_unlabelled_share"))
        if self.trusted_unlabelled_share < self.max_unlabelled_share:
            raise ConfigError(f"data.trusted_unlabelled_share={self.trusted_unlabelled_share} is below "
                              f"data.max_unlabelled_share={self.max_unlabelled_share}; set it at or above "
                              "(equal: unlabelled pairs always capped at data.max_unlabelled_share)")
        if self.max_unlabelled_share == 0:
            raise ConfigError("data.max_unlabelled_share=0 would never draw a pair without a label; to train "
                              "on labelled pairs only set data.unlabelled=false, else use a share in (0, 1)")
        if self.val_fraction + self.test_fraction >= 1.0:
            raise ConfigError(f"data.val_fraction={self.val_fraction} + data.test_fraction={self.test_fraction} "
                              "leave no training pairs; their sum must be < 1")


@dataclass(frozen=True)
class TeacherConfig:
    """The RGB+NIR teacher and its supervised recipe."""

    arch: str = "teacher_resnet18_mid"
    width: float = 0.5
    fuse_at: int = 2
    dropout: float = 0.0
    # Modality dropout (Neverova et al. 2015), toward a teacher a student can copy (the modality
    # focusing hypothesis, Xue et al. ICLR 2023): the share of training pairs whose NIR-branch map
    # is zeroed before fusion, so the fused feature learns to carry the class from RGB as well.
    # Training only; the teacher always sees NIR when it teaches or runs. 0: off.
    nir_dropout: float = 0.0
    epochs: int = 8
    lr: float = 2e-3
    weight_decay: float = 0.05
    warmup_epochs: float = 0.5
    label_smoothing: float = 0.1

    def __post_init__(self) -> None:
        _check_recipe("teacher", self)
        _check_numbers("teacher", self, positive=("width",), unit=("dropout", "nir_dropout"))
        if self.fuse_at not in (1, 2, 3):
            raise ConfigError(f"teacher.fuse_at={self.fuse_at!r} is out of range; use 1, 2 or 3 (the stage after "
                              "which RGB and NIR are concatenated)")


@dataclass(frozen=True)
class StudentConfig:
    """The RGB-only student."""

    arch: str = "student_mobilenetv3_small"
    width: float = 0.5

    def __post_init__(self) -> None:
        _check_numbers("student", self, positive=("width",))


@dataclass(frozen=True)
class DistillConfig:
    """Distillation recipe: ``L = w_ce*L_CE + w_adv*L_GAN (+ w_kd*L_KD + w_feat*L_feat)``, terms per :data:`METHODS`."""

    # adv+kd+feat: at or above the seed's adv on the synthetic bag, CWFID and Houston (BENCHMARKS.md)
    method: str = "adv+kd+feat"  # a key of METHODS
    epochs: int = 10
    lr: float = 3e-3
    weight_decay: float = 0.01
    warmup_epochs: float = 0.5
    label_smoothing: float = 0.0
    w_ce: float = 1.0
    # Supervision transfer (Gupta et al. CVPR 2016): share of the schedule (0 to 1) trained with the
    # teacher's terms alone, on every paired frame, before cross-entropy joins; 0: labels from the start.
    # 0.5 is the default: ahead of 0 on Houston (+2.9 macro-F1, 5 of 5 seeds), level on the demo
    # drives and on CWFID (BENCHMARKS.md, "Method variants at one budget").
    ce_start: float = 0.5
    w_adv: float = 0.5
    w_kd: float = 1.0
    w_feat: float = 1.0
    w_hall: float = 1.0  # hallucination stream: weight of the NIR-map regression (methods *+hall)
    # 2 rather than Hinton's usual 4, chosen on validation (BENCHMARKS.md, "Method variants at one
    # budget (3)" and "The KD temperature chosen on validation"): the default +2.0 macro-F1 on Houston
    # (5 of 5 seeds), +0.9 on CWFID with every label, level with a quarter of them and on the demo drives.
    kd_temperature: float = 2.0
    # C2KD's on-the-fly selection (Huo et al. CVPR 2024): "rank" distils logits only on pairs whose
    # student and teacher class rankings agree (Kendall's tau > 0, measured each step); "none": all.
    kd_filter: Literal["none", "rank"] = "none"
    gan_loss: Literal["nsgan", "lsgan", "hinge"] = "nsgan"
    d_steps: int = 1  # discriminator updates per student update
    lr_disc: float = 5e-4
    disc_hidden: int = 256
    disc_layers: int = 2
    disc_spectral_norm: bool = True
    # Conditional D (Mirza & Osindero, 2014): it also sees the teacher's class probabilities, so it
    # judges per sample "is this the teacher's feature for this scene", not only the feature marginal;
    # unconditional matching let students fool D with class-agnostic features (worse than ce).
    disc_condition: Literal["none", "teacher_probs"] = "teacher_probs"
    gp: Literal["none", "r1", "wgan_gp"] = "none"
    gp_weight: float = 1.0
    projector_hidden: int = 0  # 0: linear projector D_s -> D_t
    # The adversarial weight ramps linearly from 0 to w_adv over this many epochs (CE and the other
    # terms first); 0: full weight from the first step, as the seed's method.
    adv_warmup_epochs: float = 0.0
    # adv+kd+feat (mmkd_ros/train/focus.py): D and a per-sample regression on standardised teacher
    # features, each dimension weighted by floor + (1 - floor) * (share of it the student predicts).
    # 1.0 switches the weighting off: not separable from on over 5 Houston seeds (BENCHMARKS.md).
    focus_floor: float = 0.1
    focus_momentum: float = 0.99
    # Share of the schedule (0 to 1) before the weighting starts: every dimension weighs 1 until
    # then, so the weights are measured on a student that has learnt what it can, not on one that
    # has just begun; 0: from the first step. A share, so one value means the same on any budget.
    focus_start: float = 0.0
    # Mixed pairs (function matching, Beyer et al. CVPR 2022): each batch is blended with a shuffled
    # copy of itself, RGB and NIR with the same weight, so the frozen teacher labels images no drive
    # recorded and the student matches the teacher's function between the frames it has; CE takes
    # both labels by their weights (Zhang et al. ICLR 2018). Weight ~ Beta(a, a); 0: off.
    mixup_alpha: float = 0.0
    mix: Literal["mixup", "cutmix"] = "mixup"

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ConfigError(f"distill.method={self.method!r} is not allowed; choose one of {', '.join(METHODS)}")
        _check_recipe("distill", self)
        _check_numbers("distill", self, positive=("lr_disc", "kd_temperature"),
                       non_negative=("w_ce", "w_adv", "w_kd", "w_feat", "w_hall", "gp_weight", "adv_warmup_epochs", "mixup_alpha"),
                       unit=("focus_momentum", "focus_start", "ce_start"))
        _check_integers("distill", self, d_steps=1, disc_hidden=1, disc_layers=1, projector_hidden=0)
        if not (math.isfinite(self.focus_floor) and 0.0 < self.focus_floor <= 1.0):
            # At 0 every dimension starts with weight 0 (the student predicts nothing yet), so the
            # feature and adversarial terms would never start.
            raise ConfigError(f"distill.focus_floor={self.focus_floor!r} is out of range; use a number in (0, 1] "
                              "(1: no focusing; at 0 the feature terms never start)")
        if self.mixup_alpha == 0 and self.mix != _MIX_DEFAULT:
            raise ConfigError(f"distill.mix={self.mix!r} has no effect while distill.mixup_alpha=0 (mixed pairs "
                              "off); set distill.mixup_alpha > 0 (e.g. 1.0) or drop distill.mix")
        used = {name for term in METHODS[self.method] for name in TERM_FIELDS[term]}
        for name in dict.fromkeys(n for fields in TERM_FIELDS.values() for n in fields):
            if name not in used and getattr(self, name) != _DEFAULTS[name]:
                raise ConfigError(
                    f"distill.{name}={getattr(self, name)!r} has no effect under distill.method={self.method} "
                    f"(terms {'+'.join(METHODS[self.method])}); drop it or choose a method that uses it")


_DEFAULTS = {f.name: f.default for f in dataclasses.fields(DistillConfig)}
_MIX_DEFAULT = _DEFAULTS["mix"]


def _check_integers(section: str, values: Any, **minimum: int) -> None:
    """Each named integer field is at least its ``minimum`` (e.g. ``epochs=1``)."""
    for name, low in minimum.items():
        value = getattr(values, name)
        if value < low:
            raise ConfigError(f"{section}.{name}={value!r} is out of range; use an integer >= {low}")


def _check_numbers(section: str, values: Any, positive: Sequence[str] = (), non_negative: Sequence[str] = (),
                   unit: Sequence[str] = ()) -> None:
    """Float fields: finite and > 0 (``positive``), >= 0 (``non_negative``) or in [0, 1) (``unit``).

    NaN fails every comparison, so it is refused by each range, as is inf.
    """
    for names, ok, allowed in ((positive, lambda v: v > 0, "a finite number > 0"),
                               (non_negative, lambda v: v >= 0, "a finite number >= 0"),
                               (unit, lambda v: 0 <= v < 1, "a number in [0, 1)")):
        for name in names:
            value = getattr(values, name)
            if not (math.isfinite(value) and ok(value)):
                raise ConfigError(f"{section}.{name}={value!r} is out of range; use {allowed}")


def _check_recipe(section: str, recipe: Any) -> None:
    """Ranges shared by the teacher and distillation recipes."""
    _check_integers(section, recipe, epochs=1)
    _check_numbers(section, recipe, positive=("lr",), non_negative=("weight_decay", "warmup_epochs"),
                   unit=("label_smoothing",))


@dataclass(frozen=True)
class Config:
    """The whole training configuration (teacher recipe and distillation recipe share data)."""

    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    # Which validation metric picks the kept ("best") checkpoint; macro_f1 on imbalanced data.
    select_by: Literal["accuracy", "macro_f1"] = "accuracy"
    data: DataConfig = field(default_factory=DataConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    student: StudentConfig = field(default_factory=StudentConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)


def load(yaml_path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Defaults, then the YAML file (if any), then ``section.key=value`` overrides (YAML values)."""
    tree: dict[str, Any] = {}
    if yaml_path is not None:
        path = Path(yaml_path)
        try:
            loaded = yaml.safe_load(path.read_text())
        except OSError as exc:
            raise ConfigError(f"cannot read config {path}: {exc.strerror}") from None
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f":{mark.line + 1}:{mark.column + 1}" if mark is not None else ""
            problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            raise ConfigError(f"config {path}{where} is not valid YAML: {problem}") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"config {path} must be a mapping of sections, got {type(loaded).__name__}")
        tree = loaded or {}
    for item in overrides or []:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {item!r} must look like section.key=value (e.g. distill.w_adv=0.5)")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        _set_path(tree, key.strip().split("."), value, item)
    return from_dict(tree)


def override_keys(overrides: Sequence[str]) -> list[str]:
    """The dotted keys that ``key=value`` overrides set, in order (e.g. ``["distill.method"]``)."""
    return list(dict.fromkeys(item.partition("=")[0].strip() for item in overrides))


def get_value(config: Any, key: str) -> Any:
    """The value of a dotted key of a config, e.g. ``get_value(cfg, "distill.lr")``."""
    value = config
    for part in key.split("."):
        value = getattr(value, part)
    return value


def from_dict(tree: dict[str, Any]) -> Config:
    """Build a :class:`Config` from a (partial) nested dict, checking keys and types."""
    return _build(Config, tree, "")


def to_dict(config: Any) -> dict[str, Any]:
    """Nested plain dict (tuples as lists): YAML/JSON/checkpoint friendly, and ``from_dict`` round-trips."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if dataclasses.is_dataclass(value):
            out[f.name] = to_dict(value)
        elif isinstance(value, tuple):
            out[f.name] = list(value)
        else:
            out[f.name] = value
    return out


def dump(config: Config, path: str | Path) -> None:
    """Write the resolved config as YAML (atomically)."""
    write_atomic(Path(path), yaml.safe_dump(to_dict(config), sort_keys=False))


def with_method(config: Config, method: str) -> Config:
    """``config`` distilled with ``method`` instead: settings of terms ``method`` lacks go back to defaults.

    For studies that run every method from one base config; a user's explicit setting of an
    unused term is refused instead (see :class:`DistillConfig`).
    """
    if method not in METHODS:
        raise ConfigError(f"distill.method={method!r} is not allowed; choose one of {', '.join(METHODS)}")
    used = {name for term in METHODS[method] for name in TERM_FIELDS[term]}
    tree = to_dict(config)
    for name in {n for fields in TERM_FIELDS.values() for n in fields} - used:
        tree["distill"][name] = _DEFAULTS[name]
    tree["distill"]["method"] = method
    return from_dict(tree)


#: The teacher's architecture with RGB in both branches: a study's teacher-sized RGB-only model (``twin``).
TWIN_ARCH = "rgb_twin_resnet18_mid"


def rgb_twin(config: Config) -> Config:
    """``config``'s teacher-sized RGB-only model: :data:`TWIN_ARCH` at the teacher's width, trained like
    ``ce`` (cross-entropy on RGB, the student's budget). Is the teacher's edge NIR or capacity?"""
    return replace(with_method(config, "ce"), student={"arch": TWIN_ARCH, "width": config.teacher.width})


def replace(config: Config, **sections: dict[str, Any]) -> Config:
    """A copy with some fields changed, e.g. ``replace(cfg, distill={"method": "kd"})`` (checked)."""
    tree = to_dict(config)
    for section, values in sections.items():
        if isinstance(values, dict):
            for key, value in values.items():
                _set_path(tree, [section, key], value, f"{section}.{key}")
        else:
            _set_path(tree, [section], values, section)
    return from_dict(tree)


def _set_path(tree: dict[str, Any], keys: list[str], value: Any, origin: str) -> None:
    node = tree
    for key in keys[:-1]:
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override {origin!r}: {key!r} is a value, not a section")
        node = child
    node[keys[-1]] = value


def _build(cls: type, tree: Any, prefix: str) -> Any:
    where = prefix.rstrip(".") or "config"
    if not isinstance(tree, dict):
        raise ConfigError(f"{where} must be a mapping, got {type(tree).__name__} {tree!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(tree) - names)
    if unknown:
        raise ConfigError(f"unknown config key '{prefix}{unknown[0]}'; known in {where}: {', '.join(sorted(names))}")
    kwargs = {}
    for name in names & set(tree):
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            kwargs[name] = _build(hint, tree[name], f"{prefix}{name}.")
        else:
            kwargs[name] = _coerce(hint, tree[name], f"{prefix}{name}")
    return cls(**kwargs)


def _coerce(hint: Any, value: Any, key: str) -> Any:
    """Check ``value`` against ``hint`` (int, float, bool, str, tuple[int, int], Literal); ints pass as floats."""
    origin = typing.get_origin(hint)
    if origin is Literal:
        choices = typing.get_args(hint)
        if value not in choices:
            raise ConfigError(f"{key}={value!r} is not allowed; choose one of {', '.join(map(str, choices))}")
        return value
    if origin is tuple:
        item_types = typing.get_args(hint)
        if not isinstance(value, (list, tuple)) or len(value) != len(item_types):
            raise ConfigError(f"{key} must be a list of {len(item_types)} values like [96, 96], got {value!r}")
        return tuple(_coerce(t, v, f"{key}[{i}]") for i, (t, v) in enumerate(zip(item_types, value)))
    if origin in (typing.Union, types.UnionType):
        raise ConfigError(f"{key}: union types are not supported in the config")  # none are declared
    if hint is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if hint is float and isinstance(value, str):
        # YAML 1.1 reads 1e-3 (no dot) and nan as strings; as numbers, the range checks judge them.
        try:
            return float(value)
        except ValueError:
            pass
    if hint in (int, str, bool) and type(value) is hint:
        return value
    raise ConfigError(f"{key} must be {hint.__name__}, got {type(value).__name__} {value!r}")
