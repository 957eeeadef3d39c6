"""Training data for rendering supervision (OccNeRF; RenderOcc-style on other models).

Per keyframe: the six keyframe images as :class:`~occ_core.data.nuscenes_dataset.NuScenesOccDataset`
loads them, and per camera

- the **source frames** for the photometric loss: the camera's previous and next sample_data
  (the 12 Hz camera frames next to the keyframe; the synthetic world writes them with
  ``--camera-adjacent``), prepared exactly as the target image (same resize and crop, so the
  same network-input intrinsics), in RGB 0..1, with ``T_src_from_tgt``: target camera ->
  source camera through both ego poses (``inv(E_src C) @ E_tgt C``). A camera with only one
  neighbour (a recording's first or last frame) uses that one twice;
- the **2D semantic labels** of the keyframe image (``<dataroot>/<render.labels>/<CAM>/<image
  stem>.png``, :func:`occ_core.formats.image_maps.read_semantic2d`) resized and cropped like
  the image (nearest), -1 = ignore.

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
class RenderSample:
    """One keyframe for rendering supervision.

    Attributes:
        frame: the keyframe :class:`SensorFrame`.
        src_rgb: (N, J, 3, h, w) float32 source frames in 0..1 at the network-input size.
        T_src_from_tgt: (N, J, 4, 4) float64 target camera -> source camera.
        labels: (N, h, w) int64 2D labels (-1 ignore) or None.
        targets: Occ3D targets when 3D labels are used too, else None.
    """

    scene: str
    token: str
    frame: SensorFrame
    src_rgb: np.ndarray
    T_src_from_tgt: np.ndarray
    labels: np.ndarray | None
    targets: OccTargets | None = None


@dataclass
class RenderBatch:
    """A collated batch: ``inputs`` as for every model, ``rgb`` (B, N, 3, h, w) the targets in
    0..1, ``src_rgb`` (B, N, J, 3, h, w), ``T_src_from_tgt`` (B, N, J, 4, 4), ``labels``
    (B, N, h, w) or None; ``semantics``/``mask_camera``/``mask_lidar`` only with 3D labels."""

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
        self.with_labels = bool((rc.semantic or rc.photometric_ignore) and rc.labels)
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
        """Source frames, their transforms and the 2D labels of one keyframe (:class:`RenderSample`)."""
        sample = self.nusc.get("sample", sample_token)
        srcs, Ts, labs = [], [], []
        for cam in CAMERAS:
            if cam not in sample["data"]:
                continue
            sd = self.nusc.get("sample_data", sample["data"][cam])
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
            if self.with_labels:
                lab = read_semantic2d(map_path(self.dataroot / self.cfg.render.labels, cam, sd["filename"]))
                labs.append(prepare_labels(lab, self.cfg.image.size))
        return np.stack(srcs), np.stack(Ts), (np.stack(labs) if self.with_labels else None)

    def __getitem__(self, key: int | tuple[int, int]) -> RenderSample:
        i = key[0] if isinstance(key, tuple) else key
        scene, token = self.samples[i]
        frame = self.load_frame(token)
        src, T, labels = self.load_views(token)
        targets = self.load_targets(scene, token) if self.with_gts else None
        return RenderSample(scene, token, frame, src.astype(np.float32), T, labels, targets)


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
                       labels, sem, mc, ml, [s.token for s in samples], [s.scene for s in samples])


class CollateRender:
    """Picklable ``collate_fn`` for :class:`RenderDataset`."""

    def __init__(self, cfg: ModelConfig):
        self.cfg = cfg

    def __call__(self, samples: list[RenderSample]) -> RenderBatch:
        return collate_render(samples, self.cfg)
