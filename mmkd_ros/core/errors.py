"""Errors users see: one line that names the thing that is wrong and the fix.

Entry points and nodes catch :class:`MmkdError` and print its message instead of a traceback.
"""


class MmkdError(Exception):
    """Base class of every user-facing error of mmkd_ros."""


class BagError(MmkdError):
    """A bag is missing, corrupt, lacks a topic, or holds messages we cannot decode."""


class ImageDecodeError(MmkdError):
    """An image message or file has an unsupported encoding or truncated/corrupt pixel data."""


class DatasetError(MmkdError):
    """An extracted pair dataset or a folder of image pairs is missing or malformed."""


class ConfigError(MmkdError):
    """A training config or override is unknown or has the wrong type or value."""


class TrainingError(MmkdError):
    """Training cannot go on: e.g. the loss stopped being a finite number."""


class CheckpointError(MmkdError):
    """A checkpoint is unreadable, hostile, or does not match what it is used with."""


class ModelLoadError(CheckpointError):
    """A model file (checkpoint or ONNX) cannot be loaded for inference."""


def run_cli(main, argv=None) -> int:
    """Run ``main(argv)`` and turn an :class:`MmkdError` into ``error: ...`` on stderr, exit 2."""
    import sys

    try:
        result = main(argv)
    except MmkdError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0 if result is None else int(result)


class OutputError(MmkdError):
    """An output path (``--out``, ``--json``) cannot be written: read-only, or a file where a folder is needed."""


def quiet_native_logs() -> None:
    """Silence OpenCV's own log lines (``[ WARN:0@...] ... can't open/read file``).

    A command-line tool reports an unreadable image as its one ``error: ...`` line; OpenCV's
    warning printed before it would only repeat it. Call it before a dataset is opened.
    """
    try:
        import cv2
    except ImportError:  # OpenCV is only needed where images are read
        return
    logging = getattr(getattr(cv2, "utils", None), "logging", None)
    if logging is not None:
        logging.setLogLevel(logging.LOG_LEVEL_SILENT)
    elif hasattr(cv2, "setLogLevel"):  # OpenCV 4 builds without cv2.utils.logging
        cv2.setLogLevel(0)  # 0: silent


class ArgumentError(MmkdError):
    """A command-line value is out of its range (e.g. ``--max-dt nan``)."""


def check_number(name: str, value: float, minimum: float | None = None, maximum: float | None = None,
                 unit: str = "") -> float:
    """``value`` when it is a finite number in [``minimum``, ``maximum``]; else one :class:`ArgumentError` line.

    For command-line numbers that argparse parses as ``float`` (which accepts ``nan`` and ``inf``),
    e.g. ``check_number("--max-dt", args.max_dt, minimum=0, unit="seconds")``.
    """
    import math

    ok = math.isfinite(value) and (minimum is None or value >= minimum) and (maximum is None or value <= maximum)
    if not ok:
        bounds = " and ".join(b for b in (f">= {minimum:g}" if minimum is not None else "",
                                          f"<= {maximum:g}" if maximum is not None else "") if b)
        allowed = f"a finite number{' ' + bounds if bounds else ''}{' (' + unit + ')' if unit else ''}"
        raise ArgumentError(f"{name} {value:g} is out of range; use {allowed}")
    return value
