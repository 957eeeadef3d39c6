"""Procedural street scenes: roads, sidewalks, islands, terrain, buildings, vegetation and the ten
nuScenes object classes, parked and moving, with the ego driving through.

Layout (map frame, metres): a curvy main road (two lanes each way, 3.5 m, plus a 2.5 m parking
lane per side) crossed by a straight road at an intersection the ego passes during the scene;
raised sidewalks (curb :data:`~.geometry.CURB_HEIGHT`) along both roads; other_flat median
islands and driveway/plaza patches; terrain behind the sidewalks. Buildings, walls, poles,
trees and bushes stand on the terrain and sidewalks. Objects follow their road at constant
speed: the ego drives in the right inner lane (offset -1.75 m) at 5-9 m/s; traffic in the other
lanes moves at one speed per lane (so nothing collides); vehicles park in the parking lanes;
the ego's speed surges gently around its mean; cross-road traffic waits at the stop line;
pedestrians walk or stand on the sidewalks; a construction zone has cones, barriers and a construction vehicle.

Sizes follow the nuScenes per-class mean box sizes ``[w, l, h]``.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from occ_core.classes import OCC3D_INDEX, OCC3D_TO_LIDARSEG_NAME
from occ_core.data.synthetic.geometry import CURB_HEIGHT, Ground, Solids

LANE = 3.5
ROAD_HALF = 2 * LANE + 2.5  # two lanes + parking lane per side
SIDEWALK = 3.5
EGO_LANE = -LANE / 2
RASTER_RES = 0.2
#: Gap (m) between an object's surfaces and its annotation box on every side.
BOX_MARGIN = 0.05

#: nuScenes-typical [w, l, h] means and standard deviations per detection class.
SIZES: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = {
    "car": ((1.95, 4.62, 1.73), (0.1, 0.3, 0.12)),
    "truck": ((2.52, 6.94, 2.84), (0.15, 1.0, 0.3)),
    "bus": ((2.94, 11.19, 3.47), (0.1, 0.8, 0.15)),
    "trailer": ((2.90, 10.0, 3.6), (0.1, 1.2, 0.2)),
    "construction_vehicle": ((2.73, 6.37, 3.19), (0.2, 0.8, 0.3)),
    "pedestrian": ((0.67, 0.73, 1.77), (0.05, 0.08, 0.1)),
    "motorcycle": ((0.77, 2.11, 1.47), (0.05, 0.1, 0.08)),
    "bicycle": ((0.60, 1.70, 1.28), (0.04, 0.08, 0.08)),
    "traffic_cone": ((0.41, 0.41, 1.07), (0.03, 0.03, 0.08)),
    "barrier": ((2.53, 0.50, 0.98), (0.2, 0.05, 0.05)),
}
#: detection class -> nuScenes category (lidarseg class name) used for annotations and lidarseg.
CATEGORY_OF: dict[str, str] = {n: OCC3D_TO_LIDARSEG_NAME[n] for n in SIZES}

C = OCC3D_INDEX


@dataclass
class Road:
    """A road centre line sampled every metre: ``s`` (N,), ``xy`` (N, 2), ``heading`` (N,)."""

    s: np.ndarray
    xy: np.ndarray
    heading: np.ndarray

    def pose(self, s: np.ndarray, offset: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Map positions (N, 2) and headings (N,) at arc length s (N,) and lateral offset (N,)
        (left positive); extrapolated straight beyond the ends."""
        s = np.asarray(s, np.float64)
        h = np.interp(s, self.s, self.heading)
        x = np.interp(s, self.s, self.xy[:, 0])
        y = np.interp(s, self.s, self.xy[:, 1])
        lo, hi = s < self.s[0], s > self.s[-1]
        ext = np.where(lo, s - self.s[0], np.where(hi, s - self.s[-1], 0.0))
        x = x + ext * np.cos(h)
        y = y + ext * np.sin(h)
        off = np.asarray(offset, np.float64)
        return np.stack([x - off * np.sin(h), y + off * np.cos(h)], axis=1), h


@dataclass
class Objects:
    """Annotated objects (O of them); motion along a road at constant signed speed.

    ``name`` (O,) detection class, ``wlh`` (O, 3), ``road`` (O,) road index, ``s0`` (O,) arc
    length at t = 0, ``offset`` (O,) lateral offset, ``speed`` (O,) m/s along s (heading flips
    where negative), ``attribute`` (O,) nuScenes attribute name, ``yaw_extra`` (O,) heading
    relative to the road (radians). Parts (P): ``part_obj`` (P,) owner, ``part_kind`` (P,)
    0 box / 1 cylinder / 2 ellipsoid, ``part_a`` (P, 3) local centre (box, ellipsoid) or
    (x, y, z0) (cylinder), ``part_b`` (P, 3) half sizes / radii / (r, z1, 0).
    """

    name: list[str]
    wlh: np.ndarray
    road: np.ndarray
    s0: np.ndarray
    offset: np.ndarray
    speed: np.ndarray
    attribute: list[str]
    yaw_extra: np.ndarray
    part_obj: np.ndarray
    part_kind: np.ndarray
    part_a: np.ndarray
    part_b: np.ndarray

    def __len__(self) -> int:
        return len(self.name)


