"""The launch files, read with ``ast`` (launch/launch_ros are not installable here, so they cannot be
imported): every executable, parameter file and rviz file they name exists in the colcon install
tree, every launch argument they use is declared, every parameter they set is one the node declares,
and rviz shows the annotated images of the nodes they start. The parameter files are checked the
same way. ``ros2 launch`` itself is checked by hand (see the report of the nodes issue).
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import pytest
import yaml

from mmkd_ros.nodes import replay_node, student_node, teacher_node
from ros_testing import PACKAGE, REPO_ROOT

LAUNCH_FILES = sorted((REPO_ROOT / "launch").glob("*.launch.py"))
NODE_PARAMETERS = {
    "student_node": {spec.name for spec in student_node.PARAMETERS},
    "teacher_node": {spec.name for spec in teacher_node.PARAMETERS},
    "replay_node": {spec.name for spec in replay_node.PARAMETERS},
}
NODE_INPUTS = {"student_node": {"image"}, "teacher_node": {"rgb/image", "nir/image"}, "replay_node": set()}
PARAMETER_FILES = {
    "student.yaml": "student_node",
    "teacher.yaml": "teacher_node",
    "replay.yaml": "replay_node",
}


def _call_name(node: ast.AST) -> str:
    if isinstance(node, ast.Call):
        func = node.func
        return func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")
    return ""


def _const(node: ast.AST) -> Any:
    return node.value if isinstance(node, ast.Constant) else None


def _kw(call: ast.Call, name: str) -> ast.AST | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


class LaunchFile:
    """What a launch file names, found in its syntax tree."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.tree = ast.parse(path.read_text(), filename=str(path))
        compile(self.tree, str(path), "exec")
        calls = [n for n in ast.walk(self.tree) if isinstance(n, ast.Call)]
        self.share_vars = {
            target.id: _const(assign.value.args[0])
            for assign in ast.walk(self.tree)
            if isinstance(assign, ast.Assign) and _call_name(assign.value) == "FindPackageShare"
            for target in assign.targets
            if isinstance(target, ast.Name)
        }
        self.declared = {_const(c.args[0]) for c in calls if _call_name(c) == "DeclareLaunchArgument"}
        self.used = {_const(c.args[0]) for c in calls if _call_name(c) == "LaunchConfiguration"}
        self.nodes = [c for c in calls if _call_name(c) == "Node"]
        self.share_paths = [self._share_path(c) for c in calls if _call_name(c) == "PathJoinSubstitution"]

    def _share_path(self, call: ast.Call) -> tuple[str, str]:
        """(package, relative path) of ``PathJoinSubstitution([FindPackageShare(pkg), "a", "b"])``."""
        parts = call.args[0].elts
        head = parts[0]
        package = (
            self.share_vars.get(head.id)
            if isinstance(head, ast.Name)
            else _const(head.args[0])
            if _call_name(head) == "FindPackageShare"
            else None
        )
        rest = [_const(p) for p in parts[1:]]
        assert package and all(isinstance(r, str) for r in rest), f"{self.path.name}: unresolvable path"
        return package, "/".join(rest)


@pytest.fixture(scope="module", params=LAUNCH_FILES, ids=[p.name for p in LAUNCH_FILES])
def launch_file(request: pytest.FixtureRequest) -> LaunchFile:
    return LaunchFile(request.param)


def test_launch_files_exist() -> None:
    assert {p.name for p in LAUNCH_FILES} == {"student.launch.py", "teacher.launch.py", "demo.launch.py"}


def test_arguments_declared_and_used(launch_file: LaunchFile) -> None:
    assert launch_file.used <= launch_file.declared, f"undeclared: {launch_file.used - launch_file.declared}"
    assert launch_file.declared <= launch_file.used, f"unused: {launch_file.declared - launch_file.used}"
    assert {"device", "rviz"} <= launch_file.declared


def test_named_files_are_installed(launch_file: LaunchFile, colcon_install: Path) -> None:
    for package, relative in launch_file.share_paths:
        assert package == PACKAGE
        assert (colcon_install / PACKAGE / "share" / PACKAGE / relative).is_file(), relative


def test_nodes_exist_and_get_declared_parameters(launch_file: LaunchFile, colcon_install: Path) -> None:
    ours = 0
    for call in launch_file.nodes:
        package, executable = _const(_kw(call, "package")), _const(_kw(call, "executable"))
        if package == "rviz2":
            assert executable == "rviz2"
            continue
        assert package == PACKAGE
        ours += 1
        assert (colcon_install / PACKAGE / "lib" / PACKAGE / executable).is_file(), executable
        declared = NODE_PARAMETERS[executable] | {"use_sim_time"}
        parameters = _kw(call, "parameters")
        for entry in parameters.elts if parameters is not None else []:
            if isinstance(entry, ast.Dict):
                for key in entry.keys:
                    if key is not None:  # ``**sim_time`` expands to use_sim_time
                        assert _const(key) in declared, f"{executable} has no parameter {_const(key)}"
        remappings = _kw(call, "remappings")
        for pair in remappings.elts if remappings is not None else []:
            assert _const(pair.elts[0]) in NODE_INPUTS[executable]
    assert ours >= 1


