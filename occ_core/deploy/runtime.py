"""Inference backends behind the :class:`~occ_core.frame.Predictor` protocol: torch, ONNX Runtime,
TensorRT (through ONNX Runtime's TensorRT execution provider).

::

    predictor = load_backend_predictor("config/models/fusion.yaml", "fusion_demo.pt",
                                       backend="onnxruntime", cameras=6)
    prediction = predictor.predict(frame)   # SensorFrame -> OccupancyPrediction

- ``torch``: :func:`occ_core.models.predictor.load_predictor` (eager).
- ``onnxruntime``: the model exported once by :func:`cached_export` (``occ-export``'s graph) and
  run by an ``onnxruntime.InferenceSession`` (CPU; ``device: cuda`` takes the CUDA provider).
  LiDAR and fusion models run their spconv LiDAR encoder in torch and feed its dense output to
  the session (:data:`~occ_core.deploy.graph.NOT_EXPORTABLE`): the rest of the network (image
  branch, LSS, fusion, 3D encoder, heads) runs in ONNX Runtime.
- ``tensorrt``: the same file on ONNX Runtime's ``TensorrtExecutionProvider`` (fp16 enabled, its
  engines cached beside the ONNX file), CUDA and CPU providers behind it for nodes TensorRT
  does not take.

**Engine cache**: ``<cache_dir>/<config stem>-<key>.onnx`` with ``key`` the SHA-256 over the
checkpoint file's SHA-256, the model config (as parsed), the image size, the camera count, the
opset and :data:`~occ_core.deploy.export.GRAPH_VERSION`: exported once, reused while these stay,
rebuilt when the checkpoint (or anything else in the key) changes; written atomically. The
default folder is ``$OCC_ENGINE_CACHE``, else ``$XDG_CACHE_HOME/occ_ros/engines``, else
``~/.cache/occ_ros/engines``.

A backend whose package or provider is missing raises :class:`BackendUnavailableError` naming the
backend, what is missing and how to get it, before anything is exported.

Post-processing: the torch backend's :func:`occ_core.models.predictor.logits_to_prediction`; in
the ONNX graph the same labels and scores (:func:`occ_core.deploy.graph.labels_and_scores`).
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from occ_core.errors import OccDataError
from occ_core.frame import OccupancyPrediction, SensorFrame
from occ_core.models.config import ModelConfig, config_to_dict, load_config

BACKENDS = ("torch", "onnxruntime", "tensorrt")
#: pip names of the modules a backend imports.
_PIP = {"onnx": "onnx", "onnxruntime": "onnxruntime (onnxruntime-gpu on CUDA machines)", "onnxscript": "onnxscript",
        "tensorrt": "tensorrt"}
CACHE_ENV = "OCC_ENGINE_CACHE"


class BackendUnavailableError(OccDataError):
    """An inference backend that cannot run here: its Python package or execution provider is
    missing. The message names the backend, the missing piece and what to install."""


def require_module(name: str, backend: str):
    """Import ``name`` for ``backend``, or raise :class:`BackendUnavailableError` naming both."""
    try:
        return importlib.import_module(name)
    except ImportError as e:
        raise BackendUnavailableError(
            f"backend {backend!r}: the Python package {name!r} is not installed ({e}); install "
            f"{_PIP.get(name, name)} (pinned in requirements.lock) or use backend 'torch'") from None


def check_backend(backend: str, device: str = "cpu") -> list:
    """The ONNX Runtime providers ``backend`` runs on, checked to be available here.

    Raises:
        ValueError: an unknown backend name.
        BackendUnavailableError: a missing package or execution provider (named).
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend: expected one of {list(BACKENDS)}, got {backend!r}")
    if backend == "torch":
        return []
    ort = require_module("onnxruntime", backend)
    require_module("onnx", backend)
    available = ort.get_available_providers()
    if backend == "tensorrt":
        if "TensorrtExecutionProvider" not in available:
            raise BackendUnavailableError(
                f"backend 'tensorrt': ONNX Runtime {ort.__version__} has no TensorrtExecutionProvider (available: "
                f"{available}); install onnxruntime-gpu built with TensorRT and the TensorRT libraries on a CUDA "
                f"machine, or use backend 'onnxruntime'")
        return ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    if str(device).startswith("cuda"):
        if "CUDAExecutionProvider" not in available:
            raise BackendUnavailableError(
                f"backend 'onnxruntime' on device {device!r}: ONNX Runtime {ort.__version__} has no "
                f"CUDAExecutionProvider (available: {available}); install onnxruntime-gpu or use device 'cpu'")
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def default_cache_dir() -> Path:
    """``$OCC_ENGINE_CACHE``, else ``$XDG_CACHE_HOME/occ_ros/engines``, else ``~/.cache/occ_ros/engines``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "occ_ros" / "engines"


def cache_key(cfg: ModelConfig, checkpoint_sha256: str, cameras: int, opset: int) -> str:
    """Hex SHA-256 identifying an export (see the module docstring)."""
    from occ_core.deploy.export import GRAPH_VERSION

    doc = {"config": config_to_dict(cfg), "checkpoint": checkpoint_sha256, "cameras": cameras, "opset": opset,
           "graph_version": GRAPH_VERSION}
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class CachedExport:
    """An ONNX file of the engine cache: path, its export record, and whether this call built it."""

    path: Path
    info: object  # occ_core.deploy.export.ExportInfo
    built: bool


def cached_export(config_path: str | Path, checkpoint_path: str | Path | None, cache_dir: str | Path | None = None,
                  cameras: int = 6, opset: int | None = None, image_hw: tuple[int, int] | None = None,
                  model: torch.nn.Module | None = None) -> CachedExport:
    """The cached ONNX export of a model, exported (atomically) when missing or unreadable.

    Args:
        config_path, checkpoint_path: the model (checkpoint None: seeded random-init weights).
        cache_dir: the cache folder (None: :func:`default_cache_dir`).
        cameras: N of the camera inputs.
        opset: ONNX opset (None: :data:`~occ_core.deploy.export.DEFAULT_OPSET`).
        image_hw: network-input size (None: the config's).
        model: the already loaded model of (config, checkpoint), to skip loading it again.
    """
    from occ_core.deploy.export import DEFAULT_OPSET, export_model, file_sha256, read_export_info, with_image_size
    from occ_core.models.predictor import load_predictor

    require_module("onnx", "onnxruntime")
    opset = DEFAULT_OPSET if opset is None else opset
    cfg = with_image_size(load_config(config_path), image_hw)
    sha = file_sha256(checkpoint_path) if checkpoint_path else ""
    if not cfg.uses_camera:
        cameras = 0
    key = cache_key(cfg, sha, cameras, opset)
    folder = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    path = folder / f"{Path(config_path).stem}-{key[:24]}.onnx"
    if path.is_file():
        try:
            info = read_export_info(path)
            if info.checkpoint_sha256 == sha and info.cameras == cameras and info.opset == opset:
                return CachedExport(path, info, False)
        except OccDataError:
            pass  # damaged: rebuilt below
    if model is None:
        model = load_predictor(config_path, checkpoint_path).model
    info = export_model(model, cfg, path, opset=opset, cameras=cameras, checkpoint_sha256=sha)
    return CachedExport(path, info, True)


class OnnxPredictor:
    """A model exported by ``occ-export`` run by ONNX Runtime (Predictor protocol).

    Args:
        onnx_path: the file (its ``occ_export`` metadata gives the inputs, image size, cameras).
        cfg: the model config (image preprocessing, grid).
        lidar_encoder: the torch LiDAR encoder for ``lidar_features`` (LiDAR / fusion models), else None.
        providers: ONNX Runtime providers (:func:`check_backend`).
        backend: "onnxruntime" or "tensorrt" (errors name it).
        threads: intra-op threads (None: torch's thread count).
        trt_cache_dir: TensorRT engine cache folder (tensorrt backend).

    Raises:
        BackendUnavailableError: the session does not run on the requested provider (TensorRT
            or CUDA libraries that fail to load: ONNX Runtime would silently fall back to CPU).
    """

    def __init__(self, onnx_path: str | Path, cfg: ModelConfig, lidar_encoder: torch.nn.Module | None,
                 providers: list, backend: str = "onnxruntime", threads: int | None = None,
                 trt_cache_dir: str | Path | None = None):
        import onnxruntime as ort

        from occ_core.deploy.export import read_export_info

        self.path = Path(onnx_path)
        self.info = read_export_info(self.path)
        self.cfg = cfg
        self.backend = backend
        self.lidar = None if lidar_encoder is None else lidar_encoder.eval()
        if "lidar_features" in self.info.inputs and self.lidar is None:
            raise OccDataError(f"{self.path}: the graph takes lidar_features but no LiDAR encoder was given")
        so = ort.SessionOptions()
        so.intra_op_num_threads = int(threads or torch.get_num_threads())
        so.inter_op_num_threads = 1
        # no busy-waiting between runs: the node's decode and DDS threads share the cores
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        opts = []
        for p in providers:
            if p == "TensorrtExecutionProvider":
                cache = Path(trt_cache_dir or self.path.parent / "trt")
                cache.mkdir(parents=True, exist_ok=True)
                opts.append((p, {"trt_fp16_enable": True, "trt_engine_cache_enable": True,
                                 "trt_engine_cache_path": str(cache), "trt_timing_cache_enable": True,
                                 "trt_timing_cache_path": str(cache)}))
            else:
                opts.append(p)
        try:
            self.session = ort.InferenceSession(str(self.path), so, providers=opts)
        except Exception as e:  # noqa: BLE001 - ORT raises its own Fail/InvalidGraph/RuntimeException types
            raise OccDataError(f"{self.path}: ONNX Runtime cannot load it ({type(e).__name__}: {e})") from None
        got = self.session.get_providers()
        if providers and got[0] != providers[0]:
            raise BackendUnavailableError(
                f"backend {backend!r}: ONNX Runtime did not start {providers[0]} (session providers {got}); its "
                f"libraries (TensorRT / CUDA) failed to load")
        self.outputs = list(self.info.outputs)

    @property
    def image_hw(self) -> tuple[int, int] | None:
        """Camera input (h, w) of the exported file (None for LiDAR-only models)."""
        return tuple(self.info.image_hw) if self.info.cameras else None

    def feed(self, frame: SensorFrame) -> dict[str, np.ndarray]:
        """The session's inputs for one frame (the LiDAR encoder runs here, in torch)."""
        from occ_core.models.predictor import frame_to_inputs

        inputs = frame_to_inputs(frame, self.cfg)
        feed = {}
        if self.info.cameras:
            n = inputs.images.shape[1]
            if n != self.info.cameras:
                raise OccDataError(f"SensorFrame: {n} cameras, but {self.path} was exported for {self.info.cameras} "
                                   f"(occ-export --cameras {n})")
            feed["images"] = inputs.images.numpy()
            if "intrinsics" in self.info.inputs:
                feed["intrinsics"] = inputs.intrinsics.numpy()
                feed["T_base_from_cam"] = inputs.T_base_from_cam.numpy()
        if "lidar_features" in self.info.inputs:
            with torch.no_grad():
                feed["lidar_features"] = self.lidar(inputs.points).numpy()
        return feed

    def run(self, feed: dict[str, np.ndarray], names: list[str] | None = None) -> list[np.ndarray]:
        """The session's outputs ``names`` (default ``logits`` (1, K, X, Y, Z), ``labels``,
        ``scores`` (1, X, Y, Z)[, ``flow`` (1, X, Y, Z, 2)]): only the requested ones are copied out."""
        return self.session.run(names or self.outputs, feed)

    def predict(self, frame: SensorFrame) -> OccupancyPrediction:
        """Labels and scores as :func:`occ_core.models.predictor.logits_to_prediction` gives them,
        computed in the graph (:func:`occ_core.deploy.graph.labels_and_scores`)."""
        names = ["labels", "scores"] + (["flow"] if "flow" in self.outputs else [])
        out = self.run(self.feed(frame), names)
        flow = out[2][0].astype(np.float32) if len(out) > 2 else None
        return OccupancyPrediction(out[0][0], out[1][0].astype(np.float32, copy=False), flow)


def load_backend_predictor(config_path: str | Path, checkpoint_path: str | Path | None = None, backend: str = "torch",
                           device: str = "cpu", cameras: int = 6, cache_dir: str | Path | None = None,
                           threads: int | None = None):
    """A predictor of (config, checkpoint) on ``backend`` (see the module docstring).

    Raises:
        BackendUnavailableError: the backend cannot run here (checked before any export).
        OccDataError: a config, checkpoint or cached file that cannot be read; a model part
            that cannot be exported (:class:`~occ_core.deploy.graph.ExportError`).
    """
    from occ_core.models.predictor import load_predictor

    providers = check_backend(backend, device)
    torch_predictor = load_predictor(config_path, checkpoint_path, device="cpu" if backend != "torch" else device)
    if backend == "torch":
        return torch_predictor
    cached = cached_export(config_path, checkpoint_path, cache_dir, cameras, model=torch_predictor.model)
    model = torch_predictor.model
    return OnnxPredictor(cached.path, torch_predictor.cfg, getattr(model, "lidar", None), providers, backend, threads,
                         trt_cache_dir=cached.path.parent / "trt")


__all__ = ["BACKENDS", "BackendUnavailableError", "CachedExport", "OnnxPredictor", "cache_key", "cached_export",
           "check_backend", "default_cache_dir", "load_backend_predictor", "require_module"]