@dataclass
class ObjectStates:
    """Object boxes at one instant (map frame): ``center`` (O, 3) box centre, ``yaw`` (O,),
    ``velocity`` (O, 3) m/s."""

    center: np.ndarray
    yaw: np.ndarray
    velocity: np.ndarray


@dataclass
class World:
    """A scene: ground, static solids, objects, roads and the ego's motion."""

    ground: Ground
    static: Solids
    objects: Objects
    roads: list[Road]
    ego_s0: float
    ego_speed: float
    ego_surge: tuple[float, float, float] = (0.0, 1.0, 0.0)  # (amplitude m, angular rate rad/s, phase)

    def ego_arc(self, t: float) -> float:
        """Arc length of the ego along the main road at time t: mean speed plus a gentle surge
        (speed varies by up to 25 % around the mean, like traffic-following driving)."""
        a, w, ph = self.ego_surge
        return self.ego_s0 + self.ego_speed * t + a * (np.sin(w * t + ph) - np.sin(ph))

    def object_states(self, t: float) -> ObjectStates:
        ob = self.objects
        n = len(ob)
        center = np.zeros((n, 3))
        yaw = np.zeros(n)
        vel = np.zeros((n, 3))
        for r, road in enumerate(self.roads):
            m = ob.road == r
            if not m.any():
                continue
            s = ob.s0[m] + ob.speed[m] * t
            xy, h = road.pose(s, ob.offset[m])
            hh = h + np.where(ob.speed[m] < 0, np.pi, 0.0) + ob.yaw_extra[m]
            center[m, :2] = xy
            yaw[m] = np.arctan2(np.sin(hh), np.cos(hh))
            sp = np.abs(ob.speed[m])
            vel[m, 0] = sp * np.cos(hh)
            vel[m, 1] = sp * np.sin(hh)
        base = np.where(self.ground.heights_at(center[:, :2]) > 0, CURB_HEIGHT, 0.0)
        center[:, 2] = base + ob.wlh[:, 2] / 2
        return ObjectStates(center, yaw, vel)

    def solids_at(self, t: float) -> Solids:
        """All solids at time t (seconds from the scene start), map frame; object parts carry
        instance id = object index + 1."""
        st = self.object_states(t)
        ob = self.objects
        o = ob.part_obj
        c, s = np.cos(st.yaw[o]), np.sin(st.yaw[o])
        bottom = st.center[o, 2] - ob.wlh[o, 2] / 2
        ax, ay, az = ob.part_a[:, 0], ob.part_a[:, 1], ob.part_a[:, 2]
        wx = st.center[o, 0] + c * ax - s * ay
        wy = st.center[o, 1] + s * ax + c * ay
        cls = np.array([C[ob.name[i]] for i in o], np.uint8) if len(o) else np.zeros(0, np.uint8)
        inst = (o + 1).astype(np.int32)
        kb, kc, ke = ob.part_kind == 0, ob.part_kind == 1, ob.part_kind == 2
        dyn = Solids(
            box_center=np.stack([wx, wy, bottom + az], 1)[kb], box_half=ob.part_b[kb],
            box_yaw=st.yaw[o][kb], box_cls=cls[kb], box_inst=inst[kb],
            cyl_xy=np.stack([wx, wy], 1)[kc],
            cyl_z=np.stack([bottom + az, bottom + ob.part_b[:, 1]], 1)[kc],
            cyl_r=ob.part_b[kc, 0], cyl_cls=cls[kc], cyl_inst=inst[kc],
            ell_center=np.stack([wx, wy, bottom + az], 1)[ke], ell_radii=ob.part_b[ke],
            ell_cls=cls[ke], ell_inst=inst[ke],
        )
        return Solids.concat([self.static, dyn])

    def ego_pose(self, t: float) -> tuple[np.ndarray, float]:
        """base_link position (3,) (z = 0 on the road) and yaw in the map frame at time t."""
        xy, h = self.roads[0].pose(np.array([self.ego_arc(t)]), np.array([EGO_LANE]))
        return np.array([xy[0, 0], xy[0, 1], 0.0]), float(h[0])


