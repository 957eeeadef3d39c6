"""Evaluation: the public occupancy metrics and the ``occ-eval`` command.

- :mod:`.occupancy`: Occ3D mIoU (masks), geometric IoU, OpenOccupancy/SurroundOcc SSC.
- :mod:`.rayiou`: SparseOcc RayIoU@1/2/4 m, OpenOcc mAVE and OccScore.
- :mod:`.origins`: RayIoU ray origins from the nuScenes tables.
- :mod:`.depth`: abs rel, sq rel, rmse, rmse log, delta < 1.25^k (monodepth2 / OccNeRF).
- :mod:`.report`: typed reports (text, JSON, Markdown); :mod:`.distributed`: DDP merging.

Each accumulator takes one sample per ``update``, merges with ``merge`` (or ``state`` /
``load_state`` + :func:`.distributed.all_reduce_metric` across processes) and returns a
:class:`.report.MetricReport` from ``report()``. Each module's docstring states its protocol.
"""
