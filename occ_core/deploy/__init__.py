"""Deployment: ONNX export of the occupancy models and the inference backends.

- :mod:`occ_core.deploy.graph`: export-friendly forwards (:class:`~occ_core.deploy.graph.DeployGraph`).
- :mod:`occ_core.deploy.export`: ``occ-export`` (config + checkpoint -> ONNX with its metadata).
- :mod:`occ_core.deploy.runtime`: torch / ONNX Runtime / TensorRT predictors and the export cache.

Importing this package imports neither onnx nor onnxruntime; they load when a backend needs them.
"""