# ----------------------------------------------------------------------------- object templates
def _parts(name: str, w: float, l: float, h: float, rider: bool) -> list[tuple[int, tuple, tuple]]:
    """Local parts (kind, a, b) of one object; x forward, y left, z up from the box bottom."""
    box = lambda x, y, z0, z1, hl, hw: (0, (x, y, (z0 + z1) / 2), (hl, hw, (z1 - z0) / 2))  # noqa: E731
    cyl = lambda x, y, z0, z1, r: (1, (x, y, z0), (r, z1, 0.0))  # noqa: E731
    ell = lambda x, y, z, rx, ry, rz: (2, (x, y, z), (rx, ry, rz))  # noqa: E731
    def wheels(xs, r):  # wheel pairs (as boxes) at longitudinal positions xs, radius r
        return [box(x, sy * (w / 2 - 0.13), 0.0, 2 * r, r, 0.12) for x in xs for sy in (-1, 1)]

    if name == "car":
        return [box(0, 0, 0.3, 0.58 * h, l / 2, w / 2), box(-0.06 * l, 0, 0.58 * h, h, 0.27 * l, 0.44 * w)] + \
            wheels((0.31 * l, -0.31 * l), 0.32)
    if name == "truck":
        return [box(l / 2 - 0.11 * l, 0, 0.55, 0.88 * h, 0.11 * l, w / 2),
                box(-0.12 * l, 0, 0.6, h, 0.38 * l, w / 2)] + wheels((0.36 * l, -0.3 * l), 0.48)
    if name == "bus":
        return [box(0, 0, 0.35, h, l / 2, w / 2)] + wheels((0.32 * l, -0.28 * l), 0.5)
    if name == "trailer":
        return [box(-0.05 * l, 0, 0.95, h, 0.45 * l, w / 2), box(0.45 * l, 0, 0.8, 1.1, 0.05 * l, 0.1 * w)] + \
            wheels((-0.3 * l, -0.38 * l), 0.47)
    if name == "construction_vehicle":
        return [box(-0.15 * l, 0, 0.7, 0.5 * h, 0.35 * l, w / 2),
                box(-0.25 * l, 0, 0.5 * h, h, 0.2 * l, 0.4 * w),
                box(0.35 * l, 0, 0.3, 0.7 * h, 0.15 * l, 0.2 * w)] + wheels((0.12 * l, -0.35 * l), 0.6)
    if name == "pedestrian":
        r = 0.4 * min(w, l)
        return [cyl(0, 0, 0.0, 0.84 * h, r), ell(0, 0, h - 0.13, 0.1, 0.1, 0.13)]
    if name == "motorcycle":
        p = [box(0, 0, 0.3, 0.95, l / 2, 0.3 * w)]
        return p + ([cyl(-0.1 * l, 0, 0.7, h, 0.22)] if rider else [])
    if name == "bicycle":
        p = [box(0, 0, 0.3, 1.0, l / 2, 0.12)]
        return p + ([cyl(-0.1 * l, 0, 0.8, h, 0.2)] if rider else [])
    if name == "traffic_cone":
        return [box(0, 0, 0.0, 0.05, l / 2, w / 2), cyl(0, 0, 0.05, h, 0.3 * min(w, l))]
    if name == "barrier":
        return [box(0, 0, 0.0, h, l / 2, w / 2)]
    raise KeyError(name)


class _ObjectBuilder:
    def __init__(self, rng: np.random.Generator):
        self.rng = rng
        self.rows: list[tuple] = []

    def add(self, name: str, road: int, s0: float, offset: float, speed: float, attribute: str,
            yaw_extra: float = 0.0, rider: bool = False) -> float:
        """Add one object; returns its length (m)."""
        mean, sd = SIZES[name]
        wlh = np.maximum(np.asarray(mean) + self.rng.normal(size=3) * np.asarray(sd), 0.1 * np.asarray(mean))
        if name in ("motorcycle", "bicycle") and not rider:
            wlh[2] = min(wlh[2], 1.1)
        self.rows.append((name, wlh, road, s0, offset, speed, attribute, yaw_extra, rider))
        return float(wlh[1])

    def build(self) -> Objects:
        po, pk, pa, pb = [], [], [], []
        for i, (name, wlh, *_rest) in enumerate(self.rows):
            # the geometry keeps a margin inside its annotation box (as annotators' boxes do),
            # so that LiDAR returns with range noise stay inside the box
            m = BOX_MARGIN
            for kind, a, b in _parts(name, wlh[0] - 2 * m, wlh[1] - 2 * m, wlh[2] - 2 * m, self.rows[i][8]):
                po.append(i)
                pk.append(kind)
                pa.append((a[0], a[1], a[2] + m))
                pb.append((b[0], b[1] + m, b[2]) if kind == 1 else b)
        r = self.rows
        return Objects(
            name=[x[0] for x in r], wlh=np.array([x[1] for x in r]).reshape(-1, 3),
            road=np.array([x[2] for x in r], np.int64), s0=np.array([x[3] for x in r], float),
            offset=np.array([x[4] for x in r], float), speed=np.array([x[5] for x in r], float),
            attribute=[x[6] for x in r], yaw_extra=np.array([x[7] for x in r], float),
            part_obj=np.array(po, np.int64), part_kind=np.array(pk, np.int8),
            part_a=np.array(pa, float).reshape(-1, 3), part_b=np.array(pb, float).reshape(-1, 3),
        )


