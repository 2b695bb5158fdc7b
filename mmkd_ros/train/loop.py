"""THE epoch loop of both recipes: resume, seeding, progress, logging, best/last checkpoints, DDP sync.

A recipe (:class:`Recipe`: the teacher's cross-entropy, or distillation with its objective terms)
says what one optimiser step does and what a checkpoint holds; :func:`fit` does everything around
it, identically for both, top to bottom in one function (as nanoGPT's ``train.py``):

- ``last.pt`` after every epoch carries the recipe's state (optimisers, scheduler, extra modules),
  the history, the best score so far and every rank's RNG state: ``--resume`` continues exactly;
- the kept checkpoint (``teacher.pt`` / ``student.pt``) is the epoch with the best validation
  ``select_by`` metric (ties go to the later, longer-trained epoch);
- ``metrics.csv`` and TensorBoard (``tb/``) get one row per epoch; rank 0 alone writes files.
"""
from __future__ import annotations

import csv
import hashlib
import json
import math
import random
import shutil
import sys
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from mmkd_ros.core import artifact
from mmkd_ros.core.atomic import atomic_path, remove_stale_temps, write_atomic
from mmkd_ros.core.errors import CheckpointError, ConfigError, DatasetError, TrainingError
from mmkd_ros.core.metrics import classification_metrics
from mmkd_ros.core.provenance import code_version, numerics
from mmkd_ros.train import config as config_lib
from mmkd_ros.data.dataset import open_dataset
from mmkd_ros.train.config import Config
from mmkd_ros.train.data import predict_logits
from mmkd_ros.train.distributed import Runtime

LAST_NAME = "last.pt"
RUN_RECORD = "run.json"  # what made a benchmark's run (claim_run), and whether it finished