def test_rviz_shows_annotated_images_of_started_nodes(launch_file: LaunchFile) -> None:
    rviz = yaml.safe_load((REPO_ROOT / "config" / "mmkd.rviz").read_text())
    topics = {
        d["Topic"]["Value"]
        for d in rviz["Visualization Manager"]["Displays"]
        if d["Class"] == "rviz_default_plugins/Image"
    }
    for call in launch_file.nodes:
        if _const(_kw(call, "executable")) in ("student_node", "teacher_node"):
            assert f"/{_const(_kw(call, 'name'))}/image_annotated" in topics


@pytest.mark.parametrize("file_name", sorted(PARAMETER_FILES))
def test_parameter_files_hold_declared_parameters(file_name: str) -> None:
    """A misspelt key in a parameter file would be silently ignored by the node: refuse it here."""
    content = yaml.safe_load((REPO_ROOT / "config" / file_name).read_text())
    parameters = content["/**"]["ros__parameters"]
    executable = PARAMETER_FILES[file_name]
    assert set(parameters) <= NODE_PARAMETERS[executable], set(parameters) - NODE_PARAMETERS[executable]
    specs = {
        spec.name: spec
        for spec in {"student_node": student_node, "teacher_node": teacher_node, "replay_node": replay_node}[
            executable
        ].PARAMETERS
    }
    for name, value in parameters.items():
        default = specs[name].default
        assert type(value) is type(default), f"{file_name}: {name} should be {type(default).__name__}"
        if specs[name].choices:
            assert value in specs[name].choices


ROBOT_LAUNCH = [p for p in LAUNCH_FILES if p.name in ("student.launch.py", "teacher.launch.py")]


def _declared_defaults(launch_file: LaunchFile) -> dict[str, ast.AST]:
    calls = [n for n in ast.walk(launch_file.tree) if _call_name(n) == "DeclareLaunchArgument"]
    return {_const(c.args[0]): _kw(c, "default_value") for c in calls}


def test_node_names_are_those_of_ros2_run(launch_file: LaunchFile) -> None:
    """``ros2 launch`` and ``ros2 run`` give the same node name, so topics and params match."""
    import rclpy

    classes = {"student_node": student_node.StudentNode, "teacher_node": teacher_node.TeacherNode,
               "replay_node": replay_node.ReplayNode}
    rclpy.init()
    try:
        for call in launch_file.nodes:
            executable = _const(_kw(call, "executable"))
            if executable in classes:
                node = classes[executable]()
                try:
                    assert _const(_kw(call, "name")) == node.get_name(), executable
                finally:
                    node.destroy_node()
    finally:
        rclpy.shutdown()


@pytest.mark.parametrize("path", ROBOT_LAUNCH, ids=[p.name for p in ROBOT_LAUNCH])
def test_inputs_are_relative_and_follow_the_namespace_argument(path: Path) -> None:
    launch_file = LaunchFile(path)
    defaults = _declared_defaults(launch_file)
    assert "namespace" in defaults and _const(defaults["namespace"]) == ""
    node = next(c for c in launch_file.nodes if _const(_kw(c, "package")) == PACKAGE)
    namespace = _kw(node, "namespace")
    assert _call_name(namespace) == "LaunchConfiguration" and _const(namespace.args[0]) == "namespace"
    aliases = {"student.launch.py": {"image": "image_topic"},
               "teacher.launch.py": {"rgb": "rgb_topic", "nir": "nir_topic"}}[path.name]
    remapped = {_const(p.elts[1].args[0]) for p in _kw(node, "remappings").elts}
    assert remapped == set(aliases)  # the short names drive the remapping ...
    for short, old in aliases.items():  # ... and default to the older names, relative topics
        assert _call_name(defaults[short]) == "LaunchConfiguration" and _const(defaults[short].args[0]) == old
        assert not _const(defaults[old]).startswith("/"), f"{old} default is absolute"


@pytest.mark.parametrize("path", ROBOT_LAUNCH, ids=[p.name for p in ROBOT_LAUNCH])
def test_a_node_that_refuses_to_start_fails_the_launch(path: Path) -> None:
    """An exception in an event handler makes ``ros2 launch`` end with status 1, not 0."""
    launch_file = LaunchFile(path)
    handlers = [c for c in ast.walk(launch_file.tree) if _call_name(c) == "OnProcessExit"]
    assert len(handlers) == 1
    target, on_exit = _kw(handlers[0], "target_action"), _kw(handlers[0], "on_exit")
    node_vars = {t.id for a in ast.walk(launch_file.tree) if isinstance(a, ast.Assign)
                 and _call_name(a.value) == "Node" for t in a.targets}
    assert target.id in node_vars
    function = next(f for f in launch_file.tree.body if isinstance(f, ast.FunctionDef) and f.name == on_exit.id)
    namespace: dict[str, Any] = {}
    exec(compile(ast.Module(body=[function], type_ignores=[]), str(path), "exec"), namespace)

    class Event:  # what launch hands an OnProcessExit callback: the action and its return code
        def __init__(self, returncode: int) -> None:
            self.returncode = returncode
            self.action = type("Action", (), {"name": "student-1"})()

    with pytest.raises(RuntimeError, match="refused to start"):
        namespace[on_exit.id](Event(2), None)
    for normal in (0, -2, 1):  # clean exit, Ctrl-C, crash already reported by launch
        assert namespace[on_exit.id](Event(normal), None) is None
