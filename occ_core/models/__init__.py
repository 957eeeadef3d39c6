"""Occupancy models.

- :mod:`.prior`: the per-voxel prior, the floor every learned model must beat.
"""
