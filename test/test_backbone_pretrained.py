"""ResNet-50 backbone layout, ImageNet weight loading (torchvision / timm files) and camera_r50.

The torchvision state dicts here are generated from the ResNet architecture as torchvision
defines it (names, shapes, order), not by importing torchvision (not installed), and filled
with random values; the published parameter counts check the generator.
"""

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml

from occ_core.errors import OccDataError
from occ_core.frame import SensorFrame
from occ_core.grid import OCC3D
from occ_core.models.backbone import ResNetBackbone
from occ_core.models.config import BackboneConfig, config_from_dict, config_to_dict, load_config
from occ_core.models.occnet import build_model
from occ_core.models.predictor import frame_to_inputs
from occ_core.models.pretrained import load_pretrained_backbone
from occ_core.rig import load_rig

CONFIG_DIR = Path(__file__).resolve().parent.parent / "config" / "models"
R50_CFG = CONFIG_DIR / "camera_r50.yaml"
RESNET = {  # torchvision: block type and blocks per layer
    "resnet18": ("basic", (2, 2, 2, 2)),
    "resnet50": ("bottleneck", (3, 4, 6, 3)),
}


def _bn(prefix: str, c: int) -> list[tuple[str, tuple[int, ...]]]:
    return [(f"{prefix}.{k}", (c,)) for k in ("weight", "bias", "running_mean", "running_var")] + \
        [(f"{prefix}.num_batches_tracked", ())]


def torchvision_resnet_spec(arch: str) -> list[tuple[str, tuple[int, ...]]]:
    """(name, shape) of torchvision's ``resnetXX().state_dict()``, in its order.

    torchvision: conv1 7x7 3 -> 64, bn1, max pool; layer i = 1..4 of ``planes = 64 * 2^(i-1)``;
    Bottleneck: conv1 1x1 inplanes -> planes, conv2 3x3 planes -> planes, conv3 1x1 planes ->
    4 * planes; BasicBlock: conv1 3x3 inplanes -> planes, conv2 3x3 planes -> planes; the first
    block of a layer gets ``downsample`` (1x1 conv, BN) when it strides or changes channels;
    fc inplanes -> 1000.
    """
    block, layers = RESNET[arch]
    exp = 4 if block == "bottleneck" else 1
    spec = [("conv1.weight", (64, 3, 7, 7))] + _bn("bn1", 64)
    inplanes = 64
    for i, n in enumerate(layers, 1):
        planes = 64 * 2 ** (i - 1)
        for j in range(n):
            p = f"layer{i}.{j}"
            if block == "bottleneck":
                spec += [(f"{p}.conv1.weight", (planes, inplanes, 1, 1))] + _bn(f"{p}.bn1", planes)
                spec += [(f"{p}.conv2.weight", (planes, planes, 3, 3))] + _bn(f"{p}.bn2", planes)
                spec += [(f"{p}.conv3.weight", (planes * exp, planes, 1, 1))] + _bn(f"{p}.bn3", planes * exp)
            else:
                spec += [(f"{p}.conv1.weight", (planes, inplanes, 3, 3))] + _bn(f"{p}.bn1", planes)
                spec += [(f"{p}.conv2.weight", (planes, planes, 3, 3))] + _bn(f"{p}.bn2", planes)
            if j == 0 and (i > 1 or inplanes != planes * exp):
                spec += [(f"{p}.downsample.0.weight", (planes * exp, inplanes, 1, 1))] + \
                    _bn(f"{p}.downsample.1", planes * exp)
            inplanes = planes * exp
    return spec + [("fc.weight", (1000, inplanes)), ("fc.bias", (1000,))]


