"""Rendering self-supervision (OccNeRF), on random pixel patches of every camera.

Per step and camera, ``render.patches`` square patches of ``render.patch_size`` pixels of the
network-input image are rendered (depth, semantics) through the model's field
(:func:`occ_core.models.occnerf.render_camera_rays`). Losses:

- **photometric** (Monodepth2 / OccNeRF): each patch pixel, at its rendered depth, is moved
  into the previous and the next camera frame (``T_src_from_tgt``, the ego motion between the
  frames and the camera extrinsics) and the source image sampled there (bilinear, border
  padding); ``pe = 0.85 * (1 - SSIM) / 2 + 0.15 * L1`` (SSIM over 3x3 windows inside the patch,
  reflection padded, C1 = 0.01^2, C2 = 0.03^2, RGB in 0..1, averaged over channels); the
  per-pixel **minimum over the source frames**; with **auto-masking** the unwarped source
  frames' losses (plus 1e-5 noise) join the minimum, so pixels that do not change between
  frames (a static camera, objects moving with the ego, sky) drop out; the mean over pixels,
  without the pixels whose 2D label is one of ``render.photometric_ignore`` (things that may
  move; off by default, as in OccNeRF).
  Points that land behind a source camera get a loss of 1 (the other source wins).
- **semantic**: cross entropy of the rendered class logits against the 2D labels at the
  patch pixels (ignore index -1), weight ``render.semantic`` (OccNeRF: 0.05).
- **LiDAR depth** (RenderOcc, ``render.lidar_depth``): rays through up to ``render.lidar_rays``
  random pixels per camera where a LiDAR point projects (:func:`lidar_pixels`) are rendered
  too; their depth is held to the point's z-depth with the log depth loss of
  :func:`silog_loss` at ``variance_focus`` 0 (the RMS of the log error: LiDAR depth is metric,
  so its scale is kept; at the usual 0.85 a global scale error costs almost nothing, and a
  first run's rendered depth came out scaled: delta < 1.25 of 0.17 against 0.54 after
  median scaling), and they join the semantic cross entropy.
- **auxiliary rays** (RenderOcc, ``render.aux_keyframes``): the LiDAR rays of the adjacent
  keyframes (:class:`occ_core.data.render_dataset.AuxBatch`), cast from their own cameras in the
  current base_link through the current frame's field, with the same depth loss and semantic
  cross entropy, weighted by ``render.aux_weight`` (RenderOcc samples them with weight 0.3);
  rays whose 2D label is one of ``render.aux_dynamic`` are left out (the thing may have moved).
- **sky** (``render.sky``): patch rays through pixels whose 2D label is sky must gather no
  opacity, ``-log(1 - opacity)`` (the air column above the ground is empty; the rays through
  LiDAR returns rarely cross it). Sky is no rendered class: it leaves the cross entropy.
- **distortion** (Mip-NeRF 360) on the sample weights over normalised contracted distance;
  **entropy**: binary entropy of each ray's opacity (hit or no hit, nothing in between);
  **smoothness**: Monodepth2's edge-aware smoothness of the mean-normalised disparity
  ``1 / depth`` inside each patch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from occ_core.classes import OCC3D_INDEX
from occ_core.formats.image_maps import SKY_LABEL
from occ_core.models.config import RenderConfig
from occ_core.models.occnerf import RayRender, VoxelField, render_camera_rays
from occ_core.ops.render import distortion_loss

if TYPE_CHECKING:
    from occ_core.data.render_dataset import AuxBatch


def ssim_loss(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(1 - SSIM) / 2 per pixel, clamped to [0, 1]: x, y (M, 3, h, w) -> (M, 3, h, w)
    (3x3 mean windows, reflection padding; Monodepth2's SSIM)."""
    C1, C2 = 0.01 ** 2, 0.03 ** 2
    xp, yp = F.pad(x, (1, 1, 1, 1), mode="reflect"), F.pad(y, (1, 1, 1, 1), mode="reflect")
    mu_x, mu_y = F.avg_pool2d(xp, 3, 1), F.avg_pool2d(yp, 3, 1)
    sx = F.avg_pool2d(xp * xp, 3, 1) - mu_x ** 2
    sy = F.avg_pool2d(yp * yp, 3, 1) - mu_y ** 2
    sxy = F.avg_pool2d(xp * yp, 3, 1) - mu_x * mu_y
    n = (2 * mu_x * mu_y + C1) * (2 * sxy + C2)
    d = (mu_x ** 2 + mu_y ** 2 + C1) * (sx + sy + C2)
    return ((1 - n / d) / 2).clamp(0, 1)


