"""occupancy_node parameters: one table, the shipped YAML equal to it, clear rejections, rclpy descriptors."""

from __future__ import annotations

import pytest

from occ_ros.params import (DEFAULT_PARAMS_FILE, GROUND_CLASSES, LEGACY_COMPRESSED_IMAGE_TOPIC, PARAMETERS, NodeConfig,
                            ParameterError, check_update, config_from_values, descriptor, load_params_file,
                            resolve_topic)


def test_shipped_yaml_sets_every_parameter_to_its_default():
    values = load_params_file(DEFAULT_PARAMS_FILE)
    assert set(values) == {p.name for p in PARAMETERS}
    for p in PARAMETERS:
        assert values[p.name] == p.default, p.name
    cfg = config_from_values(values)
    assert isinstance(cfg, NodeConfig)
    assert cfg.image_topic("CAM_FRONT") == "CAM_FRONT/image_rect/compressed"  # image_transport: <base>/compressed
    assert resolve_topic(cfg.image_topic("CAM_FRONT")) == "/CAM_FRONT/image_rect/compressed"
    assert resolve_topic(cfg.info_topic("CAM_BACK"), "/robot1") == "/robot1/CAM_BACK/camera_info"
    assert resolve_topic(cfg.diagnostics_topic, "/robot1") == "/diagnostics"
    assert cfg.marker_hidden_classes == ()
    assert len(cfg.camera_names) == 6 and cfg.sync_queue_size == 10


@pytest.mark.parametrize("name, value, words", [
    ("sync_slop", 5.0, "[0.0, 2.0]"),
    ("sync_queue_size", 0, "[1, 100]"),
    ("worker_queue_size", 1.5, "expected int"),
    ("image_transport", "theora", "one of ['compressed', 'raw']"),
    ("input_qos", "best_effort", "one of ['sensor_data', 'reliable']"),
    ("device", "gpu", "'cpu', 'cuda' or 'cuda:N'"),
    ("camera_names", ["CAM_FRONT", "CAM_FRONT"], "unique"),
    ("camera_names", [], "unique non-empty"),
    ("lidar_topic", "not a topic", "ROS topic name"),
    ("camera_info_topic", "/camera_info", "needs '{camera}'"),
    ("compressed_image_topic", "/{cam}/image", "placeholder {camera}"),
    ("bogus", 1, "unknown parameter"),
    ("lidar_sweeps", 5, "set 'odom_topic'"),
    ("odom_topic", "odom topic", "ROS topic name"),
    ("marker_hidden_classes", ["road"], "out of ['others'"),
    ("marker_hidden_classes", ["car", "car"], "repeats"),
    ("marker_hidden_classes", ["free"], "unknown"),
])
def test_invalid_values_are_rejected_with_the_parameter_named(name, value, words):
    with pytest.raises(ParameterError) as e:
        config_from_values({name: value})
    assert words in str(e.value)
    assert name in str(e.value)


def test_params_file_errors_name_the_file(tmp_path):
    bad = tmp_path / "p.yaml"
    bad.write_text("other_node:\n  ros__parameters: {a: 1}\n")
    with pytest.raises(ParameterError, match="no section 'occupancy_node'"):
        load_params_file(bad)
    bad.write_text("occupancy_node: [1]\n")
    with pytest.raises(ParameterError, match="ros__parameters"):
        load_params_file(bad)


def test_descriptors_carry_ranges_and_descriptions():
    from rcl_interfaces.msg import ParameterType

    by = {p.name: descriptor(p) for p in PARAMETERS}
    assert by["sync_slop"].floating_point_range[0].to_value == 2.0
    assert by["sync_queue_size"].integer_range[0].from_value == 1
    assert by["camera_names"].type == ParameterType.PARAMETER_STRING_ARRAY
    assert "compressed" in by["image_transport"].description
    assert all(d.description for d in by.values())


