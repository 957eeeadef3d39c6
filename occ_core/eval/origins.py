"""RayIoU ray origins from the nuScenes tables (nuscenes-devkit), as SparseOcc selects them.

For each sample: the LIDAR_TOP pose of every keyframe of its scene (``ego_pose`` ·
``calibrated_sensor`` of the keyframe's LIDAR_TOP ``sample_data``), expressed in the sample's
ego frame; see :func:`occ_core.eval.rayiou.select_ray_origins` for the selection.
"""

from __future__ import annotations

from typing import Any, Iterable

import numpy as np
from tqdm import tqdm

from occ_core.errors import OccDataError
from occ_core.eval.rayiou import select_ray_origins
from occ_core.geometry import make_transform


def _lidar_poses(nusc: Any, sample: dict) -> tuple[np.ndarray, np.ndarray]:
    """(global_from_lidar (4, 4), ego_from_lidar (4, 4)) of a sample's LIDAR_TOP."""
    sd = nusc.get("sample_data", sample["data"]["LIDAR_TOP"])
    cs = nusc.get("calibrated_sensor", sd["calibrated_sensor_token"])
    ep = nusc.get("ego_pose", sd["ego_pose_token"])
    ego_from_lidar = make_transform(cs["translation"], cs["rotation"])
    global_from_ego = make_transform(ep["translation"], ep["rotation"])
    return global_from_ego @ ego_from_lidar, ego_from_lidar


def nuscenes_ray_origins(nusc: Any, sample_tokens: Iterable[str], progress: bool = True) -> dict[str, np.ndarray]:
    """Ray origins (K, 3) float32 in each sample's ego frame, keyed by sample token.

    Args:
        nusc: a ``nuscenes.NuScenes`` (anything with its ``get(table, token)``).
        sample_tokens: the samples to evaluate.

    Raises:
        OccDataError: naming every token the tables do not know.
    """
    tokens = list(sample_tokens)
    scenes: dict[str, tuple[list[str], np.ndarray, np.ndarray]] = {}
    out: dict[str, np.ndarray] = {}
    unknown: list[str] = []
    for tok in tqdm(tokens, desc="ray origins", disable=not progress):
        try:
            sample = nusc.get("sample", tok)
        except KeyError:
            unknown.append(tok)
            continue
        st = sample["scene_token"]
        if st not in scenes:
            scene = nusc.get("scene", st)
            keys, g_from_l, e_from_l = [], [], []
            t = scene["first_sample_token"]
            while t:
                s = nusc.get("sample", t)
                g, e = _lidar_poses(nusc, s)
                keys.append(t)
                g_from_l.append(g)
                e_from_l.append(e)
                t = s["next"]
            scenes[st] = (keys, np.stack(g_from_l), np.stack(e_from_l))
        keys, g_from_l, e_from_l = scenes[st]
        i = keys.index(tok)
        out[tok] = select_ray_origins(g_from_l, i, e_from_l[i])
    if unknown:
        raise OccDataError(f"{len(unknown)} sample tokens are not in the nuScenes tables: {', '.join(unknown)}")
    return out
