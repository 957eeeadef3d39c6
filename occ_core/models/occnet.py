"""Occupancy networks: camera (LSS), LiDAR (spconv), fusion; optional CONet cascade and flow.

Data flow (all voxel tensors (B, C, X, Y, Z) in base_link):

    camera: images (B, N, 3, H, W) -> ImageEncoder -> (B*N, Ci, h, w)
            -> LSSViewTransformer (depth (B*N, D, h, w), bev_pool) -> (B, Cc, X', Y', Z')
    lidar:  B point clouds (P_i, 5) -> LidarEncoder (voxelize, spconv) -> (B, Cl, X', Y', Z')
    fusion: AdaptiveFusion(camera, lidar) -> (B, C, X', Y', Z')
    encoder (3D residual block) -> head (VoxelHead or ChannelToHeightHead) -> (B, K, X, Y, Z)
    cascade (optional): coarse logits (B, K, X', Y', Z') pick voxels; CascadeRefiner rewrites the
            head's logits there -> (B, K, X, Y, Z)
    flow (optional): FlowHead -> (B, X, Y, Z, 2)

``(X', Y', Z') = grid.dims / feature_stride`` is the feature grid, ``(X, Y, Z)`` the output grid.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from occ_core.models.backbone import BasicBlock, ImageEncoder, conv_bn_relu
from occ_core.models.cascade import CascadeRefiner
from occ_core.models.config import ModelConfig
from occ_core.models.heads import AdaptiveFusion, ChannelToHeightHead, FlowHead, VoxelHead
from occ_core.models.lidar import LidarEncoder
from occ_core.models.lss import LSSViewTransformer


@dataclass
class OccInputs:
    """A batch of network inputs (already resized/normalised; see :mod:`occ_core.data.transforms`).

    Attributes:
        images: (B, N, 3, H, W) float32 normalised images, or None for LiDAR-only models.
        intrinsics: (B, N, 3, 3) float32 K of the network-input images, or None.
        T_base_from_cam: (B, N, 4, 4) float32 camera (optical) -> base_link, or None.
        points: B tensors (P_i, 5) float32 ``[x, y, z, intensity, time_lag_s]`` in base_link, or None.
    """

    images: torch.Tensor | None
    intrinsics: torch.Tensor | None
    T_base_from_cam: torch.Tensor | None
    points: list[torch.Tensor] | None

    def to(self, device) -> "OccInputs":
        def mv(t):
            return None if t is None else t.to(device, non_blocking=True)

        return OccInputs(mv(self.images), mv(self.intrinsics), mv(self.T_base_from_cam),
                         None if self.points is None else [p.to(device, non_blocking=True) for p in self.points])

    @property
    def batch_size(self) -> int:
        return self.images.shape[0] if self.images is not None else len(self.points)


@dataclass
class OccOutput:
    """Network outputs.

    Attributes:
        logits: (B, K, X, Y, Z) class logits on the output grid (free = K - 1).
        coarse_logits: (B, K, X', Y', Z') the cascade's coarse logits on the feature grid
            (cascade models only, else None).
        refined: (M, 4) int64 ``[b, x, y, z]`` voxels the cascade refined (or None).
        depth_probs: (B*N, D, h, w) LSS depth distributions (camera models, else None).
        flow: (B, X, Y, Z, 2) occupancy flow in m/s (flow models, else None).
        bev: (B, C, X', Y') the BEV features in the current base_link (BEVFormer models; the
            (B, K*C, X', Y') stack of the last K forward BEVs for multi-frame HBEVOcc; else
            None); the next frame's ``prev_bev`` (:mod:`occ_core.models.temporal`).
        field: the renderable occupancy field (:class:`occ_core.models.occnerf.VoxelField`;
            OccNeRF models, else None).
    """

    logits: torch.Tensor
    coarse_logits: torch.Tensor | None = None
    refined: torch.Tensor | None = None
    depth_probs: torch.Tensor | None = None
    flow: torch.Tensor | None = None
    bev: torch.Tensor | None = None
    field: object | None = None


class OccupancyNet(nn.Module):
    """The shared trunk: branch encoders (per config) -> voxel features -> head (+ cascade, flow)."""

    uses_camera = True
    uses_lidar = True

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        fgrid, grid = cfg.feature_grid, cfg.grid_spec
        C = cfg.channels
        self.image_encoder = self.lss = self.lidar = self.fusion = None
        cam_c = lidar_c = 0
        if self.uses_camera:
            if cfg.lss is None:
                raise ValueError(f"model {cfg.name!r} needs an 'lss' section")
            self.image_encoder = ImageEncoder(cfg.backbone)
            self.lss = LSSViewTransformer(cfg.lss, self.image_encoder.channels, fgrid)
            cam_c = cfg.lss.channels
        if self.uses_lidar:
            if cfg.lidar is None:
                raise ValueError(f"model {cfg.name!r} needs a 'lidar' section")
            self.lidar = LidarEncoder(cfg.lidar, grid, cfg.feature_stride)
            lidar_c = self.lidar.channels
        if self.uses_camera and self.uses_lidar:
            self.fusion = AdaptiveFusion(cam_c, lidar_c, C)
            self.encoder = BasicBlock(C, C, dims=3)
        else:
            self.encoder = nn.Sequential(conv_bn_relu(cam_c or lidar_c, C, dims=3), BasicBlock(C, C, dims=3))
        Zf = fgrid.dims[2]
        if cfg.head == "c2h":
            self.head = ChannelToHeightHead(C, Zf, cfg.num_classes, grid.dims, bev_channels=cfg.bev_channels,
                                            bev_encoder=cfg.bev_encoder)
        else:
            self.head = VoxelHead(C, cfg.num_classes, grid.dims)
        self.cascade = None
        if cfg.cascade is not None:
            self.coarse_cls = nn.Conv3d(C, cfg.num_classes, 1)
            self.cascade = CascadeRefiner(cfg.cascade, cfg.num_classes, cfg.free_label, C,
                                          self.image_encoder.channels if self.uses_camera else 0, lidar_c, grid,
                                          cfg.feature_stride)
        self.flow_head = FlowHead(C, grid.dims) if cfg.flow else None

    def forward(self, inputs: OccInputs) -> OccOutput:
        img_feats = depth = cam = lid = None
        image_hw = None
        if self.uses_camera:
            B, N, _, H, W = inputs.images.shape
            image_hw = (H, W)
            img_feats = self.image_encoder(inputs.images.flatten(0, 1))  # (B*N, Ci, h, w)
            out = self.lss(img_feats, inputs.intrinsics, inputs.T_base_from_cam, image_hw)
            cam, depth = out.voxels, out.depth_probs
        if self.uses_lidar:
            lid = self.lidar(inputs.points)
        if self.fusion is not None:
            vox = self.encoder(self.fusion(cam, lid))
        else:
            vox = self.encoder(cam if cam is not None else lid)
        result = OccOutput(logits=self.head(vox), depth_probs=depth)
        if self.cascade is not None:
            coarse = self.coarse_cls(vox)  # (B, K, X', Y', Z')
            result.logits, result.refined = self.cascade(coarse, result.logits, vox, img_feats, inputs.intrinsics,
                                                         inputs.T_base_from_cam, image_hw, lid)
            result.coarse_logits = coarse
        if self.flow_head is not None:
            result.flow = self.flow_head(vox)
        return result


class CameraOccNet(OccupancyNet):
    """Camera only: LSS lifting (FlashOcc-style with ``head: c2h``)."""

    uses_lidar = False


class LidarOccNet(OccupancyNet):
    """LiDAR only: spconv encoder."""

    uses_camera = False


class FusionOccNet(OccupancyNet):
    """Camera + LiDAR with OpenOccupancy adaptive fusion."""


MODELS: dict[str, type[nn.Module]] = {
    "camera": CameraOccNet,
    "lidar": LidarOccNet,
    "fusion": FusionOccNet,
}


def _register_other_models() -> None:
    """Models in modules that import this one add themselves to MODELS when imported (an import
    here at the top would be a cycle): ``bevformer`` (:mod:`occ_core.models.bevformer`), ``occnerf``
    (:mod:`occ_core.models.occnerf`), ``hbevocc`` (:mod:`occ_core.models.hbevocc`)."""
    import occ_core.models.bevformer  # noqa: F401
    import occ_core.models.hbevocc  # noqa: F401
    import occ_core.models.occnerf  # noqa: F401


def build_model(cfg: ModelConfig) -> nn.Module:
    """The model named by ``cfg.name``, initialised from ``cfg.seed`` (global RNG untouched).
    With a ``render`` section the head starts mostly free (:func:`heads.start_mostly_free`).
    A forward hook makes the eval-mode output (:mod:`occ_core.models.output`): trained by
    rendering alone (``cfg.rendering_only``), the rendered field thresholded at
    ``cfg.occupancy_threshold`` (:func:`occnerf.threshold_rendered_output`); a classifier, its
    logits thresholded at ``occ_threshold`` where one is set (:func:`output.threshold_class_output`).
    ``model.occ_threshold`` holds the threshold (the calibration sets it).

    Every model maps :class:`OccInputs` to :class:`OccOutput`."""
    _register_other_models()
    if cfg.name not in MODELS:
        raise ValueError(f"model name {cfg.name!r} is not one of {sorted(MODELS)}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        model = MODELS[cfg.name](cfg)
    from occ_core.models.occnerf import start_geo_logit, threshold_rendered_output
    from occ_core.models.output import threshold_class_output

    if cfg.render is not None and cfg.name != "occnerf":  # RenderOcc-style: render the head's logits
        from occ_core.models.heads import start_mostly_free

        start_mostly_free(model.head.cls, cfg.num_classes, start_geo_logit(cfg.render))
    if cfg.name != "occnerf":  # OccNeRF thresholds its own field
        model.cfg = cfg
        model.occ_threshold = cfg.occupancy_threshold
        if cfg.rendering_only:  # no 3D labels: occupancy is thresholded, as OccNeRF's and RenderOcc's
            model.register_forward_hook(threshold_rendered_output)
        else:  # a classifier: the argmax, or occupancy thresholded at occ_threshold
            model.register_forward_hook(threshold_class_output)
    return model

