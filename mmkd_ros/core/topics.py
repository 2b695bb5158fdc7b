"""Default topic names of the dual-camera rig (realsense-ros style), defined once.

The simulator records them, extraction reads them by default, the launch files remap the nodes'
relative inputs (``image``, ``nir``) onto them, and the demo listens to them. A real rig with other
names remaps (nodes) or passes ``--rgb-topic``/``--nir-topic``/``--label-topic`` (extraction).
"""
RGB_TOPIC = "/camera/color/image_raw"
RGB_COMPRESSED_TOPIC = RGB_TOPIC + "/compressed"
NIR_TOPIC = "/camera/nir/image_raw"
LABEL_TOPIC = "/scene/label"
