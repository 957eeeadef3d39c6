"""OccNeRF (Zhang et al. 2023): multi-camera occupancy learnt by volume rendering, no 3D labels.

Data flow (B samples, N cameras; the field lives in contracted ``base_link`` coordinates,
:func:`occ_core.ops.render.contract` with the grid's box as ROI):

    images (B, N, 3, H, W) -> ImageEncoder -> (B*N, Ci, h, w) -> 1x1 conv -> (B*N, C, h, w)
    lift:  every field voxel centre (contracted -> world) is projected into every camera and
           its feature sampled bilinearly; averaged over the cameras that see it, times a learnt
           position embedding (1, C, X, Y, Z) -> (B, C, X, Y, Z)
    3D CNN (conv + residual blocks) -> (B, 1 + K', X, Y, Z): channel 0 the geometry logit
           (prob mode: occupancy logit; density mode: pre-softplus density), channels 1.. the
           class logits of the K' = K - 1 non-free classes
    occupancy output: the field sampled at the Occ3D voxel centres ->
           logits (B, K, X, Y, Z) by :func:`thresholded_logits` (tau = ``occ_threshold``)

Rays are rendered from the field by :func:`render_camera_rays` (also used on other models'
Occ3D logits through :func:`field_from_logits`, RenderOcc-style).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from occ_core.models.backbone import BasicBlock, ImageEncoder, conv_bn_relu
from occ_core.models.config import ModelConfig, RenderConfig
from occ_core.models.occnet import MODELS, OccInputs, OccOutput
from occ_core.models.output import occupancy_logit_of_classes, thresholded_logits
from occ_core.ops.render import RenderResult, contract, render_rays, sample_depths, sample_field, uncontract


#: Initial geometry logit of every voxel of a field trained by rendering, per ``render.mode``:
#: sigmoid(-3) = 0.05 occupancy probability, or a density whose alpha over a typical sample
#: step is small, so that rays travel a few metres before they stop (OccNeRF's start).
RENDER_START_GEO = {"prob": -3.0, "density": -2.0}


def start_geo_logit(rc: RenderConfig) -> float:
    """The geometry logit a rendered field starts at: ``render.start_geo``, else the mode's default."""
    return RENDER_START_GEO[rc.mode] if rc.start_geo is None else float(rc.start_geo)


