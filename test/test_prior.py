"""The per-voxel prior baseline."""

import numpy as np
import pytest

from occ_core.errors import OccDataError
from occ_core.models.prior import PerVoxelPrior


def test_prior_takes_the_most_frequent_label_per_voxel(tmp_path):
    a = np.array([[[17, 4]]], dtype=np.uint8)  # (1, 1, 2)
    b = np.array([[[11, 4]]], dtype=np.uint8)
    c = np.array([[[11, 7]]], dtype=np.uint8)
    prior = PerVoxelPrior.fit([a, b, c])
    np.testing.assert_array_equal(prior.predict(), [[[11, 4]]])
    assert prior.counts[0, 0, 1, 4] == 2 and prior.counts[0, 0, 1, 7] == 1
    # ties go to the lower class index
    np.testing.assert_array_equal(PerVoxelPrior.fit([a, c]).predict(), [[[11, 4]]])
    prior.save(tmp_path / "prior.npz")
    np.testing.assert_array_equal(PerVoxelPrior.load(tmp_path / "prior.npz").counts, prior.counts)


def test_prior_rejects_bad_frames():
    with pytest.raises(OccDataError, match="no training frames"):
        PerVoxelPrior.fit([])
    with pytest.raises(OccDataError, match="frame 1: shape"):
        PerVoxelPrior.fit([np.zeros((2, 2, 2), np.uint8), np.zeros((2, 2, 3), np.uint8)])
    with pytest.raises(OccDataError, match="label 18"):
        PerVoxelPrior.fit([np.full((2, 2, 2), 18, np.uint8)])