def test_rclpy_rejects_out_of_range_override():
    import rclpy
    from rclpy.parameter import Parameter

    from occ_ros.params import declare_and_read

    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    try:
        node = rclpy.create_node("occ_params_ok", context=ctx, parameter_overrides=[
            Parameter("sync_slop", value=0.25), Parameter("camera_names", value=["CAM_A"])])
        cfg = declare_and_read(node)
        assert cfg.sync_slop == 0.25 and cfg.camera_names == ("CAM_A",)
        node.destroy_node()
        node = rclpy.create_node("occ_params_bad", context=ctx,
                                 parameter_overrides=[Parameter("sync_slop", value=9.0)])
        with pytest.raises(ParameterError, match="sync_slop"):
            declare_and_read(node)
        node.destroy_node()
    finally:
        rclpy.shutdown(context=ctx)


def test_node_main_exits_2_with_a_clear_message(capsys, tmp_path):
    from occ_ros.occupancy_node import main

    assert main(["occupancy_node", "--ros-args", "-p", "sync_slop:=7.0"]) == 2
    err = capsys.readouterr().err
    assert "invalid parameters" in err and "sync_slop" in err and "7.0" in err
    assert main(["occupancy_node", "--ros-args", "-p", f"model_config:={tmp_path / 'missing.yaml'}"]) == 2
    err = capsys.readouterr().err
    assert "cannot load the model" in err and "missing.yaml" in err


def test_runtime_updates_are_checked_like_start_up_values():
    cfg = config_from_values({})
    new = check_update(cfg, {"marker_hidden_classes": list(GROUND_CLASSES), "min_score": 0.4, "use_sim_time": True})
    assert new.marker_hidden_classes == GROUND_CLASSES and new.min_score == 0.4 and cfg.min_score == 0.0
    with pytest.raises(ParameterError, match=r"\['sync_slop'\] are read at start-up only"):
        check_update(cfg, {"sync_slop": 0.05})
    with pytest.raises(ParameterError, match="marker_alpha"):
        check_update(cfg, {"marker_alpha": 0.0})
    # the image topics of older bags stay selectable
    old = config_from_values({"compressed_image_topic": LEGACY_COMPRESSED_IMAGE_TOPIC})
    assert old.image_topic("CAM_FRONT") == "/CAM_FRONT/image_rect_compressed"
    from occ_ros.params import image_topic_for_bag

    assert image_topic_for_bag({"/LIDAR_TOP", "/CAM_FRONT/image_rect_compressed"}) == LEGACY_COMPRESSED_IMAGE_TOPIC
    assert image_topic_for_bag({"/LIDAR_TOP", "/CAM_FRONT/image_rect/compressed"}) == "/{camera}/image_rect/compressed"
    assert image_topic_for_bag(set()) == "/{camera}/image_rect/compressed"


def test_an_empty_string_list_is_declared_as_a_string_array():
    """rclpy would type an empty list default as a byte array: marker_hidden_classes must stay a
    string array that the params file, -p and SetParameters can fill."""
    import rclpy
    from rcl_interfaces.msg import ParameterType
    from rclpy.parameter import Parameter

    from occ_ros.params import declare_and_read

    ctx = rclpy.Context()
    rclpy.init(context=ctx, args=["x", "--ros-args", "--params-file", str(DEFAULT_PARAMS_FILE)])
    try:
        node = rclpy.create_node("occupancy_node", context=ctx)
        assert declare_and_read(node).marker_hidden_classes == ()
        assert node.get_parameter("marker_hidden_classes").type_ == Parameter.Type.STRING_ARRAY
        assert node.describe_parameter("marker_hidden_classes").type == ParameterType.PARAMETER_STRING_ARRAY
        assert node.set_parameters([Parameter("marker_hidden_classes", value=["terrain"])])[0].successful
        node.destroy_node()
        node = rclpy.create_node("occ_hidden", context=ctx, parameter_overrides=[
            Parameter("marker_hidden_classes", value=["driveable_surface", "terrain"])])
        assert declare_and_read(node).marker_hidden_classes == ("driveable_surface", "terrain")
        node.destroy_node()
    finally:
        rclpy.shutdown(context=ctx)
