"""Image messages <-> arrays for every supported encoding, and PNG files."""
import numpy as np
import pytest
from rosbags.typesys import Stores, get_typestore

from mmkd_ros.data import image_files
from mmkd_ros.data import ros_images as images
from mmkd_ros.core.errors import ImageDecodeError

TYPESTORE = get_typestore(Stores.ROS2_JAZZY)
STAMP = 1_700_000_000_123_456_789


def through_cdr(msg):
    """Serialize and deserialize like a bag round trip, so decoding sees real message bytes."""
    return TYPESTORE.deserialize_cdr(TYPESTORE.serialize_cdr(msg, msg.__msgtype__),
                                     msg.__msgtype__)


@pytest.fixture
def rgb():
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (6, 5, 3), dtype=np.uint8)  # [H, W, 3]


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "rgba8", "bgra8"])
def test_colour_encodings_round_trip_in_rgb_order(rgb, encoding):
    msg = through_cdr(images.array_to_image_msg(rgb, encoding, STAMP, "cam", TYPESTORE))
    assert msg.encoding == encoding and images.stamp_to_ns(msg.header.stamp) == STAMP
    out = images.msg_to_array(msg)
    assert out.shape == (6, 5, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, rgb)
    assert out.flags.writeable and out.flags.c_contiguous


def test_bgr8_bytes_are_really_blue_first():
    red = np.zeros((1, 1, 3), np.uint8)
    red[..., 0] = 255
    msg = images.array_to_image_msg(red, "bgr8", STAMP, "cam", TYPESTORE)
    assert list(msg.data) == [0, 0, 255]


@pytest.mark.parametrize("encoding,dtype", [("mono8", np.uint8), ("mono16", np.uint16),
                                            ("8UC1", np.uint8), ("16UC1", np.uint16)])
def test_mono_encodings_round_trip(encoding, dtype):
    rng = np.random.default_rng(1)
    mono = rng.integers(0, np.iinfo(dtype).max, (7, 4, 1), dtype=dtype)
    out = images.msg_to_array(through_cdr(
        images.array_to_image_msg(mono, encoding, STAMP, "nir", TYPESTORE)))
    assert out.shape == (7, 4, 1) and out.dtype == dtype
    np.testing.assert_array_equal(out, mono)


@pytest.mark.parametrize("encoding,mono", [("8UC1", "mono8"), ("16UC1", "mono16")])
def test_opencv_type_encodings_decode_like_mono(encoding, mono):
    """Depth/IR drivers publish 8UC1/16UC1: the same bytes as mono8/mono16, so the same array."""
    dtype = np.uint16 if mono == "mono16" else np.uint8
    arr = np.random.default_rng(3).integers(0, np.iinfo(dtype).max, (5, 7, 1), dtype=dtype)
    msg = images.array_to_image_msg(arr, mono, STAMP, "nir", TYPESTORE)
    msg.encoding = encoding
    out = images.msg_to_array(through_cdr(msg))
    assert out.shape == (5, 7, 1) and out.dtype == dtype
    np.testing.assert_array_equal(out, arr)


def test_big_endian_mono16_and_padded_rows():
    mono = np.arange(12, dtype=np.uint16).reshape(3, 4) * 1000
    image_cls = TYPESTORE.types["sensor_msgs/msg/Image"]
    padded = np.zeros((3, 10), np.uint8)  # 8 bytes of pixels + 2 bytes padding per row
    padded[:, :8] = mono.astype(">u2").view(np.uint8).reshape(3, 8)
    msg = image_cls(header=images.header_msg(STAMP, "nir", TYPESTORE), height=3, width=4,
                    encoding="mono16", is_bigendian=1, step=10, data=padded.reshape(-1))
    np.testing.assert_array_equal(images.msg_to_array(through_cdr(msg))[:, :, 0], mono)


