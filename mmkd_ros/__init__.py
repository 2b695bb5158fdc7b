"""mmkd_ros: cross-modal (RGB + NIR) knowledge distillation for ROS 2 perception."""
import os

__version__ = "0.1.0"

# Idle OpenMP threads sleep instead of spinning (measured: spinning made training 10-60x slower on
# a shared 2-core machine). It must be set before torch loads its OpenMP runtime, so it lives in
# the first module any entry point, node or benchmark imports; a value the user set wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
