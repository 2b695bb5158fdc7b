"""Replay a bag into student_node (and teacher_node beside it on request), all on the bag's clock.

    ros2 launch mmkd_ros demo.launch.py bag:=data/demo_bag model:=runs/demo/student/student.pt
        [teacher:=true teacher_model:=runs/demo/teacher/teacher.pt] [rate:=1.0] [loop:=false]
        [device:=auto] [rviz:=false]

The launch ends when the replay ends (unless loop:=true). The replay waits until the nodes have
subscribed (they subscribe once their model is loaded and warmed up), so no frame is lost to start-up.
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, SetEnvironmentVariable, Shutdown
from launch.conditions import IfCondition
from launch.substitutions import (
    EnvironmentVariable,
    LaunchConfiguration,
    PathJoinSubstitution,
    PythonExpression,
)
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue
from launch_ros.substitutions import FindPackageShare

RGB_TOPIC = "/camera/color/image_raw"
NIR_TOPIC = "/camera/nir/image_raw"


def generate_launch_description() -> LaunchDescription:
    share = FindPackageShare("mmkd_ros")
    sim_time = {"use_sim_time": True}
    device = ParameterValue(LaunchConfiguration("device"), value_type=str)
    # student: 1 subscription (RGB); teacher: 2 more (RGB + NIR)
    expected_subscriptions = ParameterValue(
        PythonExpression(["3 if '", LaunchConfiguration("teacher"), "' == 'true' else 1"]), value_type=int
    )
    return LaunchDescription(
        [
            # Camera-sized frames over Fast DDS: see config/fastdds_large_data.xml (a profile the user
            # already set is kept).
            SetEnvironmentVariable(
                "FASTDDS_DEFAULT_PROFILES_FILE",
                EnvironmentVariable(
                    "FASTDDS_DEFAULT_PROFILES_FILE",
                    default_value=PathJoinSubstitution([share, "config", "fastdds_large_data.xml"]),
                ),
            ),
            DeclareLaunchArgument("bag", description="Bag to replay (rosbag2 folder or ROS 1 .bag)"),
            DeclareLaunchArgument("model", description="Student model: .pt checkpoint or .onnx file"),
            DeclareLaunchArgument(
                "teacher",
                default_value="false",
                choices=["true", "false"],
                description="Also run teacher_node on RGB + NIR",
            ),
            DeclareLaunchArgument(
                "teacher_model",
                default_value="",
                description="Teacher checkpoint (.pt), needed with teacher:=true",
            ),
            DeclareLaunchArgument("device", default_value="auto", description="auto | cpu | cuda | cuda:N"),
            DeclareLaunchArgument("rate", default_value="1.0", description="Replay speed factor"),
            DeclareLaunchArgument(
                "loop", default_value="false", choices=["true", "false"], description="Replay the bag forever"
            ),
            DeclareLaunchArgument(
                "rviz",
                default_value="false",
                choices=["true", "false"],
                description="Also start rviz2 showing the annotated images",
            ),
            Node(
                package="mmkd_ros",
                executable="replay_node",
                name="replay",
                output="screen",
                parameters=[
                    PathJoinSubstitution([share, "config", "replay.yaml"]),
                    {
                        "bag": ParameterValue(LaunchConfiguration("bag"), value_type=str),
                        "rate": ParameterValue(LaunchConfiguration("rate"), value_type=float),
                        "loop": ParameterValue(LaunchConfiguration("loop"), value_type=bool),
                        "wait_for_subscribers": expected_subscriptions,
                    },
                ],
                on_exit=Shutdown(reason="bag replay finished"),
            ),
            Node(
                package="mmkd_ros",
                executable="student_node",
                name="student",
                output="screen",
                parameters=[
                    PathJoinSubstitution([share, "config", "student.yaml"]),
                    {
                        "model_path": ParameterValue(LaunchConfiguration("model"), value_type=str),
                        "device": device,
                        **sim_time,
                    },
                ],
                remappings=[("image", RGB_TOPIC)],
            ),
            Node(
                package="mmkd_ros",
                executable="teacher_node",
                name="teacher",
                output="screen",
                parameters=[
                    PathJoinSubstitution([share, "config", "teacher.yaml"]),
                    {
                        "model_path": ParameterValue(LaunchConfiguration("teacher_model"), value_type=str),
                        "device": device,
                        **sim_time,
                    },
                ],
                remappings=[("rgb/image", RGB_TOPIC), ("nir/image", NIR_TOPIC)],
                condition=IfCondition(LaunchConfiguration("teacher")),
            ),
            Node(
                package="rviz2",
                executable="rviz2",
                name="rviz2",
                arguments=["-d", PathJoinSubstitution([share, "config", "mmkd.rviz"])],
                parameters=[sim_time],
                condition=IfCondition(LaunchConfiguration("rviz")),
            ),
        ]
    )