def test_compressed_jpeg_and_png(rgb):
    yy, xx = np.mgrid[0:48, 0:64]
    smooth = np.stack([xx * 4, yy * 5, np.full_like(xx, 60)], axis=2).astype(np.uint8)  # R, G, B
    jpeg = through_cdr(images.array_to_compressed_msg(smooth, "jpeg", STAMP, "cam", TYPESTORE,
                                                      jpeg_quality=95))
    assert jpeg.format == "rgb8; jpeg compressed bgr8"
    out = images.msg_to_array(jpeg)
    assert out.shape == smooth.shape and np.abs(out.astype(int) - smooth).mean() < 3
    png = images.msg_to_array(through_cdr(
        images.array_to_compressed_msg(rgb, "png", STAMP, "cam", TYPESTORE)))
    np.testing.assert_array_equal(png, rgb)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_compressed_png_mono_keeps_its_depth(dtype):
    mono = np.random.default_rng(2).integers(0, np.iinfo(dtype).max, (5, 6, 1), dtype=dtype)
    msg = images.array_to_compressed_msg(mono, "png", STAMP, "nir", TYPESTORE)
    out = images.msg_to_array(through_cdr(msg))
    assert out.dtype == dtype
    np.testing.assert_array_equal(out, mono)


def test_rclpy_messages_decode_the_same_way(rgb):
    from sensor_msgs.msg import CompressedImage, Image

    msg = Image(height=6, width=5, encoding="rgb8", step=15, data=rgb.tobytes())
    np.testing.assert_array_equal(images.msg_to_array(msg), rgb)
    built = images.array_to_compressed_msg(rgb, "png", STAMP, "cam", TYPESTORE)
    compressed = CompressedImage(format=built.format, data=built.data.tobytes())
    np.testing.assert_array_equal(images.msg_to_array(compressed), rgb)


def test_unsupported_encoding_is_one_clear_line(rgb):
    msg = images.array_to_image_msg(rgb, "rgb8", STAMP, "cam", TYPESTORE)
    msg.encoding = "bayer_rggb8"
    with pytest.raises(ImageDecodeError, match="unsupported image encoding 'bayer_rggb8'"):
        images.msg_to_array(msg)
    compressed = images.array_to_compressed_msg(rgb, "png", STAMP, "cam", TYPESTORE)
    compressed.format = "16UC1; compressedDepth png"
    with pytest.raises(ImageDecodeError, match="unsupported CompressedImage format"):
        images.msg_to_array(compressed)


def test_truncated_data_is_an_error_not_a_numpy_traceback(rgb):
    msg = images.array_to_image_msg(rgb, "rgb8", STAMP, "cam", TYPESTORE)
    msg.data = msg.data[:-7]
    with pytest.raises(ImageDecodeError, match="truncated rgb8 image") as info:
        images.msg_to_array(msg)
    assert "\n" not in str(info.value)
    jpeg = images.array_to_compressed_msg(rgb, "jpeg", STAMP, "cam", TYPESTORE)
    jpeg.data = jpeg.data[:20]
    with pytest.raises(ImageDecodeError, match="does not decode"):
        images.msg_to_array(jpeg)


def test_png_files_round_trip(tmp_path, rgb):
    image_files.write_png(tmp_path / "rgb.png", rgb)
    np.testing.assert_array_equal(image_files.read_image_file(tmp_path / "rgb.png"), rgb)
    mono16 = (np.arange(20, dtype=np.uint16) * 3000).reshape(4, 5, 1)
    image_files.write_png(tmp_path / "nir.png", mono16)
    back = image_files.read_image_file(tmp_path / "nir.png")
    assert back.dtype == np.uint16
    np.testing.assert_array_equal(back, mono16)
    np.save(tmp_path / "bands.npy", np.zeros((4, 5, 2), np.uint16))
    assert image_files.read_image_file(tmp_path / "bands.npy").shape == (4, 5, 2)
    with pytest.raises(Exception, match="cannot read image"):
        image_files.read_image_file(tmp_path / "missing.png")