def random_state(spec, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random values for ``spec``, scaled so that a 50-layer forward stays well conditioned."""
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for i, (name, shape) in enumerate(spec):
        leaf = name.rsplit(".", 1)[1]
        if leaf == "num_batches_tracked":
            sd[name] = torch.tensor(1000 + i)  # distinct per layer, so a swap shows
        elif len(shape) == 4:
            fan_in = shape[1] * shape[2] * shape[3]
            sd[name] = torch.randn(shape, generator=g) * (2.0 / fan_in) ** 0.5
        elif leaf == "running_var":
            sd[name] = torch.rand(shape, generator=g) + 0.5
        elif leaf == "weight" and not name.startswith("fc."):  # BN gamma
            sd[name] = torch.rand(shape, generator=g) * 0.4 + 0.2
        else:
            sd[name] = torch.randn(shape, generator=g) * 0.1
    return sd


def tv_layout(arch: str, **kw) -> BackboneConfig:
    """Our BackboneConfig for torchvision's ``arch``."""
    block, layers = RESNET[arch]
    widths = (256, 512, 1024, 2048) if block == "bottleneck" else (64, 128, 256, 512)
    return BackboneConfig(stem=64, stem_type="7x7", block=block, widths=widths, blocks=layers, **kw)


def our_tensor(backbone: ResNetBackbone, tv_name: str) -> torch.Tensor:
    """The backbone tensor a torchvision key must land in, found by walking the modules:
    conv1/bn1 are the stem's modules 0/1, layer i is stage i-1, downsample is the shortcut."""
    parts = tv_name.split(".")
    if parts[0] in ("conv1", "bn1"):
        mod = backbone.stem[0 if parts[0] == "conv1" else 1]
        rest = parts[1:]
    else:
        mod = backbone.stages[int(parts[0][len("layer"):]) - 1][int(parts[1])]
        rest = parts[2:]
        if rest[0] == "downsample":
            mod = mod.short[int(rest[1])]
            rest = rest[2:]
        else:
            mod = getattr(mod, rest[0])
            rest = rest[1:]
    (leaf,) = rest
    return getattr(mod, leaf)


def reference_resnet(sd: dict[str, torch.Tensor], arch: str, x: torch.Tensor) -> list[torch.Tensor]:
    """torchvision's ResNet forward (eval mode) written out with functional ops on its state
    dict: the output of each layer1..4."""
    block, layers = RESNET[arch]

    def bn(t, p):
        return F.batch_norm(t, sd[f"{p}.running_mean"], sd[f"{p}.running_var"], sd[f"{p}.weight"], sd[f"{p}.bias"],
                            False, 0.0, 1e-5)

    x = F.max_pool2d(F.relu(bn(F.conv2d(x, sd["conv1.weight"], stride=2, padding=3), "bn1")), 3, 2, 1)
    outs = []
    for i, n in enumerate(layers, 1):
        for j in range(n):
            p, s = f"layer{i}.{j}", 2 if i > 1 and j == 0 else 1
            if block == "bottleneck":  # v1.5: the stride on the 3x3 conv
                y = F.relu(bn(F.conv2d(x, sd[f"{p}.conv1.weight"]), f"{p}.bn1"))
                y = F.relu(bn(F.conv2d(y, sd[f"{p}.conv2.weight"], stride=s, padding=1), f"{p}.bn2"))
                y = bn(F.conv2d(y, sd[f"{p}.conv3.weight"]), f"{p}.bn3")
            else:
                y = F.relu(bn(F.conv2d(x, sd[f"{p}.conv1.weight"], stride=s, padding=1), f"{p}.bn1"))
                y = bn(F.conv2d(y, sd[f"{p}.conv2.weight"], padding=1), f"{p}.bn2")
            if f"{p}.downsample.0.weight" in sd:
                x = bn(F.conv2d(x, sd[f"{p}.downsample.0.weight"], stride=s), f"{p}.downsample.1")
            x = F.relu(y + x)
        outs.append(x)
    return outs


@pytest.fixture(scope="module")
def r50_file(tmp_path_factory):
    """A torchvision-format resnet50 file with random values: (path, state dict)."""
    sd = random_state(torchvision_resnet_spec("resnet50"))
    path = tmp_path_factory.mktemp("weights") / "resnet50-0676ba61.pth"
    torch.save(sd, path)
    return path, sd


def test_generated_torchvision_specs_have_the_published_parameter_counts():
    # torchvision's model cards: resnet18 11,689,512 and resnet50 25,557,032 parameters
    for arch, published in (("resnet18", 11_689_512), ("resnet50", 25_557_032)):
        spec = torchvision_resnet_spec(arch)
        params = sum(int(np.prod(s)) for n, s in spec if not n.rsplit(".", 1)[1].startswith(("running", "num_")))
        assert params == published, arch
        # our backbone of that layout holds exactly the non-fc tensors with the same shapes
        ours = ResNetBackbone(tv_layout(arch)).state_dict()
        assert sorted(tuple(v.shape) for v in ours.values()) == sorted(s for n, s in spec if not n.startswith("fc."))
        assert sum(p.numel() for p in ResNetBackbone(tv_layout(arch)).parameters()) == params - 1000 * spec[-2][1][1] - 1000


def test_camera_r50_backbone_is_torchvision_resnet50():
    cfg = load_config(R50_CFG)
    assert cfg.backbone.pretrained is None and cfg.image.size == (256, 704) and cfg.feature_grid.dims == (200, 200, 1)
    assert dataclasses.replace(cfg.backbone, neck_channels=32) == dataclasses.replace(tv_layout("resnet50"),
                                                                                     neck_channels=32)
    bb = ResNetBackbone(cfg.backbone)
    feats = bb.eval()(torch.zeros(1, 3, 64, 96))
    assert [tuple(f.shape) for f in feats] == [(1, 256, 16, 24), (1, 512, 8, 12), (1, 1024, 4, 6), (1, 2048, 2, 3)]


def test_torchvision_resnet50_file_lands_in_the_right_tensors(r50_file):
    path, sd = r50_file
    bb = ResNetBackbone(load_config(R50_CFG).backbone)
    report = load_pretrained_backbone(bb, path)
    assert report.loaded == len(sd) - 2 and report.dropped == ["fc.bias", "fc.weight"] and report.wrapper is None
    assert report.defaulted == [] and report.parameters == sum(v.numel() for k, v in sd.items() if not k.startswith("fc."))
    assert f"loaded {len(sd) - 2} tensors" in report.summary() and str(path) in report.summary()
    for name, value in sd.items():
        if not name.startswith("fc."):
            assert torch.equal(our_tensor(bb, name), value), name


@pytest.mark.parametrize("arch", ["resnet50", "resnet18"])
def test_loaded_backbone_computes_torchvision_resnet(arch, r50_file, tmp_path):
    if arch == "resnet50":
        path, sd = r50_file
    else:
        sd = random_state(torchvision_resnet_spec(arch), seed=1)
        path = tmp_path / "resnet18.pth"
        torch.save(sd, path)
    bb = ResNetBackbone(tv_layout(arch))
    load_pretrained_backbone(bb, path)
    x = torch.randn(2, 3, 64, 96, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        ours, ref = bb.eval()(x), reference_resnet(sd, arch, x)
    for i, (a, b) in enumerate(zip(ours, ref)):
        assert a.shape == b.shape
        assert b.abs().max() > 0.1  # the comparison is not between two near-zero maps
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-4 * float(b.abs().max())), f"stage {i}"


@pytest.mark.parametrize("wrap", ["state_dict+module", "model", "old_no_num_batches_tracked"])
def test_timm_checkpoint_wrappers(wrap, r50_file, tmp_path):
    _, sd = r50_file
    if wrap == "state_dict+module":  # timm train.py checkpoint of a DDP run
        obj = {"epoch": 3, "arch": "resnet50", "state_dict": {f"module.{k}": v for k, v in sd.items()}}
    elif wrap == "model":
        obj = {"model": sd, "optimizer": {"lr": torch.tensor(0.1)}}
    else:  # torchvision's pre-0.4.1 resnet50-19c8e357.pth has no num_batches_tracked
        obj = {k: v for k, v in sd.items() if not k.endswith("num_batches_tracked")}
    torch.save(obj, tmp_path / "timm.pth")
    bb = ResNetBackbone(tv_layout("resnet50"))
    report = load_pretrained_backbone(bb, tmp_path / "timm.pth")
    assert report.wrapper == {"state_dict+module": "state_dict", "model": "model"}.get(wrap)
    for name, value in sd.items():
        if name.startswith("fc."):
            continue
        if wrap.startswith("old") and name.endswith("num_batches_tracked"):
            assert our_tensor(bb, name) == 0
        else:
            assert torch.equal(our_tensor(bb, name), value), name
    assert len(report.defaulted) == (53 if wrap.startswith("old") else 0)  # 53 BatchNorms in ResNet-50


def _fails(bb, path, *needles):
    before = {k: v.clone() for k, v in bb.state_dict().items()}
    with pytest.raises(OccDataError) as e:
        load_pretrained_backbone(bb, path)
    for n in (str(path), *needles):
        assert n in str(e.value), (n, str(e.value))
    assert all(torch.equal(v, bb.state_dict()[k]) for k, v in before.items())  # nothing copied


def test_bad_weight_files_name_the_file_and_the_first_bad_key(r50_file, tmp_path):
    sd = random_state(torchvision_resnet_spec("resnet18"))  # a smaller file than ResNet-50's 100 MB
    bb = ResNetBackbone(tv_layout("resnet18"))
    p = tmp_path / "w.pth"
    torch.save({k: v for k, v in sd.items() if k != "layer3.1.bn1.running_mean"}, p)
    _fails(bb, p, "missing", "stages.2.1.bn1.running_mean")
    bad = dict(sd)
    bad["layer2.0.conv2.weight"] = torch.zeros(128, 128, 1, 1)
    torch.save(bad, p)
    _fails(bb, p, "shape", "layer2.0.conv2.weight", "(128, 128, 1, 1)", "(128, 128, 3, 3)")
    torch.save(sd, p)  # a ResNet-18 file into a ResNet-50 backbone
    _fails(ResNetBackbone(tv_layout("resnet50")), p, "shape", "layer1.0.conv1.weight")
    deep = {("conv1.0.weight" if k == "conv1.weight" else k): v for k, v in sd.items()}  # timm resnet50d deep stem
    torch.save(deep, p)
    _fails(bb, p, "unexpected", "conv1.0.weight")
    # a ResNet-50 file into the small BasicBlock backbone of the demo configs
    _fails(ResNetBackbone(BackboneConfig()), r50_file[0], "unexpected", "conv1.weight")
    torch.save({"optimizer": {"lr": 0.1}}, p)
    _fails(bb, p, "expected a ResNet state dict")
    p.write_bytes(r50_file[0].read_bytes()[:5000])  # truncated
    _fails(bb, p, "not a readable torch file")
    _fails(bb, tmp_path / "nope.pth", "not found")


def test_config_fields_pretrained_path_and_errors(tmp_path):
    (tmp_path / "cfgs").mkdir()
    doc = yaml.safe_load(R50_CFG.read_text())
    doc["backbone"]["pretrained"] = "../weights/resnet50.pth"
    p = tmp_path / "cfgs" / "m.yaml"
    p.write_text(yaml.safe_dump(doc))
    cfg = load_config(p)
    assert cfg.backbone.pretrained == str(tmp_path / "weights" / "resnet50.pth")  # relative to the YAML's folder
    assert config_from_dict(config_to_dict(cfg)) == cfg
    for key, value, needle in (("block", "bottle", r"m.yaml.backbone.block: 'bottle'"),
                               ("stem_type", "5x5", r"m.yaml.backbone.stem_type"),
                               ("widths", [256, 512, 1026, 2048], r"m.yaml.backbone.widths: .*multiples of 4"),
                               ("blocks", [3, 4, 6], r"m.yaml.backbone: widths .* and blocks"),
                               ("out_stride", 64, r"m.yaml.backbone.out_stride: 64"),
                               ("frozen_stages", 5, r"m.yaml.backbone.frozen_stages: 5"),
                               ("pretrained", "", r"m.yaml.backbone.pretrained: empty")):
        bad = yaml.safe_load(R50_CFG.read_text())
        bad["backbone"][key] = value
        p.write_text(yaml.safe_dump(bad))
        with pytest.raises(OccDataError, match=needle):
            load_config(p)
    lidar = yaml.safe_load((CONFIG_DIR / "lidar.yaml").read_text())
    lidar["backbone"] = {"pretrained": "r50.pth"}
    with pytest.raises(OccDataError, match="backbone.pretrained: given, but the model has no camera branch"):
        config_from_dict(lidar, "lidar.yaml")


def test_frozen_stages_and_norm_eval():
    cfg = BackboneConfig(stem=8, stem_type="7x7", block="bottleneck", widths=(16, 32, 64, 64), blocks=(1, 1, 1, 1),
                         frozen_stages=1)
    bb = ResNetBackbone(cfg).train()
    frozen = [n for n, p in bb.named_parameters() if not p.requires_grad]
    assert frozen and all(n.startswith(("stem.", "stages.0.")) for n in frozen)
    assert len(frozen) == sum(1 for n, _ in bb.named_parameters() if n.startswith(("stem.", "stages.0.")))
    assert not bb.stem[1].training and not bb.stages[0][0].bn1.training and bb.stages[1][0].bn1.training
    x = torch.randn(2, 3, 32, 32)
    stats = {k: v.clone() for k, v in bb.state_dict().items() if "running" in k}
    bb(x)[-1].sum().backward()
    moved = {k for k, v in stats.items() if not torch.equal(v, bb.state_dict()[k])}
    assert moved and all(k.startswith("stages.") and not k.startswith("stages.0.") for k in moved)
    assert all(p.grad is None for p in bb.stem.parameters()) and bb.stages[1][0].conv1.weight.grad is not None
    # norm_eval: no running statistic moves in train mode, but everything still trains
    bb = ResNetBackbone(dataclasses.replace(cfg, frozen_stages=-1, norm_eval=True)).train()
    stats = {k: v.clone() for k, v in bb.state_dict().items() if "running" in k}
    bb(x)[-1].sum().backward()
    assert all(torch.equal(v, bb.state_dict()[k]) for k, v in stats.items())
    assert all(p.requires_grad and p.grad is not None for p in bb.parameters())


def test_trainer_loads_pretrained_backbone_on_fresh_runs_only(tmp_path):
    from occ_core.training.train import Trainer

    sd = random_state(torchvision_resnet_spec("resnet18"), seed=2)
    torch.save({"state_dict": sd}, tmp_path / "resnet18.pth")
    cfg = load_config(CONFIG_DIR / "camera.yaml")
    cfg = dataclasses.replace(cfg, image=dataclasses.replace(cfg.image, size=(32, 64)),
                              backbone=tv_layout("resnet18", pretrained=str(tmp_path / "resnet18.pth")))
    t = Trainer(cfg, "cpu", torch.ones(18), pretrained=True)
    assert t.pretrained_report.loaded == len(sd) - 2
    assert torch.equal(t.model.image_encoder.backbone.stages[3][1].conv2.weight, sd["layer4.1.conv2.weight"])
    t = Trainer(cfg, "cpu", torch.ones(18))  # resume path: weights come from the checkpoint
    assert t.pretrained_report is None
    assert not torch.equal(t.model.image_encoder.backbone.stages[3][1].conv2.weight, sd["layer4.1.conv2.weight"])


def test_camera_r50_forward_on_cpu_six_cameras_full_size():
    """The research config at its real size: 6 cameras at 256 x 704, 200 x 200 BEV (about 8 s
    on a 2-core CPU; timings are in BENCHMARKS.md, not here)."""
    cfg = load_config(R50_CFG)
    rig = load_rig().scaled(704, 396)  # nuScenes 1600 x 900 scaled as BEVDet: resize 0.44, crop the top 140 rows
    rng = np.random.default_rng(0)
    frame = SensorFrame(0, rig.camera_names, [rng.integers(0, 255, (396, 704, 3), dtype=np.uint8) for _ in rig.cameras],
                        np.stack([c.K for c in rig.cameras]), np.stack([c.T_base_from_cam for c in rig.cameras]),
                        np.zeros((0, 5), np.float32), rig.lidar.T_base_from_lidar)
    inputs = frame_to_inputs(frame, cfg)
    assert inputs.images.shape == (1, 6, 3, 256, 704)
    model = build_model(cfg).eval()
    captured = []
    model.lss.register_forward_hook(lambda mod, args, out: captured.append(out.voxels))
    with torch.no_grad():
        out = model(inputs)
    assert out.logits.shape == (1, 18, *OCC3D.dims) and bool(torch.isfinite(out.logits).all())
    assert out.depth_probs.shape == (6, 88, 16, 44)
    assert torch.allclose(out.depth_probs.sum(1), torch.ones(()), atol=1e-5)
    # every camera's features reach the 200 x 200 BEV grid: context was splatted into its sector
    (vox,) = captured
    assert vox.shape == (1, 64, 200, 200, 1)
    filled = np.argwhere((vox[0].abs().sum(0)[..., 0] > 0).numpy())
    xy = np.asarray(OCC3D.voxel_size[:2]) * (filled + 0.5) + np.asarray(OCC3D.range_min[:2])
    yaw = np.degrees(np.arctan2(xy[:, 1], xy[:, 0]))
    for name, cam in zip(rig.camera_names, rig.cameras):
        fwd = cam.T_base_from_cam[:3, 2]  # optical z axis in base_link
        off = np.abs((yaw - np.degrees(np.arctan2(fwd[1], fwd[0])) + 180) % 360 - 180)
        assert (off < 10).sum() > 100, name


def test_occ_train_names_a_missing_pretrained_file(synthetic_dataroot, tmp_path, capsys):
    from occ_core.training.train import main

    doc = yaml.safe_load((CONFIG_DIR / "camera.yaml").read_text())
    doc["backbone"] = {"stem": 64, "stem_type": "7x7", "widths": [64, 128, 256, 512], "blocks": [2, 2, 2, 2],
                       "pretrained": "weights/resnet18.pth"}
    cfg = tmp_path / "r18.yaml"
    cfg.write_text(yaml.safe_dump(doc))
    argv = ["--config", str(cfg), "--dataroot", str(synthetic_dataroot), "--work-dir", str(tmp_path / "w"),
            "--steps", "1", "--no-progress"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "r18.yaml: backbone.pretrained" in err and str(tmp_path / "weights" / "resnet18.pth") in err
    assert not (tmp_path / "w" / "checkpoints").exists() or not any((tmp_path / "w" / "checkpoints").iterdir())
