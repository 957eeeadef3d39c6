"""Training data for rendering supervision (OccNeRF; RenderOcc-style on other models).

Per keyframe: the six keyframe images as :class:`~occ_core.data.nuscenes_dataset.NuScenesOccDataset`
loads them, and per camera

- the **source frames** for the photometric loss (none when ``render.photometric`` is 0): the
  camera's previous and next sample_data (the 12 Hz camera frames next to the keyframe; the
  synthetic world writes them with ``--camera-adjacent``), prepared exactly as the target image
  (same resize and crop, so the same network-input intrinsics), in RGB 0..1, with
  ``T_src_from_tgt``: target camera -> source camera through both ego poses
  (``inv(E_src C) @ E_tgt C``). A camera with only one neighbour (a recording's first or last
  frame) uses that one twice;
- the **2D semantic labels** of the keyframe image (``<dataroot>/<render.labels>/<CAM>/<image
  stem>.png``, :func:`occ_core.formats.image_maps.read_semantic2d`) resized and cropped like
  the image (nearest), -1 = ignore; with ``render.sky`` > 0 sky pixels are
  :data:`~occ_core.formats.image_maps.SKY_LABEL` (the keyframe's labels only).

With ``render.aux_keyframes`` = k > 0 (RenderOcc's auxiliary rays) also, per keyframe, the up to
k keyframes before and after it in its scene (:class:`AuxViews`): their LiDAR points and cameras
moved into the current keyframe's base_link by the ego poses (``inv(E_cur) @ E_adj``), the
cameras' network-input intrinsics (the resize + crop of :func:`prepare_image`, without decoding
the images: no pixel of them is used) and their 2D labels.

Nothing under ``gts/`` is opened unless the config asks for 3D labels next to the rendering
losses (``render.occ3d > 0``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from occ_core.data.nuscenes_dataset import CAMERAS, NuScenesOccDataset, OccTargets, data_path
from occ_core.data.transforms import decode_image, prepare_image, resize_crop_matrix
from occ_core.errors import OccDataError
from occ_core.formats.image_maps import map_path, read_semantic2d
from occ_core.frame import SensorFrame
from occ_core.geometry import invert_transform
from occ_core.models.config import ModelConfig
from occ_core.models.occnet import OccInputs
from occ_core.models.predictor import frame_to_inputs

#: source frames farther than this from their keyframe are not "adjacent" (12 Hz: 83 ms).
MAX_SOURCE_GAP_S = 0.25


@dataclass
class AuxViews:
    """The J adjacent keyframes of one keyframe (RenderOcc's auxiliary rays), in its base_link.

    Attributes:
        tokens: the J adjacent keyframes' sample tokens (earlier ones first).
        intrinsics: (J, N, 3, 3) network-input K of their cameras (the keyframe's N cameras).
        T_base_from_cam: (J, N, 4, 4) their cameras -> the current keyframe's base_link.
        points: J arrays (P_j, 3) float32, their LiDAR points in the current base_link.
        labels: (J, N, h, w) int64 2D labels (-1 ignore) or None.
    """

    tokens: list[str]
    intrinsics: np.ndarray
    T_base_from_cam: np.ndarray
    points: list[np.ndarray]
    labels: np.ndarray | None


@dataclass
class RenderSample:
    """One keyframe for rendering supervision.

    Attributes:
        frame: the keyframe :class:`SensorFrame`.
        src_rgb: (N, J, 3, h, w) float32 source frames in 0..1 at the network-input size.
        T_src_from_tgt: (N, J, 4, 4) float64 target camera -> source camera.
        labels: (N, h, w) int64 2D labels (-1 ignore) or None.
        targets: Occ3D targets when 3D labels are used too, else None.
        aux: the adjacent keyframes' views when ``render.aux_keyframes`` > 0, else None.
    """

    scene: str
    token: str
    frame: SensorFrame
    src_rgb: np.ndarray
    T_src_from_tgt: np.ndarray
    labels: np.ndarray | None
    targets: OccTargets | None = None
    aux: AuxViews | None = None


@dataclass
class RenderBatch:
    """A collated batch: ``inputs`` as for every model, ``rgb`` (B, N, 3, h, w) the targets in
    0..1, ``src_rgb`` (B, N, J, 3, h, w), ``T_src_from_tgt`` (B, N, J, 4, 4), ``labels``
    (B, N, h, w) or None; ``semantics``/``mask_camera``/``mask_lidar`` only with 3D labels;
    ``aux`` the adjacent keyframes' views (:class:`AuxBatch`) or None."""

    inputs: OccInputs
    rgb: torch.Tensor
    src_rgb: torch.Tensor
    T_src_from_tgt: torch.Tensor
    labels: torch.Tensor | None
    semantics: torch.Tensor | None
    mask_camera: torch.Tensor | None
    mask_lidar: torch.Tensor | None
    tokens: list[str]
    scenes: list[str]
    flow: None = None
    aux: AuxBatch | None = None


@dataclass
class AuxBatch:
    """:class:`AuxViews` of a batch, J = the most adjacent keyframes of any item (an item with
    fewer is padded with views that have no LiDAR point, so no ray).

    Attributes:
        intrinsics: (B, J, N, 3, 3); T_base_from_cam: (B, J, N, 4, 4) in each item's base_link.
        points: B * J tensors (P, 3), item-major (item b's view j at ``b * J + j``).
        labels: (B, J, N, h, w) int64 or None.
    """

    intrinsics: torch.Tensor
    T_base_from_cam: torch.Tensor
    points: list[torch.Tensor]
    labels: torch.Tensor | None

    def to(self, device) -> AuxBatch:
        return AuxBatch(self.intrinsics.to(device), self.T_base_from_cam.to(device),
                        [p.to(device) for p in self.points], None if self.labels is None else self.labels.to(device))


def prepare_labels(labels: np.ndarray, out_hw: tuple[int, int]) -> np.ndarray:
    """Resize + crop a (H, W) int64 label map like :func:`prepare_image` (nearest) -> (h, w)."""
    A, _ = resize_crop_matrix(labels.shape[:2], out_hw)
    h, w = out_hw
    lab = (labels + 1).astype(np.uint8)  # -1 -> 0 so that the border value means "ignore"
    out = cv2.warpAffine(lab, A[:2], (w, h), flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return out.astype(np.int64) - 1


class RenderDataset(NuScenesOccDataset):
    """Keyframes of ``scenes`` with source frames and 2D labels (see the module docstring).

    Args:
        cfg: the model config (image size, ``render.labels``, ``render.semantic``,
            ``render.photometric_ignore``, ``render.occ3d``).
        Other arguments as :class:`NuScenesOccDataset`; no BEV augmentation (it would break
        the photometric geometry).
    """

    def __init__(self, dataroot: str | Path, scenes: list[str], cfg: ModelConfig, nusc=None):
        super().__init__(dataroot, scenes, cfg.grid_spec, 1, nusc=nusc, image_hw=cfg.image_hw)
        self.cfg = cfg
        rc = cfg.render
        self.with_labels = bool((rc.semantic or rc.sky or rc.photometric_ignore
                                 or (rc.aux_keyframes and rc.aux_dynamic)) and rc.labels)
        self.with_gts = rc.occ3d > 0
        if self.with_labels and not (self.dataroot / rc.labels).is_dir():
            raise OccDataError(f"{self.dataroot / rc.labels}: no 2D label folder (render.labels: {rc.labels!r}); "
                               f"generate the world with occ-synth --semantic2d (--semantic2d-corrupt), or set "
                               f"render.semantic: 0")

    def _prepared_rgb(self, sd: dict) -> tuple[np.ndarray, np.ndarray]:
        """(3, h, w) float32 0..1 and its network-input K of one camera sample_data."""
        path = data_path(self.dataroot, sd)
        try:
            dec = decode_image(path.read_bytes(), self.image_hw, where=str(path))
        except OSError as e:
            raise OccDataError(f"{path}: cannot read the camera image: {e}") from e
        cs = self.nusc.get("calibrated_sensor", sd["calibrated_sensor_token"])
        K = dec.pixel_transform @ np.asarray(cs["camera_intrinsic"], np.float64)
        p = prepare_image(dec.image, K, self.cfg.image.size, (0.0, 0.0, 0.0), (255.0, 255.0, 255.0), where=str(path))
        return p.image, p.intrinsics

    def load_views(self, sample_token: str) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Source frames, their transforms and the 2D labels of one keyframe (:class:`RenderSample`);
        no source frame (J = 0) when ``render.photometric`` is 0 (nothing would read them)."""
        sample = self.nusc.get("sample", sample_token)
        srcs, Ts, labs = [], [], []
        h, w = self.cfg.image.size
        for cam in CAMERAS:
            if cam not in sample["data"]:
                continue
            sd = self.nusc.get("sample_data", sample["data"][cam])
            if self.with_labels:
                labs.append(self._labels(cam, sd, keep_sky=self.cfg.render.sky > 0))
            if not self.cfg.render.photometric:
                srcs.append(np.zeros((0, 3, h, w), np.float32))
                Ts.append(np.zeros((0, 4, 4)))
                continue
            E_t, C_t = self._pose(sd)
            T_tgt = E_t @ C_t
            nbrs = []
            for key in ("prev", "next"):
                if sd[key]:
                    nb = self.nusc.get("sample_data", sd[key])
                    if abs(nb["timestamp"] - sd["timestamp"]) <= MAX_SOURCE_GAP_S * 1e6:
                        nbrs.append(nb)
            if not nbrs:
                raise OccDataError(f"{self.dataroot}: sample_data {sd['token']} ({cam}) has no camera frame within "
                                   f"{MAX_SOURCE_GAP_S} s for the photometric loss; generate the world with "
                                   f"occ-synth --camera-adjacent (or --camera-sweeps)")
            if len(nbrs) == 1:
                nbrs = nbrs * 2
            cam_src, cam_T = [], []
            for nb in nbrs:
                E_s, C_s = self._pose(nb)
                img, _ = self._prepared_rgb(nb)
                cam_src.append(img)
                cam_T.append(invert_transform(E_s @ C_s) @ T_tgt)
            srcs.append(np.stack(cam_src))
            Ts.append(np.stack(cam_T))
        return np.stack(srcs), np.stack(Ts), (np.stack(labs) if self.with_labels else None)

    def _labels(self, cam: str, sd: dict, keep_sky: bool = False) -> np.ndarray:
        """(h, w) int64 2D labels of one camera sample_data, prepared like its image (``keep_sky``:
        sky pixels as :data:`~occ_core.formats.image_maps.SKY_LABEL`, not -1)."""
        path = map_path(self.dataroot / self.cfg.render.labels, cam, sd["filename"])
        return prepare_labels(read_semantic2d(path, keep_sky=keep_sky), self.cfg.image.size)

    def load_aux(self, token: str, cameras: tuple[str, ...]) -> AuxViews:
        """The ``render.aux_keyframes`` adjacent keyframes of ``token`` (:class:`AuxViews`);
        ``cameras``: the keyframe's cameras, which every adjacent keyframe must have."""
        E_inv = invert_transform(self.ego_pose(token))
        toks, Ks, Ts, pts, labs = [], [], [], [], []
        k = self.cfg.render.aux_keyframes
        for adj in self.adjacent_tokens(token, k, k):
            sample = self.nusc.get("sample", adj)
            missing = [c for c in cameras if c not in sample["data"]]
            if missing:
                raise OccDataError(f"{self.dataroot}: keyframe {adj} (next to {token}) has no {missing} for the "
                                   f"auxiliary rays (render.aux_keyframes)")
            T_cur_from_adj = E_inv @ self.ego_pose(adj)
            p = self.lidar_points(adj)[:, :3].astype(np.float64)
            pts.append((p @ T_cur_from_adj[:3, :3].T + T_cur_from_adj[:3, 3]).astype(np.float32))
            cam_K, cam_T, cam_lab = [], [], []
            for cam in cameras:
                sd = self.nusc.get("sample_data", sample["data"][cam])
                cs = self.nusc.get("calibrated_sensor", sd["calibrated_sensor_token"])
                A, _ = resize_crop_matrix((int(sd["height"]), int(sd["width"])), self.cfg.image.size)
                cam_K.append(A @ np.asarray(cs["camera_intrinsic"], np.float64))
                E_c, C_c = self._pose(sd)
                cam_T.append(E_inv @ E_c @ C_c)
                if self.with_labels:
                    cam_lab.append(self._labels(cam, sd))
            toks.append(adj)
            Ks.append(np.stack(cam_K))
            Ts.append(np.stack(cam_T))
            if self.with_labels:
                labs.append(np.stack(cam_lab))
        N, (h, w) = len(cameras), self.cfg.image.size
        return AuxViews(toks, np.stack(Ks) if Ks else np.zeros((0, N, 3, 3)),
                        np.stack(Ts) if Ts else np.zeros((0, N, 4, 4)), pts,
                        (np.stack(labs) if labs else np.zeros((0, N, h, w), np.int64)) if self.with_labels else None)

    def __getitem__(self, key: int | tuple[int, int]) -> RenderSample:
        i = key[0] if isinstance(key, tuple) else key
        scene, token = self.samples[i]
        frame = self.load_frame(token)
        src, T, labels = self.load_views(token)
        targets = self.load_targets(scene, token) if self.with_gts else None
        aux = self.load_aux(token, frame.camera_names) if self.cfg.render.aux_keyframes else None
        return RenderSample(scene, token, frame, src.astype(np.float32), T, labels, targets, aux)


def collate_render(samples: list[RenderSample], cfg: ModelConfig) -> RenderBatch:
    """Stack :class:`RenderSample` into a :class:`RenderBatch` (images through the predictor's
    preprocessing; ``rgb`` is the same image un-normalised to 0..1)."""
    parts = [frame_to_inputs(s.frame, cfg) for s in samples]
    images = torch.cat([p.images for p in parts])
    mean = torch.tensor(cfg.image.mean, dtype=torch.float32).view(1, 1, 3, 1, 1)
    std = torch.tensor(cfg.image.std, dtype=torch.float32).view(1, 1, 3, 1, 1)
    rgb = (images * std + mean) / 255.0
    points = [torch.from_numpy(np.ascontiguousarray(s.frame.points[:, :5], dtype=np.float32)) for s in samples]
    inputs = OccInputs(images, torch.cat([p.intrinsics for p in parts]), torch.cat([p.T_base_from_cam for p in parts]), points)
    labels = None
    if all(s.labels is not None for s in samples):
        labels = torch.from_numpy(np.stack([s.labels for s in samples]))
    sem = mc = ml = None
    if all(s.targets is not None for s in samples):
        sem = torch.from_numpy(np.stack([s.targets.semantics for s in samples]).astype(np.int64))
        mc = torch.from_numpy(np.stack([s.targets.mask_camera for s in samples]))
        ml = torch.from_numpy(np.stack([s.targets.mask_lidar for s in samples]))
    return RenderBatch(inputs, rgb, torch.from_numpy(np.stack([s.src_rgb for s in samples])),
                       torch.from_numpy(np.stack([s.T_src_from_tgt for s in samples]).astype(np.float32)),
                       labels, sem, mc, ml, [s.token for s in samples], [s.scene for s in samples],
                       aux=collate_aux([s.aux for s in samples]))


def collate_aux(views: list[AuxViews | None]) -> AuxBatch | None:
    """Stack the items' :class:`AuxViews` into an :class:`AuxBatch` (None when no item has one)."""
    if any(v is None for v in views) or max(len(v.tokens) for v in views) == 0:
        return None
    J = max(len(v.tokens) for v in views)
    ref = next(x for x in views if len(x.tokens))  # padding views borrow real cameras; they get no ray
    Ks, Ts, pts, labs = [], [], [], []
    for v in views:
        pad = J - len(v.tokens)
        Ks.append(np.concatenate([v.intrinsics] + [ref.intrinsics[:1]] * pad))
        Ts.append(np.concatenate([v.T_base_from_cam] + [ref.T_base_from_cam[:1]] * pad))
        pts += [torch.from_numpy(p) for p in v.points] + [torch.zeros(0, 3)] * pad
        if v.labels is not None:
            labs.append(np.concatenate([v.labels] + [np.full_like(ref.labels[:1], -1)] * pad))
    labels = torch.from_numpy(np.stack(labs)) if len(labs) == len(views) else None
    return AuxBatch(torch.from_numpy(np.stack(Ks).astype(np.float32)),
                    torch.from_numpy(np.stack(Ts).astype(np.float32)), pts, labels)


class CollateRender:
    """Picklable ``collate_fn`` for :class:`RenderDataset`."""

    def __init__(self, cfg: ModelConfig):
        self.cfg = cfg

    def __call__(self, samples: list[RenderSample]) -> RenderBatch:
        return collate_render(samples, self.cfg)
