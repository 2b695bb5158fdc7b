"""The nodes a launch file starts, read from its syntax tree (no ``launch`` package needed).

The demo starts its ROS processes from this description of ``launch/demo.launch.py``, so it runs the
node names, topics, parameter files and clock a user gets from ``ros2 launch``, not a copy of them.
Only what the launch file states literally is read: ``Node(executable=..., name=...,
remappings=[(a, b)], parameters=[PathJoinSubstitution([share, "config", "x.yaml"]), {...}])``,
with module-level string constants resolved; values taken from launch arguments are left to the
caller (they are the demo's own: bag, model, device, rate).
"""
from __future__ import annotations

import ast
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmkd_ros.core.errors import MmkdError

REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class NodeSpec:
    """One ``launch_ros.actions.Node`` of a launch file."""

    name: str
    executable: str
    remappings: dict[str, str] = field(default_factory=dict)
    parameter_files: tuple[Path, ...] = ()  # in the source tree (config/...), as installed under share/
    parameters: dict[str, Any] = field(default_factory=dict)  # literal values only (e.g. use_sim_time)

    @property
    def module(self) -> str:
        """The Python module behind the executable (``setup.py``'s console scripts)."""
        return f"mmkd_ros.nodes.{self.executable}"

    def ros_args(self, **parameters: Any) -> list[str]:
        """``--ros-args`` for ``python -m <module>``: name, remappings, parameter files, then values."""
        args = ["-r", f"__node:={self.name}"]
        for source, target in self.remappings.items():
            args += ["-r", f"{source}:={target}"]
        for path in self.parameter_files:
            args += ["--params-file", str(path)]
        for key, value in {**self.parameters, **parameters}.items():
            args += ["-p", f"{key}:={_ros_value(value)}"]
        return args


def _ros_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_ros_value(v) for v in value) + "]"
    return str(value)


def read_nodes(path: Path) -> dict[str, NodeSpec]:
    """Node name -> :class:`NodeSpec` for every ``Node(...)`` in the launch file at ``path``."""
    try:
        tree = ast.parse(Path(path).read_text(), filename=str(path))
    except (OSError, SyntaxError) as exc:
        raise MmkdError(f"cannot read launch file {path}: {exc}") from None
    constants = {
        target.id: node.value.value
        for node in tree.body
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant)
        for target in node.targets
        if isinstance(target, ast.Name)
    }

    def literal(node: ast.AST) -> Any:
        if isinstance(node, ast.Name) and node.id in constants:
            return constants[node.id]
        return ast.literal_eval(node)

    specs: dict[str, NodeSpec] = {}
    for call in ast.walk(tree):
        if not (isinstance(call, ast.Call) and getattr(call.func, "id", getattr(call.func, "attr", "")) == "Node"):
            continue
        kw = {k.arg: k.value for k in call.keywords if k.arg}
        if getattr(kw.get("package"), "value", None) != "mmkd_ros":
            continue  # rviz2 and other packages' nodes
        name, executable = literal(kw["name"]), literal(kw["executable"])
        remappings = {literal(t.elts[0]): literal(t.elts[1]) for t in getattr(kw.get("remappings"), "elts", [])}
        files, parameters = [], {}
        for entry in getattr(kw.get("parameters"), "elts", []):
            if isinstance(entry, ast.Call):  # PathJoinSubstitution([share, "config", "student.yaml"])
                parts = [p.value for p in entry.args[0].elts[1:] if isinstance(p, ast.Constant)]
                files.append(REPO_ROOT.joinpath(*parts))
            elif isinstance(entry, ast.Dict):
                for key, value in zip(entry.keys, entry.values):
                    if key is None:  # **sim_time: a module- or function-level dict of literals
                        parameters.update(_dict_literal(tree, value))
                    else:
                        try:
                            parameters[literal(key)] = literal(value)
                        except ValueError:
                            pass  # from a launch argument: the caller sets it
        specs[name] = NodeSpec(name, executable, remappings, tuple(files), parameters)
    return specs


def _dict_literal(tree: ast.AST, name: ast.AST) -> dict[str, Any]:
    """The literal dict assigned to the variable ``name`` somewhere in ``tree``."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == getattr(name, "id", "") for t in node.targets):
            return ast.literal_eval(node.value)
    return {}
