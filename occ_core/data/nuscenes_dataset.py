"""Occupancy training data from any nuScenes-format dataroot (real or ``occ_core.data.synthetic``).

Per keyframe sample:

- cameras: the six keyframe images (RGB; with ``image_hw``, JPEGs decoded at the reduced size
  that covers the model input, intrinsics mapped to match) with their intrinsics and ``T_base_from_cam`` into the
  *keyframe LiDAR's* ego frame: camera -> ego(t_cam) -> global -> ego(t_lidar), i.e.
  ``inv(E_lidar) @ E_cam @ C_cam`` with each sample_data's own ego pose, as BEVDet's
  ``sensor2keyego``. A camera fires up to ~45 ms off the LiDAR; on real nuScenes at 9 m/s the
  static rig ``C_cam`` alone puts LiDAR points up to 66 px off in CAM_FRONT, this chain within
  0.001 px of the info files' stored ``lidar2cam`` (``test/test_real_data.py``). The models take
  these per-frame extrinsics as they are (``lss.frustum_points``, ``bevformer_sca.project_anchors``);
- LiDAR: the keyframe sweep plus up to ``max_sweeps - 1`` earlier sweeps, aggregated with
  nuscenes-devkit's ``LidarPointCloud.from_file_multisweep`` (each sweep through its own ego
  pose into the keyframe LiDAR frame; points within 1 m of the sensor dropped) and moved into
  base_link: rows ``[x, y, z, intensity, time_lag_s]``;
- targets: Occ3D ``gts/<scene>/<sample_token>/labels.npz`` and, if asked, OpenOcc v2 flow from
  ``openocc_v2/<scene>/<sample_token>/labels.npz``.

BEV augmentation (training): a random flip of x and/or y and a yaw rotation, applied as one
base_link transform ``R`` to the points, every ``T_base_from_cam``, ``T_base_from_lidar``, the
ground-truth grids (flips are exact index flips on the symmetric grid; the rotation resamples
labels by nearest voxel, and voxels that come from outside the grid leave both masks) and the
flow vectors. Image augmentation (``image_scale``): each camera image is zoomed by its own
factor and cropped back to its size at a random offset, with that camera's intrinsics updated
by the same pixel affine, so every LiDAR point and label still projects onto the pixel that
shows it. LiDAR dropout (``lidar_dropout``): points are dropped at random (the same rate for
the whole sample). All of it is seeded by ``(seed, epoch, index)``.

Temporal items (``history`` > 0, configs with a ``temporal`` section): each item also carries
up to ``history`` previous keyframes of the same scene (``OccSample.history``, oldest first;
fewer at the start of a scene, none for its first keyframe), loaded like the current one and
given the *same* BEV transform ``A``. Every frame carries its ego pose (``SensorFrame.ego_pose``,
base_link -> global at its LiDAR stamp), augmented as ``P @ inv(A)``, so that the ego motion
``inv(P'_cur) @ P'_prev = A @ inv(P_cur) @ P_prev @ inv(A)`` maps the previous augmented frame
into the current augmented one. :func:`collate` links consecutive frames with the temporal
reset rule (:func:`occ_core.models.temporal.link_frames`).

Names from the tables never escape the dataroot: scene names and sample tokens are checked as
single file names when the dataset is built, and every sample_data ``filename`` (cameras and
each LiDAR sweep) as a relative path inside the dataroot before it is read
(:mod:`occ_core.paths`; an :class:`~occ_core.errors.OccDataError` names the table field). The
checks are lexical, so a dataroot whose ``samples/`` or ``gts/`` is a link to another disk
still works.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from occ_core.classes import OCC3D_FREE
from occ_core.data.transforms import decode_image
from occ_core.ego import NUSCENES_EGO_FOOTPRINT, EgoFootprint, remove_ego_points
from occ_core.errors import OccDataError
from occ_core.formats import occ3d, openocc
from occ_core.frame import SensorFrame
from occ_core.geometry import invert_transform, make_transform, quat_wxyz_to_matrix
from occ_core.grid import GridSpec
from occ_core.models.config import ModelConfig
from occ_core.models.occnet import OccInputs
from occ_core.models.predictor import frame_to_inputs
from occ_core.paths import safe_component, safe_relative

CAMERAS = ("CAM_FRONT", "CAM_FRONT_RIGHT", "CAM_FRONT_LEFT", "CAM_BACK", "CAM_BACK_LEFT", "CAM_BACK_RIGHT")


@dataclass
class OccTargets:
    """Ground truth of one sample on the Occ3D grid, [x, y, z] in base_link.

    Attributes:
        semantics: (X, Y, Z) uint8 Occ3D labels, 17 = free.
        mask_camera, mask_lidar: (X, Y, Z) bool visibility masks.
        flow: (X, Y, Z, 2) float32 m/s (OpenOcc v2), or None.
    """

    semantics: np.ndarray
    mask_camera: np.ndarray
    mask_lidar: np.ndarray
    flow: np.ndarray | None = None


@dataclass
class OccSample:
    """One keyframe: identification, the sensor frame and its targets."""

    scene: str
    token: str
    frame: SensorFrame
    targets: OccTargets
    history: list[SensorFrame] = dataclasses.field(default_factory=list)


@dataclass
class OccBatch:
    """A collated batch.

    Attributes:
        inputs: network inputs (see :class:`occ_core.models.occnet.OccInputs`).
        semantics: (B, X, Y, Z) int64 labels; mask_camera, mask_lidar: (B, X, Y, Z) bool.
        flow: (B, X, Y, Z, 2) float32 or None.
        tokens, scenes: per-sample identification.
        history: S - 1 previous frames' inputs (temporal configs; oldest first, batch B each;
            empty otherwise). A sample with fewer previous frames repeats its oldest one in the
            missing leading steps, whose links are then not valid.
        T_cur_from_prev: (S, B, 4, 4) float32 ego motion from step s - 1 to step s (step S - 1
            = the current frame); None without history.
        link_valid: (S, B) bool, the reset rule's verdict for each link (row 0 False); None
            without history.
    """

    inputs: OccInputs
    semantics: torch.Tensor
    mask_camera: torch.Tensor
    mask_lidar: torch.Tensor
    flow: torch.Tensor | None
    tokens: list[str]
    scenes: list[str]
    history: list[OccInputs] = dataclasses.field(default_factory=list)
    T_cur_from_prev: torch.Tensor | None = None
    link_valid: torch.Tensor | None = None


def find_version(dataroot: str | Path) -> str:
    """The nuScenes table version folder of a dataroot (``v1.0-mini``, ``v1.0-trainval``, ...)."""
    root = Path(dataroot)
    found = sorted(p.name for p in root.glob("v1.0-*") if (p / "sample.json").exists())
    if not found:
        raise OccDataError(f"{root}: no nuScenes table folder v1.0-*/sample.json")
    return "v1.0-trainval" if "v1.0-trainval" in found else found[0]


def check_dataroot(dataroot: str | Path, field: str = "--dataroot") -> Path:
    """``dataroot`` if it is a folder holding nuScenes tables (``v1.0-*/sample.json``); checked
    before any long work. Raises OccDataError naming ``field``."""
    from occ_core.cli import check_input_dir

    root = check_input_dir(dataroot, field)
    try:
        find_version(root)
    except OccDataError as e:
        raise OccDataError(f"{field}: {e} (expected a nuScenes-format dataroot)") from None
    return root


def label_path(dataroot: str | Path, scene: str, token: str, folder: str = "gts") -> Path:
    """``<dataroot>/<folder>/<scene>/<token>/labels.npz`` (Occ3D ``gts``, ``openocc_v2``), the scene
    name and token checked as single file names."""
    return occ3d.sample_path(Path(dataroot) / folder, scene, token)


def data_path(dataroot: Path, sd: dict) -> Path:
    """The file of a sample_data record, its ``filename`` checked as a relative path inside the dataroot."""
    return dataroot / safe_relative(sd["filename"], f"{dataroot}: sample_data.filename (token {sd.get('token')})")


def _bev_transform(flip_x: bool, flip_y: bool, yaw: float) -> np.ndarray:
    """(4, 4) base_link -> augmented base_link: flips first, then the yaw rotation."""
    F = np.diag([-1.0 if flip_x else 1.0, -1.0 if flip_y else 1.0, 1.0, 1.0])
    c, s = math.cos(yaw), math.sin(yaw)
    R = np.array([[c, -s, 0, 0], [s, c, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1.0]])
    return R @ F


def augment_images(frame: SensorFrame, scales: np.ndarray, offsets: np.ndarray) -> SensorFrame:
    """Zoom each camera image about its pixel grid and crop it back to its own size.

    Args:
        frame: the sample's frame.
        scales: (N,) zoom factors >= 1, one per camera.
        offsets: (N, 2) in [0, 1]: where the crop sits inside the zoomed image (0 = left/top
            edge, 1 = right/bottom edge).

    Returns:
        a new frame whose images keep their sizes and whose intrinsics are ``A @ K`` with
        ``A`` the pixel affine (pixel centres at integer coordinates, as
        :func:`occ_core.data.transforms.resize_crop_matrix`); extrinsics and points unchanged.
    """
    images, Ks = [], []
    for img, K, s, (ox, oy) in zip(frame.images, frame.intrinsics, scales, offsets):
        H, W = img.shape[:2]
        tx, ty = ox * (s - 1.0) * W, oy * (s - 1.0) * H  # crop origin inside the zoomed image
        A = np.array([[s, 0.0, 0.5 * s - 0.5 - tx], [0.0, s, 0.5 * s - 0.5 - ty], [0.0, 0.0, 1.0]])
        images.append(cv2.warpAffine(img, A[:2], (W, H), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT))
        Ks.append(A @ np.asarray(K, np.float64))
    return dataclasses.replace(frame, images=images, intrinsics=np.stack(Ks))


def transform_frame(frame: SensorFrame, A: np.ndarray) -> SensorFrame:
    """A frame seen from the augmented base_link ``A @ base_link`` ((4, 4) ``A``, e.g. a BEV flip
    and yaw): points, ``T_base_from_cam`` and ``T_base_from_lidar`` are premultiplied by ``A``,
    and the ego pose (base_link -> world) becomes ``ego_pose @ inv(A)``."""
    pts = frame.points.copy()
    pts[:, :3] = pts[:, :3] @ A[:3, :3].T.astype(np.float32)
    ego_pose = None if frame.ego_pose is None else frame.ego_pose @ np.linalg.inv(A)
    return dataclasses.replace(frame, T_base_from_cam=A @ frame.T_base_from_cam, points=pts,
                               T_base_from_lidar=A @ frame.T_base_from_lidar, ego_pose=ego_pose)


def augment_bev(frame: SensorFrame, targets: OccTargets, grid: GridSpec, flip_x: bool, flip_y: bool,
                yaw: float) -> tuple[SensorFrame, OccTargets]:
    """Apply one BEV transform to a frame and its targets (see the module docstring).

    The grid must be symmetric about the origin in x and y (Occ3D is) so that flips map voxels
    onto voxels.
    """
    lo, hi = grid.range_min, grid.range_max
    if abs(lo[0] + hi[0]) > 1e-6 or abs(lo[1] + hi[1]) > 1e-6:
        raise ValueError(f"augment_bev: grid {grid.name} is not symmetric in x, y: {grid.point_range}")
    A = _bev_transform(flip_x, flip_y, yaw)
    frame = transform_frame(frame, A)
    arrays = [targets.semantics, targets.mask_camera, targets.mask_lidar]
    flow = targets.flow
    axes = tuple(a for a, f in ((0, flip_x), (1, flip_y)) if f)
    if axes:
        arrays = [np.flip(a, axes) for a in arrays]
        flow = None if flow is None else np.flip(flow, axes)
    if yaw != 0.0:
        # output voxel centre q came from p = R^-1 q; nearest-voxel resampling in index space
        X, Y, Z = grid.dims
        c, s = math.cos(yaw), math.sin(yaw)
        ix, iy = np.meshgrid(np.arange(X), np.arange(Y), indexing="ij")
        qx = lo[0] + grid.voxel_size[0] * (ix + 0.5)
        qy = lo[1] + grid.voxel_size[1] * (iy + 0.5)
        px, py = c * qx + s * qy, -s * qx + c * qy
        sx = np.floor((px - lo[0]) / grid.voxel_size[0]).astype(np.int64)
        sy = np.floor((py - lo[1]) / grid.voxel_size[1]).astype(np.int64)
        inside = (sx >= 0) & (sx < X) & (sy >= 0) & (sy < Y)
        sx, sy = np.clip(sx, 0, X - 1), np.clip(sy, 0, Y - 1)
        arrays = [a[sx, sy] for a in arrays]
        arrays[1] = arrays[1] & inside[..., None]
        arrays[2] = arrays[2] & inside[..., None]
        arrays[0] = np.where(inside[..., None], arrays[0], arrays[0].dtype.type(OCC3D_FREE))
        if flow is not None:
            flow = flow[sx, sy] * inside[..., None, None]
    if flow is not None:
        flow = (flow @ A[:2, :2].T).astype(np.float32)
    sem, mc, ml = (np.ascontiguousarray(a) for a in arrays)
    return frame, OccTargets(sem, mc, ml, None if flow is None else np.ascontiguousarray(flow))


class NuScenesOccDataset(torch.utils.data.Dataset):
    """Keyframes of the given scenes of a nuScenes-format dataroot, as :class:`OccSample`.

    Args:
        dataroot: the nuScenes folder (tables under ``v1.0-*``, ``gts/``, optional ``openocc_v2/``).
        scenes: scene names to use (e.g. from ``occ_core.data.synthetic.load_splits``).
        max_sweeps: LiDAR sweeps aggregated per keyframe (1 = keyframe only).
        with_flow: also read OpenOcc v2 flow.
        augment: random BEV flips (and yaw in +-``rotate_deg``) per item, from ``seed`` and the
            item index and epoch (``dataset[(i, epoch)]``), so runs are reproducible.
        nusc: an already loaded ``NuScenes`` object (shares the tables between datasets).
        image_scale: (lo, hi) per-camera zoom range for :func:`augment_images` (training; (1, 1) off).
        lidar_dropout: the largest per-sample share of LiDAR points dropped (training; 0 off).
        image_hw: the model's image input (h, w): JPEGs are decoded at the reduced size that still
            covers it (:func:`occ_core.data.transforms.decode_image`, as the node does), with the
            intrinsics mapped to match; None decodes at full size.
        ego_footprint: LiDAR points inside this base_link box are the car's own body and are
            dropped (None keeps them); the node's ``ego_footprint`` parameter has the same default.
        history: previous keyframes of the same scene loaded with each item (temporal models;
            0 = none), see the module docstring.
    """

    def __init__(self, dataroot: str | Path, scenes: list[str], grid: GridSpec, max_sweeps: int = 1,
                 with_flow: bool = False, augment: bool = False, rotate_deg: float = 0.0, seed: int = 0, nusc=None,
                 image_hw: tuple[int, int] | None = None, image_scale: tuple[float, float] = (1.0, 1.0),
                 lidar_dropout: float = 0.0, ego_footprint: EgoFootprint | None = NUSCENES_EGO_FOOTPRINT,
                 history: int = 0):
        from nuscenes.nuscenes import NuScenes

        self.dataroot = Path(dataroot)
        self.nusc = nusc or NuScenes(find_version(dataroot), str(self.dataroot), verbose=False)
        self.grid = grid
        self.max_sweeps = max_sweeps
        self.with_flow = with_flow
        self.augment = augment
        self.rotate_deg = rotate_deg
        self.seed = seed
        self.image_scale = (float(image_scale[0]), float(image_scale[1]))
        self.lidar_dropout = float(lidar_dropout)
        self.image_hw = None if image_hw is None else (int(image_hw[0]), int(image_hw[1]))
        self.ego_footprint = ego_footprint
        if history < 0:
            raise ValueError(f"history: expected >= 0 previous keyframes, got {history}")
        self.history = int(history)
        #: sample token -> LiDAR points removed as the ego body by the last load_frame of it
        self.removed_ego_points: dict[str, int] = {}
        self.epoch = 0
        for name in scenes:
            safe_component(name, f"{self.dataroot}: scene.name")
        by_name = {s["name"]: s for s in self.nusc.scene}
        missing = [s for s in scenes if s not in by_name]
        if missing:
            raise OccDataError(f"{self.dataroot}: scenes {missing} are not in the scene table")
        self.samples: list[tuple[str, str]] = []
        for name in scenes:
            tok = by_name[name]["first_sample_token"]
            while tok:
                # tokens name files: <gts>/<scene>/<token>/labels.npz here, <out>/<token>.npz in occ-predict
                self.samples.append((name, safe_component(tok, f"{self.dataroot}: sample.token (scene {name})")))
                tok = self.nusc.get("sample", tok)["next"]

    def __len__(self) -> int:
        return len(self.samples)

    def _pose(self, sd: dict) -> tuple[np.ndarray, np.ndarray]:
        """(ego -> global, sensor -> ego) 4x4 of a sample_data record."""
        ep = self.nusc.get("ego_pose", sd["ego_pose_token"])
        cs = self.nusc.get("calibrated_sensor", sd["calibrated_sensor_token"])
        return (make_transform(ep["translation"], quat_wxyz_to_matrix(ep["rotation"])),
                make_transform(cs["translation"], quat_wxyz_to_matrix(cs["rotation"])))

    def ego_pose(self, sample_token: str) -> np.ndarray:
        """(4, 4) float64 ``T_global_from_ego`` of a keyframe: the ego pose of its LiDAR sweep (the
        base_link its SensorFrame and labels are in)."""
        sample = self.nusc.get("sample", sample_token)
        return self._pose(self.nusc.get("sample_data", sample["data"]["LIDAR_TOP"]))[0]

    def load_frame(self, sample_token: str) -> SensorFrame:
        """The un-augmented :class:`SensorFrame` of a keyframe (base_link of its LiDAR ego pose)."""
        sample = self.nusc.get("sample", sample_token)
        lidar_sd = self.nusc.get("sample_data", sample["data"]["LIDAR_TOP"])
        E_lidar, C_lidar = self._pose(lidar_sd)
        E_inv = invert_transform(E_lidar)
        names, images, Ks, Ts = [], [], [], []
        for cam in CAMERAS:
            if cam not in sample["data"]:
                continue
            sd = self.nusc.get("sample_data", sample["data"][cam])
            path = data_path(self.dataroot, sd)
            try:
                decoded = decode_image(path.read_bytes(), self.image_hw, where=str(path))
            except OSError as e:
                raise OccDataError(f"{path}: cannot read the camera image: {e}") from e
            E_cam, C_cam = self._pose(sd)
            cs = self.nusc.get("calibrated_sensor", sd["calibrated_sensor_token"])
            names.append(cam)
            images.append(decoded.image)
            Ks.append(decoded.pixel_transform @ np.asarray(cs["camera_intrinsic"], dtype=np.float64))
            Ts.append(E_inv @ E_cam @ C_cam)
        pts = self.lidar_points(sample_token)
        return SensorFrame(int(lidar_sd["timestamp"]) * 1000, tuple(names), images,
                           np.stack(Ks) if Ks else np.zeros((0, 3, 3)), np.stack(Ts) if Ts else np.zeros((0, 4, 4)),
                           pts, C_lidar, ego_pose=E_lidar)

    def lidar_points(self, sample_token: str) -> np.ndarray:
        """(P, 5) float32 ``[x, y, z, intensity, time_lag_s]`` of a keyframe's ``max_sweeps`` LiDAR
        sweeps in its base_link (at the keyframe sweep's ego pose), without the ego body's points."""
        from nuscenes.utils.data_classes import LidarPointCloud

        sample = self.nusc.get("sample", sample_token)
        lidar_sd = self.nusc.get("sample_data", sample["data"]["LIDAR_TOP"])
        C_lidar = self._pose(lidar_sd)[1]
        sd = lidar_sd  # the sweeps nuscenes-devkit will read: the keyframe and its predecessors
        for _ in range(self.max_sweeps):
            data_path(self.dataroot, sd)
            if not sd["prev"]:
                break
            sd = self.nusc.get("sample_data", sd["prev"])
        pc, times = LidarPointCloud.from_file_multisweep(self.nusc, sample, "LIDAR_TOP", "LIDAR_TOP",
                                                         nsweeps=self.max_sweeps, min_distance=1.0)
        xyz = pc.points[:3].T @ C_lidar[:3, :3].T + C_lidar[:3, 3]  # keyframe LiDAR -> base_link
        pts = np.concatenate([xyz, pc.points[3:4].T, times.T], 1).astype(np.float32)
        pts, self.removed_ego_points[sample_token] = remove_ego_points(pts, self.ego_footprint)
        return pts

    def load_targets(self, scene: str, token: str) -> OccTargets:
        gt = occ3d.read_gt(label_path(self.dataroot, scene, token), self.grid.dims)
        flow = None
        if self.with_flow:
            flow = openocc.read(label_path(self.dataroot, scene, token, "openocc_v2"), True, self.grid.dims).flow
        return OccTargets(gt.semantics, gt.mask_camera, gt.mask_lidar, flow)

    def adjacent_tokens(self, token: str, before: int, after: int) -> list[str]:
        """Up to ``before`` keyframe tokens before ``token`` and ``after`` after it, of its scene,
        in time order (fewer at the scene's ends)."""
        out: dict[str, list[str]] = {"prev": [], "next": []}
        for key, k in (("prev", before), ("next", after)):
            tok = self.nusc.get("sample", token)[key]
            while tok and len(out[key]) < k:
                out[key].append(safe_component(tok, f"{self.dataroot}: sample.{key} (of {token})"))
                tok = self.nusc.get("sample", tok)[key]
        return out["prev"][::-1] + out["next"]

    def previous_tokens(self, token: str) -> list[str]:
        """Up to ``history`` previous keyframe tokens of ``token``'s scene, oldest first."""
        return self.adjacent_tokens(token, self.history, 0)

    def __getitem__(self, key: int | tuple[int, int]) -> OccSample:
        """``dataset[i]`` or ``dataset[(i, epoch)]`` (the epoch seeds the augmentation)."""
        i, epoch = key if isinstance(key, tuple) else (key, self.epoch)
        scene, token = self.samples[i]
        frame, targets = self.load_frame(token), self.load_targets(scene, token)
        history = [self.load_frame(t) for t in self.previous_tokens(token)] if self.history else []
        if self.augment:
            rng = np.random.default_rng((self.seed, epoch, i))
            fx, fy = rng.random(2) < 0.5
            yaw = math.radians(rng.uniform(-self.rotate_deg, self.rotate_deg)) if self.rotate_deg > 0 else 0.0
            frame, targets = augment_bev(frame, targets, self.grid, bool(fx), bool(fy), yaw)
            A = _bev_transform(bool(fx), bool(fy), yaw)  # the same transform for every frame of the item
            history = [transform_frame(f, A) for f in history]
        if self.image_scale[1] > 1.0 or self.lidar_dropout > 0.0:
            # its own stream, so adding these leaves the BEV draws of older runs as they were
            rng = np.random.default_rng((self.seed, epoch, i, 1))
            frame = self._augment_sensors(frame, rng)
            history = [self._augment_sensors(f, np.random.default_rng((self.seed, epoch, i, 2, k)))
                       for k, f in enumerate(history)]
        return OccSample(scene, token, frame, targets, history)

    def _augment_sensors(self, frame: SensorFrame, rng: np.random.Generator) -> SensorFrame:
        """Image zoom/crop and LiDAR dropout of one frame (training)."""
        if self.image_scale[1] > 1.0 and frame.images:
            n = len(frame.images)
            frame = augment_images(frame, rng.uniform(*self.image_scale, size=n), rng.random((n, 2)))
        if self.lidar_dropout > 0.0 and len(frame.points):
            keep = rng.random(len(frame.points)) >= rng.uniform(0.0, self.lidar_dropout)
            frame = dataclasses.replace(frame, points=frame.points[keep])
        return frame


def scene_splits(dataroot: str | Path) -> dict[str, list[str]]:
    """``{"train": [...], "val": [...]}`` scene names: ``splits.json`` of a synthetic dataroot,
    else nuscenes-devkit's official splits for the dataroot's version (mini_train/mini_val for
    v1.0-mini)."""
    root = Path(dataroot)
    if (root / "splits.json").exists():
        from occ_core.data.synthetic import load_splits

        return load_splits(root)
    from nuscenes.utils.splits import create_splits_scenes

    s = create_splits_scenes()
    if find_version(root) == "v1.0-mini":
        return {"train": s["mini_train"], "val": s["mini_val"]}
    return {"train": s["train"], "val": s["val"]}


def collate(samples: list[OccSample], cfg: ModelConfig) -> OccBatch:
    """Preprocess each frame exactly as the online predictor does and stack (see :class:`OccBatch`)."""
    parts = [frame_to_inputs(s.frame, cfg) for s in samples]

    def cat(key):
        vals = [getattr(p, key) for p in parts]
        return None if vals[0] is None else torch.cat(vals)

    # points always travel (camera models need them for the LiDAR depth targets; they ignore them otherwise)
    points = [torch.from_numpy(np.ascontiguousarray(s.frame.points[:, :5], dtype=np.float32)) for s in samples]
    inputs = OccInputs(cat("images"), cat("intrinsics"), cat("T_base_from_cam"), points)
    t = [s.targets for s in samples]
    flow = None
    if all(x.flow is not None for x in t):
        flow = torch.from_numpy(np.stack([x.flow for x in t]).astype(np.float32))
    history, T, valid = [], None, None
    if cfg.temporal is not None and any(s.history for s in samples):
        history, T, valid = _collate_history(samples, cfg)
    return OccBatch(inputs, torch.from_numpy(np.stack([x.semantics for x in t]).astype(np.int64)),
                    torch.from_numpy(np.stack([x.mask_camera for x in t])), torch.from_numpy(np.stack([x.mask_lidar for x in t])),
                    flow, [s.token for s in samples], [s.scene for s in samples], history, T, valid)


def _collate_history(samples: list[OccSample], cfg: ModelConfig) -> tuple[list[OccInputs], torch.Tensor, torch.Tensor]:
    """The previous frames of a batch as S - 1 steps (oldest first) + the links between steps.

    Sample ``b`` with ``h_b`` previous frames fills the last ``h_b`` history steps; the leading
    steps repeat its oldest frame with invalid links, so its state starts at its oldest real frame.
    """
    from occ_core.models.temporal import link_frames

    S = max(len(s.history) for s in samples) + 1
    B = len(samples)
    seqs = [[s.history[0] if s.history else s.frame] * (S - 1 - len(s.history)) + list(s.history) + [s.frame]
            for s in samples]
    real = [[False] * (S - 1 - len(s.history)) + [True] * (len(s.history) + 1) for s in samples]
    T = torch.zeros(S, B, 4, 4, dtype=torch.float32)
    T[:] = torch.eye(4)
    valid = torch.zeros(S, B, dtype=torch.bool)
    for b, seq in enumerate(seqs):
        for k in range(1, S):
            if not (real[b][k - 1] and real[b][k]):
                continue
            lk = link_frames(seq[k - 1].stamp_ns, seq[k - 1].ego_pose, seq[k].stamp_ns, seq[k].ego_pose, cfg.temporal)
            valid[k, b] = lk.carries
            if lk.T_cur_from_prev is not None:
                T[k, b] = torch.from_numpy(lk.T_cur_from_prev.astype(np.float32))
    history = []
    for k in range(S - 1):
        parts = [frame_to_inputs(seq[k], cfg) for seq in seqs]
        vals = lambda key: [getattr(p, key) for p in parts]  # noqa: E731
        cat = lambda key: None if vals(key)[0] is None else torch.cat(vals(key))  # noqa: E731
        points = [torch.from_numpy(np.ascontiguousarray(seq[k].points[:, :5], dtype=np.float32)) for seq in seqs]
        history.append(OccInputs(cat("images"), cat("intrinsics"), cat("T_base_from_cam"), points))
    return history, T, valid


class Collate:
    """Picklable ``collate_fn`` for DataLoader workers."""

    def __init__(self, cfg: ModelConfig):
        self.cfg = cfg

    def __call__(self, samples: list[OccSample]) -> OccBatch:
        return collate(samples, self.cfg)
