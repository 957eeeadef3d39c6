"""Rendered depth of whole camera images (``occ-predict --format depth``, occ-train validation).

A model with a renderable field (OccNeRF, or any model's Occ3D logits through
:func:`occ_core.models.occnerf.field_from_logits`) is rendered for one ray per
``render.depth_stride`` x ``render.depth_stride`` block of **source** pixels (the image as
recorded, its calibrated intrinsics), and the (H / s, W / s) depth map is resized bilinearly to
the source size (H, W), so predictions line up pixel for pixel with ``depth/`` ground truth.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import torch

from occ_core.models.config import ModelConfig, RenderConfig
from occ_core.models.occnerf import VoxelField, field_from_logits, render_camera_rays
from occ_core.models.occnet import OccInputs


def model_field(model, inputs: OccInputs, cfg: ModelConfig, with_logits: bool = True):
    """(OccOutput, VoxelField) of a batch: OccNeRF's field, or the Occ3D logits' box field."""
    if cfg.occnerf is not None:
        out = model(inputs, with_logits=with_logits)
        return out, out.field
    out = model(inputs)
    if out.field is not None:  # trained by rendering alone: the field of the head's own logits
        return out, out.field
    g = cfg.grid_spec
    return out, field_from_logits(out.logits, g.range_min, g.range_max)


def block_centres(hw: tuple[int, int], stride: int) -> tuple[np.ndarray, tuple[int, int]]:
    """(h*w, 2) pixel coordinates (u, v) of the centres of ``stride`` x ``stride`` blocks of an
    (H, W) image and (h, w) = ceil(H / stride), ceil(W / stride)."""
    H, W = hw
    h, w = math.ceil(H / stride), math.ceil(W / stride)
    u = (np.arange(w) + 0.5) * (W / w) - 0.5
    v = (np.arange(h) + 0.5) * (H / h) - 0.5
    uu, vv = np.meshgrid(u, v)
    return np.stack([uu.ravel(), vv.ravel()], 1), (h, w)


@torch.no_grad()
def render_depth_images(field: VoxelField, intrinsics: np.ndarray, T_base_from_cam: np.ndarray,
                        sizes: list[tuple[int, int]], rc: RenderConfig, chunk: int = 1 << 15) -> list[np.ndarray]:
    """Depth maps (H_i, W_i) float32 metres of the N cameras of a one-sample ``field``.

    Args:
        intrinsics: (N, 3, 3) K of the source images; T_base_from_cam: (N, 4, 4);
        sizes: N source sizes (H, W).
    """
    dev = field.geo.device
    out = []
    for i, hw in enumerate(sizes):
        uv, (h, w) = block_centres(hw, rc.depth_stride)
        K = torch.as_tensor(intrinsics[i], dtype=torch.float32, device=dev).view(1, 1, 3, 3)
        T = torch.as_tensor(T_base_from_cam[i], dtype=torch.float32, device=dev).view(1, 1, 4, 4)
        uvt = torch.as_tensor(uv, dtype=torch.float32, device=dev).view(1, 1, -1, 2)
        rr = render_camera_rays(field, K, T, uvt, rc, jitter=False, with_sem=False, chunk=chunk)
        d = rr.depth.view(h, w).float().cpu().numpy()
        out.append(cv2.resize(d, (hw[1], hw[0]), interpolation=cv2.INTER_LINEAR))
    return out


def source_cameras(nusc, sample_token: str, camera_names) -> list[tuple[str, str, np.ndarray, tuple[int, int]]]:
    """``(camera, image filename, K (3, 3) as recorded, (H, W) as recorded)`` of a keyframe's
    cameras, in ``camera_names`` order (from the nuScenes tables)."""
    sample = nusc.get("sample", sample_token)
    rows = []
    for cam in camera_names:
        sd = nusc.get("sample_data", sample["data"][cam])
        cs = nusc.get("calibrated_sensor", sd["calibrated_sensor_token"])
        rows.append((cam, sd["filename"], np.asarray(cs["camera_intrinsic"], np.float64), (int(sd["height"]), int(sd["width"]))))
    return rows


@torch.no_grad()
def predict_depth(model, cfg: ModelConfig, frame, nusc, sample_token: str, device="cpu") -> list[tuple[str, str, np.ndarray]]:
    """``(camera, image filename, depth (H, W) float32 m)`` for every camera of one keyframe
    (the model in eval mode, its field from ``frame``)."""
    from occ_core.models.predictor import frame_to_inputs

    inputs = frame_to_inputs(frame, cfg).to(device)
    _, field = model_field(model, inputs, cfg, with_logits=False)
    cams = source_cameras(nusc, sample_token, frame.camera_names)
    depths = render_depth_images(field, np.stack([c[2] for c in cams]), np.asarray(frame.T_base_from_cam),
                                 [c[3] for c in cams], cfg.render)
    return [(c[0], c[1], d) for c, d in zip(cams, depths)]


@torch.no_grad()
def validate_render(model, cfg: ModelConfig, ds, indices: list[int], device="cpu", progress: bool = False,
                    with_depth: bool = True) -> dict:
    """Validation of a rendering-supervised model on keyframes ``indices`` of ``ds`` (a
    :class:`~occ_core.data.nuscenes_dataset.NuScenesOccDataset`).

    Depth (scale-aware and median-scaled, :mod:`occ_core.eval.depth`) of every camera image
    against ``<dataroot>/depth/<CAM>/<stem>.png`` where those exist; Occ3D mIoU and geometric
    IoU (camera mask) for the keyframes whose ``gts/`` label exists (the held-out split: the
    labels score the model, they never train it). Returns a JSON-ready dict (None: undefined).
    """
    from tqdm import tqdm

    from occ_core.data.nuscenes_dataset import CAMERAS, label_path
    from occ_core.eval.depth import DepthMetric
    from occ_core.eval.occupancy import occ3d_miou
    from occ_core.formats import occ3d
    from occ_core.formats.image_maps import map_path, read_depth_png
    from occ_core.models.predictor import frame_to_inputs

    was_training = model.training
    model.eval()
    cams = tuple(CAMERAS)
    dm, dm_med = DepthMetric(cams), DepthMetric(cams, median_scaling=True)
    vox = occ3d_miou("camera")
    for i in tqdm(indices, desc="val", disable=not progress, leave=False):
        scene, token = ds.samples[i]
        frame = ds.load_frame(token)
        gt_path = label_path(ds.dataroot, scene, token)
        with_gt = gt_path.is_file()
        inputs = frame_to_inputs(frame, cfg).to(device)
        out, field = model_field(model, inputs, cfg, with_logits=with_gt)
        srcs = source_cameras(ds.nusc, token, frame.camera_names)
        todo = [(k, c) for k, c in enumerate(srcs) if with_depth and map_path(ds.dataroot / "depth", c[0], c[1]).is_file()]
        if todo:
            depths = render_depth_images(field, np.stack([c[2] for _, c in todo]),
                                         np.asarray(frame.T_base_from_cam)[[k for k, _ in todo]],
                                         [c[3] for _, c in todo], cfg.render)
            for (_, c), d in zip(todo, depths):
                gt = read_depth_png(map_path(ds.dataroot / "depth", c[0], c[1]), c[3])
                cam = c[0] if c[0] in cams else None
                if cam is not None:
                    dm.update(gt, d, cam)
                    dm_med.update(gt, d, cam)
        if with_gt:
            g = occ3d.read_gt(gt_path, cfg.grid_spec.dims)
            vox.update(g.semantics, out.logits[0].argmax(0).cpu().numpy(), g.mask_camera)
    model.train(was_training)

    def fin(v):
        return float(v) if v is not None and np.isfinite(v) else None

    res = {k: fin(v) for k, v in dm.result().items()}
    res.update({f"{k}_median_scaled": fin(v) for k, v in dm_med.result().items()})
    res["depth_images"] = int(dm.counts.sum())
    res["mIoU"] = fin(vox.miou()) if vox.frames else None
    res["IoU_geometric"] = fin(vox.geometric_iou()) if vox.frames else None
    res["occ_frames"] = int(vox.frames)
    if vox.frames:
        res["per_class_IoU"] = {n: fin(v) for n, v in zip(vox.class_names, vox.per_class_iou())}
    return res


#: a ray sample is free while the ray has gathered less than this opacity
FREE_OPACITY = 0.1


@torch.no_grad()
def label_free_threshold(model, cfg: ModelConfig, ds, indices: list[int], rays_per_camera: int = 256,
                         seed: int = 0, device="cpu") -> tuple[float, dict]:
    """OccNeRF's occupancy threshold chosen without 3D labels, from the model's own renderings.

    On keyframes ``indices`` of ``ds`` (the training world), ``rays_per_camera`` random pixels
    per camera are rendered (the sampler without jitter). Of each ray that gathers opacity > 0.5
    inside the ROI (``render.sample_roi`` metres), the samples it crosses while its gathered
    opacity is below :data:`FREE_OPACITY` are **free**, and the sample where the gathered opacity
    reaches 0.5 (the median depth) and the next one are **occupied**. The threshold is the
    occupancy probability (:func:`occ_core.models.occnerf.occupancy_logit` at the samples) where
    the two sets' error rates are equal (the share of free samples above it = the share of
    occupied ones at or below it; on a log grid from 1e-3 to 0.9): the voxels the model outputs
    as occupied then agree with where its rays stop, with neither set favoured. (The two sets
    are often separable over a wide range; the equal-error point lies between their tails,
    where a plain accuracy maximum would take the range's lower end; where the errors are equal
    over a range, its log-midpoint.)

    Returns:
        (tau, stats): the rays and samples used, and the balanced accuracy at tau.
    """
    from occ_core.models.occnerf import occupancy_logit, pixel_rays
    from occ_core.models.predictor import frame_to_inputs
    from occ_core.ops.render import sample_depths

    if not cfg.rendering_only:
        raise ValueError("label_free_threshold: only models trained by rendering alone have an occupancy threshold")
    was_training = model.training
    model.eval()
    rc = cfg.render
    g = torch.Generator().manual_seed(seed)
    p_free, p_surf, rays = [], [], 0
    for i in indices:
        frame = ds.load_frame(ds.samples[i][1])
        inputs = frame_to_inputs(frame, cfg).to(device)
        _, field = model_field(model, inputs, cfg, with_logits=False)
        B, N = inputs.intrinsics.shape[:2]
        H, W = inputs.images.shape[-2:]
        R, S = rays_per_camera, rc.samples
        uv = torch.stack([torch.rand(B, N, R, generator=g) * (W - 1),
                          torch.rand(B, N, R, generator=g) * (H - 1)], -1).to(device)
        rr = render_camera_rays(field, inputs.intrinsics, inputs.T_base_from_cam, uv, rc, jitter=False, with_sem=False)
        t = sample_depths(B * N * R, S, rc.near, rc.far, rc.sample_roi, device=device)  # as the renderer's
        cum = rr.weights.cumsum(-1)  # (B*N*R, S) opacity gathered up to each sample
        median = (cum < 0.5).sum(-1).clamp_max(S - 2)  # first sample with cum >= 0.5
        hit = (cum[:, -1] > 0.5) & (t.gather(1, median[:, None])[:, 0] < rc.sample_roi)
        rays += int(hit.sum())
        o, d = pixel_rays(inputs.intrinsics.flatten(0, 1), inputs.T_base_from_cam.flatten(0, 1), uv.flatten(0, 1))
        pts = o[:, None, None, :] + d[:, :, None, :] * t.view(B * N, R, S, 1)  # (B*N, R, S, 3)
        geo, _ = field.query(pts.reshape(B, -1, 3), with_sem=False)
        prob = torch.sigmoid(occupancy_logit(geo, cfg)).reshape(B * N * R, S)
        free = (cum < FREE_OPACITY) & hit[:, None]
        p_free.append(prob[free].float().cpu())
        for k in (median, median + 1):
            p_surf.append(prob.gather(1, k[:, None])[:, 0][hit].float().cpu())
    model.train(was_training)
    free, surf = torch.cat(p_free).numpy(), torch.cat(p_surf).numpy()
    if free.size == 0 or surf.size == 0:
        raise ValueError("label_free_threshold: no rendered ray stopped inside the field's ROI")
    grid = np.exp(np.linspace(math.log(1e-3), math.log(0.9), 121))
    free_err = np.array([(free > t).mean() for t in grid])
    surf_err = np.array([(surf <= t).mean() for t in grid])
    gap = np.abs(free_err - surf_err)
    ties = np.flatnonzero(gap <= gap.min() + 1e-12)  # several where the sets separate: their log-midpoint
    tau = float(np.exp(np.log(grid[ties]).mean()))
    acc = 1 - 0.5 * ((free > tau).mean() + (surf <= tau).mean())
    return tau, {"rays": rays, "free_samples": int(free.size), "surface_samples": int(surf.size),
                 "balanced_accuracy": float(acc)}
