"""Start student_node on a camera topic, optionally with rviz.

    ros2 launch mmkd_ros student.launch.py model:=/path/student.pt [device:=auto]
        [image:=camera/color/image_raw] [input_type:=raw] [namespace:=robot1]
        [use_sim_time:=false] [rviz:=false]

``image`` (or its older name ``image_topic``) is relative by default, so ``namespace:=`` (or an
including launch file's ``PushRosNamespace``) moves the input with the node; the node is
``student`` under ``ros2 launch`` and ``ros2 run`` alike. ``ros2 launch`` exits non-zero when the
node refuses to start (bad model file or parameter: its one ``cannot start`` line says why).

For a compressed stream give the compressed topic and its type:
    image_topic:=/camera/color/image_raw/compressed input_type:=compressed
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, RegisterEventHandler, SetEnvironmentVariable
from launch.conditions import IfCondition
from launch.event_handlers import OnProcessExit
from launch.substitutions import EnvironmentVariable, LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue
from launch_ros.substitutions import FindPackageShare


def refused_to_start(event, context):
    """Make ``ros2 launch`` exit non-zero when a node refused to start (status 2, one log line)."""
    if event.returncode == 2:
        raise RuntimeError(f"{event.action.name} refused to start: see its 'cannot start' line above")


def generate_launch_description() -> LaunchDescription:
    share = FindPackageShare("mmkd_ros")
    use_sim_time = ParameterValue(LaunchConfiguration("use_sim_time"), value_type=bool)
    student = Node(
        package="mmkd_ros",
        executable="student_node",
        name="student",
        namespace=LaunchConfiguration("namespace"),
        output="screen",
        parameters=[
            PathJoinSubstitution([share, "config", "student.yaml"]),
            {
                "model_path": ParameterValue(LaunchConfiguration("model"), value_type=str),
                "device": ParameterValue(LaunchConfiguration("device"), value_type=str),
                "input_type": ParameterValue(LaunchConfiguration("input_type"), value_type=str),
                "use_sim_time": use_sim_time,
                "autostart": ParameterValue(LaunchConfiguration("autostart"), value_type=bool),
            },
        ],
        remappings=[("image", LaunchConfiguration("image"))],
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
            DeclareLaunchArgument("model", description="Student model: .pt checkpoint or .onnx file"),
            DeclareLaunchArgument("device", default_value="auto", description="auto | cpu | cuda | cuda:N"),
            DeclareLaunchArgument(
                "image_topic", default_value="camera/color/image_raw", description="RGB input topic (older name of image)"
            ),
            DeclareLaunchArgument(
                "image", default_value=LaunchConfiguration("image_topic"), description="RGB input topic"
            ),
            DeclareLaunchArgument(
                "autostart",
                default_value="true",
                choices=["true", "false"],
                description="Configure and activate at start; false: a lifecycle manager drives the node",
            ),
            DeclareLaunchArgument(
                "namespace",
                default_value="",
                description="Namespace of the nodes; relative topics (the defaults) resolve inside it",
            ),
            DeclareLaunchArgument(
                "input_type",
                default_value="raw",
                choices=["raw", "compressed"],
                description="raw (sensor_msgs/Image) or compressed (CompressedImage)",
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
            student,
            RegisterEventHandler(OnProcessExit(target_action=student, on_exit=refused_to_start)),
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
