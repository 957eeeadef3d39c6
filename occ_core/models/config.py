"""Typed model and training configurations, loaded from ``config/models/*.yaml``.

One YAML file describes one model and how it is trained::

    name: fusion            # which architecture: a key of occ_core.models.build.MODELS
    grid: occ3d             # output grid, a key of occ_core.grid.GRIDS
    image: {size: [128, 352], ...}
    lss: {...}              # LSS camera branch (absent: no LSS branch)
    bevformer: {...}        # BEVFormer camera branch (name: bevformer or hbevocc; absent: none)
    hbevocc: {...}          # HBEVOcc fusion of LSS and BEVFormer (name: hbevocc; absent: none)
    lidar: {...}            # LiDAR branch (absent: no LiDAR branch)
    ...
    train: {...}

Every mapping becomes the dataclass of the same name below; an unknown key or a value of the
wrong type is an :class:`~occ_core.errors.OccDataError` naming the file and the field.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path


from occ_core.errors import OccDataError
from occ_core.fileio import read_yaml
from occ_core.grid import GRIDS, GridSpec


@dataclass
class ImageConfig:
    """Camera image preprocessing (shared by the data pipeline and the predictor).

    Attributes:
        size: (H, W) network input size in pixels. Images are scaled to cover it (aspect kept)
            then cropped: centred horizontally, from the top vertically (the sky goes).
        mean, std: per-channel RGB normalisation on 0..255 values.
    """

    size: tuple[int, int] = (96, 176)
    mean: tuple[float, float, float] = (123.675, 116.28, 103.53)
    std: tuple[float, float, float] = (58.395, 57.12, 57.375)


BLOCK_TYPES = ("basic", "bottleneck")
STEM_TYPES = ("3x3", "7x7")


@dataclass
class BackboneConfig:
    """ResNet-style image backbone + FPN neck.

    The defaults are the small BasicBlock network the demo models use. torchvision's ResNet-50
    (and so its ImageNet weights) is ``{stem: 64, stem_type: 7x7, block: bottleneck,
    widths: [256, 512, 1024, 2048], blocks: [3, 4, 6, 3]}``; ResNet-18/34 are ``block: basic``
    with widths [64, 128, 256, 512] and blocks [2, 2, 2, 2] / [3, 4, 6, 3].

    Attributes:
        stem: channels of the stride-4 stem.
        stem_type: ``"3x3"``: two 3x3 stride-2 conv-BN-ReLU; ``"7x7"``: torchvision's 7x7
            stride-2 conv-BN-ReLU + 3x3 stride-2 max pool.
        block: ``"basic"`` (two 3x3 convs) or ``"bottleneck"`` (1x1, 3x3, 1x1 with 4x
            expansion, the stride on the 3x3 conv as torchvision's ResNet v1.5).
        widths: output channels of the residual stages (strides 4, 8, 16, 32 for four stages);
            a bottleneck stage's inner width is widths[i] / 4.
        blocks: residual blocks per stage.
        neck_channels: FPN output channels.
        out_stride: which FPN level feeds the view transformer (16 as BEVDet).
        frozen_stages: mmdet's convention: -1 trains everything, 0 freezes the stem, k >= 1
            the stem and the first k stages (parameters not trained, their BatchNorms kept in
            eval mode). BEVFormer freezes 1 on top of ImageNet weights.
        norm_eval: keep every backbone BatchNorm in eval mode while training (running
            statistics of the pretrained weights not updated; mmdet's ``norm_eval``).
        pretrained: ImageNet ResNet weights (a torchvision ``resnet*.pth`` state dict or a timm
            checkpoint, see :mod:`occ_core.models.pretrained`) loaded into the backbone when
            ``occ-train`` starts a fresh run (never on resume, never at inference: trained
            checkpoints hold the whole model). ``~`` is expanded; a relative path is relative to
            the folder of the YAML file that names it (to the working directory for configs
            built from a mapping without a file). None: random initialisation.
    """

    stem: int = 16
    stem_type: str = "3x3"
    block: str = "basic"
    widths: tuple[int, ...] = (16, 32, 64, 64)
    blocks: tuple[int, ...] = (1, 1, 1, 1)
    neck_channels: int = 32
    out_stride: int = 16
    frozen_stages: int = -1
    norm_eval: bool = False
    pretrained: str | None = None


@dataclass
class LSSConfig:
    """Lift-splat-shoot view transformer.

    Attributes:
        depth: (min, max, step) metres of the depth bins; D = (max - min) / step bins whose
            centres are ``min + step * (i + 0.5)``.
        channels: context channels splatted into the voxels.
        depth_loss_weight: weight of the depth loss against LiDAR depth.
    """

    depth: tuple[float, float, float] = (1.0, 49.0, 1.0)
    channels: int = 16
    depth_loss_weight: float = 1.0


@dataclass
class BEVFormerConfig:
    """BEVFormer camera branch (``name: bevformer``, :mod:`occ_core.models.bevformer`; also the
    backward branch of ``name: hbevocc``, whose BEV queries live on the coarser
    ``hbevocc.back_stride`` cells and which has no ``decoder`` of its own).

    The BEV queries live on the x/y cells of the feature grid (``feature_stride`` x/y); the
    ``zembed`` decoder lifts them to the feature grid's Z' = Z / feature_stride[2] heights.

    Attributes:
        embed_dims: BEV query channels C (the FPN output is projected to C when it differs).
        num_layers: encoder layers, each TSA -> norm -> SCA -> norm -> FFN -> norm.
        num_heads: attention heads of TSA and SCA (must divide ``embed_dims``).
        num_anchors: pillar anchors per BEV query, spread over the grid's z range (SCA).
        points_per_anchor: deformable sampling points around each projected anchor (SCA).
        tsa_points: deformable sampling points per head and BEV frame (TSA).
        ffn_dims: hidden width of the FFN.
        dropout: dropout of the attention and FFN outputs.
        decoder: ``"zembed"`` (Occupancy-BEVFormer: BEV broadcast over Z' + a learned
            z-embedding -> 3D convolutions -> VoxelHead) or ``"c2h"`` (OccNet/FlashOcc
            channel-to-height on the BEV; needs Z' = 1).
    """

    embed_dims: int = 32
    num_layers: int = 1
    num_heads: int = 4
    num_anchors: int = 4
    points_per_anchor: int = 2
    tsa_points: int = 4
    ffn_dims: int = 64
    dropout: float = 0.0
    decoder: str = "zembed"


@dataclass
class OccNeRFConfig:
    """OccNeRF's occupancy field (``name: occnerf``, :mod:`occ_core.models.occnet_nerf`).

    Attributes:
        field_dims: (X, Y, Z) voxels of the contracted field over [-1, 1]^3; the grid's ROI
            (the Occ3D box) fills the inner ``ratio`` of it (OccNeRF: 300 x 300 x 24).
        ratio: share of the contracted field that holds the ROI (OccNeRF's 2/3: t = 2).
        channels: lifted feature channels (the FPN output projected to this width).
        cnn_channels: width of the 3D CNN.
        cnn_blocks: residual 3D blocks of the CNN.

    Its Occ3D output thresholds occupancy at ``occ_threshold`` (0.5 when unset).
    """

    field_dims: tuple[int, int, int] = (60, 60, 12)
    ratio: float = 2.0 / 3.0
    channels: int = 16
    cnn_channels: int = 24
    cnn_blocks: int = 2


@dataclass
class RenderConfig:
    """Rendering self-supervision (OccNeRF; RenderOcc-style on the other camera models).

    Attributes:
        mode: ``"prob"`` or ``"density"`` rendering (:mod:`occ_core.ops.render`).
        samples: samples per ray, uniform in contracted distance between ``near`` and ``far``
            (metres of z-depth), linear out to ``sample_roi`` metres.
        patches, patch_size: rays rendered per camera and step: ``patches`` random square
            patches of ``patch_size`` pixels of the network-input image (SSIM needs patches).
        photometric: weight of the photometric loss (0.85 SSIM + 0.15 L1, per-pixel minimum
            over the source frames, Monodepth2 auto-masking when ``automask``).
        photometric_ignore: Occ3D class names whose pixels (by the 2D labels) leave the
            photometric loss: things that may move (vehicles, pedestrians) break its static-world
            assumption, which explains an object moving with the ego by infinite depth. Empty
            (OccNeRF, the default): every pixel counts. Needs ``labels``.
        semantic: weight of the cross entropy of the rendered semantics against the 2D labels
            (OccNeRF: 0.05); 0 reads no 2D labels.
        labels: dataroot folder of the 2D labels (``semantic2d``, or ``semantic2d_corrupt``).
        distortion, entropy, smoothness: regulariser weights (Mip-NeRF 360 distortion, binary
            entropy of the ray opacity, Monodepth2 edge-aware disparity smoothness).
        lidar_depth: weight of RenderOcc's depth loss: rays through the pixels where LiDAR
            points project (up to ``lidar_rays`` random ones per camera, z-depth between ``near``
            and ``lidar_max_depth``; RenderOcc: 52 m) are rendered, and their depth is held to
            the LiDAR's with the RMS of the log depth error (SILog at variance focus 0: the
            LiDAR's scale is kept). The same rays join the semantic cross entropy. 0 (the
            default): no LiDAR rays.
        aux_keyframes: RenderOcc's auxiliary rays: the LiDAR rays of the ``aux_keyframes``
            keyframes before and after (same scene; fewer at its ends) are rendered too, from their
            own cameras placed in the current base_link by the ego poses, through the current
            frame's field, with their depth held to their LiDAR's and their semantics to their 2D
            labels (RenderOcc: 1, or 3 in its 7-frame config). Needs ``lidar_depth`` > 0. 0 (the
            default): the current keyframe's rays only.
        aux_weight: weight of the auxiliary rays' depth and semantic losses against the current
            frame's (RenderOcc: 0.3, as a sampling weight over the pooled rays).
        aux_dynamic: Occ3D class names that may move: auxiliary rays whose 2D label is one of
            them are left out (RenderOcc's dynamic-class filter: the adjacent frame saw the thing
            elsewhere). Empty: no filter.
        occ3d: weight of the model's 3D label losses (CE, Lovasz, scal) next to the rendering
            losses; 0 (the default): trained from images only, ``gts/`` is never read.
        sky: weight of the sky rays' loss: the rendered rays (patches) through pixels whose 2D
            label is sky must gather no opacity, ``-log(1 - opacity)``; they tell the field that
            the air above the ground is empty, which the rays through LiDAR returns rarely cross.
            Needs ``labels``. 0 (the default, as OccNeRF and RenderOcc): sky is ignored.
        start_geo: the geometry logit every voxel starts at (the occupancy probability
            sigmoid(start_geo) in ``prob`` mode); None (the default): the mode's start,
            :data:`occ_core.models.occnerf.RENDER_START_GEO`. Voxels no ray reaches in training
            keep about this value.
        depth_stride: at validation and ``occ-predict --format depth``, one ray per
            ``depth_stride`` x ``depth_stride`` source pixels (upsampled to the source size).
    """

    mode: str = "prob"
    samples: int = 64
    near: float = 0.1
    far: float = 80.0
    sample_roi: float = 40.0
    patches: int = 12
    patch_size: int = 6
    photometric: float = 1.0
    automask: bool = True
    photometric_ignore: tuple[str, ...] = ()
    semantic: float = 0.05
    labels: str = "semantic2d"
    distortion: float = 0.01
    entropy: float = 0.01
    smoothness: float = 0.001
    lidar_depth: float = 0.0
    lidar_rays: int = 256
    lidar_max_depth: float = 52.0
    aux_keyframes: int = 0
    aux_weight: float = 0.3
    aux_dynamic: tuple[str, ...] = ("bicycle", "bus", "car", "construction_vehicle", "motorcycle", "pedestrian",
                                    "trailer", "truck")
    occ3d: float = 0.0
    sky: float = 0.0
    start_geo: float | None = None
    depth_stride: int = 4


@dataclass
class TemporalConfig:
    """Temporal state (:mod:`occ_core.models.temporal`): the previous frame's BEV, warped into the
    current base_link by the ego motion, feeds the current frame. One rule decides whether the
    state carries over (:func:`occ_core.models.temporal.link_frames`), in training, ``occ-predict``
    and the node alike: it resets on the first frame, a missing ego pose, a stamp that is not
    after the previous one or lies more than ``max_gap_factor * period_s`` after it, and a pose
    jump (more than ``max_translation_m`` or ``max_rotation_deg`` between the two frames).

    Attributes:
        period_s: the frame period the model runs at (s; nuScenes keyframes: 0.5).
        max_gap_factor: stamp gaps over ``max_gap_factor * period_s`` reset the state (2: one
            frame may be lost).
        max_translation_m: ego translation between two frames above which the pose is
            considered to have jumped (a relocalisation, a new recording).
        max_rotation_deg: ego rotation between two frames above which the pose jumped.
        train_frames: previous keyframes of the same scene per training item (history length,
            >= 1); they run without gradient to build the state, oldest first, each linked to
            the next by the same rule.
        history_batch_stats: in training, the previous frames run in training mode too, so
            their BatchNorm uses batch statistics as the current frame's does (BEVDet4D's
            no-grad history); false: they run in eval mode (running statistics), so the state
            and the current frame are normalised differently until the running statistics
            settle. Inference is the same either way (every frame in eval mode).
    """

    period_s: float = 0.5
    max_gap_factor: float = 2.0
    max_translation_m: float = 10.0
    max_rotation_deg: float = 45.0
    train_frames: int = 2
    history_batch_stats: bool = False


@dataclass
class HBEVOccConfig:
    """HBEVOcc (``name: hbevocc``, :mod:`occ_core.models.hbevocc`): the forward LSS branch
    (``lss``) and the backward BEVFormer branch (``bevformer``) fused on the BEV.

    The forward BEV lives on the feature grid's x/y cells (X', Y'); the backward BEV on cells
    ``back_stride`` times larger (X'/s, Y'/s), HBEVOcc's 100 x 100 against 200 x 200.

    Attributes:
        channels: width of both branches' BEV maps before they are concatenated.
        back_stride: the backward BEV's cell size in forward cells (it must divide X' and Y').
        hada_heads: heads of the height-aware deformable attention (HADA) on the backward BEV.
        hada_dim: channels per HADA head.
        hada_points: deformable sampling points per head and cell.
        hada_height_keys: extra keys/values per head from the channel-reweighted BEV at the
            cell itself (2 in HBEVOcc).
        hada_offset_range: bound of a sampling offset in backward BEV cells (tanh-limited).
        hada_layers: HADA blocks in sequence (1 in HBEVOcc).
        dropout: dropout of the HADA attention weights and FFN.
        frames: K, forward BEVs stacked along channels (BEVDet4D / HBEVOcc's multi-frame
            variant): the current frame's and the K - 1 previous frames', each brought into the
            current base_link by the ego motion, reduced to ``channels`` by a 3x3 conv before
            the fusion with the backward branch. 1 (the default): the single-frame model (no
            reduction conv, the same weights). K > 1 needs a ``temporal`` section (the stack is
            the model's recurrent state, :func:`occ_core.models.temporal.push_bev_stack`) and
            a ``temporal`` section needs K > 1.
        motion_dilations: K > 1 only: residual blocks of two dilated 3x3 convs, one per entry,
            on the reduced stack. An object moving at 10 m/s shifts 5 m (6 forward cells at
            0.8 m) between keyframes, beyond what the 3x3 reduction can relate; blocks with
            dilations d_i reach ``2 * sum(d_i)`` cells each way. ``[]`` (the default): none.
        flow_stack_dilations: K > 1 with ``flow`` only: the flow head also reads the *raw* stack
            (before the reduction) through its own encoder, a 3x3 conv (K*C -> C) and one residual
            block of two dilated 3x3 convs per entry, so that it sees where a thing was in the
            previous frames 6+ cells away; the occupancy path is unchanged. ``[]`` (the default):
            the flow head reads the fused BEV only.
    """

    channels: int = 32
    back_stride: int = 2
    hada_heads: int = 4
    hada_dim: int = 8
    hada_points: int = 4
    hada_height_keys: int = 2
    hada_offset_range: float = 10.0
    hada_layers: int = 1
    dropout: float = 0.0
    frames: int = 1
    motion_dilations: tuple[int, ...] = ()
    flow_stack_dilations: tuple[int, ...] = ()


@dataclass
class BEVEncoderConfig:
    """FlashOcc / BEVDet multi-scale BEV encoder inside the c2h head (``head: c2h`` only).

    ResNet stages each halve the BEV (BasicBlocks, the first of a stage strided); BEVDet's
    FPN-LSS neck then upsamples the last stage to the first stage's size, concatenates the two
    and applies two 3x3 convs; the result is upsampled back to the input BEV and joined with the
    input (a full-resolution skip, so 0.4 m detail is not lost to the strides). Without it the
    c2h head has two BasicBlocks at full resolution (a receptive field of about 4 m).

    Attributes:
        channels: width of each stage (FlashOcc: 2, 4 and 8 times the BEV width).
        blocks: BasicBlocks per stage (FlashOcc: 2, 2, 2).
    """

    channels: tuple[int, ...] = (64, 128, 256)
    blocks: tuple[int, ...] = (2, 2, 2)


@dataclass
class LidarConfig:
    """LiDAR branch: dynamic voxelization on the output grid -> spconv encoder.

    Attributes:
        channels: (C1, C2): submanifold channels at the output resolution, then at the
            feature resolution (after one strided sparse conv per feature stride step).
        max_sweeps: LiDAR sweeps aggregated per frame by the data pipeline (1 = keyframe only).
    """

    channels: tuple[int, int] = (16, 32)
    max_sweeps: int = 5


@dataclass
class CascadeConfig:
    """CONet cascade refinement.

    Attributes:
        max_voxels: most coarse voxels refined per sample (highest occupancy probability first).
        hidden: MLP width of the point refinement.
    """

    max_voxels: int = 4096
    hidden: int = 32


@dataclass
class LossConfig:
    """Weights of the occupancy losses (MonoScene / OpenOccupancy).

    Attributes:
        ce: class-weighted cross entropy.
        lovasz: Lovasz-softmax.
        sem_scal, geo_scal: MonoScene's semantic and geometric scene-class affinity losses.
        flow: weight of the flow L1 on occupied voxels (flow models), balanced between
            moving and static voxels (:func:`occ_core.training.losses.balanced_flow_l1`).
        flow_moving_speed: GT speed (m/s) above which an occupied voxel counts as moving for
            the flow loss; the L1 is averaged over moving and over static voxels separately
            and the two means averaged. 0 = one mean over all occupied voxels (before
            2026-11-21, when the flow head learnt no motion).
        class_weight_power: CE class weights ``(1 / log(count + 1e-3)) ** power`` from the
            training label counts (OpenOccupancy), normalised to mean 1; 0 = uniform.
        mask: voxels that are supervised: ``"camera"`` (Occ3D's mask_camera), ``"lidar"``,
            ``"both"`` or ``"none"`` (all voxels).
        cascade_coarse: weight of the cascade's coarse CE (cascade models).
        height_voxel: weight of HBEVOcc's height-weighted voxel loss
            (:func:`occ_core.training.losses.height_voxel_loss`; HBEVOcc uses 0.1); 0 = off.
        height_voxel_columns: x/y columns drawn at random per sample for it (HBEVOcc: 4000;
            0 = every column).
        height_voxel_weights: (w_min, w_max) of its per-layer weights: the most populated
            height layer gets w_min, a nearly empty one tends to w_max (HBEVOcc: 1, 3).
    """

    ce: float = 1.0
    lovasz: float = 1.0
    sem_scal: float = 1.0
    geo_scal: float = 1.0
    flow: float = 1.0
    flow_moving_speed: float = 0.1
    class_weight_power: float = 1.0
    mask: str = "camera"
    cascade_coarse: float = 0.5
    height_voxel: float = 0.0
    height_voxel_columns: int = 4000
    height_voxel_weights: tuple[float, float] = (1.0, 3.0)


@dataclass
class TrainConfig:
    """Optimisation and schedule.

    Attributes:
        batch_size: samples per step and process.
        lr, weight_decay: AdamW.
        steps: total optimiser steps (one-cycle cosine schedule over them).
        grad_clip: max gradient norm (0 disables).
        val_every, ckpt_every, log_every: in steps.
        amp: mixed precision on CUDA (ignored on CPU).
        flip, rotate_deg: BEV augmentation (random x/y flips; uniform yaw in +-rotate_deg).
        image_scale: (lo, hi) random zoom of every camera image, uniform in [lo, hi] (>= 1) per
            camera, with a random crop back to the image size and the intrinsics updated
            (``(1, 1)``: off); see :func:`occ_core.data.nuscenes_dataset.augment_images`.
        lidar_dropout: each LiDAR point is dropped with a probability drawn uniformly in
            ``[0, lidar_dropout]`` per sample (0: off).
        warmup_steps: linear LR warm-up length; -1: ``min(100, steps // 20)`` (at least 1).
        ema_decay: exponential moving average of the weights (e.g. 0.999; 0: off). With it the
            validation and ``model.pt`` use the averaged weights (the checkpoint keeps both).
        seed: data order and augmentation seed.
        num_workers: DataLoader workers.
        calibrate_threshold: at the end of training, ``occ-train`` sets the classifier's
            ``occ_threshold`` to the one that maximises geometric IoU (camera mask) on labelled
            frames it trained on (:func:`occ_core.training.calibrate.iou_threshold`), in the
            work dir's ``config.yaml`` and ``model.pt``. Not for models trained by rendering
            alone (they get a label-free threshold).
    """

    batch_size: int = 1
    lr: float = 2e-3
    weight_decay: float = 1e-2
    steps: int = 2000
    grad_clip: float = 35.0
    val_every: int = 500
    ckpt_every: int = 100
    log_every: int = 10
    amp: bool = True
    flip: bool = True
    rotate_deg: float = 0.0
    image_scale: tuple[float, float] = (1.0, 1.0)
    lidar_dropout: float = 0.0
    warmup_steps: int = -1
    ema_decay: float = 0.0
    seed: int = 0
    num_workers: int = 0
    calibrate_threshold: bool = False


@dataclass
class ModelConfig:
    """One occupancy model (see the module docstring for the YAML layout).

    Attributes:
        name: architecture, a key of :data:`occ_core.models.build.MODELS`.
        grid: output grid name (:data:`occ_core.grid.GRIDS`).
        num_classes: output classes including free (18 for Occ3D, free = 17).
        feature_stride: (sx, sy, sz) voxel feature grid = output grid coarsened by these.
        channels: voxel feature channels after the branch encoders / fusion.
        head: ``"voxel"`` (3D conv head) or ``"c2h"`` (FlashOcc channel-to-height BEV head).
        bev_channels: width of the c2h head's 2D BEV blocks (unused by the voxel head).
        bev_encoder: the c2h head's multi-scale BEV encoder (:class:`BEVEncoderConfig`; ``null``:
            two full-resolution BasicBlocks).
        image, backbone, lss: LSS camera branch (``lss: null`` = no LSS branch).
        bevformer: BEVFormer camera branch (``name: bevformer``, and the backward branch of
            ``name: hbevocc``; uses image and backbone).
        hbevocc: HBEVOcc's fusion settings (``name: hbevocc`` only, with ``lss`` and ``bevformer``).
        lidar: LiDAR branch (``null`` = none).
        cascade: CONet refinement (``null`` = none).
        flow: predict OpenOcc v2 occupancy flow.
        temporal: the temporal state (:class:`TemporalConfig`; ``null`` = single-frame). Only
            models whose forward takes a previous BEV (``name: bevformer``) support it.
        loss, train: see :class:`LossConfig`, :class:`TrainConfig`.
        seed: parameter initialisation seed.
        occ_threshold: the Occ3D output's occupancy threshold (:mod:`occ_core.models.output`):
            a voxel is occupied where its occupancy probability exceeds it, and takes its best
            non-free class there. The probability is ``1 - softmax(logits)[free]`` for a
            classifier, the field's at the voxel centre for a model trained by rendering alone
            (prob mode: sigmoid of the geometry logit; density mode: ``1 - exp(-sigma * voxel
            size)``). ``null``: the argmax of the logits (a classifier) or 0.5 (rendering
            alone). ``occ-train`` chooses it for rendering-only models without 3D labels
            (:func:`occ_core.training.render_eval.label_free_threshold`) and, with
            ``train.calibrate_threshold``, for classifiers from labelled training frames
            (:func:`occ_core.training.calibrate.iou_threshold`).
    """

    name: str = "camera"
    grid: str = "occ3d"
    num_classes: int = 18
    feature_stride: tuple[int, int, int] = (2, 2, 2)
    channels: int = 16
    head: str = "voxel"
    bev_channels: int = 32
    bev_encoder: BEVEncoderConfig | None = None
    image: ImageConfig = field(default_factory=ImageConfig)
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    lss: LSSConfig | None = None
    bevformer: BEVFormerConfig | None = None
    occnerf: OccNeRFConfig | None = None
    render: RenderConfig | None = None
    hbevocc: HBEVOccConfig | None = None
    lidar: LidarConfig | None = None
    cascade: CascadeConfig | None = None
    flow: bool = False
    temporal: TemporalConfig | None = None
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    seed: int = 0
    occ_threshold: float | None = None

    @property
    def grid_spec(self) -> GridSpec:
        """The output :class:`GridSpec`."""
        return GRIDS[self.grid]

    @property
    def rendering_only(self) -> bool:
        """Whether the model learns by rendering alone (OccNeRF, or a ``render`` section with
        ``occ3d: 0``): its Occ3D output thresholds occupancy (:attr:`occupancy_threshold`)."""
        return self.render is not None and (self.occnerf is not None or self.render.occ3d <= 0)

    @property
    def occupancy_threshold(self) -> float | None:
        """The threshold the Occ3D output applies: ``occ_threshold``, or 0.5 for a model trained
        by rendering alone without one; None = the argmax of the logits."""
        if self.occ_threshold is None and self.rendering_only:
            return 0.5
        return self.occ_threshold

    @property
    def uses_camera(self) -> bool:
        """Whether the model reads camera images (an LSS or a BEVFormer branch)."""
        return self.lss is not None or self.bevformer is not None or self.occnerf is not None

    @property
    def image_hw(self) -> tuple[int, int] | None:
        """The camera input (h, w) that images are decoded for, or None without a camera branch."""
        return (int(self.image.size[0]), int(self.image.size[1])) if self.uses_camera else None

    @property
    def feature_grid(self) -> GridSpec:
        """The voxel feature grid: the output grid with voxels ``feature_stride`` times larger."""
        g = self.grid_spec
        vs = tuple(v * s for v, s in zip(g.voxel_size, self.feature_stride))
        return GridSpec.from_range(f"{g.name}/{'x'.join(map(str, self.feature_stride))}", g.point_range, vs)

    @property
    def free_label(self) -> int:
        return self.num_classes - 1


def _convert(tp, value, where: str):
    """Convert a YAML value to the annotated type ``tp`` (dataclass, tuple, optional, scalar)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _convert(args[0], value, where)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise OccDataError(f"{where}: expected a mapping, got {type(value).__name__}")
        return _from_dict(tp, value, where)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise OccDataError(f"{where}: expected a list, got {value!r}")
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(args[0], v, f"{where}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise OccDataError(f"{where}: expected {len(args)} values, got {len(value)}")
        return tuple(_convert(a, v, f"{where}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise OccDataError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise OccDataError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise OccDataError(f"{where}: expected true/false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise OccDataError(f"{where}: expected a string, got {value!r}")
        return value
    raise TypeError(f"{where}: unsupported config type {tp}")


def _from_dict(cls, doc: dict, where: str):
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(doc) - names)
    if unknown:
        raise OccDataError(f"{where}: unknown key(s) {unknown}; expected some of {sorted(names)}")
    return cls(**{k: _convert(hints[k], v, f"{where}.{k}") for k, v in doc.items()})


def config_from_dict(doc: dict, where: str = "config") -> ModelConfig:
    """Build a :class:`ModelConfig` from a parsed YAML mapping (``where`` names it in errors)."""
    if not isinstance(doc, dict):
        raise OccDataError(f"{where}: expected a mapping at the top level")
    if isinstance(doc.get("render"), dict) and "occ_threshold" in doc["render"]:
        raise OccDataError(f"{where}.render.occ_threshold: the occupancy threshold is the top-level key "
                           f"occ_threshold now (it applies to every model); move it there")
    cfg = _from_dict(ModelConfig, doc, where)
    if cfg.occ_threshold is not None and not 0.0 < cfg.occ_threshold < 1.0:
        raise OccDataError(f"{where}.occ_threshold: expected 0 < threshold < 1 (or null: the argmax), "
                           f"got {cfg.occ_threshold}")
    if cfg.grid not in GRIDS:
        raise OccDataError(f"{where}.grid: {cfg.grid!r} is not one of {sorted(GRIDS)}")
    if cfg.head not in ("voxel", "c2h"):
        raise OccDataError(f"{where}.head: {cfg.head!r}, expected 'voxel' or 'c2h'")
    if cfg.bev_channels <= 0:
        raise OccDataError(f"{where}.bev_channels: {cfg.bev_channels} must be positive")
    if cfg.bev_encoder is not None:
        be = cfg.bev_encoder
        if cfg.head != "c2h":
            raise OccDataError(f"{where}.bev_encoder: the multi-scale BEV encoder is part of the c2h head; "
                               f"head is {cfg.head!r}")
        if len(be.channels) != len(be.blocks) or len(be.channels) < 2:
            raise OccDataError(f"{where}.bev_encoder: expected channels and blocks of the same length >= 2, "
                               f"got {list(be.channels)} and {list(be.blocks)}")
        if min(be.channels) <= 0 or min(be.blocks) <= 0:
            raise OccDataError(f"{where}.bev_encoder: channels and blocks must be positive, "
                               f"got {list(be.channels)} and {list(be.blocks)}")
    if cfg.loss.mask not in ("camera", "lidar", "both", "none"):
        raise OccDataError(f"{where}.loss.mask: {cfg.loss.mask!r}, expected camera, lidar, both or none")
    if (cfg.name == "occnerf") != (cfg.occnerf is not None):
        raise OccDataError(f"{where}.occnerf: an 'occnerf' section goes with (and only with) name: occnerf, "
                           f"got name {cfg.name!r}")
    if cfg.occnerf is not None:
        if cfg.render is None:
            raise OccDataError(f"{where}.render: name: occnerf trains by rendering and needs a 'render' section")
        if not 0.0 < cfg.occnerf.ratio < 1.0:
            raise OccDataError(f"{where}.occnerf.ratio: expected 0 < ratio < 1, got {cfg.occnerf.ratio}")
        if min(cfg.occnerf.field_dims) < 2:
            raise OccDataError(f"{where}.occnerf.field_dims: expected >= 2 voxels per axis, got {cfg.occnerf.field_dims}")
    if cfg.render is not None:
        _check_render(cfg, f"{where}.render")
    if cfg.lss is None and cfg.lidar is None and cfg.bevformer is None and cfg.occnerf is None:
        raise OccDataError(f"{where}: a model needs a camera branch (lss or bevformer) or a LiDAR branch (lidar)")
    if cfg.lss is None and cfg.bevformer is None and cfg.backbone.pretrained is not None:
        raise OccDataError(f"{where}.backbone.pretrained: given, but the model has no camera branch to load it into")
    dims = cfg.grid_spec.dims
    if any(d % s for d, s in zip(dims, cfg.feature_stride)):
        raise OccDataError(f"{where}.feature_stride: {cfg.feature_stride} must divide the grid dims {dims}")
    check_backbone(cfg.backbone, f"{where}.backbone")
    if (cfg.name in ("bevformer", "hbevocc")) != (cfg.bevformer is not None):
        raise OccDataError(f"{where}.bevformer: a 'bevformer' section goes with (and only with) name: bevformer "
                           f"or hbevocc, got name {cfg.name!r}")
    if (cfg.name == "hbevocc") != (cfg.hbevocc is not None):
        raise OccDataError(f"{where}.hbevocc: an 'hbevocc' section goes with (and only with) name: hbevocc, "
                           f"got name {cfg.name!r}")
    if cfg.hbevocc is not None:
        _check_hbevocc(cfg, f"{where}.hbevocc")
    elif cfg.bevformer is not None:
        _check_bevformer(cfg, f"{where}.bevformer")
    if cfg.temporal is not None:
        _check_temporal(cfg, f"{where}.temporal")
    _check_height_voxel(cfg.loss, f"{where}.loss")
    _check_train(cfg.train, f"{where}.train")
    return cfg


#: model names whose forward takes ``(inputs, prev_bev, T_cur_from_prev, prev_valid)`` (hbevocc: with
#: ``hbevocc.frames`` > 1)
TEMPORAL_MODELS = ("bevformer", "hbevocc")


def _check_temporal(cfg: ModelConfig, where: str) -> None:
    t = cfg.temporal
    if cfg.name not in TEMPORAL_MODELS:
        raise OccDataError(f"{where}: model {cfg.name!r} has no temporal state; temporal goes with name "
                           f"{' or '.join(TEMPORAL_MODELS)}")
    if cfg.hbevocc is not None and cfg.hbevocc.frames < 2:
        raise OccDataError(f"{_parent_where(where)}.hbevocc.frames: {cfg.hbevocc.frames}; a temporal hbevocc model "
                           "stacks the forward BEVs of frames >= 2 frames (1 is the single-frame model: drop 'temporal')")
    for key in ("period_s", "max_gap_factor", "max_translation_m", "max_rotation_deg"):
        v = getattr(t, key)
        if not v > 0 or v != v or v == float("inf"):
            raise OccDataError(f"{where}.{key}: expected a finite number > 0, got {v}")
    if t.max_gap_factor < 1.0:
        raise OccDataError(f"{where}.max_gap_factor: expected >= 1 (a gap of one period must carry), got {t.max_gap_factor}")
    if t.train_frames < 1:
        raise OccDataError(f"{where}.train_frames: expected an integer >= 1, got {t.train_frames}")


def _check_train(t: TrainConfig, where: str) -> None:
    lo, hi = t.image_scale
    if not 1.0 <= lo <= hi <= 2.0:
        raise OccDataError(f"{where}.image_scale: expected [lo, hi] with 1 <= lo <= hi <= 2, got {list(t.image_scale)}")
    if not 0.0 <= t.lidar_dropout < 1.0:
        raise OccDataError(f"{where}.lidar_dropout: expected a probability in [0, 1), got {t.lidar_dropout}")
    if not 0.0 <= t.ema_decay < 1.0:
        raise OccDataError(f"{where}.ema_decay: expected a decay in [0, 1) (0: off), got {t.ema_decay}")
    if t.warmup_steps < -1:
        raise OccDataError(f"{where}.warmup_steps: expected -1 (automatic) or a step count >= 0, got {t.warmup_steps}")


def check_backbone(b: BackboneConfig, where: str) -> None:
    """Raise OccDataError naming ``where``'s field when the backbone cannot be built."""
    if b.stem_type not in STEM_TYPES:
        raise OccDataError(f"{where}.stem_type: {b.stem_type!r}, expected one of {list(STEM_TYPES)}")
    if b.block not in BLOCK_TYPES:
        raise OccDataError(f"{where}.block: {b.block!r}, expected one of {list(BLOCK_TYPES)}")
    if not b.widths or len(b.widths) != len(b.blocks):
        raise OccDataError(f"{where}: widths {list(b.widths)} and blocks {list(b.blocks)} need the same non-zero length")
    for name, values in (("widths", b.widths), ("blocks", b.blocks), ("stem", (b.stem,)), ("neck_channels", (b.neck_channels,))):
        if any(v <= 0 for v in values):
            raise OccDataError(f"{where}.{name}: {values if len(values) > 1 else values[0]} must be positive")
    if b.block == "bottleneck" and any(w % 4 for w in b.widths):
        raise OccDataError(f"{where}.widths: {list(b.widths)}; bottleneck stage widths must be multiples of 4 "
                           "(the inner width is widths[i] / 4)")
    strides = [2 ** (i + 2) for i in range(len(b.widths))]
    if b.out_stride not in strides:
        raise OccDataError(f"{where}.out_stride: {b.out_stride} is not a stage stride {strides}")
    if not -1 <= b.frozen_stages <= len(b.widths):
        raise OccDataError(f"{where}.frozen_stages: {b.frozen_stages}, expected -1 (none), 0 (stem) .. "
                           f"{len(b.widths)} (stem + all stages)")
    if b.pretrained is not None and not b.pretrained.strip():
        raise OccDataError(f"{where}.pretrained: empty path (leave the key out or null for random initialisation)")


def _check_render(cfg: ModelConfig, where: str) -> None:
    from occ_core.ops.render import RENDER_MODES

    r = cfg.render
    if not cfg.uses_camera:
        raise OccDataError(f"{where}: rendering supervision needs a camera model (lss, bevformer or occnerf)")
    if r.mode not in RENDER_MODES:
        raise OccDataError(f"{where}.mode: {r.mode!r}, expected one of {list(RENDER_MODES)}")
    if not 0 < r.near < r.far:
        raise OccDataError(f"{where}: expected 0 < near < far, got near {r.near}, far {r.far}")
    for key in ("samples", "patches", "depth_stride", "lidar_rays"):
        if getattr(r, key) < 1:
            raise OccDataError(f"{where}.{key}: expected an integer >= 1, got {getattr(r, key)}")
    if r.patch_size < 3:
        raise OccDataError(f"{where}.patch_size: SSIM needs patches of >= 3 pixels, got {r.patch_size}")
    if r.sample_roi <= 0:
        raise OccDataError(f"{where}.sample_roi: expected > 0 metres, got {r.sample_roi}")
    for key in ("photometric", "semantic", "distortion", "entropy", "smoothness", "lidar_depth", "aux_weight", "occ3d",
                "sky"):
        if getattr(r, key) < 0:
            raise OccDataError(f"{where}.{key}: weights must be >= 0, got {getattr(r, key)}")
    if r.start_geo is not None and not -20.0 <= r.start_geo <= 20.0:
        raise OccDataError(f"{where}.start_geo: expected a logit in [-20, 20] or null, got {r.start_geo}")
    if r.lidar_max_depth <= r.near:
        raise OccDataError(f"{where}.lidar_max_depth: expected > near ({r.near} m), got {r.lidar_max_depth}")
    if cfg.occnerf is not None and r.occ3d:
        raise OccDataError(f"{where}.occ3d: the occnerf model trains without 3D labels (occ3d: 0)")
    if r.semantic and not r.labels:
        raise OccDataError(f"{where}.labels: a 2D label folder is needed when semantic > 0")
    if r.sky and not r.labels:
        raise OccDataError(f"{where}.labels: a 2D label folder is needed when sky > 0")
    if r.aux_keyframes < 0:
        raise OccDataError(f"{where}.aux_keyframes: expected >= 0 keyframes each side, got {r.aux_keyframes}")
    if r.aux_keyframes and not r.lidar_depth:
        raise OccDataError(f"{where}.aux_keyframes: auxiliary rays are LiDAR rays; set lidar_depth > 0")
    for key, used in (("photometric_ignore", bool(r.photometric_ignore)),
                      ("aux_dynamic", bool(r.aux_keyframes and r.aux_dynamic))):
        if not used:
            continue
        from occ_core.classes import OCC3D_CLASSES

        bad = [n for n in getattr(r, key) if n not in OCC3D_CLASSES[:-1]]
        if bad:
            raise OccDataError(f"{where}.{key}: {bad} not Occ3D object or stuff classes "
                               f"(expected names from {list(OCC3D_CLASSES[:-1])})")
        if not r.labels:
            raise OccDataError(f"{where}.labels: {key} needs the 2D label folder")
    if r.labels:
        from occ_core.paths import safe_component

        safe_component(r.labels, f"{where}.labels")


def _check_bevformer(cfg: ModelConfig, where: str) -> None:
    bf = cfg.bevformer
    if cfg.lss is not None or cfg.lidar is not None or cfg.cascade is not None:
        raise OccDataError(f"{where}: the bevformer model is camera-only; lss, lidar and cascade must be absent")
    _check_bevformer_layer(bf, where)
    if bf.decoder not in ("zembed", "c2h"):
        raise OccDataError(f"{where}.decoder: {bf.decoder!r}, expected 'zembed' or 'c2h'")
    if bf.decoder == "c2h" and cfg.feature_grid.dims[2] != 1:
        raise OccDataError(f"{where}.decoder: c2h decodes height from channels and needs feature_stride[2] = "
                           f"{cfg.grid_spec.dims[2]} (Z' = 1), got feature_stride {list(cfg.feature_stride)}")


def _check_bevformer_layer(bf: BEVFormerConfig, where: str) -> None:
    for key in ("embed_dims", "num_layers", "num_heads", "num_anchors", "points_per_anchor", "tsa_points", "ffn_dims"):
        if getattr(bf, key) < 1:
            raise OccDataError(f"{where}.{key}: expected an integer >= 1, got {getattr(bf, key)}")
    if bf.embed_dims % bf.num_heads:
        raise OccDataError(f"{where}.embed_dims: {bf.embed_dims} must be divisible by num_heads {bf.num_heads}")
    if not 0.0 <= bf.dropout < 1.0:
        raise OccDataError(f"{where}.dropout: expected 0 <= dropout < 1, got {bf.dropout}")


def _check_hbevocc(cfg: ModelConfig, where: str) -> None:
    hb = cfg.hbevocc
    if cfg.lss is None:
        raise OccDataError(f"{where}: the hbevocc model needs an 'lss' section (its forward branch)")
    if cfg.lidar is not None or cfg.cascade is not None:
        raise OccDataError(f"{where}: the hbevocc model is camera-only; lidar and cascade must be absent")
    _check_bevformer_layer(cfg.bevformer, f"{_parent_where(where)}.bevformer")
    if cfg.bevformer.decoder != "zembed":
        raise OccDataError(f"{_parent_where(where)}.bevformer.decoder: {cfg.bevformer.decoder!r}; hbevocc decodes the fused "
                           "BEV with its own channel-to-height head, leave decoder out")
    for key in ("channels", "back_stride", "hada_heads", "hada_dim", "hada_points", "hada_layers", "frames"):
        if getattr(hb, key) < 1:
            raise OccDataError(f"{where}.{key}: expected an integer >= 1, got {getattr(hb, key)}")
    if hb.frames > 1 and cfg.temporal is None:
        raise OccDataError(f"{where}.frames: {hb.frames} stacks past frames' BEVs, which needs a 'temporal' section "
                           f"(the reset rule and train_frames; train_frames = frames - 1 = {hb.frames - 1} fills the stack)")
    if hb.motion_dilations and (hb.frames < 2 or min(hb.motion_dilations) < 1):
        raise OccDataError(f"{where}.motion_dilations: {list(hb.motion_dilations)}; expected dilations >= 1, "
                           f"on a multi-frame stack (frames >= 2, got {hb.frames})")
    if hb.flow_stack_dilations and (hb.frames < 2 or not cfg.flow or min(hb.flow_stack_dilations) < 1):
        raise OccDataError(f"{where}.flow_stack_dilations: {list(hb.flow_stack_dilations)}; expected dilations >= 1, "
                           f"for a flow head (flow: {str(cfg.flow).lower()}) on a multi-frame stack (frames >= 2, got {hb.frames})")
    if hb.hada_height_keys < 0:
        raise OccDataError(f"{where}.hada_height_keys: expected an integer >= 0, got {hb.hada_height_keys}")
    if hb.hada_offset_range <= 0:
        raise OccDataError(f"{where}.hada_offset_range: expected a positive number of cells, got {hb.hada_offset_range}")
    if not 0.0 <= hb.dropout < 1.0:
        raise OccDataError(f"{where}.dropout: expected 0 <= dropout < 1, got {hb.dropout}")
    X, Y, Z = cfg.feature_grid.dims
    if Z != 1:
        raise OccDataError(f"{_parent_where(where)}.feature_stride: hbevocc splats the forward branch into a BEV and needs "
                           f"feature_stride[2] = {cfg.grid_spec.dims[2]} (Z' = 1), got {list(cfg.feature_stride)}")
    if X % hb.back_stride or Y % hb.back_stride:
        raise OccDataError(f"{where}.back_stride: {hb.back_stride} must divide the forward BEV's {X} x {Y} cells")


def _parent_where(where: str) -> str:
    """The config's own name from a section's ``where`` (``file.yaml.hbevocc`` -> ``file.yaml``)."""
    return where.rsplit(".", 1)[0]


def _check_height_voxel(lc: LossConfig, where: str) -> None:
    if lc.height_voxel < 0:
        raise OccDataError(f"{where}.height_voxel: expected a weight >= 0, got {lc.height_voxel}")
    if lc.height_voxel_columns < 0:
        raise OccDataError(f"{where}.height_voxel_columns: expected a count >= 0 (0: every column), "
                           f"got {lc.height_voxel_columns}")
    lo, hi = lc.height_voxel_weights
    if not 0 < lo <= hi:
        raise OccDataError(f"{where}.height_voxel_weights: expected [w_min, w_max] with 0 < w_min <= w_max, "
                           f"got {list(lc.height_voxel_weights)}")


def load_config(path: str | Path) -> ModelConfig:
    """Read a model YAML file into a :class:`ModelConfig`.

    ``backbone.pretrained``, when relative, is resolved against the YAML file's folder and
    stored absolute (so a config dumped elsewhere, e.g. into a work dir, still names the file).
    """
    path = Path(path)
    cfg = config_from_dict(read_yaml(path, "model config"), str(path))
    if cfg.backbone.pretrained is not None:
        weights = Path(cfg.backbone.pretrained).expanduser()
        if not weights.is_absolute():
            weights = Path(os.path.normpath((path.parent / weights).absolute()))
        cfg = dataclasses.replace(cfg, backbone=dataclasses.replace(cfg.backbone, pretrained=str(weights)))
    return cfg


def config_to_dict(cfg: ModelConfig) -> dict:
    """The config as plain YAML-able data (tuples as lists); round-trips through :func:`config_from_dict`."""

    def plain(v):
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    return plain(dataclasses.asdict(cfg))
