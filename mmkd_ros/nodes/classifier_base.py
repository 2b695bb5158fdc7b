"""The part of ``student_node`` and ``teacher_node`` that is the same: model, worker, outputs.

A subclass says which topics to subscribe to and hands complete frames (one message per modality,
already time-paired for the teacher) to :meth:`ClassifierNode.submit`. From there on both nodes
behave identically:

- with ``inference:=worker`` (the teacher's default) the newest frame waits in a one-item slot and
  an inference worker thread takes it (a frame that is replaced before the worker gets to it is
  dropped and counted), so latency never piles up behind a queue and the executor keeps taking
  messages from the middleware; with ``inference:=callback`` (the student's default) the frame is
  classified in the subscription callback, and frames that arrive meanwhile wait in the
  subscription's depth-1 queue (newest wins; the lost ones are counted from the publisher's
  sequence numbers);
- the frame is decoded with :func:`mmkd_ros.data.ros_images.msg_to_array` and classified by
  :class:`mmkd_ros.deploy.classifier.Classifier` (the ML lives there, not here); a frame that cannot be
  decoded or classified is counted as bad and logged (throttled), never fatal;
- ``~/classification``, ``~/image_annotated`` and ``/diagnostics`` are published.

Both are managed (lifecycle) nodes: *configure* loads and checks the model and creates the
outputs and the worker, *activate* subscribes to the inputs, *deactivate* unsubscribes (inference
stops, the node stays up), *cleanup* releases the model. With ``autostart`` (the default) the node
configures and activates itself at start, and a model it cannot load ends the process with one
line (exit 2); with ``autostart:=false`` a lifecycle manager drives it through
``~/change_state`` and a failed configure leaves it unconfigured with the same line in the log.
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Optional

from rcl_interfaces.msg import SetParametersResult
from rclpy.clock import Clock, ClockType
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from sensor_msgs.msg import CompressedImage, Image

from mmkd_ros.core.errors import MmkdError
from mmkd_ros.data.ros_images import msg_to_array, stamp_to_ns
from mmkd_ros.deploy.classifier import Classifier
from mmkd_ros.nodes import outputs
from mmkd_ros.nodes.common import (
    FRAME_STAGES,
    FrameStats,
    LatestSlot,
    ParameterError,
    RELIABILITY,
    ParamSpec,
    SequenceGapCounter,
    declare_parameters,
    output_qos,
)

INPUT_TYPES = ("raw", "compressed")
MODEL_SUFFIXES = (".pt", ".pth", ".onnx")
DEVICE_PATTERN = re.compile(r"auto|cpu|cuda(:[0-9]+)?")
#: Parameters that may change while the node runs (``ros2 param set``); the others are read at
#: configure/activate and may change only while the node is unconfigured.
RUNTIME_PARAMETERS = frozenset({"publish_annotated", "max_rate", "stale_timeout"})

#: Parameters common to both classifier nodes (each node adds its own).
COMMON_PARAMETERS: tuple[ParamSpec, ...] = (
    ParamSpec(
        "autostart",
        True,
        "Configure and activate at start (a plain node); false: wait for a lifecycle manager.",
    ),
    ParamSpec("model_path", "", "Model file: a .pt checkpoint written by training, or a student .onnx."),
    ParamSpec(
        "device",
        "auto",
        "Inference device: auto (the GPU when present), cpu, cuda or cuda:N.",
    ),
    ParamSpec(
        "backend",
        "auto",
        "Inference backend: auto (an .onnx model, or the .onnx exported beside a .pt checkpoint when "
        "it is not older, runs on onnxruntime without torch; else torch), torch, or onnxruntime.",
        choices=("auto", "torch", "onnxruntime"),
    ),
    ParamSpec(
        "input_type",
        "raw",
        "RGB input message: raw (sensor_msgs/Image) or compressed (sensor_msgs/CompressedImage; "
        "remap the input to the .../compressed topic).",
        choices=INPUT_TYPES,
    ),
    ParamSpec(
        "input_reliability",
        "best_effort",
        "QoS reliability of the image subscriptions (keep-last 1 either way): best_effort (sensor data, "
        "matches any driver) or reliable (only reliable drivers; resends lost fragments of large frames).",
        choices=tuple(RELIABILITY),
    ),
    ParamSpec(
        "cpu_threads",
        1,
        "Inference threads on the CPU (torch or onnxruntime); 0 keeps the library's default (one per core). One "
        "thread is the default: small models gain little from more, and on a busy robot (or beside a "
        "camera driver) extra threads contend for cores and multiply latency.",
        min_value=0,
        max_value=256,
    ),
    ParamSpec(
        "warmup_frames",
        3,
        "Inference runs on a blank frame at start, so the first real frame is not slow.",
        min_value=0,
        max_value=100,
    ),
    ParamSpec(
        "inference",
        "worker",
        "Where frames are classified: callback (in the subscription callback, on the executor's "
        "thread: no hand-over, the lowest latency; frames that arrive meanwhile wait in the "
        "middleware's depth-1 queue, newest wins) or worker (a thread of its own: the executor keeps "
        "taking messages, as the teacher's pairing of two streams needs). The student defaults to "
        "callback, the teacher to worker.",
        choices=("callback", "worker"),
    ),
    ParamSpec("publish_annotated", True, "Publish ~/image_annotated (only while someone subscribes). Runtime."),
    ParamSpec(
        "max_rate",
        0.0,
        "Most inferences per second (0: every frame the worker can take); frames over the cap are "
        "skipped and counted. Runtime.",
        min_value=0.0,
        max_value=1000.0,
    ),
    ParamSpec(
        "stale_timeout",
        2.0,
        "Seconds without an input frame (wall clock) after which /diagnostics turns WARN: a camera "
        "that stopped, a bag that ended, a remapping that lost its publisher. Runtime.",
        min_value=0.1,
        max_value=3600.0,
    ),
    ParamSpec(
        "diagnostics_period",
        1.0,
        "Seconds between /diagnostics messages (wall clock, also under use_sim_time).",
        min_value=0.05,
        max_value=60.0,
    ),
)


@dataclass
class Frame:
    """One unit of work: the messages of each modality and when the node received the last one."""

    msgs: dict[str, Any]  # modality -> sensor_msgs Image/CompressedImage
    header: Any  # header of the RGB message: stamp/frame of the published outputs
    received: float  # time.perf_counter() when the frame became complete


def image_msg_type(input_type: str) -> type:
    """sensor_msgs class for an ``input_type`` parameter value."""
    return CompressedImage if input_type == "compressed" else Image


class ClassifierNode(LifecycleNode):
    """Base of the classifier nodes; subclasses implement :meth:`subscribe` and call :meth:`submit`."""

    #: modalities the loaded model must take, e.g. ("rgb",) for the student
    REQUIRED_MODALITIES: tuple[str, ...] = ("rgb",)
    #: the node's own parameters, after COMMON_PARAMETERS
    EXTRA_PARAMETERS: tuple[ParamSpec, ...] = ()
    #: default of the ``inference`` parameter: callback or worker
    DEFAULT_INFERENCE = "worker"

    def __init__(self, node_name: str) -> None:
        super().__init__(node_name)
        self.params: dict[str, Any] = {}
        self.classifier: Any = None
        self.stats = FrameStats()
        self.gaps = SequenceGapCounter()
        self.slot: LatestSlot[Frame] = LatestSlot()
        self._worker: Optional[threading.Thread] = None
        self._last_input: Optional[float] = None  # time.monotonic() of the newest input message
        self._first_input: Optional[float] = None
        self._warned_types: set[str] = set()  # input type mismatches already logged
        self._active = False  # lifecycle state active: inputs subscribed
        self._configured = False  # lifecycle state inactive or active: model loaded
        self._inputs_text = "not subscribed yet"
        self._last_submit = 0.0  # time.monotonic() of the last frame handed to the worker

    # -- start -------------------------------------------------------------------------------
    @classmethod
    def parameter_specs(cls) -> tuple[ParamSpec, ...]:
        # Not read-only for ROS (a lifecycle manager sets them between cleanup and configure);
        # :meth:`_on_set_parameters` says which may change when. ``autostart`` never changes.
        return tuple(replace(spec, read_only=spec.name == "autostart",
                             **({"default": cls.DEFAULT_INFERENCE} if spec.name == "inference" else {}))
                     for spec in COMMON_PARAMETERS + cls.EXTRA_PARAMETERS)

    def _on_set_parameters(self, parameters: list[Any]) -> SetParametersResult:
        specs = {spec.name: spec for spec in self.parameter_specs()}
        for parameter in parameters:
            spec = specs.get(parameter.name)
            if spec is None:
                continue  # use_sim_time and other rclpy parameters
            if parameter.name not in RUNTIME_PARAMETERS and self._configured:
                return SetParametersResult(successful=False, reason=(
                    f"'{parameter.name}' is read when the node is configured; deactivate and clean up "
                    f"the node (lifecycle), set it, then configure again. Runtime parameters: "
                    f"{', '.join(sorted(RUNTIME_PARAMETERS))}"))
            if spec.choices and parameter.value not in spec.choices:
                return SetParametersResult(successful=False, reason=(
                    f"'{parameter.name}' must be one of: {', '.join(spec.choices)}"))
        for parameter in parameters:
            if parameter.name in specs:
                self.params[parameter.name] = parameter.value
        return SetParametersResult(successful=True)

    def start(self) -> None:
        """Validate parameters; with ``autostart`` also configure and activate (raises on failure)."""
        self.params = declare_parameters(self, self.parameter_specs())
        self.add_on_set_parameters_callback(self._on_set_parameters)
        if not self.params["autostart"]:
            self.get_logger().info("waiting for a lifecycle manager (autostart is false)")
            return
        self._start_error = None
        if self.trigger_configure() != TransitionCallbackReturn.SUCCESS:
            raise self._start_error or ParameterError("configure failed; see the log above")
        self.trigger_activate()

    # -- lifecycle transitions ----------------------------------------------------------------
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            self.configure_outputs()
        except Exception as exc:  # noqa: BLE001 - a lifecycle transition reports, never raises
            if not isinstance(exc, MmkdError):
                detail = " ".join(str(exc).split()) or "no message"
                exc = ParameterError(f"parameter 'model_path': cannot load {self.params['model_path']} "
                                     f"({type(exc).__name__}: {detail}); re-export it with this "
                                     "project's training tools")
            self._start_error = exc
            if not self.params["autostart"]:  # under autostart start() reports it and exits 2
                self.get_logger().error(f"cannot configure: {' '.join(str(exc).split())}")
            return TransitionCallbackReturn.FAILURE
        self._configured = True
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Subscribe last: a node that subscribes is ready, so a bag player waiting for
        subscribers does not lose the first frames to model loading."""
        self.subscribe()
        self._inputs_text = self.describe_inputs()  # kept: the subscriptions go on deactivate
        self._active = True
        self.get_logger().info(
            f"ready: {self.model_file.name} on {self.classifier.device} ({self.classifier.backend}), "
            f"classes {list(self.classifier.classes)}, input {self.describe_inputs()}"
        )
        return TransitionCallbackReturn.SUCCESS

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._active = False
        for sub in self.subscriptions_of_inputs():
            self.destroy_subscription(sub)
        self.get_logger().info("inactive: input unsubscribed, inference stopped")
        return TransitionCallbackReturn.SUCCESS

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.stop()
        self._diag_timer.cancel()
        self.classifier = None
        self._configured = False
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.stop()
        return TransitionCallbackReturn.SUCCESS

    def configure_outputs(self) -> None:
        """Load and warm up the model, then create the outputs, the diagnostics timer and the worker."""
        self.classifier = self._load_classifier()
        kind, msg_type, self._to_msg = outputs.classification_output()
        if kind == outputs.OUTPUT_JSON:
            self.get_logger().warning(
                "vision_msgs is not installed: publishing ~/classification as JSON in std_msgs/String "
                "(install ros-$ROS_DISTRO-vision-msgs for vision_msgs/Classification)"
            )
        if getattr(self, "pub_class", None) is not None:  # configured before: outputs exist
            self._diag_timer.reset()
        else:
            self._create_outputs(msg_type)
        self.slot = LatestSlot()
        if self.params["inference"] == "worker":
            self._worker = threading.Thread(target=self._work, name="inference", daemon=True)
            self._worker.start()

    def _create_outputs(self, msg_type: type) -> None:
        self.pub_class = self.create_publisher(msg_type, "~/classification", output_qos(10))
        self.pub_annotated = self.create_publisher(Image, "~/image_annotated", output_qos(2))
        self.pub_diag = self.create_publisher(outputs.DiagnosticArray, "/diagnostics", output_qos(10))
        self._diag_timer = self.create_timer(
            self.params["diagnostics_period"],
            self.publish_diagnostics,
            clock=Clock(clock_type=ClockType.STEADY_TIME),
        )

    def _load_classifier(self) -> Any:
        """Check model path, device and backend, then load; every failure is one ParameterError line."""
        path = Path(self.params["model_path"]).expanduser()
        if not self.params["model_path"]:
            raise ParameterError("parameter 'model_path' is empty; set it to a .pt checkpoint or .onnx file")
        if not path.is_file():
            raise ParameterError(f"parameter 'model_path': {path} does not exist or is not a file")
        if path.suffix not in MODEL_SUFFIXES:
            raise ParameterError(
                f"parameter 'model_path': {path.name} is not a model file ({', '.join(MODEL_SUFFIXES)})"
            )
        if not DEVICE_PATTERN.fullmatch(self.params["device"]):
            raise ParameterError(
                f"parameter 'device' is '{self.params['device']}'; use auto, cpu, cuda or cuda:N"
            )
        # Checks that need no torch come first: a typo fails in a fraction of a second. An ONNX
        # model never imports torch (onnxruntime decides the device; about 570 MB saved).
        onnx_twin = path.with_suffix(".onnx")
        if (self.params["backend"] == "auto" and path.suffix != ".onnx" and onnx_twin.is_file()
                and onnx_twin.stat().st_mtime >= path.stat().st_mtime):
            # The offline chain exports the student next to its checkpoint (parity-checked): run
            # that, without torch. backend:=torch runs the checkpoint itself.
            self.get_logger().info(f"running {onnx_twin.name}, exported beside {path.name} "
                                   "(backend auto; backend:=torch runs the checkpoint)")
            path = onnx_twin
        if path.suffix != ".onnx":
            from mmkd_ros.core.device import resolve_device  # deferred: imports torch (seconds)

            try:
                resolve_device(self.params["device"])
            except ValueError as exc:
                raise ParameterError(f"parameter 'device': {exc}") from None
            if self.params["cpu_threads"] > 0:
                import torch

                torch.set_num_threads(self.params["cpu_threads"])  # process-wide; the node owns its process
        classifier = Classifier.load(path, device=self.params["device"], backend=self.params["backend"],
                                     cpu_threads=self.params["cpu_threads"])
        self.model_file = path  # what runs (the .onnx twin under backend auto)
        missing = [m for m in self.REQUIRED_MODALITIES if m not in classifier.modalities]
        extra = [m for m in classifier.modalities if m not in self.REQUIRED_MODALITIES]
        if missing or extra:
            raise ParameterError(
                f"parameter 'model_path': {path.name} takes {'+'.join(classifier.modalities)} but "
                f"{self.get_name()} feeds {'+'.join(self.REQUIRED_MODALITIES)}; "
                + (
                    "use teacher_node for RGB+NIR models"
                    if "nir" in classifier.modalities
                    else "use student_node"
                )
            )
        if self.params["warmup_frames"] > 0:
            classifier.warmup(self.params["warmup_frames"])
        return classifier

    # -- subclass interface ---------------------------------------------------------------------
    def subscribe(self) -> None:
        """Create the input subscriptions (subclass)."""
        raise NotImplementedError

    def describe_inputs(self) -> str:
        """Resolved input topic names for the start-up log line (subclass)."""
        raise NotImplementedError

    def subscriptions_of_inputs(self) -> list[Any]:
        """The input subscriptions :meth:`subscribe` created (subclass)."""
        raise NotImplementedError

    def input_seen(self, msg_info: dict) -> None:
        """Executor thread, every input message: middleware gaps and the time of the newest input."""
        self.gaps.update(msg_info)
        self._last_input = time.monotonic()
        if self._first_input is None:
            self._first_input = self._last_input

    def problems(self) -> list[str]:
        """What turns /diagnostics WARN (empty: OK). Subclasses add their own."""
        if not self._active:
            return ["inactive (lifecycle): not subscribed to the input; activate to classify"]
        if self._last_input is None:
            return self.type_mismatches() or [f"no input yet on {self._inputs_text}"]
        age = time.monotonic() - self._last_input
        if age > self.params["stale_timeout"]:
            return self.type_mismatches() or [
                f"no input for {age:.1f} s on {self._inputs_text} (stale_timeout "
                f"{self.params['stale_timeout']:g} s): check the camera or the remapping"]
        return []

    def input_type_parameters(self) -> list[str]:
        """The parameter choosing each input's message type, in :meth:`subscriptions_of_inputs` order."""
        return ["input_type"]

    def type_mismatches(self) -> list[str]:
        """Inputs whose topic is published, but only with another message type than this node
        subscribes (ROS 2 then delivers nothing and says nothing); each is logged once as a warning.

        The usual case: ``input_type`` raw on a camera's ``.../compressed`` topic, or the reverse."""
        def type_name(input_type: str) -> str:
            return f"sensor_msgs/msg/{image_msg_type(input_type).__name__}"

        found = []
        for sub, param in zip(self.subscriptions_of_inputs(), self.input_type_parameters()):
            expected_name = type_name(self.params[param])
            # Publishers only: the graph's topic types include this node's own subscription.
            types = sorted({info.topic_type for info in self.get_publishers_info_by_topic(sub.topic_name)})
            if not types or expected_name in types:
                continue
            fix = next((value for value in INPUT_TYPES if type_name(value) in types), None)
            message = (f"{sub.topic_name} is published as {', '.join(types)} but this node subscribes "
                       f"{expected_name} ({param} {self.params[param]}), so it receives nothing: "
                       + (f"set {param}:={fix}" if fix else "remap the input to an image topic"))
            found.append(message)
            if message not in self._warned_types:
                self._warned_types.add(message)
                self.get_logger().warning(message)
        return found

    def submit(self, frame: Frame) -> None:
        """Hand a complete frame to the worker; a frame still waiting there is dropped.

        Under ``max_rate`` a frame that comes sooner than ``1/max_rate`` after the last one handed
        over is skipped (counted as ``rate_skipped`` in /diagnostics)."""
        max_rate = self.params["max_rate"]
        now = time.monotonic()
        if max_rate > 0 and now - self._last_submit < 1.0 / max_rate:
            self.stats.count("rate_skipped")
            return
        self._last_submit = now
        if self.params["inference"] == "callback":
            self.process(frame)  # the executor's thread: no hand-over (stage "wait" ~0)
        else:
            self.slot.put(frame)

    # -- worker ---------------------------------------------------------------------------------
    def _work(self) -> None:
        while not self.slot.closed:
            frame = self.slot.take(timeout=0.5)
            if frame is not None:
                self.process(frame)

    def process(self, frame: Frame) -> None:
        """Decode, classify and publish one frame; a bad frame is counted and logged, not raised."""
        taken = time.perf_counter()
        try:
            arrays = {modality: msg_to_array(msg) for modality, msg in frame.msgs.items()}
            decoded = time.perf_counter()
            prediction = self.classifier.predict(arrays)
        except (MmkdError, ValueError, TypeError, RuntimeError) as exc:
            self.bad_frame(str(exc))
            return
        predicted = time.perf_counter()
        in_node_ms = (predicted - frame.received) * 1000.0  # receive -> result (the message is built next)
        since_stamp_ms = (self.get_clock().now().nanoseconds - stamp_to_ns(frame.header.stamp)) / 1e6
        content = outputs.classification_content(
            frame.header,
            prediction.class_index,
            prediction.label,
            prediction.score,
            prediction.scores,
            self.classifier.classes,
            self.model_file.name,
            since_stamp_ms,
            in_node_ms,
        )
        self.pub_class.publish(self._to_msg(content))
        published = time.perf_counter()
        # /diagnostics: the node's own share (no clock offsets), stage by stage
        marks = (frame.received, taken, decoded, predicted, published)
        self.stats.record(in_node_ms, {stage: (end - begin) * 1e3 for stage, begin, end
                                       in zip(FRAME_STAGES, marks, marks[1:])})
        if self.params["publish_annotated"] and self.pub_annotated.get_subscription_count() > 0:
            self.pub_annotated.publish(
                outputs.annotated_image(arrays["rgb"], frame.header, prediction.label, prediction.score)
            )

    def bad_frame(self, reason: str) -> None:
        """Count a frame that could not be used; warn at most every 5 s (wall clock)."""
        self.stats.count("bad")
        reason = " ".join(reason.split())
        self.get_logger().warning(
            f"bad frame skipped ({self.stats.bad} so far): {reason}", throttle_duration_sec=5.0
        )

    # -- diagnostics ----------------------------------------------------------------------------
    def dropped(self) -> int:
        """Frames replaced before inference plus frames the middleware overwrote before we took them."""
        return self.slot.dropped + self.gaps.lost

    def publish_diagnostics(self) -> None:
        extra = {
            "model": self.model_file.name,
            "inputs": self._inputs_text,
        }
        self.pub_diag.publish(
            outputs.diagnostics(
                self.get_clock().now().to_msg(),
                f"mmkd_ros: {self.get_fully_qualified_name()}",
                str(self.classifier.device),
                self.stats_snapshot(),
                self.dropped(),
                extra,
                self.problems(),
            )
        )

    def stats_snapshot(self) -> dict[str, float]:
        return self.stats.snapshot()

    def stop(self) -> None:
        """Stop the worker before the node is destroyed (it publishes from its own thread)."""
        self.slot.close()
        if self._worker is not None:
            self._worker.join(timeout=5.0)