@dataclass
class VoxelField:
    """A renderable voxel field in ``base_link``.

    Attributes:
        geo: (B, 1, X, Y, Z) geometry logits (see :mod:`occ_core.ops.render`).
        sem: (B, K', X, Y, Z) class logits of the non-free classes, or None.
        lo, hi: (3,) the box the field covers (contracted: its ROI).
        contracted: the field spans contracted space (all of space) rather than the box.
        ratio: contraction ratio (contracted fields).
        outside: geometry value of points outside a box field (free).
    """

    geo: torch.Tensor
    sem: torch.Tensor | None
    lo: tuple[float, float, float]
    hi: tuple[float, float, float]
    contracted: bool = True
    ratio: float = 2.0 / 3.0
    outside: float = -10.0

    def normalise(self, pts: torch.Tensor) -> torch.Tensor:
        """(B, P, 3) base_link points -> field coordinates in [-1, 1] (outside a box field: beyond)."""
        if self.contracted:
            return contract(pts, self.lo, self.hi, self.ratio)
        lo = torch.as_tensor(self.lo, dtype=pts.dtype, device=pts.device)
        hi = torch.as_tensor(self.hi, dtype=pts.dtype, device=pts.device)
        return 2.0 * (pts - lo) / (hi - lo) - 1.0

    def query(self, pts: torch.Tensor, with_sem: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(B, P, 3) points -> geometry (B, P) and class logits (B, P, K') (or None)."""
        c = self.normalise(pts)
        geo = sample_field(self.geo, c)[..., 0]
        if not self.contracted:
            inside = (c.abs() <= 1.0).all(-1)
            geo = torch.where(inside, geo, torch.full_like(geo, self.outside))
        sem = sample_field(self.sem, c) if (with_sem and self.sem is not None) else None
        return geo, sem


def field_from_logits(logits: torch.Tensor, lo, hi) -> VoxelField:
    """A box :class:`VoxelField` from Occ3D-style logits (B, K, X, Y, Z) (free = K - 1):
    occupancy logit ``logsumexp(l[:K-1]) - l[K-1]`` (so sigmoid of it = 1 - softmax free)."""
    return VoxelField(occupancy_logit_of_classes(logits), logits[:, :-1], tuple(lo), tuple(hi), contracted=False)


def pixel_rays(intrinsics: torch.Tensor, T_base_from_cam: torch.Tensor, uv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Rays of pixels in base_link.

    Args:
        intrinsics: (M, 3, 3); T_base_from_cam: (M, 4, 4); uv: (M, R, 2) pixel coordinates
            (integer = pixel centre).

    Returns:
        origins (M, 3) and directions (M, R, 3), scaled so that the optical z of each is 1
        (a point at z-depth t is ``origin + t * direction``).
    """
    pix = torch.cat([uv, torch.ones_like(uv[..., :1])], -1)
    d_cam = torch.einsum("mij,mrj->mri", torch.linalg.inv(intrinsics.float()), pix)
    d_cam = d_cam / d_cam[..., 2:3]
    R = T_base_from_cam[:, :3, :3].float()
    return T_base_from_cam[:, :3, 3].float(), torch.einsum("mij,mrj->mri", R, d_cam)


@dataclass
class RayRender:
    """Rendered rays of B samples x N cameras x R pixels.

    Attributes:
        depth: (B, N, R) z-depth in metres; opacity: (B, N, R).
        semantics: (B, N, R, K') logits or None.
        weights: (B*N*R, S); edges: (B*N*R, S + 1) sample interval edges in normalised
            contracted distance (for the distortion loss).
    """

    depth: torch.Tensor
    opacity: torch.Tensor
    semantics: torch.Tensor | None
    weights: torch.Tensor
    edges: torch.Tensor


def render_camera_rays(field: VoxelField, intrinsics: torch.Tensor, T_base_from_cam: torch.Tensor, uv: torch.Tensor,
                       rc: RenderConfig, jitter: bool = False, with_sem: bool = True, chunk: int = 1 << 30) -> RayRender:
    """Render the pixels ``uv`` (B, N, R, 2) of every camera (intrinsics (B, N, 3, 3),
    T_base_from_cam (B, N, 4, 4)) through ``field`` with ``rc``'s sampler and mode.
    ``chunk`` bounds the rays per field lookup (memory at inference)."""
    B, N, R = uv.shape[:3]
    o, d = pixel_rays(intrinsics.flatten(0, 1), T_base_from_cam.flatten(0, 1), uv.flatten(0, 1).float())
    S = rc.samples
    M = B * N
    t = sample_depths(M * R, S, rc.near, rc.far, rc.sample_roi, jitter=jitter, device=uv.device).view(M, R, S)
    depths, opac, sems, weights = [], [], [], []
    step = max(1, chunk // max(1, M))
    for r0 in range(0, R, step):
        tt = t[:, r0:r0 + step]
        dd = d[:, r0:r0 + step]
        pts = o[:, None, None, :] + dd[:, :, None, :] * tt[..., None]  # (M, r, S, 3)
        r = pts.shape[1]
        geo, sem = field.query(pts.reshape(B, N * r * S, 3), with_sem)
        res: RenderResult = render_rays(geo.reshape(M * r, S), tt.reshape(M * r, S), rc.mode,
                                        dd.norm(dim=-1).reshape(M * r),
                                        None if sem is None else sem.reshape(M * r, S, -1))
        depths.append(res.depth.view(M, r))
        opac.append(res.opacity.view(M, r))
        weights.append(res.weights.view(M, r, S))
        if res.semantics is not None:
            sems.append(res.semantics.view(M, r, -1))
    # interval edges in normalised contracted distance (for the distortion loss)
    lo, hi = torch.tensor([-rc.sample_roi]), torch.tensor([rc.sample_roi])
    c = contract(t.reshape(-1, S)[..., None], lo.to(t), hi.to(t))[..., 0]
    mid = 0.5 * (c[:, 1:] + c[:, :-1])
    edges = torch.cat([2 * c[:, :1] - mid[:, :1], mid, 2 * c[:, -1:] - mid[:, -1:]], 1)
    sem_out = torch.cat(sems, 1).view(B, N, R, -1) if sems else None
    return RayRender(torch.cat(depths, 1).view(B, N, R), torch.cat(opac, 1).view(B, N, R), sem_out,
                     torch.cat(weights, 1).reshape(M * R, S), edges)


def occupancy_logit(geo: torch.Tensor, cfg: ModelConfig) -> torch.Tensor:
    """The logit of a voxel's occupancy probability from field geometry values (any shape):
    prob mode: the geometry is that logit; density mode: P(occupied) over one voxel's length,
    ``1 - exp(-softplus(geo) * step)`` (step = the grid's smallest voxel side). Voxels are
    occupied where it exceeds ``logit(occ_threshold)``."""
    if cfg.render.mode == "prob":
        return geo
    step = float(min(cfg.grid_spec.voxel_size))
    sigma = F.softplus(geo) * step
    return torch.log((-torch.expm1(-sigma)).clamp_min(1e-7)) + sigma


def rendered_head_output(logits: torch.Tensor, cfg: ModelConfig, tau: float) -> tuple[torch.Tensor, VoxelField]:
    """The Occ3D output of a non-OccNeRF model trained by rendering alone (``cfg.rendering_only``,
    RenderOcc-style): its head's logits (B, K, X, Y, Z) are the renderable field
    (:func:`field_from_logits`), and its output is that field thresholded at ``tau``
    (:func:`thresholded_logits`, (B, K, X, Y, Z)), as OccNeRF's is. Returns (logits, field)."""
    g = cfg.grid_spec
    field = field_from_logits(logits, g.range_min, g.range_max)
    occ = occupancy_logit(field.geo[:, 0], cfg)  # (B, X, Y, Z)
    out = thresholded_logits(occ, field.sem.movedim(1, -1), tau).movedim(-1, 1)
    return out, field


def threshold_rendered_output(module: nn.Module, args, out: OccOutput) -> OccOutput:
    """Forward hook that :func:`occ_core.models.occnet.build_model` puts on a non-OccNeRF model
    trained by rendering alone: ``field`` is the field of the head's own logits (what training
    renders) and, in eval mode, ``logits`` become :func:`rendered_head_output`'s thresholded
    logits (at ``module.occ_threshold``). In training mode ``logits`` stay the head's: no loss
    reads them there, and thresholding the 200 x 200 x 16 grid would cost about 90 ms a step on
    2 CPU threads (a sixth of a camera_render step)."""
    if module.training:
        g = module.cfg.grid_spec
        return dataclasses.replace(out, field=field_from_logits(out.logits, g.range_min, g.range_max))
    logits, field = rendered_head_output(out.logits, module.cfg, module.occ_threshold)
    return dataclasses.replace(out, logits=logits, field=field)


class OccNeRFNet(nn.Module):
    """OccNeRF: image features lifted into a contracted voxel field, 3D CNN, rendering (see the
    module docstring). ``forward`` maps :class:`OccInputs` to :class:`OccOutput` with the Occ3D
    logits and the renderable ``field``."""

    uses_camera = True
    uses_lidar = False

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        if cfg.occnerf is None or cfg.render is None:
            raise ValueError("model 'occnerf' needs 'occnerf' and 'render' sections")
        self.cfg = cfg
        self.occ_threshold = cfg.occupancy_threshold  # of the Occ3D output (bench/occnerf.py may set it)
        oc = cfg.occnerf
        grid = cfg.grid_spec
        self.lo, self.hi = tuple(grid.range_min), tuple(grid.range_max)
        self.image_encoder = ImageEncoder(cfg.backbone)
        self.proj = nn.Conv2d(self.image_encoder.channels, oc.channels, 1)
        X, Y, Z = oc.field_dims
        self.pos_embedding = nn.Parameter(torch.ones(1, oc.channels, X, Y, Z))
        C = oc.cnn_channels
        self.cnn = nn.Sequential(conv_bn_relu(oc.channels, C, dims=3), *[BasicBlock(C, C, dims=3) for _ in range(oc.cnn_blocks)])
        self.out = nn.Conv3d(C, cfg.num_classes, 1)  # 1 geometry + (K - 1) classes
        with torch.no_grad():  # start mostly free: rays travel a few metres before they stop
            self.out.bias[0] = start_geo_logit(cfg.render)
        ax = [-1.0 + (2.0 * torch.arange(n, dtype=torch.float32) + 1.0) / n for n in (X, Y, Z)]
        cx, cy, cz = torch.meshgrid(*ax, indexing="ij")
        self.register_buffer("voxel_world", uncontract(torch.stack([cx, cy, cz], -1), self.lo, self.hi, oc.ratio),
                             persistent=False)  # (X, Y, Z, 3) voxel centres in base_link
        g = grid
        axes = [g.range_min[i] + g.voxel_size[i] * (torch.arange(g.dims[i], dtype=torch.float32) + 0.5) for i in range(3)]
        ox, oy, oz = torch.meshgrid(*axes, indexing="ij")
        self.register_buffer("occ_points", torch.stack([ox, oy, oz], -1).view(-1, 3), persistent=False)

    def lift(self, feats: torch.Tensor, intrinsics: torch.Tensor, T_base_from_cam: torch.Tensor,
             image_hw: tuple[int, int]) -> torch.Tensor:
        """Features (B*N, C, h, w) -> voxel features (B, C, X, Y, Z): bilinear samples at the
        projections of the voxel centres, averaged over the cameras that see each voxel."""
        B, N = intrinsics.shape[:2]
        C, h, w = feats.shape[1:]
        X, Y, Z = self.voxel_world.shape[:3]
        H, W = image_hw
        pts = self.voxel_world.view(1, 1, -1, 3)
        T = torch.linalg.inv(T_base_from_cam.float())  # base -> cam
        pc = torch.einsum("bnij,bnpj->bnpi", T[..., :3, :3], pts.expand(B, N, -1, 3)) + T[..., None, :3, 3]
        z = pc[..., 2]
        uvw = torch.einsum("bnij,bnpj->bnpi", intrinsics.float(), pc)
        u = uvw[..., 0] / z.clamp_min(1e-3)
        v = uvw[..., 1] / z.clamp_min(1e-3)
        valid = (z > 0.1) & (u > -0.5) & (u < W - 0.5) & (v > -0.5) & (v < H - 0.5)
        grid = torch.stack([(u + 0.5) / W * 2 - 1, (v + 0.5) / H * 2 - 1], -1).view(B * N, 1, -1, 2)
        grid = torch.where(valid.view(B * N, 1, -1, 1), grid, torch.full_like(grid, -2.0))
        s = F.grid_sample(feats, grid, mode="bilinear", padding_mode="zeros", align_corners=False)  # (B*N, C, 1, P)
        s = s.view(B, N, C, -1) * valid.view(B, N, 1, -1)
        cnt = valid.view(B, N, 1, -1).sum(1).clamp_min(1)
        return (s.sum(1) / cnt).view(B, C, X, Y, Z)

    def field(self, inputs: OccInputs) -> VoxelField:
        B, N, _, H, W = inputs.images.shape
        feats = self.proj(self.image_encoder(inputs.images.flatten(0, 1)))
        vox = self.lift(feats, inputs.intrinsics, inputs.T_base_from_cam, (H, W)) * self.pos_embedding
        f = self.out(self.cnn(vox))
        return VoxelField(f[:, :1], f[:, 1:], self.lo, self.hi, True, self.cfg.occnerf.ratio)

    def occupancy_logits(self, field: VoxelField) -> torch.Tensor:
        """(B, K, X, Y, Z) Occ3D logits (module docstring) from the field at the grid's voxel centres."""
        B = field.geo.shape[0]
        pts = self.occ_points[None].expand(B, -1, 3)
        geo, sem = field.query(pts)
        logits = thresholded_logits(occupancy_logit(geo, self.cfg), sem, self.occ_threshold)  # (B, P, K)
        X, Y, Z = self.cfg.grid_spec.dims
        return logits.transpose(1, 2).reshape(B, -1, X, Y, Z)

    def forward(self, inputs: OccInputs, with_logits: bool = True) -> OccOutput:
        """``with_logits=False`` (training by rendering) skips the Occ3D logits (``logits`` None)."""
        field = self.field(inputs)
        return OccOutput(logits=self.occupancy_logits(field) if with_logits else None, field=field)


MODELS["occnerf"] = OccNeRFNet
