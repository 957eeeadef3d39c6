"""The inference contract: :class:`OccupancyPredictor` implements :class:`occ_core.frame.Predictor`.

The ROS node and the offline tools call exactly::

    predictor = load_predictor("config/models/fusion.yaml", "model.pt")  # or None
    prediction = predictor.predict(frame)   # SensorFrame -> OccupancyPrediction

A temporal model (a config with a ``temporal`` section) keeps a
:class:`~occ_core.models.temporal.TemporalState`: call ``predict`` on one stream's frames in
stamp order, each with its ``ego_pose``; the state carries from frame to frame or resets by
:func:`~occ_core.models.temporal.link_frames` (first frame, missing pose, stamp order or gap,
pose jump). ``reset()`` starts a new sequence explicitly (``occ-predict`` does at each scene).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from occ_core.cli import check_device
from occ_core.data.transforms import prepare_image
from occ_core.errors import OccDataError
from occ_core.frame import OccupancyPrediction, SensorFrame
from occ_core.models.config import ModelConfig, load_config
from occ_core.models.occnet import OccInputs, OccupancyNet, build_model

def frame_to_inputs(frame: SensorFrame, cfg: ModelConfig) -> OccInputs:
    """One :class:`SensorFrame` -> a batch of one :class:`OccInputs` (CPU tensors).

    Images are resized/cropped/normalised to ``cfg.image`` with their intrinsics updated
    (:func:`occ_core.data.transforms.prepare_image`); points stay in base_link.
    """
    images = intrinsics = T = None
    if cfg.uses_camera:
        n = len(frame.camera_names)
        if len(frame.images) != n or np.shape(frame.intrinsics) != (n, 3, 3) or np.shape(frame.T_base_from_cam) != (n, 4, 4):
            raise OccDataError(f"SensorFrame: {n} camera names need {n} images, intrinsics (N, 3, 3) and "
                               f"T_base_from_cam (N, 4, 4); got {len(frame.images)}, {np.shape(frame.intrinsics)}, "
                               f"{np.shape(frame.T_base_from_cam)}")
        prepared = [prepare_image(img, K, cfg.image.size, cfg.image.mean, cfg.image.std, where=f"SensorFrame.images[{name}]")
                    for img, K, name in zip(frame.images, frame.intrinsics, frame.camera_names)]
        images = torch.from_numpy(np.stack([p.image for p in prepared]))[None]
        intrinsics = torch.from_numpy(np.stack([p.intrinsics for p in prepared]).astype(np.float32))[None]
        T = torch.from_numpy(np.asarray(frame.T_base_from_cam, dtype=np.float32))[None]
    points = None
    if cfg.lidar is not None:
        pts = np.asarray(frame.points, dtype=np.float32)
        if pts.ndim != 2 or pts.shape[1] < 5:
            raise OccDataError(f"SensorFrame.points: expected (P, 5) [x, y, z, intensity, time_lag_s], got {pts.shape}")
        points = [torch.from_numpy(np.ascontiguousarray(pts[:, :5]))]
    return OccInputs(images, intrinsics, T, points)

class OccupancyPredictor:
    """A trained (or seeded random-init) :class:`OccupancyNet` behind the Predictor protocol."""

    def __init__(self, model: OccupancyNet, cfg: ModelConfig, device: str | torch.device = "cpu"):
        self.cfg = cfg
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        from occ_core.models.temporal import TemporalState

        #: the streaming state of temporal models (None for single-frame models)
        self.state = TemporalState(cfg.temporal) if cfg.temporal is not None else None
        #: the reset rule's verdict for the last predicted frame (temporal models)
        self.last_link = None

    @property
    def needs_ego_pose(self) -> bool:
        """Whether the frames should carry ``ego_pose`` (temporal models: the ego motion)."""
        return self.state is not None

    def reset(self) -> None:
        """Start a new sequence: the next frame is a first frame (no effect on single-frame models)."""
        if self.state is not None:
            self.state.reset()

    @property
    def image_hw(self) -> tuple[int, int] | None:
        """The camera input (h, w) images may be decoded for (:func:`occ_core.data.transforms.decode_image`)."""
        return self.cfg.image_hw

    @torch.no_grad()
    def predict(self, frame: SensorFrame) -> OccupancyPrediction:
        """Labels (X, Y, Z) uint8 (free = 17 for Occ3D) = argmax of the logits, scores = their
        softmax probability, flow (X, Y, Z, 2) m/s for flow models; all in base_link.
        Temporal models use and update their state (see the module docstring)."""
        inputs = frame_to_inputs(frame, self.cfg).to(self.device)
        if self.state is None:
            out = self.model(inputs)
        else:
            link = self.last_link = self.state.link(frame.stamp_ns, frame.ego_pose)
            if link.carries:
                T = torch.from_numpy(link.T_cur_from_prev.astype(np.float32))[None].to(self.device)
                out = self.model(inputs, self.state.bev, T)
            else:
                out = self.model(inputs)
            self.state.update(out.bev, frame.stamp_ns, frame.ego_pose)
        return logits_to_prediction(out.logits[0], None if out.flow is None else out.flow[0])


def logits_to_prediction(logits: torch.Tensor, flow: torch.Tensor | None = None) -> OccupancyPrediction:
    """One sample's logits (K, X, Y, Z) -> labels = argmax (uint8), scores = their softmax
    probability (float32), flow (X, Y, Z, 2) as float32 numpy; shared by every backend."""
    prob = logits.float().softmax(0)
    scores, labels = prob.max(0)
    flow_np = None if flow is None else flow.float().cpu().numpy()
    return OccupancyPrediction(labels.to(torch.uint8).cpu().numpy(), scores.cpu().numpy().astype(np.float32), flow_np)

def load_checkpoint_state(path: str | Path, map_location="cpu") -> dict:
    """Read a checkpoint written by :mod:`occ_core.training` (or a bare ``state_dict``).

    Raises:
        OccDataError: naming the file, when it is missing, truncated or not a checkpoint.
    """
    path = Path(path)
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)  # tensors and plain data only
    except FileNotFoundError:
        raise OccDataError(f"{path}: checkpoint not found") from None
    except Exception as e:  # torch raises RuntimeError/UnpicklingError/EOFError/... on damaged files
        raise OccDataError(f"{path}: not a readable checkpoint (truncated or corrupted?): {type(e).__name__}: {e}") from None
    if isinstance(obj, dict) and "model" in obj and isinstance(obj["model"], dict):
        return obj
    if isinstance(obj, dict) and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return {"model": obj}
    raise OccDataError(f"{path}: expected a checkpoint dict with a 'model' state_dict")

def load_predictor(config_path: str | Path, checkpoint_path: str | Path | None = None,
                   device: str | torch.device = "cpu") -> OccupancyPredictor:
    """Build the model of ``config_path`` and load its weights.

    Args:
        config_path: a ``config/models/*.yaml`` file.
        checkpoint_path: a checkpoint from ``occ-train`` (its ``model`` state) or a bare
            state_dict; **None gives the model with its seeded random initialisation**
            (``seed`` of the config): deterministic, but untrained -- its predictions are noise.
        device: torch device for inference.
    """
    device = check_device(str(device), "device")
    cfg = load_config(config_path)
    model = build_model(cfg)
    if checkpoint_path is not None:
        state = load_checkpoint_state(checkpoint_path)["model"]
        try:
            model.load_state_dict(state)
        except RuntimeError as e:
            raise OccDataError(f"{checkpoint_path}: weights do not fit the model of {config_path}: {e}") from None
    return OccupancyPredictor(model, cfg, device)
