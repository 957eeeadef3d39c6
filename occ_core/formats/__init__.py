"""Occupancy label formats: Occ3D, OpenOcc v2, OpenOccupancy and SurroundOcc.

- :mod:`.occ3d`: ``labels.npz`` ground truth (semantics + masks) and ``<token>.npz`` predictions.
- :mod:`.openocc`: OpenOcc v2 semantics + flow.
- :mod:`.sparse`: OpenOccupancy / SurroundOcc sparse ``[N, 4]`` <-> dense grids.
- :mod:`.convert`: label-space conversions and grid resampling where well defined.

Every reader raises :class:`occ_core.errors.OccDataError` naming the file and the key,
shape, dtype or label it expected; every writer is atomic (:mod:`occ_core.fileio`).
"""
