"""Start teacher_node on time-paired RGB + NIR topics, optionally with rviz.

ros2 launch mmkd_ros teacher.launch.py model:=/path/teacher.pt [device:=auto]
    [rgb_topic:=/camera/color/image_raw] [nir_topic:=/camera/nir/image_raw]
    [use_sim_time:=false] [rviz:=false]
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, SetEnvironmentVariable
from launch.conditions import IfCondition
from launch.substitutions import EnvironmentVariable, LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue
from launch_ros.substitutions import FindPackageShare


def generate_launch_description() -> LaunchDescription:
    share = FindPackageShare("mmkd_ros")
    use_sim_time = ParameterValue(LaunchConfiguration("use_sim_time"), value_type=bool)
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
            DeclareLaunchArgument("model", description="Teacher checkpoint (.pt)"),
            DeclareLaunchArgument("device", default_value="auto", description="auto | cpu | cuda | cuda:N"),
            DeclareLaunchArgument(
                "rgb_topic", default_value="/camera/color/image_raw", description="RGB input topic"
            ),
            DeclareLaunchArgument(
                "nir_topic", default_value="/camera/nir/image_raw", description="NIR input topic"
            ),
            DeclareLaunchArgument(
                "use_sim_time",
                default_value="false",
                choices=["true", "false"],
                description="Use /clock (bag replay)",
            ),
            DeclareLaunchArgument(
                "rviz",
                default_value="false",
                choices=["true", "false"],
                description="Also start rviz2 showing the annotated image",
            ),
            Node(
                package="mmkd_ros",
                executable="teacher_node",
                name="teacher",
                output="screen",
                parameters=[
                    PathJoinSubstitution([share, "config", "teacher.yaml"]),
                    {
                        "model_path": ParameterValue(LaunchConfiguration("model"), value_type=str),
                        "device": ParameterValue(LaunchConfiguration("device"), value_type=str),
                        "use_sim_time": use_sim_time,
                    },
                ],
                remappings=[
                    ("rgb/image", LaunchConfiguration("rgb_topic")),
                    ("nir/image", LaunchConfiguration("nir_topic")),
                ],
            ),
            Node(
                package="rviz2",
                executable="rviz2",
                name="rviz2",
                arguments=["-d", PathJoinSubstitution([share, "config", "mmkd.rviz"])],
                parameters=[{"use_sim_time": use_sim_time}],
                condition=IfCondition(LaunchConfiguration("rviz")),
            ),
        ]
    )