def photometric_error(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``0.85 * SSIM term + 0.15 * L1``, mean over channels: (M, 3, h, w) -> (M, h, w)."""
    l1 = (pred - target).abs().mean(1)
    return 0.85 * ssim_loss(pred, target).mean(1) + 0.15 * l1


def sample_image(img: torch.Tensor, uv: torch.Tensor) -> torch.Tensor:
    """Bilinear samples of img (M, 3, H, W) at uv (M, R, 2) pixel coordinates (integer = pixel
    centre), border padding -> (M, 3, R)."""
    H, W = img.shape[-2:]
    g = torch.stack([(uv[..., 0] + 0.5) / W * 2 - 1, (uv[..., 1] + 0.5) / H * 2 - 1], -1)[:, None]
    return F.grid_sample(img, g, mode="bilinear", padding_mode="border", align_corners=False)[:, :, 0]


def warp_pixels(uv: torch.Tensor, depth: torch.Tensor, K: torch.Tensor, T_src_from_tgt: torch.Tensor,
                K_src: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Where target pixels land in a source camera.

    Args:
        uv: (M, R, 2) target pixels; depth: (M, R) their z-depth; K: (M, 3, 3) target
            intrinsics; T_src_from_tgt: (M, 4, 4) target camera -> source camera;
            K_src: source intrinsics (default K).

    Returns:
        uv in the source image (M, R, 2) and whether the point is in front of it (M, R).
    """
    K_src = K if K_src is None else K_src
    pix = torch.cat([uv, torch.ones_like(uv[..., :1])], -1)
    p = torch.einsum("mij,mrj->mri", torch.linalg.inv(K.float()), pix) * depth[..., None]
    q = torch.einsum("mij,mrj->mri", T_src_from_tgt[:, :3, :3].float(), p) + T_src_from_tgt[:, None, :3, 3].float()
    z = q[..., 2]
    proj = torch.einsum("mij,mrj->mri", K_src.float(), q)
    uv_src = proj[..., :2] / z.clamp_min(1e-3)[..., None]
    return uv_src, z > 0.1


def reprojection_loss(rgb_tgt: torch.Tensor, src: torch.Tensor, uv: torch.Tensor, depth: torch.Tensor, K: torch.Tensor,
                      T_src_from_tgt: torch.Tensor, patch: int, automask: bool = True,
                      counted: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Monodepth2's minimum reprojection loss with auto-masking on patches.

    Args:
        rgb_tgt: (M, 3, H, W) target images in 0..1; src: (M, J, 3, H, W) source images.
        uv: (M, P * p * p, 2) patch pixels (patch-major, row-major inside a patch).
        depth: (M, P * p * p) rendered z-depth; K: (M, 3, 3); T_src_from_tgt: (M, J, 4, 4).
        patch: p.
        counted: (M, P * p * p) bool, the pixels the loss averages over (None: all); SSIM
            windows still read their neighbours.

    Returns:
        (scalar mean loss over the counted pixels (0 if none), (M, P*p*p) bool: pixels the
        auto-mask kept).
    """
    M, R = depth.shape
    J = src.shape[1]
    P = R // (patch * patch)

    def patches(v: torch.Tensor) -> torch.Tensor:  # (M, 3, R) -> (M*P, 3, p, p)
        return v.view(M, 3, P, patch, patch).transpose(1, 2).reshape(M * P, 3, patch, patch)

    tgt = patches(sample_image(rgb_tgt, uv))
    errs, idents = [], []
    for j in range(J):
        uv_s, front = warp_pixels(uv, depth, K, T_src_from_tgt[:, j])
        warped = patches(sample_image(src[:, j], uv_s))
        e = photometric_error(warped, tgt).view(M, R)
        errs.append(torch.where(front, e, torch.ones_like(e)))
        if automask:
            idents.append(photometric_error(patches(sample_image(src[:, j], uv)), tgt).view(M, R))
    reproj = torch.stack(errs, -1).min(-1).values

    def mean(e: torch.Tensor) -> torch.Tensor:
        return e.mean() if counted is None else (e * counted).sum() / counted.sum().clamp_min(1)

    if not automask:
        return mean(reproj), torch.ones_like(reproj, dtype=torch.bool)
    ident = torch.stack(idents, -1).min(-1).values + 1e-5 * torch.randn_like(reproj)
    combined = torch.minimum(reproj, ident.detach())
    return mean(combined), reproj < ident


def smoothness_loss(depth: torch.Tensor, rgb: torch.Tensor) -> torch.Tensor:
    """Edge-aware smoothness of mean-normalised disparity: depth (M, 1, p, p), rgb (M, 3, p, p)."""
    disp = 1.0 / depth.clamp_min(1e-3)
    disp = disp / (disp.mean((2, 3), keepdim=True) + 1e-7)
    gx = (disp[..., :, :-1] - disp[..., :, 1:]).abs()
    gy = (disp[..., :-1, :] - disp[..., 1:, :]).abs()
    ix = (rgb[..., :, :-1] - rgb[..., :, 1:]).abs().mean(1, keepdim=True)
    iy = (rgb[..., :-1, :] - rgb[..., 1:, :]).abs().mean(1, keepdim=True)
    return (gx * torch.exp(-ix)).mean() + (gy * torch.exp(-iy)).mean()


def silog_loss(pred: torch.Tensor, target: torch.Tensor, variance_focus: float = 0.85) -> torch.Tensor:
    """Scale-invariant log depth loss (Eigen et al. 2014; RenderOcc's rendered-depth loss):
    ``sqrt(mean(g^2) - variance_focus * mean(g)^2)`` with ``g = log pred - log target`` over
    (P,) depths in metres (P >= 1, both > 0). 0 for a perfect prediction; with ``variance_focus``
    < 1 a global scale error still costs ``sqrt(1 - variance_focus) * |g|``."""
    g = torch.log(pred.clamp_min(1e-3)) - torch.log(target)
    return torch.sqrt(((g * g).mean() - variance_focus * g.mean() ** 2).clamp_min(1e-8))


def lidar_pixels(points: list[torch.Tensor], intrinsics: torch.Tensor, T_base_from_cam: torch.Tensor,
                 hw: tuple[int, int], rc: RenderConfig,
                 generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixels where LiDAR points project, with their z-depth (RenderOcc's depth rays).

    Args:
        points: B tensors (P_b, >= 3), x, y, z in base_link.
        intrinsics: (B, N, 3, 3), T_base_from_cam: (B, N, 4, 4) of the (H, W) = ``hw`` images.
        rc: ``lidar_rays`` per camera, depths kept in ``(near, lidar_max_depth)``.

    Returns:
        uv (B, N, R, 2) float pixel coordinates (integer = pixel centre) and depth (B, N, R)
        z-depth in metres, 0 where a camera has fewer than R points (R = ``rc.lidar_rays``;
        each camera's R are drawn at random without replacement).
    """
    from occ_core.models.lss import project_to_cameras

    B, N = intrinsics.shape[:2]
    H, W = hw
    R = rc.lidar_rays
    dev = intrinsics.device
    uv = torch.zeros(B, N, R, 2, device=dev)
    depth = torch.zeros(B, N, R, device=dev)
    for b in range(B):
        p = points[b][:, :3].float().to(dev)
        grid, inside = project_to_cameras(p, intrinsics[b], T_base_from_cam[b], hw)  # (N, P, 2), (N, P)
        T_cam_from_base = torch.linalg.inv(T_base_from_cam[b].float())
        z = p @ T_cam_from_base[:, 2, :3].T + T_cam_from_base[:, 2, 3]  # (P, N)
        z = z.T
        ok = inside & (z > rc.near) & (z < rc.lidar_max_depth)
        for n in range(N):
            idx = ok[n].nonzero()[:, 0]
            idx = idx[torch.randperm(idx.numel(), generator=generator, device="cpu")[:R].to(dev)]
            k = idx.numel()
            g = grid[n, idx]
            uv[b, n, :k, 0] = (g[:, 0] + 1) * W / 2 - 0.5
            uv[b, n, :k, 1] = (g[:, 1] + 1) * H / 2 - 0.5
            depth[b, n, :k] = z[n, idx]
    return uv, depth


@dataclass
class RenderTerms:
    """Weighted rendering loss terms (scalars) and what the step saw; ``total`` is their sum
    (plus the 3D terms when the model also trains on 3D labels)."""

    total: torch.Tensor
    photometric: torch.Tensor
    semantic: torch.Tensor
    distortion: torch.Tensor
    entropy: torch.Tensor
    smoothness: torch.Tensor
    lidar_depth: torch.Tensor
    occ3d: torch.Tensor
    aux_rays: torch.Tensor | float = 0.0
    sky: torch.Tensor | float = 0.0
    automask_kept: float = 1.0
    lss_depth: torch.Tensor | float = 0.0

    def as_floats(self) -> dict[str, float]:
        return {k: float(v.detach()) if isinstance(v, torch.Tensor) else float(v) for k, v in self.__dict__.items()}


def random_patches(B: int, N: int, hw: tuple[int, int], rc: RenderConfig, device=None,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """(B, N, P * p * p, 2) pixel coordinates of ``rc.patches`` random p x p patches per camera."""
    H, W = hw
    p, P = rc.patch_size, rc.patches
    u0 = torch.randint(0, W - p + 1, (B, N, P, 1, 1), device=device, generator=generator)
    v0 = torch.randint(0, H - p + 1, (B, N, P, 1, 1), device=device, generator=generator)
    ar = torch.arange(p, device=device)
    u = (u0 + ar.view(1, 1, 1, 1, p)).expand(B, N, P, p, p)
    v = (v0 + ar.view(1, 1, 1, p, 1)).expand(B, N, P, p, p)
    return torch.stack([u, v], -1).reshape(B, N, P * p * p, 2).float()


def labels_at(labels: torch.Tensor, uv: torch.Tensor) -> torch.Tensor:
    """(M, R) int64 labels of (M, H, W) 2D label maps at pixels uv (M, R, 2) (nearest pixel; -1
    where uv lies outside the image)."""
    M, H, W = labels.shape
    iu, iv = uv[..., 0].round().long(), uv[..., 1].round().long()
    inside = (iu >= 0) & (iu < W) & (iv >= 0) & (iv < H)
    m = torch.arange(M, device=labels.device)[:, None]
    target = labels[m, iv.clamp(0, H - 1), iu.clamp(0, W - 1)]
    return torch.where(inside, target, torch.full_like(target, -1))


def aux_ray_loss(field: VoxelField, aux: AuxBatch, hw: tuple[int, int], rc: RenderConfig,
                 with_sem: bool) -> torch.Tensor:
    """RenderOcc's auxiliary rays (module docstring), unweighted by ``rc.aux_weight``:
    ``lidar_depth * depth loss + semantic * cross entropy`` over the adjacent keyframes' LiDAR
    rays in the current field (``with_sem``: the cross entropy too; needs ``aux.labels``).
    Rays with a 2D label in ``rc.aux_dynamic`` are left out; 0 when no ray is left."""
    B, J, N = aux.intrinsics.shape[:3]
    uv, z = lidar_pixels(aux.points, aux.intrinsics.flatten(0, 1), aux.T_base_from_cam.flatten(0, 1), hw, rc)
    keep = z > 0  # (B * J, N, R)
    target = None
    if aux.labels is not None:
        target = labels_at(aux.labels.flatten(0, 2), uv.flatten(0, 1)).view_as(keep)
        if rc.aux_dynamic:
            keep &= ~torch.isin(target, torch.tensor([OCC3D_INDEX[n] for n in rc.aux_dynamic], device=target.device))
    R = uv.shape[2]
    rr = render_camera_rays(field, aux.intrinsics.reshape(B, J * N, 3, 3), aux.T_base_from_cam.reshape(B, J * N, 4, 4),
                            uv.view(B, J * N, R, 2), rc, jitter=True, with_sem=with_sem)
    loss = rr.depth.sum() * 0.0
    keep = keep.view(B, J * N, R)
    if not keep.any():
        return loss
    loss = loss + rc.lidar_depth * silog_loss(rr.depth[keep], z.view(B, J * N, R)[keep], variance_focus=0.0)
    if with_sem and rr.semantics is not None:
        t = target.view(B, J * N, R)[keep]
        if (t >= 0).any():
            loss = loss + rc.semantic * F.cross_entropy(rr.semantics[keep], t, ignore_index=-1)
    return loss


def render_loss(field: VoxelField, intrinsics: torch.Tensor, T_base_from_cam: torch.Tensor, rgb: torch.Tensor,
                src_rgb: torch.Tensor, T_src_from_tgt: torch.Tensor, labels: torch.Tensor | None,
                rc: RenderConfig, points: list[torch.Tensor] | None = None,
                aux: AuxBatch | None = None) -> RenderTerms:
    """All rendering losses of one batch (module docstring).

    Args:
        field: the model's renderable field.
        intrinsics: (B, N, 3, 3); T_base_from_cam: (B, N, 4, 4) of the network-input images.
        rgb: (B, N, 3, H, W) target images in 0..1; src_rgb: (B, N, J, 3, H, W) source frames.
        T_src_from_tgt: (B, N, J, 4, 4) target camera -> source camera.
        labels: (B, N, H, W) int64 2D labels (-1 = ignore) or None.
        points: B LiDAR point clouds (P_b, >= 3) in base_link, for ``rc.lidar_depth`` > 0.
        aux: the adjacent keyframes' views for ``rc.aux_keyframes`` > 0 (None: no auxiliary rays).
    """
    B, N, _, H, W = rgb.shape
    p = rc.patch_size
    uv = random_patches(B, N, (H, W), rc, rgb.device)
    rr: RayRender = render_camera_rays(field, intrinsics, T_base_from_cam, uv, rc, jitter=True,
                                       with_sem=labels is not None and rc.semantic > 0)
    M = B * N
    zero = rr.depth.sum() * 0.0
    terms = dict(photometric=zero, semantic=zero, distortion=zero, entropy=zero, smoothness=zero, lidar_depth=zero,
                 occ3d=zero, aux_rays=zero, sky=zero)
    uvm = uv.view(M, -1, 2)
    depth = rr.depth.view(M, -1)
    # the 2D labels at the patch pixels, looked up once: photometric_ignore, sky and the cross entropy
    patch_labels = None if labels is None else labels_at(labels.flatten(0, 1), uvm)  # (M, R)
    kept = 1.0
    if rc.photometric:
        counted = None
        if rc.photometric_ignore and patch_labels is not None:
            ignore = torch.tensor([OCC3D_INDEX[n] for n in rc.photometric_ignore], device=labels.device)
            counted = ~torch.isin(patch_labels, ignore)
        pe, keep = reprojection_loss(rgb.flatten(0, 1), src_rgb.flatten(0, 1), uvm, depth, intrinsics.flatten(0, 1),
                                     T_src_from_tgt.flatten(0, 1), p, rc.automask, counted)
        terms["photometric"] = rc.photometric * pe
        kept = float(keep.float().mean())
    if rc.smoothness:
        P = rc.patches
        d = depth.view(M, P, 1, p, p).flatten(0, 1)
        col = sample_image(rgb.flatten(0, 1), uvm).view(M, 3, P, p, p).transpose(1, 2).flatten(0, 1)
        terms["smoothness"] = rc.smoothness * smoothness_loss(d, col)
    if rc.sky and patch_labels is not None:  # rays through sky pixels hit nothing: no opacity anywhere on them
        sky = patch_labels == SKY_LABEL  # (M, R)
        if sky.any():
            o = rr.opacity.view(M, -1)[sky].clamp(max=1 - 1e-6)
            terms["sky"] = rc.sky * -torch.log1p(-o).mean()
    sem_logits, sem_targets = [rr.semantics], [patch_labels]
    if rc.lidar_depth and points is not None:
        uv_l, z_l = lidar_pixels(points, intrinsics, T_base_from_cam, (H, W), rc)
        rl = render_camera_rays(field, intrinsics, T_base_from_cam, uv_l, rc, jitter=True,
                                with_sem=rr.semantics is not None)
        hit = z_l > 0
        if hit.any():
            terms["lidar_depth"] = rc.lidar_depth * silog_loss(rl.depth[hit], z_l[hit], variance_focus=0.0)
        if rl.semantics is not None and labels is not None:  # rays without a point: label -1 (ignored)
            sem_logits.append(rl.semantics)
            sem_targets.append(torch.where(hit.view(M, -1), labels_at(labels.flatten(0, 1), uv_l.view(M, -1, 2)), -1))
    if rr.semantics is not None and labels is not None:
        logits = torch.cat([x.reshape(M, -1, x.shape[-1]) for x in sem_logits], 1)  # (M, R', K')
        target = torch.cat(sem_targets, 1)  # (M, R')
        target = torch.where(target == SKY_LABEL, -1, target)  # sky is no rendered class
        if (target >= 0).any():
            terms["semantic"] = rc.semantic * F.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                                              target.reshape(-1), ignore_index=-1)
    if aux is not None and rc.aux_keyframes and rc.aux_weight:
        with_sem = rr.semantics is not None and aux.labels is not None
        terms["aux_rays"] = rc.aux_weight * aux_ray_loss(field, aux, (H, W), rc, with_sem)
    if rc.distortion:
        terms["distortion"] = rc.distortion * distortion_loss(rr.weights, rr.edges)
    if rc.entropy:
        o = rr.opacity.clamp(1e-6, 1 - 1e-6)
        terms["entropy"] = rc.entropy * (-(o * o.log() + (1 - o) * (1 - o).log())).mean()
    total = sum(terms.values())
    return RenderTerms(total=total, automask_kept=kept, **terms)