class _Slots:
    """Taken arc-length intervals along one strip (road, side, lane) to avoid overlaps."""

    def __init__(self):
        self.taken: dict[tuple, list[tuple[float, float]]] = {}

    def free(self, key: tuple, a: float, b: float) -> bool:
        return all(b <= x or a >= y for x, y in self.taken.get(key, []))

    def take(self, key: tuple, a: float, b: float) -> None:
        self.taken.setdefault(key, []).append((a, b))


# ----------------------------------------------------------------------------- scene generation
def _main_road(rng: np.random.Generator, length: float) -> Road:
    s = np.arange(0.0, length + 1.0, 1.0)
    curv = np.zeros_like(s)
    pos = 0.0
    while pos < length:
        seg = rng.uniform(25, 60)
        k = 0.0 if rng.random() < 0.45 else rng.choice([-1, 1]) / rng.uniform(60, 180)
        curv[(s >= pos) & (s < pos + seg)] = k
        pos += seg
    heading = rng.uniform(-np.pi, np.pi) + np.concatenate([[0.0], np.cumsum(curv[:-1])])
    xy = np.concatenate([[[0.0, 0.0]], np.cumsum(np.stack([np.cos(heading[:-1]), np.sin(heading[:-1])], 1), axis=0)])
    return Road(s, xy, heading)


def _draw_strip(raster: np.ndarray, ground_origin: np.ndarray, road: Road, s0: float, s1: float,
                half: float, value: int) -> None:
    m = (road.s >= s0) & (road.s <= s1)
    pts = ((road.xy[m] - ground_origin) / RASTER_RES * 16).round().astype(np.int32)
    if len(pts) >= 2:
        cv2.polylines(raster, [pts.reshape(-1, 1, 2)], False, int(value), thickness=max(1, int(round(2 * half / RASTER_RES))),
                      lineType=cv2.LINE_8, shift=4)


def _fill_poly(raster: np.ndarray, ground_origin: np.ndarray, corners: np.ndarray, value: int) -> None:
    pts = ((corners - ground_origin) / RASTER_RES * 16).round().astype(np.int32)
    cv2.fillConvexPoly(raster, pts.reshape(-1, 1, 2), int(value), lineType=cv2.LINE_8, shift=4)


def _rect(center: np.ndarray, heading: float, half_l: float, half_w: float) -> np.ndarray:
    c, s = np.cos(heading), np.sin(heading)
    local = np.array([[half_l, half_w], [-half_l, half_w], [-half_l, -half_w], [half_l, -half_w]])
    return center + local @ np.array([[c, s], [-s, c]])


