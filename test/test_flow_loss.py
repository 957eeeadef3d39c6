"""The flow loss: L1 balanced between moving and static occupied voxels (numbers by hand)."""

import dataclasses
from pathlib import Path

import pytest
import torch

from occ_core.models.config import load_config
from occ_core.models.occnet import OccOutput
from occ_core.training.losses import balanced_flow_l1, occupancy_loss

REPO = Path(__file__).resolve().parent.parent
# one moving voxel (speed 5 m/s) and three static ones
GT = torch.tensor([[3.0, 4.0], [0.0, 0.0], [0.0, 0.0], [0.0, 0.0]])


def test_perfect_prediction_gives_zero():
    assert balanced_flow_l1(GT.clone(), GT, 0.1).item() == 0.0


def test_zero_flow_costs_more_than_the_right_motion():
    zero = balanced_flow_l1(torch.zeros_like(GT), GT, 0.1)
    # moving mean |0-3| + |0-4| = 7, static mean 0 -> (7 + 0) / 2
    assert zero.item() == pytest.approx(3.5)
    # right motion, one static voxel off by 1 m/s: moving mean 0, static mean 1/3 -> 1/6
    right = balanced_flow_l1(torch.tensor([[3.0, 4.0], [1.0, 0.0], [0.0, 0.0], [0.0, 0.0]]), GT, 0.1)
    assert right.item() == pytest.approx(1 / 6)
    assert zero > right
    # the plain mean (flow_moving_speed 0) prefers zero flow far less: 7 / 4
    assert balanced_flow_l1(torch.zeros_like(GT), GT, 0.0).item() == pytest.approx(1.75)


def test_each_group_carries_half_of_the_term():
    # an error of 1 on the one moving voxel: (1/1 + 0) / 2 = 0.5
    moving_off = torch.tensor([[2.0, 4.0], [0.0, 0.0], [0.0, 0.0], [0.0, 0.0]])
    assert balanced_flow_l1(moving_off, GT, 0.1).item() == pytest.approx(0.5)
    # an error of 1 on each of the three static voxels: (0 + 3/3) / 2 = 0.5
    static_off = torch.tensor([[3.0, 4.0], [1.0, 0.0], [0.0, -1.0], [0.5, 0.5]])
    assert balanced_flow_l1(static_off, GT, 0.1).item() == pytest.approx(0.5)
    # a sample with static voxels only: the static mean, (1 + 1) / 2
    gt_static = torch.zeros(2, 2)
    assert balanced_flow_l1(torch.tensor([[1.0, 0.0], [0.0, -1.0]]), gt_static, 0.1).item() == pytest.approx(1.0)
    # GT speed exactly at the threshold is static: both voxels in one group -> (0.1 + 0.9) / 2
    gt_edge = torch.tensor([[0.1, 0.0], [0.0, 0.0]])
    assert balanced_flow_l1(torch.tensor([[0.0, 0.0], [0.9, 0.0]]), gt_edge, 0.1).item() == pytest.approx(0.5)
    assert balanced_flow_l1(torch.zeros(0, 2), torch.zeros(0, 2), 0.1).item() == 0.0


def test_occupancy_loss_uses_the_balanced_flow_on_supervised_occupied_voxels():
    cfg = load_config(REPO / "config" / "models" / "fusion_flow.yaml")
    assert cfg.loss.flow_moving_speed == 0.1
    cfg = dataclasses.replace(cfg, loss=dataclasses.replace(cfg.loss, flow=2.0))
    K, free = cfg.num_classes, cfg.free_label
    # 1 x 6 x 1 x 1 grid: voxels 0-3 occupied and supervised, 4 free, 5 occupied but unsupervised
    sem = torch.tensor([4, 11, 11, 11, free, 4]).view(1, 6, 1, 1)
    mask = torch.tensor([True, True, True, True, True, False]).view(1, 6, 1, 1)
    gt = torch.zeros(1, 6, 1, 1, 2)
    gt[0, :4, 0, 0] = GT
    gt[0, 4, 0, 0] = torch.tensor([9.0, 9.0])  # free: ignored
    gt[0, 5, 0, 0] = torch.tensor([9.0, 9.0])  # unsupervised: ignored
    out = OccOutput(logits=torch.zeros(1, K, 6, 1, 1), flow=torch.zeros(1, 6, 1, 1, 2))
    terms = occupancy_loss(out, None, sem, mask, gt, cfg, torch.ones(K))
    assert terms.flow.item() == pytest.approx(2.0 * 3.5)
