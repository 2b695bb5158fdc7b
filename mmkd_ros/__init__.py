"""mmkd_ros: cross-modal (RGB + NIR) knowledge distillation for ROS 2 perception."""

__version__ = "0.1.0"
