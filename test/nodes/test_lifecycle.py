"""student_node as a managed (lifecycle) node, driven through its real ~/change_state service."""

from __future__ import annotations

import numpy as np
import pytest
from lifecycle_msgs.msg import State, Transition
from lifecycle_msgs.srv import ChangeState, GetState
from sensor_msgs.msg import Image
from std_msgs.msg import String

from ros_testing import NodeProcess, image_msg, wait_until

pytestmark = pytest.mark.slow

NAME = "student_managed"
INPUT = "/test_lifecycle/image"
OUT = f"/{NAME}/classification"


def frame(i: int) -> np.ndarray:
    return np.random.default_rng(i).integers(0, 256, (48, 64, 3), dtype=np.uint8)


class Managed:
    """Calls the node's lifecycle services from the test's client node."""

    def __init__(self, client, name: str, node) -> None:
        self.client = client
        self.log = node.output
        self.change = client.node.create_client(ChangeState, f"/{name}/change_state")
        self.get = client.node.create_client(GetState, f"/{name}/get_state")

    def _call(self, service, request, timeout: float = 30.0):
        assert service.wait_for_service(timeout_sec=60.0), "lifecycle service never appeared"
        future = service.call_async(request)
        assert wait_until(future.done, timeout), f"lifecycle service did not answer: {self.log()}"
        return future.result()

    def state(self) -> int:
        return self._call(self.get, GetState.Request()).current_state.id

    def transition(self, transition_id: int) -> bool:
        return self._call(self.change, ChangeState.Request(transition=Transition(id=transition_id))).success


def _subscribed(client) -> int:
    return client.node.count_subscribers(INPUT)


def test_transitions_configure_activate_deactivate_cleanup(colcon_install, student_ckpt, tmp_path, client,
                                                          node_logs) -> None:
    client.subscribe(String, OUT)
    publisher = client.publisher(Image, INPUT, depth=1)
    broken = tmp_path / "empty.pt"
    broken.write_bytes(b"")
    args = ["-r", f"__node:={NAME}", "-r", f"image:={INPUT}", "-p", f"model_path:={broken}",
            "-p", "device:=cpu", "-p", "autostart:=false"]
    node = NodeProcess(colcon_install, "student_node", args, node_logs)
    managed = Managed(client, NAME, node)
    try:
        assert managed.state() == State.PRIMARY_STATE_UNCONFIGURED
        assert _subscribed(client) == 0
        # A model that cannot be loaded: configure fails in one line, the node stays up.
        assert not managed.transition(Transition.TRANSITION_CONFIGURE)
        assert managed.state() == State.PRIMARY_STATE_UNCONFIGURED and node.alive()
        assert node.wait_for_output("cannot configure", 10.0), node.output()
        assert "Traceback" not in node.output()

        # Point it at a good model (parameters are read at configure), then configure and activate.
        from rcl_interfaces.srv import SetParameters
        from rclpy.parameter import Parameter

        set_params = client.node.create_client(SetParameters, f"/{NAME}/set_parameters")
        request = SetParameters.Request(parameters=[Parameter("model_path", value=str(student_ckpt)).to_parameter_msg()])
        result = managed._call(set_params, request)
        assert result.results[0].successful, result.results[0].reason
        assert managed.transition(Transition.TRANSITION_CONFIGURE), node.output()
        assert managed.state() == State.PRIMARY_STATE_INACTIVE
        assert _subscribed(client) == 0  # inactive: loaded, not listening

        assert managed.transition(Transition.TRANSITION_ACTIVATE)
        assert wait_until(lambda: _subscribed(client) == 1, 10.0)
        for i in range(50):
            publisher.publish(image_msg(frame(i), "rgb8", 10**9 + i))
            if wait_until(lambda: client.messages(OUT), 0.2):
                break
        assert client.messages(OUT), node.output()

        # While configured, the model may not change; runtime parameters may.
        def set_param(name, value):
            request = SetParameters.Request(parameters=[Parameter(name, value=value).to_parameter_msg()])
            return managed._call(set_params, request).results[0]

        refused = set_param("model_path", str(broken))
        assert not refused.successful and "read when the node is configured" in refused.reason
        assert set_param("max_rate", 2.0).successful
        assert not set_param("backend", "tensorflow").successful  # not one of its choices
        client.clear(OUT)
        for i in range(30):  # 30 frames in about 1.5 s at most 2 per second
            publisher.publish(image_msg(frame(i), "rgb8", 4 * 10**9 + i))
            wait_until(lambda: False, 0.05)
        wait_until(lambda: False, 0.3)
        assert 1 <= len(client.messages(OUT)) <= 5, len(client.messages(OUT))
        assert set_param("max_rate", 0.0).successful

        assert managed.transition(Transition.TRANSITION_DEACTIVATE)
        assert managed.state() == State.PRIMARY_STATE_INACTIVE and node.alive()
        assert wait_until(lambda: _subscribed(client) == 0, 10.0)
        wait_until(lambda: False, 0.3)
        client.clear(OUT)
        for i in range(5):
            publisher.publish(image_msg(frame(i), "rgb8", 2 * 10**9 + i))
        assert not wait_until(lambda: client.messages(OUT), 1.0)  # no inference while inactive

        assert managed.transition(Transition.TRANSITION_ACTIVATE)  # and back
        assert wait_until(lambda: _subscribed(client) == 1, 10.0)
        for i in range(50):
            publisher.publish(image_msg(frame(i), "rgb8", 3 * 10**9 + i))
            if wait_until(lambda: client.messages(OUT), 0.2):
                break
        assert client.messages(OUT), node.output()

        assert managed.transition(Transition.TRANSITION_DEACTIVATE)
        assert managed.transition(Transition.TRANSITION_CLEANUP)
        assert managed.state() == State.PRIMARY_STATE_UNCONFIGURED and node.alive()
        assert managed.transition(Transition.TRANSITION_CONFIGURE)  # configure again after cleanup
        assert managed.state() == State.PRIMARY_STATE_INACTIVE
    finally:
        node.interrupt()
        status = node.stop()
    assert status == 0, node.output()


def test_student_runs_the_onnx_exported_beside_its_checkpoint(colcon_install, student_ckpt, tmp_path, client,
                                                              node_logs) -> None:
    import shutil

    from mmkd_ros.tools.export import export_student

    checkpoint = shutil.copy(student_ckpt, tmp_path / "student.pt")
    exported = export_student(checkpoint, tmp_path / "export").paths["onnx"]
    shutil.copy(exported, tmp_path / "student.onnx")  # as the offline chain leaves it
    name, topic = "student_onnx", "/test_lifecycle/onnx_image"
    client.subscribe(String, f"/{name}/classification")
    publisher = client.publisher(Image, topic, depth=1)
    node = NodeProcess(colcon_install, "student_node", ["-r", f"__node:={name}", "-r", f"image:={topic}",
                                                        "-p", f"model_path:={checkpoint}", "-p", "device:=cpu"],
                       node_logs)
    try:
        assert node.wait_for_output("ready:", 60.0), node.output()
        assert "running student.onnx" in node.output() and "(onnxruntime)" in node.output(), node.output()
        for i in range(50):
            publisher.publish(image_msg(frame(i), "rgb8", 10**9 + i))
            if wait_until(lambda: client.messages(f"/{name}/classification"), 0.2):
                break
        assert client.messages(f"/{name}/classification"), node.output()
        assert '"model":"student.onnx"' in client.messages(f"/{name}/classification")[0].data
    finally:
        node.interrupt()
        assert node.stop() == 0, node.output()
