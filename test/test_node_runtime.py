"""occupancy_node as ROS users drive it: runtime parameters through the SetParameters service,
lifecycle transitions through the lifecycle services, ``--help``.

Everything goes over real DDS in this process: a peer node calls the node's
``/<node>/set_parameters`` and ``/<node>/change_state`` services, publishes the synthetic keyframe
and records the outputs. Node names and topics carry a per-module prefix.
"""

from __future__ import annotations


import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")

from test_node_dds import graph, topic_overrides  # noqa: E402
from test_node_support import CAMERAS, PointHeightTestPredictor, load_keyframe, wait_for  # noqa: E402
from occ_core.classes import OCC3D_FREE  # noqa: E402
from occ_ros.conversions import pointcloud2_to_array, pointcloud2_to_occupancy  # noqa: E402

PREFIX = "/t_node_runtime"


@pytest.fixture(scope="module")
def keyframe(synthetic_dataroot, tmp_path_factory):
    return load_keyframe(synthetic_dataroot, tmp_path_factory.mktemp("runtime_kf"))


def call(peer, client, request, timeout=10.0):
    """A service call from the (spun) peer node; returns the response."""
    assert client.wait_for_service(timeout_sec=timeout), f"no service {client.srv_name}"
    future = client.call_async(request)
    wait_for(future.done, timeout, what=f"answer of {client.srv_name}")
    return future.result()


def set_params(peer, client, **values):
    """``SetParameters`` over the service; returns ``{name: (successful, reason)}``."""
    from rcl_interfaces.srv import SetParameters
    from rclpy.parameter import Parameter

    req = SetParameters.Request()
    req.parameters = [(Parameter(k, Parameter.Type.STRING_ARRAY, v) if isinstance(v, list)
                       else Parameter(k, value=v)).to_parameter_msg() for k, v in values.items()]
    res = call(peer, client, req)
    return {k: (r.successful, r.reason) for k, r in zip(values, res.results)}


def marker_classes(msg) -> list[str]:
    return [m.ns for m in msg.markers[1:]]


def test_runtime_parameters_take_effect_and_bad_values_are_refused(keyframe):
    from rcl_interfaces.srv import SetParameters

    from occ_ros.occupancy_node import OccupancyNode

    name = "occ_runtime_node"
    make = lambda ctx: OccupancyNode(PointHeightTestPredictor(), node_name=name, context=ctx,  # noqa: E731
                                     parameter_overrides=topic_overrides(PREFIX, keyframe.rig_file))
    with graph(make, PREFIX, keyframe) as (node, peer):
        peer.calibrated = lambda: set(node._intrinsics) >= set(CAMERAS)
        client = peer.node.create_client(SetParameters, f"/{name}/set_parameters")
        wait_for(lambda: peer.connected() and node.markers_pub.get_subscription_count() > 0, what="discovery")
        stamp = keyframe.stamp_ns
        peer.send(stamp)
        wait_for(lambda: peer.markers and peer.voxels, what="first output")
        assert "driveable_surface" in marker_classes(peer.markers[-1])
        full = pointcloud2_to_occupancy(peer.voxels[-1])

        # hide the ground in the markers: the voxel cloud keeps it
        assert set_params(peer, client, marker_hidden_classes=["driveable_surface", "terrain"], marker_alpha=0.5) == {
            "marker_hidden_classes": (True, ""), "marker_alpha": (True, "")}
        assert node.config.marker_hidden_classes == ("driveable_surface", "terrain") and node.config.marker_alpha == 0.5
        n = len(peer.markers)
        peer.send(stamp + 10**9)
        wait_for(lambda: len(peer.markers) > n and len(peer.voxels) > n, what="output after the change")
        got = peer.markers[-1]
        assert "driveable_surface" not in marker_classes(got) and marker_classes(got)  # cars etc. still drawn
        assert all(abs(m.color.a - 0.5) < 1e-6 for m in got.markers[1:])
        np.testing.assert_array_equal(pointcloud2_to_occupancy(peer.voxels[-1]), full)

        # bad values are refused, naming the parameter; the running configuration stays
        before = node.config
        res = set_params(peer, client, marker_hidden_classes=["road"])
        assert not res["marker_hidden_classes"][0] and "marker_hidden_classes" in res["marker_hidden_classes"][1]
        assert "'road'" in res["marker_hidden_classes"][1]
        assert not set_params(peer, client, marker_alpha=0.0)["marker_alpha"][0]  # outside [0.01, 1]
        assert not set_params(peer, client, min_score=1.5)["min_score"][0]
        ok, reason = set_params(peer, client, sync_slop=0.07)["sync_slop"]
        assert not ok and "read-only" in reason
        assert not set_params(peer, client, diagnostics_period="fast")["diagnostics_period"][0]  # wrong type
        assert node.config == before
        assert node.get_parameter("marker_hidden_classes").value == ["driveable_surface", "terrain"]

        # the score threshold: above every score, every voxel is published as free
        score = float(pointcloud2_to_array(peer.voxels[-1])["score"][0])
        assert set_params(peer, client, min_score=min(1.0, score + 0.01))["min_score"] == (True, "")
        n = len(peer.voxels)
        peer.send(stamp + 2 * 10**9)
        wait_for(lambda: len(peer.voxels) > n, what="output after min_score")
        assert peer.voxels[-1].width == 0 and (pointcloud2_to_occupancy(peer.voxels[-1]) == OCC3D_FREE).all()

        # the diagnostics period restarts its timer
        assert set_params(peer, client, diagnostics_period=0.5)["diagnostics_period"] == (True, "")
        assert node._diag_timer.timer_period_ns == 500_000_000


