"""Message <-> numpy conversions (stand-ins for ``sensor_msgs_py.point_cloud2`` and ``cv_bridge``).

Every reader accepts rclpy messages and rosbags dataclass messages (duck typing on field
names); every writer returns rclpy messages. Malformed input raises ``ConversionError``.
"""

from .errors import ConversionError
from .image import (
    IMAGE_ENCODINGS,
    CameraIntrinsics,
    DecodedImage,
    array_to_compressed,
    array_to_image,
    camera_info_to_intrinsics,
    compressed_to_array,
    convert_encoding,
    image_to_array,
    parse_compressed_format,
)
from .cdr import occupancy_to_marker_array_cdr
from .grid_msg import (
    GRID_MSG_TYPE,
    ORDER_XYZ_ROW_MAJOR,
    SemanticGrid,
    grid_msg_definition,
    grid_to_msg,
    grid_to_rosbags_msg,
    grid_typestore,
    msg_to_grid,
)
from .markers import (
    VOXEL_CLOUD_DTYPES,
    VOXEL_CLOUD_FIELDS,
    MarkerPlan,
    plan_markers,
    packed_rgb,
    colors_from_array,
    occupancy_to_marker_array,
    occupancy_to_pointcloud2,
    pointcloud2_to_occupancy,
    points_from_array,
    voxel_points,
)
from .pointcloud import (
    POINTFIELD_DATATYPES,
    array_to_pointcloud2,
    cloud_dtype,
    columns_to_pointcloud2,
    pointcloud2_to_array,
    pointcloud2_to_xyz,
)

__all__ = [
    "ConversionError",
    "IMAGE_ENCODINGS", "CameraIntrinsics", "DecodedImage", "array_to_compressed", "array_to_image",
    "camera_info_to_intrinsics", "compressed_to_array", "convert_encoding", "image_to_array",
    "parse_compressed_format",
    "VOXEL_CLOUD_DTYPES", "VOXEL_CLOUD_FIELDS", "colors_from_array", "occupancy_to_marker_array",
    "occupancy_to_pointcloud2", "pointcloud2_to_occupancy", "occupancy_to_marker_array_cdr",
    "MarkerPlan", "plan_markers", "packed_rgb", "points_from_array", "voxel_points",
    "POINTFIELD_DATATYPES", "array_to_pointcloud2", "cloud_dtype", "columns_to_pointcloud2",
    "pointcloud2_to_array", "pointcloud2_to_xyz",
    "GRID_MSG_TYPE", "ORDER_XYZ_ROW_MAJOR", "SemanticGrid", "grid_msg_definition", "grid_to_msg", "grid_to_rosbags_msg",
    "grid_typestore", "msg_to_grid",
]