def build_world(rng: np.random.Generator, duration: float) -> World:
    """Generate one scene lasting ``duration`` seconds (ego route plus 90 m of margin each way)."""
    margin = 90.0
    ego_speed = float(rng.uniform(5.0, 9.0))
    w_surge = 2 * np.pi / rng.uniform(6.0, 15.0)
    surge = (float(0.25 * ego_speed / w_surge * rng.uniform(0.3, 1.0)), float(w_surge), float(rng.uniform(0, 2 * np.pi)))
    drive = ego_speed * duration
    length = drive + 2 * margin
    main = _main_road(rng, length)
    ego_s0 = margin
    # the crossing: somewhere the ego passes during the scene (or just ahead of it)
    s_x = ego_s0 + drive * rng.uniform(0.25, 0.75) + (15.0 if drive < 30 else 0.0)
    pc, hc = main.pose(np.array([s_x]), np.array([0.0]))
    cross_h = hc[0] + np.pi / 2 + rng.uniform(-0.25, 0.25)
    cs = np.arange(0.0, 241.0, 1.0)
    cross_xy = pc[0] + (cs - 120.0)[:, None] * np.array([np.cos(cross_h), np.sin(cross_h)])
    cross = Road(cs, cross_xy, np.full_like(cs, cross_h))
    roads = [main, cross]
    s_cross_c = 120.0

    allxy = np.concatenate([main.xy, cross.xy])
    lo = allxy.min(0) - 80.0
    hi = allxy.max(0) + 80.0
    W, H = (np.ceil((hi - lo) / RASTER_RES).astype(int))
    raster = np.full((H, W), C["terrain"], np.uint8)
    for road, (a, b) in ((main, (-1e9, 1e9)), (cross, (-1e9, 1e9))):
        _draw_strip(raster, lo, road, a, b, ROAD_HALF + SIDEWALK, C["sidewalk"])
    # other_flat plazas / driveways beside the sidewalks
    for _ in range(int(rng.integers(2, 5))):
        s = rng.uniform(ego_s0 - 20, ego_s0 + drive + 40)
        side = rng.choice([-1, 1])
        half_l, half_w = rng.uniform(4, 10), rng.uniform(3, 6)
        cxy, h = main.pose(np.array([s]), np.array([side * (ROAD_HALF + SIDEWALK + half_w)]))
        _fill_poly(raster, lo, _rect(cxy[0], h[0], half_l, half_w), C["other_flat"])
    for road in roads:
        _draw_strip(raster, lo, road, -1e9, 1e9, ROAD_HALF, C["driveable_surface"])
    # median islands on the main road, away from the crossing
    s = ego_s0 - 60
    while s < ego_s0 + drive + 60:
        seg = rng.uniform(12, 30)
        if rng.random() < 0.5 and abs(s + seg / 2 - s_x) > ROAD_HALF + seg / 2 + 12:
            _draw_strip(raster, lo, main, s, s + seg, 0.8, C["other_flat"])
        s += seg + rng.uniform(10, 40)
    paint = np.zeros_like(raster)
    for road in roads:
        for off in (-0.15, 0.15, -2 * LANE, 2 * LANE):
            pts = ((road.pose(road.s, np.full(len(road.s), off))[0] - lo) / RASTER_RES * 16).round().astype(np.int32)
            cv2.polylines(paint, [pts.reshape(-1, 1, 2)], False, 1, thickness=1, lineType=cv2.LINE_8, shift=4)
        for off in (-LANE, LANE):
            xy = road.pose(road.s, np.full(len(road.s), off))[0]
            for k in range(0, len(road.s) - 3, 9):  # 3 m dashes every 9 m
                pts = ((xy[k:k + 4] - lo) / RASTER_RES * 16).round().astype(np.int32)
                cv2.polylines(paint, [pts.reshape(-1, 1, 2)], False, 1, thickness=1, lineType=cv2.LINE_8, shift=4)
    # no lane lines inside the intersection; zebra crossings just outside it, on both roads
    box = np.array([[1, 1], [-1, 1], [-1, -1], [1, -1]]) * (ROAD_HALF + 0.5)
    ca, sa = np.cos(cross_h), np.sin(cross_h)
    _fill_poly(paint, lo, pc[0] + box @ np.array([[np.cos(hc[0]), np.sin(hc[0])], [ca, sa]]), 0)
    for road, centre in ((main, s_x), (cross, s_cross_c)):
        for sc in (centre - ROAD_HALF - 2.5, centre + ROAD_HALF + 2.5):
            for off in np.arange(-ROAD_HALF + 0.6, ROAD_HALF - 0.3, 1.2):
                xy = road.pose(np.array([sc - 1.5, sc + 1.5]), np.array([off, off]))[0]
                pts = ((xy - lo) / RASTER_RES * 16).round().astype(np.int32)
                cv2.polylines(paint, [pts.reshape(-1, 1, 2)], False, 1, thickness=2, lineType=cv2.LINE_8, shift=4)
    paint[raster != C["driveable_surface"]] = 0
    ground = Ground(raster, lo, RASTER_RES, paint)

    # ------------------------------------------------------------------ static solids
    boxes, cyls, ells = [], [], []  # (center3, half3, yaw, cls) / (xy, z0, z1, r, cls) / (c3, radii3, cls)
    taken = np.zeros_like(raster)

    def footprint_free(corners: np.ndarray, allowed: tuple[int, ...]) -> bool:
        g = np.linspace(0, 1, 6)
        uu, vv = np.meshgrid(g, g)
        pts = (corners[0] + uu.reshape(-1, 1) * (corners[1] - corners[0]) + vv.reshape(-1, 1) * (corners[3] - corners[0]))
        pts = np.concatenate([pts, corners])
        ok = np.isin(ground.classes_at(pts), allowed)
        col = np.floor((pts[:, 0] - lo[0]) / RASTER_RES).astype(int).clip(0, W - 1)
        row = np.floor((pts[:, 1] - lo[1]) / RASTER_RES).astype(int).clip(0, H - 1)
        return bool(ok.all() and not taken[row, col].any())

    def occupy(corners: np.ndarray) -> None:
        _fill_poly(taken, lo, corners, 1)

    span = {0: (ego_s0 - 70, ego_s0 + drive + 70), 1: (s_cross_c - 75, s_cross_c + 75)}
    crossing = {0: s_x, 1: s_cross_c}

    def off_corner(ri: int, s: float) -> bool:  # keep street furniture off the other road's sidewalks
        return abs(s - crossing[ri]) > ROAD_HALF + SIDEWALK + 6.0  # the crossing may be skewed by 15 deg
    for ri, road in enumerate(roads):
        for side in (-1, 1):
            # buildings and walls
            s = span[ri][0]
            while s < span[ri][1]:
                blen = rng.uniform(8, 25)
                depth = rng.uniform(8, 18)
                setback = ROAD_HALF + SIDEWALK + rng.uniform(0.5, 6)
                cxy, h = road.pose(np.array([s + blen / 2]), np.array([side * (setback + depth / 2)]))
                corners = _rect(cxy[0], h[0], blen / 2, depth / 2)
                if rng.random() < 0.8 and footprint_free(corners, (C["terrain"],)):
                    height = rng.uniform(4, 20)
                    boxes.append(((cxy[0, 0], cxy[0, 1], CURB_HEIGHT + height / 2), (blen / 2, depth / 2, height / 2), h[0], C["manmade"]))
                    occupy(corners)
                elif rng.random() < 0.5:
                    wxy, wh = road.pose(np.array([s + blen / 2]), np.array([side * (setback + 0.2)]))
                    wc = _rect(wxy[0], wh[0], blen / 2, 0.15)
                    if footprint_free(wc, (C["terrain"], C["other_flat"])):
                        wh_ = rng.uniform(1.2, 2.5)
                        boxes.append(((wxy[0, 0], wxy[0, 1], CURB_HEIGHT + wh_ / 2), (blen / 2, 0.15, wh_ / 2), wh[0], C["manmade"]))
                        occupy(wc)
                s += blen + rng.uniform(1, 8)
            # street lamps near the curb
            s = span[ri][0] + rng.uniform(0, 20)
            while s < span[ri][1]:
                pxy, _ = road.pose(np.array([s]), np.array([side * (ROAD_HALF + 0.35)]))
                if ground.classes_at(pxy)[0] == C["sidewalk"] and off_corner(ri, s):
                    cyls.append((pxy[0], CURB_HEIGHT, CURB_HEIGHT + rng.uniform(6, 8), 0.12, C["manmade"]))
                s += rng.uniform(22, 35)
            # signs
            s = span[ri][0] + rng.uniform(0, 30)
            while s < span[ri][1]:
                pxy, h = road.pose(np.array([s]), np.array([side * (ROAD_HALF + 0.35)]))
                if ground.classes_at(pxy)[0] == C["sidewalk"] and off_corner(ri, s):
                    top = CURB_HEIGHT + rng.uniform(2.2, 2.8)
                    cyls.append((pxy[0], CURB_HEIGHT, top, 0.05, C["manmade"]))
                    boxes.append(((pxy[0, 0], pxy[0, 1], top + 0.3), (0.03, 0.35, 0.3), h[0], C["manmade"]))
                s += rng.uniform(30, 70)
            # trees on the outer sidewalk, bushes on terrain
            s = span[ri][0] + rng.uniform(0, 10)
            while s < span[ri][1]:
                txy, _ = road.pose(np.array([s]), np.array([side * (ROAD_HALF + SIDEWALK - 0.3)]))
                if rng.random() < 0.6 and ground.classes_at(txy)[0] == C["sidewalk"] and off_corner(ri, s):
                    trunk = rng.uniform(2.2, 3.5)
                    cyls.append((txy[0], CURB_HEIGHT, CURB_HEIGHT + trunk + 0.5, rng.uniform(0.12, 0.25), C["vegetation"]))
                    rh, rz = rng.uniform(1.5, 2.8), rng.uniform(1.5, 2.8)
                    ells.append(((txy[0, 0], txy[0, 1], CURB_HEIGHT + trunk + 0.7 * rz), (rh, rh, rz), C["vegetation"]))
                s += rng.uniform(7, 16)
            for _ in range(int(rng.integers(4, 10))):
                s = rng.uniform(*span[ri])
                bxy, _ = road.pose(np.array([s]), np.array([side * (ROAD_HALF + SIDEWALK + rng.uniform(0.8, 4))]))
                r = rng.uniform(0.6, 1.5)
                c4 = _rect(bxy[0], 0.0, r, r)
                if footprint_free(c4, (C["terrain"],)):
                    rz = rng.uniform(0.4, 1.0)
                    ells.append(((bxy[0, 0], bxy[0, 1], CURB_HEIGHT + 0.3 * rz), (r, r * rng.uniform(0.7, 1.0), rz), C["vegetation"]))
                    occupy(c4)

    static = Solids(
        box_center=np.array([b[0] for b in boxes], float).reshape(-1, 3),
        box_half=np.array([b[1] for b in boxes], float).reshape(-1, 3),
        box_yaw=np.array([b[2] for b in boxes], float), box_cls=np.array([b[3] for b in boxes], np.uint8),
        box_inst=np.zeros(len(boxes), np.int32),
        cyl_xy=np.array([c[0] for c in cyls], float).reshape(-1, 2),
        cyl_z=np.array([(c[1], c[2]) for c in cyls], float).reshape(-1, 2),
        cyl_r=np.array([c[3] for c in cyls], float), cyl_cls=np.array([c[4] for c in cyls], np.uint8),
        cyl_inst=np.zeros(len(cyls), np.int32),
        ell_center=np.array([e[0] for e in ells], float).reshape(-1, 3),
        ell_radii=np.array([e[1] for e in ells], float).reshape(-1, 3),
        ell_cls=np.array([e[2] for e in ells], np.uint8), ell_inst=np.zeros(len(ells), np.int32),
    )

    # ------------------------------------------------------------------ objects
    ob = _ObjectBuilder(rng)
    slots = _Slots()
    lo_s, hi_s = ego_s0 - 70, ego_s0 + drive + 70

    def near_cross(s: float, extra: float) -> bool:
        return abs(s - s_x) < ROAD_HALF + SIDEWALK + extra

    # construction zone in the right parking lane, ahead of the ego
    s = ego_s0 + rng.uniform(15, max(20, drive * 0.8))
    if near_cross(s, 30):
        s = s_x + ROAD_HALF + SIDEWALK + 35
    pk = -(ROAD_HALF - 1.25)
    # cones taper in along the lane line, barriers close the parking lane, the machine stands behind
    zone = (s - 10, s + 20)
    slots.take((0, -1, "park"), *zone)
    for k in range(int(rng.integers(5, 9))):
        ob.add("traffic_cone", 0, s - 8.0 + 2.2 * k, -(2 * LANE + 0.2), 0.0, "")
    for k in range(int(rng.integers(2, 4))):
        ob.add("barrier", 0, s + 1.0 + 2.8 * k, pk, 0.0, "", yaw_extra=np.pi / 2)
    ob.add("construction_vehicle", 0, s + 14.5, pk, 0.0, "vehicle.parked")

    # parked vehicles in both parking lanes of the main road (a trailer and a bus among them)
    special = ["trailer", "bus", "truck"]
    for side in (-1, 1):
        s = lo_s
        while s < hi_s:
            name = special.pop() if special and rng.random() < 0.25 else ("car" if rng.random() < 0.85 else "truck")
            gap = rng.uniform(1.0, 12.0)
            mean_l = SIZES[name][0][1]
            a, b = s + gap, s + gap + mean_l + 1.5
            if rng.random() < 0.7 and slots.free((0, side, "park"), a, b) and not near_cross((a + b) / 2, 8 + mean_l / 2):
                l = ob.add(name, 0, (a + b) / 2, side * (ROAD_HALF - 1.25), 0.0, "vehicle.parked",
                           yaw_extra=(0.0 if side < 0 else np.pi))
                slots.take((0, side, "park"), (a + b) / 2 - l / 2 - 0.5, (a + b) / 2 + l / 2 + 0.5)
            elif name in ("trailer", "bus") and name not in special:
                special.append(name)  # try again further on
            s = b
    s = hi_s
    for name in special:  # whatever did not fit parks in the first free space past the route
        length = SIZES[name][0][1] + 3.0
        while not slots.free((0, -1, "park"), s, s + length + 2.0) or near_cross(s + length / 2, 8 + length / 2):
            s += 2.0
        l = ob.add(name, 0, s + length / 2, -(ROAD_HALF - 1.25), 0.0, "vehicle.parked")
        slots.take((0, -1, "park"), s + length / 2 - l / 2 - 0.5, s + length / 2 + l / 2 + 0.5)
        s += length

    # a lead car in the ego lane at the ego's speed
    if rng.random() < 0.7:
        ob.add("car", 0, ego_s0 + 2 * surge[0] + rng.uniform(14, 25), EGO_LANE, ego_speed, "vehicle.moving")
    # slower traffic in the right outer lane: cyclists, motorcycles, cars (one speed per lane)
    v_slow = rng.uniform(3.5, 6.0)
    s = lo_s - 40
    mix = ["bicycle", "motorcycle", "car", "bicycle", "car", "motorcycle"]
    k = 0
    while s < hi_s:
        name = mix[k % len(mix)]
        k += 1
        s += rng.uniform(8, 30)
        l = ob.add(name, 0, s, -(LANE * 1.5), v_slow, "cycle.with_rider" if name in ("bicycle", "motorcycle") else "vehicle.moving", rider=True)
        s += l
    # oncoming traffic in two lanes (cars, trucks, a bus, a truck with trailer)
    for off in (LANE / 2, LANE * 1.5):
        v = rng.uniform(6.0, 12.0)
        s = lo_s + rng.uniform(0, 20)
        top = hi_s + v * duration + 40
        while s < top:
            u = rng.random()
            if u < 0.72:
                l = ob.add("car", 0, s, off, -v, "vehicle.moving")
            elif u < 0.82:
                l = ob.add("truck", 0, s, off, -v, "vehicle.moving")
            elif u < 0.9:
                l = ob.add("bus", 0, s, off, -v, "vehicle.moving")
            else:
                lt = ob.add("truck", 0, s, off, -v, "vehicle.moving")
                l2 = ob.add("trailer", 0, s + lt / 2 + 0.6 + SIZES["trailer"][0][1] / 2 + 0.5, off, -v, "vehicle.moving")
                l = lt + l2 + 1.6
            s += l + rng.uniform(8, 35)

    # cross road: parked cars, a queue waiting at each stop line
    for side in (-1, 1):
        s = s_cross_c - 110
        while s < s_cross_c + 110:
            l_mean = SIZES["car"][0][1]
            a = s + rng.uniform(2, 12)
            if abs(a - s_cross_c) > ROAD_HALF + SIDEWALK + 8 and rng.random() < 0.6:
                ob.add("car", 1, a + l_mean / 2, side * (ROAD_HALF - 1.25), 0.0, "vehicle.parked", yaw_extra=(0.0 if side < 0 else np.pi))
            s = a + l_mean + 1.0
        stop = ROAD_HALF + SIDEWALK + 1.5
        s = s_cross_c - stop if side < 0 else s_cross_c + stop
        for q in range(int(rng.integers(1, 4))):
            name = "car" if rng.random() < 0.8 else "truck"
            l = SIZES[name][0][1]
            centre = s - l / 2 if side < 0 else s + l / 2
            ob.add(name, 1, centre, side * LANE / 2, 0.0, "vehicle.stopped", yaw_extra=(0.0 if side < 0 else np.pi))
            s = centre - l / 2 - 2.0 if side < 0 else centre + l / 2 + 2.0

    # sidewalks: pedestrians walking (one speed per direction and side) or standing, parked bicycles
    for ri, road in enumerate(roads):
        for side in (-1, 1):
            a, b = span[ri]
            for direction, off in ((1, ROAD_HALF + 1.7), (-1, ROAD_HALF + 2.5)):
                v = rng.uniform(1.0, 1.6)
                s = a + rng.uniform(0, 15)
                while s < b:
                    if ri == 0:
                        ob.add("pedestrian", ri, s, side * off, v * direction, "pedestrian.moving")
                    elif abs(s - s_cross_c) > ROAD_HALF + SIDEWALK + 2:
                        # on the cross road people walk away from the main road (no jaywalking)
                        ob.add("pedestrian", ri, s, side * off, v * np.sign(s - s_cross_c), "pedestrian.moving")
                    s += rng.uniform(6, 30)
            # at the curb: standing people and parked bicycles, between the lamps and the walkers
            key = (ri, side, "curb")
            for name in ["pedestrian"] * int(rng.integers(1, 4)) + ["bicycle"] * int(rng.integers(1, 3)):
                s = rng.uniform(a, b)
                pxy, _ = road.pose(np.array([s]), np.array([side * (ROAD_HALF + 0.9)]))
                centre = s_x if ri == 0 else s_cross_c
                if abs(s - centre) < ROAD_HALF + SIDEWALK + 2:  # not on the other road's corner
                    continue
                if ground.classes_at(pxy)[0] == C["sidewalk"] and slots.free(key, s - 1.2, s + 1.2):
                    slots.take(key, s - 1.2, s + 1.2)
                    if name == "pedestrian":
                        ob.add(name, ri, s, side * (ROAD_HALF + 0.9), 0.0, "pedestrian.standing", yaw_extra=rng.uniform(-np.pi, np.pi))
                    else:
                        ob.add(name, ri, s, side * (ROAD_HALF + 0.9), 0.0, "cycle.without_rider")
    return World(ground, static, ob.build(), roads, ego_s0, ego_speed, surge)