def test_lifecycle_configure_loads_the_model_and_activate_subscribes(keyframe, tmp_path):
    from rclpy.parameter import Parameter

    from occ_ros.lifecycle_client import LifecycleClient, LifecycleError
    from occ_ros.occupancy_node import ManagedOccupancyNode
    from occ_ros.params import resolve_share_path

    prefix = PREFIX + "_lc"
    name = "occ_managed_node"
    lidar_model = [Parameter("model_config", value=str(resolve_share_path("config/models/lidar.yaml"))),
                   Parameter("checkpoint", value="")]
    make = lambda ctx: ManagedOccupancyNode(node_name=name, context=ctx,  # noqa: E731
                                            parameter_overrides=topic_overrides(prefix, keyframe.rig_file) + lidar_model)
    with graph(make, prefix, keyframe) as (node, peer):
        lc = LifecycleClient(peer.node, "/" + name)
        inputs = [prefix + "/lidar", *(f"{prefix}/{c}/image" for c in CAMERAS)]

        def subscribed():
            return [t for t in inputs if any(i.node_name == name for i in node.get_subscriptions_info_by_topic(t))]

        assert lc.state() == "unconfigured" and node.predictor is None and subscribed() == []
        with pytest.raises(LifecycleError, match="activate"):  # not allowed before configure
            lc.change("activate")

        assert lc.change("configure") == "inactive"
        assert type(node.predictor).__name__ == "OccupancyPredictor"  # the lidar model, loaded by configure
        assert subscribed() == []  # inactive: publishers and model, no inputs yet

        assert lc.change("activate") == "active"
        assert sorted(subscribed()) == sorted(inputs)
        peer.calibrated = lambda: set(node._intrinsics) >= set(CAMERAS)
        wait_for(peer.connected, what="discovery")
        peer.send(keyframe.stamp_ns)
        wait_for(lambda: peer.voxels, timeout=60, what="output of the active node")
        assert peer.voxels[-1].header.stamp.sec * 10**9 + peer.voxels[-1].header.stamp.nanosec == keyframe.stamp_ns

        assert lc.change("deactivate") == "inactive"
        assert subscribed() == [] and node._diag_timer is None and node.predictor is not None
        assert lc.change("cleanup") == "unconfigured"
        assert node.predictor is None and node.worker is None
        assert lc.change("configure") == "inactive"  # again, after a cleanup
        assert lc.change("shutdown") == "finalized"
        assert node.worker is None


def test_lifecycle_configure_fails_on_a_model_that_cannot_be_loaded(keyframe, tmp_path):
    from rclpy.parameter import Parameter

    from occ_ros.lifecycle_client import LifecycleClient, LifecycleError
    from occ_ros.occupancy_node import ManagedOccupancyNode

    prefix = PREFIX + "_lcbad"
    name = "occ_managed_bad"
    bad = [Parameter("model_config", value=str(tmp_path / "missing.yaml"))]
    make = lambda ctx: ManagedOccupancyNode(node_name=name, context=ctx,  # noqa: E731
                                            parameter_overrides=topic_overrides(prefix, keyframe.rig_file) + bad)
    with graph(make, prefix, keyframe) as (node, peer):
        lc = LifecycleClient(peer.node, "/" + name)
        with pytest.raises(LifecycleError, match="configure"):
            lc.change("configure")
        assert lc.state() == "unconfigured" and node.predictor is None


def test_help_prints_every_parameter_without_starting_a_node(capsys):
    from occ_ros.occupancy_node import main
    from occ_ros.params import PARAMETERS, RUNTIME_PARAMETERS

    assert main(["occupancy_node", "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: occupancy_node") and "--managed" in out
    for p in PARAMETERS:
        line = next(ln for ln in out.splitlines() if ln.startswith(f"  {p.name} ("))
        assert repr(p.default) in line and (line.endswith(", runtime)") == (p.name in RUNTIME_PARAMETERS)), line
    assert set(RUNTIME_PARAMETERS) == {"min_score", "marker_alpha", "marker_hidden_classes", "diagnostics_period", "map_clear"}