class Recipe(Protocol):
    """What :func:`fit` drives: :class:`RecipeBase` subclasses (the teacher's and distillation's)."""

    name: str  # progress bar and log prefix, e.g. "teacher" or "distill[adv]"
    model: nn.Module  # the plain model that is validated, saved and checked across replicas

    def train_mode(self) -> None:
        """Put every trained module in training mode (the frozen teacher stays in eval)."""

    def step(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        """One optimiser step on a batch; named values (``loss``, ``acc``, per-term losses)."""

    def sync(self) -> None:
        """End of epoch: make every replica's buffers rank 0's (BatchNorm statistics)."""

    def validate(self) -> dict[str, Any]:
        """:func:`~mmkd_ros.core.metrics.classification_metrics` of ``model`` on validation (rank 0)."""

    def lr(self) -> float:
        """The current learning rate of the model's optimiser (for the log)."""

    def state_dict(self) -> dict[str, Any]:
        """Everything besides ``model``'s weights that an exact resume needs."""

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned (``model``'s weights are loaded by :func:`fit`)."""

    def checkpoint(self, metrics: dict[str, Any]) -> dict[str, Any]:
        """The artifact of ``model`` (:func:`~mmkd_ros.core.artifact.make_checkpoint`) without train state."""


class RecipeBase:
    """What both recipes share: runtime, validation data and the checkpoint fields the data fixes.

    ``describe`` holds ``arch``, ``arch_args``, ``classes``, ``modalities``, ``channels``,
    ``input_size`` and ``normalization`` of the model being trained. A subclass builds ``model``,
    ``scheduler`` and implements :meth:`step`, :meth:`train_mode`, :meth:`sync` and the state dicts.
    """

    role = ""  # checkpoint role: teacher | student
    model: nn.Module
    scheduler: torch.optim.lr_scheduler.LRScheduler

    def __init__(self, config: Config, runtime: Runtime, val_loader: DataLoader, describe: dict[str, Any]) -> None:
        self.config, self.runtime, self.val_loader, self.describe = config, runtime, val_loader, describe

    def inputs(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``rgb`` [B,C,H,W], ``nir`` [B,C,H,W] and ``label`` [B] of a batch, on the training device."""
        device = self.runtime.device
        return batch["rgb"].to(device), batch["nir"].to(device), batch["label"].to(device)

    def validate(self) -> dict[str, Any]:
        logits, labels = predict_logits(self.model, self.val_loader, self.describe["modalities"], self.runtime.device)
        return classification_metrics(logits, labels, self.describe["classes"])

    def lr(self) -> float:
        return self.scheduler.get_last_lr()[0]

    def checkpoint_metrics(self) -> dict[str, Any]:
        """Facts of the run stored with every checkpoint's metrics (e.g. the method)."""
        return {}

    def checkpoint(self, metrics: dict[str, Any]) -> dict[str, Any]:
        return artifact.make_checkpoint(role=self.role, model=self.model, config=config_lib.to_dict(self.config),
                                        metrics={**metrics, **self.checkpoint_metrics()}, **self.describe)


def fit(recipe: Recipe, train_loader: DataLoader, config: Config, epochs: int, out_dir: Path, best_name: str,
        runtime: Runtime, resume_state: dict[str, Any] | None = None, stop_after: int | None = None) -> Path:
    """Train ``recipe`` for ``epochs`` (resuming from ``resume_state``, a ``last.pt``); returns the best checkpoint.

    ``stop_after`` ends this call after that many epochs in total (the run stays resumable).
    """
    start_epoch, best_score, history = 0, -math.inf, []
    if resume_state is not None:
        recipe.model.load_state_dict(resume_state["state_dict"])
        train_state = resume_state["train_state"]
        recipe.load_state_dict(train_state["recipe"])
        start_epoch, best_score, history = train_state["epoch"], train_state["best_score"], train_state["history"]
        set_rng_state(train_state["rng"][min(runtime.rank, len(train_state["rng"]) - 1)])
    if runtime.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        for stale in remove_stale_temps(out_dir):
            print(f"removed {stale}: a half-written file of a run that was killed", file=sys.stderr)
        config_lib.dump(config, out_dir / "config.yaml")
        log = EpochLog(out_dir, start_epoch)
    end_epoch = epochs if stop_after is None else min(stop_after, epochs)
    steps = len(train_loader)
    for epoch in range(start_epoch, end_epoch):
        train_loader.sampler.set_epoch(epoch)
        recipe.train_mode()
        sums: dict[str, float] = {}
        bar = tqdm(train_loader, desc=f"{recipe.name} {epoch + 1}/{epochs}", leave=False, file=sys.stderr,
                   disable=not (runtime.is_main and sys.stderr.isatty()), mininterval=1.0)
        for step, batch in enumerate(bar):
            values = recipe.step(batch)
            if not math.isfinite(values["loss"]):
                terms = ", ".join(f"{k}={v:.4g}" for k, v in values.items() if k.startswith("loss_"))
                kept = f"; {out_dir / LAST_NAME} keeps epoch {epoch}" if epoch > 0 else ""
                stage = recipe.name.split("[")[0]  # "teacher" or "distill[method]": the config section
                raise TrainingError(f"{recipe.name}: the loss became {values['loss']} at epoch {epoch + 1}, step "
                                    f"{step + 1} ({terms}){kept}: lower the learning rate ({stage}.lr) or the "
                                    "weight of the term that is not finite")
            sums = {k: sums.get(k, 0.0) + v for k, v in values.items()}
            bar.set_postfix({k: f"{v:.3f}" for k, v in values.items() if k in ("loss", "loss_adv", "d_real", "acc")})
        recipe.sync()
        rngs = runtime.gather(rng_state())
        if runtime.is_main:
            val = recipe.validate()
            row = {"epoch": epoch + 1, **{f"train_{k}": v / steps for k, v in sums.items()},
                   "val_acc": val["accuracy"], "val_macro_f1": val["macro_f1"], "lr": recipe.lr()}
            history.append(row)
            log.write(history)
            print(f"[{recipe.name}] {format_epoch(row)}", file=sys.stderr)
            metrics = {"val_accuracy": val["accuracy"], "val_macro_f1": val["macro_f1"], "epoch": epoch + 1}
            checkpoint = recipe.checkpoint(metrics)
            score = val[config.select_by]  # a key of classification_metrics()
            if score >= best_score:
                best_score = score
                artifact.save_checkpoint(checkpoint, out_dir / best_name)
            checkpoint["train_state"] = {"recipe": recipe.state_dict(), "epoch": epoch + 1, "best_score": best_score,
                                         "history": history, "rng": rngs}
            artifact.save_checkpoint(checkpoint, out_dir / LAST_NAME)
        runtime.barrier()
    replica_diff = runtime.replica_max_abs_diff(recipe.model)
    if runtime.is_main:
        log.close()
        record_final(out_dir, (best_name, LAST_NAME), {"replica_max_abs_diff": replica_diff,
                                                       "world_size": runtime.world_size})
    return out_dir / best_name


def load_resume_state(out_dir: Path, role: str) -> dict[str, Any]:
    """The ``last.pt`` of a run, which must carry a training state."""
    path = out_dir / LAST_NAME
    if not path.is_file():
        raise CheckpointError(f"nothing to resume in {out_dir}: {LAST_NAME} is missing (run without --resume)")
    state = artifact.load_checkpoint(path, role=role)
    if "train_state" not in state or "recipe" not in state["train_state"]:
        raise CheckpointError(f"{path} has no training state this version can resume from; run without --resume")
    return state


#: Keys a resumed run takes from the new command without complaint: where it runs.
RESUME_FREE_KEYS = ("device",)
#: Sections a stage does not read: the teacher run ignores the student's settings and vice versa.
_OTHER_SECTIONS = {"teacher": ("distill.", "student."), "distill": ("teacher.",)}


def resumed_config(state: dict[str, Any], config: Config, given: Collection[str], stage: str, run_dir: Path,
                   quiet: bool = False) -> Config:
    """The config a resumed run continues with: the one recorded in its ``last.pt``.

    ``given`` are the keys the new command sets explicitly (``key=value`` overrides and their
    shortcuts); each must agree with the recorded value, or the run would silently ignore it, so
    disagreements are refused in one line. Two exceptions: ``device`` (where the run continues)
    and ``<stage>.epochs`` (``stage`` is ``teacher`` or ``distill``), which may extend the run;
    the learning-rate schedule then spans the new length from the current step on.
    """
    recorded = config_lib.from_dict(state["config"])
    epochs_key = f"{stage}.epochs"
    conflicts = []
    for key in given:
        if key in RESUME_FREE_KEYS or key == epochs_key or key.startswith(_OTHER_SECTIONS[stage]):
            continue
        old, new = config_lib.get_value(recorded, key), config_lib.get_value(config, key)
        if old != new:
            conflicts.append(f"{key}={new!r} (the run has {old!r})")
    if conflicts:
        raise ConfigError(f"--resume {run_dir}: {'; '.join(conflicts)} differ from the run's recorded config; "
                          "drop them to continue the run, or give a new --out to train with them")
    if epochs_key not in given:
        return recorded
    old_epochs, new_epochs = config_lib.get_value(recorded, epochs_key), config_lib.get_value(config, epochs_key)
    done = int(state.get("train_state", {}).get("epoch", 0))
    if new_epochs == old_epochs:
        return recorded
    if new_epochs < done:
        raise ConfigError(f"--resume {run_dir}: {epochs_key}={new_epochs} is fewer than the {done} epochs the run "
                          f"has done; give {epochs_key} >= {done} or drop it")
    if not quiet:
        print(f"note: --resume {run_dir}: {epochs_key} {old_epochs} -> {new_epochs}", file=sys.stderr)
    section, name = epochs_key.split(".")
    return config_lib.replace(recorded, **{section: {name: new_epochs}})


_warned_splits: set[tuple[str, str]] = set()


def check_validation_split(config: Config, data_dir: Path) -> None:
    """Refuse a dataset whose val split has no labelled pair; warn (once) about classes val lacks.

    Validation picks the kept checkpoint; with no labelled val pair there is nothing to pick by,
    and a class that only train holds is never scored, so the pick ignores it.
    """
    info = open_dataset(data_dir, config.data.val_fraction, config.data.test_fraction)
    train = {r.label for r in info.split("train") if r.label >= 0}
    val = {r.label for r in info.split("val") if r.label >= 0}
    if not val:
        groups = len({r.group for r in info.records})
        raise DatasetError(f"{data_dir}: the val split has no labelled pairs ({groups} groups in all); record more "
                           "scenes, give the manifest a split column (or --splits with val bags), or raise "
                           "data.val_fraction")
    missing = [info.classes[k] for k in sorted(train - val)]
    key = (str(data_dir), info.cache_key)
    if missing and key not in _warned_splits:
        _warned_splits.add(key)
        print(f"warning: the val split of {data_dir} holds no {', '.join(missing)} pairs (train has them), so "
              "validation cannot score those classes; record more scenes of them or give them val groups "
              "(manifest split column, --splits)", file=sys.stderr)


def run_finished(run_dir: Path, epochs: int) -> bool:
    """True when ``run_dir/last.pt`` records ``epochs`` completed epochs."""
    last = run_dir / LAST_NAME
    if not last.is_file():
        return False
    return int(artifact.load_checkpoint(last).get("train_state", {}).get("epoch", 0)) >= epochs


def file_digest(path: str | Path) -> str:
    """sha256 of a file's bytes (a teacher checkpoint as a student run's input)."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def run_identity(config_tree: dict[str, Any], inputs: dict[str, str]) -> dict[str, Any]:
    """What decides a run's result: the source digest (:func:`code_version`), the resolved config, the
    inputs (e.g. the dataset's cache key, the teacher's :func:`file_digest`) and the thread count
    (:func:`numerics`), as JSON reads them back."""
    return json.loads(json.dumps({"code": code_version()["source"], "config": config_tree, "inputs": inputs,
                                  "numerics": numerics()}))


def claim_run(run_dir: Path, identity: dict[str, Any], reuse: bool = True) -> str:
    """Decide what a benchmark does with ``run_dir`` for a run of ``identity`` (:func:`run_identity`).

    ``"reuse"``: the folder's ``run.json`` records this identity and a finished run; ``"resume"``:
    this identity, interrupted (``last.pt`` is there); ``"fresh"``: anything else (no record, other
    code, config or inputs, or ``reuse`` false): the folder is emptied and the identity recorded, so
    a figure never mixes runs of different code. Call :func:`finish_run` when the run is complete.
    """
    record_path = run_dir / RUN_RECORD
    if reuse and record_path.is_file():
        try:
            record = json.loads(record_path.read_text())
        except ValueError:
            record = {}
        if record.get("identity") == identity:
            if record.get("finished"):
                return "reuse"
            if (run_dir / LAST_NAME).is_file():
                return "resume"
    if run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True)
    write_atomic(record_path, json.dumps({"identity": identity, "finished": False}, indent=1))
    return "fresh"


def finish_run(run_dir: Path) -> None:
    """Mark a run claimed with :func:`claim_run` as complete (reused from now on)."""
    record_path = run_dir / RUN_RECORD
    record = json.loads(record_path.read_text())
    record["finished"] = True
    write_atomic(record_path, json.dumps(record, indent=1))


def record_final(out_dir: Path, names: Sequence[str], extra: dict[str, Any]) -> None:
    """Add end-of-run facts (e.g. the DDP replica check) to the metrics of a run's checkpoints."""
    for name in names:
        path = out_dir / name
        if path.is_file():
            checkpoint = artifact.load_checkpoint(path)
            checkpoint["metrics"].update(extra)
            artifact.save_checkpoint(checkpoint, path)


def cosine_schedule(optimizer: torch.optim.Optimizer, total_steps: int,
                    warmup_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up then cosine decay to 0, stepped once per optimiser step."""
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    """Python, numpy and torch RNG states in types ``torch.load(weights_only=True)`` accepts."""
    py_version, py_state, py_gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    return {
        "python": [py_version, list(py_state), py_gauss],
        "numpy": [np_name, torch.from_numpy(np_keys.astype(np.int64)), int(np_pos), int(np_has_gauss), float(np_gauss)],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    py_version, py_state, py_gauss = state["python"]
    random.setstate((py_version, tuple(py_state), py_gauss))
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = state["numpy"]
    np.random.set_state((np_name, np_keys.numpy().astype(np.uint32), np_pos, np_has_gauss, np_gauss))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class EpochLog:
    """Per-epoch metrics to ``metrics.csv`` (rewritten from the full history: exact after resume)
    and to TensorBoard (``tb/``). Only rank 0 builds one."""

    def __init__(self, run_dir: Path, first_epoch: int) -> None:
        self.csv_path = run_dir / "metrics.csv"
        try:
            from torch.utils.tensorboard import SummaryWriter
            self.writer: Any = SummaryWriter(str(run_dir / "tb"), purge_step=first_epoch)
        except ImportError:  # tensorboard is optional at run time; the CSV is the record
            self.writer = None

    def write(self, history: list[dict[str, float]]) -> None:
        row = history[-1]
        if self.writer is not None:
            for key, value in row.items():
                if key != "epoch":
                    self.writer.add_scalar(key, value, int(row["epoch"]))
            self.writer.flush()
        fields = list(dict.fromkeys(k for r in history for k in r))
        with atomic_path(self.csv_path) as tmp, tmp.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=fields)
            writer.writeheader()
            writer.writerows(history)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def format_epoch(row: dict[str, float]) -> str:
    return " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items())
