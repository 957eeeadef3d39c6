"""Data: datasets, label formats and the synthetic nuScenes-format world (``occ_core.data.synthetic``)."""
