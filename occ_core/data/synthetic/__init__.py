"""The synthetic driving world, written as a nuScenes v1.0-mini dataset with Occ3D / OpenOcc GT.

``generate(SynthConfig(...), out)`` or the ``occ-synth`` command; see :mod:`.dataset` for the
layout on disk, :mod:`.world` for the scenes, :mod:`.sensors` for the LiDAR and cameras and
:mod:`.groundtruth` for the voxel labels and visibility masks.
"""

from occ_core.data.synthetic.dataset import (OCC3D_TO_LIDARSEG, StageTimes, SynthConfig, SynthResult, generate,
                                             load_splits, make_token)

__all__ = ["OCC3D_TO_LIDARSEG", "StageTimes", "SynthConfig", "SynthResult", "generate", "load_splits", "make_token"]
