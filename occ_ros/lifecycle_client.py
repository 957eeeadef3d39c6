"""``occ-lifecycle NODE [TRANSITION ...]``: drive a managed node, for installs without ``ros2 lifecycle``.

    occ-lifecycle /occupancy_node                       # print the current state
    occ-lifecycle /occupancy_node configure activate    # what 'ros2 lifecycle set' does, in order

It calls the node's standard lifecycle services (``<node>/get_state``, ``<node>/change_state``,
lifecycle_msgs), so it drives any ROS 2 managed node. Transitions: ``configure``, ``cleanup``,
``activate``, ``deactivate``, ``shutdown`` (from whatever state the node is in). A transition the
node refuses or fails, or a node that does not answer within ``--timeout`` s, ends the tool with one
line naming it and exit code 1; unknown transitions exit 2.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from occ_core.cli import positive_float, run_cli
from occ_core.errors import OccDataError

TRANSITIONS = ("configure", "cleanup", "activate", "deactivate", "shutdown")


class LifecycleError(RuntimeError):
    """A transition the node refused or failed, or a node that did not answer."""


class LifecycleClient:
    """Clients of one managed node's ``get_state`` / ``change_state`` services.

    Args:
        node: the rclpy node that makes the calls (spun by someone else, or by :meth:`_call`).
        target: the managed node's fully qualified name (``/occupancy_node``, ``/robot1/occupancy_node``).
    """

    def __init__(self, node: Any, target: str, timeout: float = 10.0):
        from lifecycle_msgs.srv import ChangeState, GetAvailableTransitions, GetState

        self.node, self.target, self.timeout = node, "/" + target.strip("/"), timeout
        self._get = node.create_client(GetState, f"{self.target}/get_state")
        self._available = node.create_client(GetAvailableTransitions, f"{self.target}/get_available_transitions")
        self._change = node.create_client(ChangeState, f"{self.target}/change_state")

    def _call(self, client: Any, request: Any) -> Any:
        import rclpy

        if not client.wait_for_service(timeout_sec=self.timeout):
            raise LifecycleError(f"{self.target}: no lifecycle service {client.srv_name} within {self.timeout} s "
                                 f"(is the node running with --managed?)")
        future = client.call_async(request)
        if self.node.executor is None:
            rclpy.spin_until_future_complete(self.node, future, timeout_sec=self.timeout)
        else:  # spun elsewhere: wait for the answer
            end = time.monotonic() + self.timeout
            while not future.done() and time.monotonic() < end:
                time.sleep(0.01)
        if not future.done():
            raise LifecycleError(f"{self.target}: {client.srv_name} did not answer within {self.timeout} s")
        return future.result()

    def state(self) -> str:
        """The node's current state label (``unconfigured``, ``inactive``, ``active``, ``finalized``)."""
        from lifecycle_msgs.srv import GetState

        return self._call(self._get, GetState.Request()).current_state.label

    def available(self) -> dict[str, int]:
        """Transition label -> id of the transitions the node allows from its current state."""
        from lifecycle_msgs.srv import GetAvailableTransitions

        res = self._call(self._available, GetAvailableTransitions.Request())
        return {t.transition.label: t.transition.id for t in res.available_transitions}

    def change(self, transition: str) -> str:
        """Trigger ``transition``; returns the new state label.

        A transition the state machine does not offer from the current state is refused here
        (rclpy's change_state service raises inside the node's executor on those).

        Raises:
            LifecycleError: not allowed from the node's state, or the transition failed.
        """
        from lifecycle_msgs.srv import ChangeState

        if transition not in TRANSITIONS:
            raise OccDataError(f"transition {transition!r}: expected one of {list(TRANSITIONS)}")
        before = self.state()
        allowed = self.available()
        ids = [i for label, i in allowed.items() if label == transition or label.endswith("_" + transition)]
        if not ids:
            raise LifecycleError(f"{self.target}: transition {transition!r} is not allowed from {before!r} "
                                 f"(allowed: {sorted(allowed)})")
        req = ChangeState.Request()
        req.transition.id = ids[0]
        if not self._call(self._change, req).success:
            after = self.state()
            raise LifecycleError(f"{self.target}: transition {transition!r} from {before!r} failed or is not "
                                 f"allowed (now {after!r}; see the node's log)")
        return self.state()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="occ-lifecycle", description=__doc__.split("\n\n")[0])
    p.add_argument("node", help="managed node name, e.g. /occupancy_node")
    p.add_argument("transitions", nargs="*", metavar="TRANSITION", help=f"any of {', '.join(TRANSITIONS)}")
    p.add_argument("--timeout", type=positive_float, default=10.0, help="seconds to wait for the node (default 10)")
    a = p.parse_args(argv)
    return run_cli("occ-lifecycle", lambda: _main(a))


def _main(a: argparse.Namespace) -> int:
    import rclpy

    bad = [t for t in a.transitions if t not in TRANSITIONS]
    if bad:
        raise OccDataError(f"transitions {bad}: expected any of {list(TRANSITIONS)}")
    rclpy.init()
    node = rclpy.create_node("occ_lifecycle_client")
    try:
        client = LifecycleClient(node, a.node, a.timeout)
        print(f"{client.target}: {client.state()}")
        for t in a.transitions:
            print(f"{client.target}: {t} -> {client.change(t)}")
        return 0
    except LifecycleError as e:
        print(f"occ-lifecycle: {e}", file=sys.stderr)
        return 1
    finally:
        node.destroy_node()
        rclpy.shutdown()


if __name__ == "__main__":
    sys.exit(main())
