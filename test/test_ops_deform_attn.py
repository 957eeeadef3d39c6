"""Multi-scale deformable attention: known answers, an independent per-sample loop, the Triton
kernel against the torch reference (forward and gradients), bad inputs.

TRITON_INTERPRET=1 is set here at import, before any kernel module is imported, so the kernel
runs on the CPU under the Triton interpreter (tiny sizes). With OCC_OPS_TEST_DEVICE=cuda the
same tests run the compiled kernel on a GPU.
"""

import os
import subprocess
import sys
from pathlib import Path

if os.environ.get("OCC_OPS_TEST_DEVICE", "cpu") == "cpu":
    os.environ["TRITON_INTERPRET"] = "1"

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from occ_core.ops import backend as ops_backend  # noqa: E402
from occ_core.ops import ms_deform_attn  # noqa: E402
from occ_core.ops.deform_attn import ms_deform_attn_torch  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:triton.*")

DEV = torch.device(os.environ.get("OCC_OPS_TEST_DEVICE", "cpu"))
BACKENDS = ("torch", "triton")
SHAPES = [(3, 4), (2, 3)]  # (H, W) per level
STARTS = [0, 12]


def _levels(shapes=SHAPES):
    sizes = [h * w for h, w in shapes]
    return (torch.tensor(shapes, dtype=torch.int64, device=DEV),
            torch.tensor([sum(sizes[:i]) for i in range(len(sizes))], dtype=torch.int64, device=DEV))


def _random_inputs(rng, bs=2, Q=5, NH=2, D=3, P=3, shapes=SHAPES, dtype=torch.float64, margin=0.3):
    K = sum(h * w for h, w in shapes)
    L = len(shapes)
    value = torch.tensor(rng.normal(size=(bs, K, NH, D)), dtype=dtype, device=DEV, requires_grad=True)
    loc = rng.uniform(-margin, 1 + margin, size=(bs, Q, NH, L, P, 2))
    if Q >= 2:
        loc[0, 0, 0, 0, 0] = [0.5 / shapes[0][1], 0.5 / shapes[0][0]]  # exactly on a pixel centre
        loc[0, 1, 0, 0, 0] = [0.0, 1.0]  # on the map's corner
    loc = torch.tensor(loc, dtype=dtype, device=DEV, requires_grad=True)
    attn = torch.tensor(rng.random((bs, Q, NH, L, P)), dtype=dtype, device=DEV, requires_grad=True)
    return value, loc, attn


def _loop_reference(value, shapes, starts, loc, attn):
    """Per (b, q, h, l, p) bilinear sample with zero padding, written out in numpy."""
    v, loc, attn = (t.detach().cpu().double().numpy() for t in (value, loc, attn))
    bs, _, NH, D = v.shape
    _, Q, _, L, P, _ = loc.shape
    out = np.zeros((bs, Q, NH, D))
    for b, q, h, lvl, p in np.ndindex(bs, Q, NH, L, P):
        H, W = shapes[lvl]
        x = loc[b, q, h, lvl, p, 0] * W - 0.5  # pixel i's centre is at x = i
        y = loc[b, q, h, lvl, p, 1] * H - 0.5
        x0, y0 = int(np.floor(x)), int(np.floor(y))
        for xi, yi in ((x0, y0), (x0 + 1, y0), (x0, y0 + 1), (x0 + 1, y0 + 1)):
            if 0 <= xi < W and 0 <= yi < H:
                wgt = (1 - abs(x - xi)) * (1 - abs(y - yi))
                out[b, q, h] += attn[b, q, h, lvl, p] * wgt * v[b, starts[lvl] + yi * W + xi, h]
    return out.reshape(bs, Q, NH * D)


@pytest.mark.parametrize("backend", BACKENDS)
def test_known_answers_single_level(backend):
    H, W = 3, 4
    shapes = torch.tensor([[H, W]], device=DEV)
    starts = torch.zeros(1, dtype=torch.int64, device=DEV)
    value = torch.arange(H * W * 2, dtype=torch.float32, device=DEV).view(1, H * W, 1, 2) + 1.0
    px = value[0, :, 0].view(H, W, 2)

    def run(points, weights):
        loc = torch.tensor(points, dtype=torch.float32, device=DEV).view(1, -1, 1, 1, 1, 2)
        attn = torch.tensor(weights, dtype=torch.float32, device=DEV).view(1, -1, 1, 1, 1)
        return ms_deform_attn(value, shapes, starts, loc, attn, backend=backend)[0]

    # A point on pixel (i=2, j=1)'s centre returns that pixel; halfway between two centres the mean.
    out = run([[(2 + 0.5) / W, (1 + 0.5) / H], [(2 + 1.0) / W, (1 + 0.5) / H], [(0 + 0.5) / W, (0 + 1.0) / H]],
              [1.0, 1.0, 1.0])
    torch.testing.assert_close(out[0], px[1, 2])
    torch.testing.assert_close(out[1], (px[1, 2] + px[1, 3]) / 2)
    torch.testing.assert_close(out[2], (px[0, 0] + px[1, 0]) / 2)
    # Outside: far away -> 0; on the left edge (half a pixel beyond the first centre) the zero
    # padding takes half; a full pixel beyond the first centre -> 0.
    out = run([[1.7, 0.5], [-3.0, -2.0], [0.0, 0.5 / H], [-0.5 / W, 0.5 / H]], [1.0, 1.0, 1.0, 1.0])
    torch.testing.assert_close(out[:2], torch.zeros(2, 2, device=DEV))
    torch.testing.assert_close(out[2], px[0, 0] / 2)
    torch.testing.assert_close(out[3], torch.zeros(2, device=DEV))
    # Weights scale and add: several points at one centre give (sum of weights) * pixel.
    loc = torch.full((1, 1, 1, 1, 3, 2), 0.0, device=DEV)
    loc[..., 0], loc[..., 1] = 1.5 / W, 2.5 / H
    attn = torch.tensor([0.2, 0.5, 0.7], device=DEV).view(1, 1, 1, 1, 3)
    out = ms_deform_attn(value, shapes, starts, loc, attn, backend=backend)[0, 0]
    torch.testing.assert_close(out, 1.4 * px[2, 1])


@pytest.mark.parametrize("backend", BACKENDS)
def test_levels_heads_and_batch_layout(backend):
    """Constant maps per (sample, level, head, channel): interior samples return weighted sums of
    the constants, output channel h*D + d."""
    shapes, starts = _levels()
    bs, NH, D, P = 2, 3, 2, 2
    const = torch.tensor(np.random.default_rng(0).normal(size=(bs, 2, NH, D)), dtype=torch.float64, device=DEV)
    value = torch.cat([const[:, lvl:lvl + 1].expand(bs, h * w, NH, D) for lvl, (h, w) in enumerate(SHAPES)], 1)
    loc = torch.full((bs, 1, NH, 2, P, 2), 0.5, dtype=torch.float64, device=DEV)
    attn = torch.tensor(np.random.default_rng(1).random((bs, 1, NH, 2, P)), dtype=torch.float64, device=DEV)
    out = ms_deform_attn(value, shapes, starts, loc, attn, backend=backend)
    expected = torch.einsum("bhl,blhd->bhd", attn[:, 0].sum(-1), const).reshape(bs, 1, NH * D)
    torch.testing.assert_close(out, expected)


def test_reference_matches_loop():
    rng = np.random.default_rng(2)
    value, loc, attn = _random_inputs(rng)
    shapes, starts = _levels()
    out = ms_deform_attn_torch(value, shapes, starts, loc, attn)
    np.testing.assert_allclose(out.detach().cpu().numpy(), _loop_reference(value, SHAPES, STARTS, loc, attn),
                               rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_kernel_matches_reference_forward_and_gradients(dtype):
    rng = np.random.default_rng(3)
    value, loc, attn = _random_inputs(rng, bs=2, Q=7, NH=2, D=5, P=3, dtype=dtype)
    shapes, starts = _levels()
    gout = torch.tensor(rng.normal(size=(2, 7, 10)), dtype=dtype, device=DEV)
    res = {}
    for be in BACKENDS:
        out = ms_deform_attn(value, shapes, starts, loc, attn, backend=be)
        res[be] = (out.detach(),) + torch.autograd.grad((out * gout).sum(), (value, loc, attn))
    # The two hand-placed locations (a pixel centre, the map's corner) sit on kinks of the
    # bilinear interpolation, where each side's derivative is a valid answer: not compared.
    for r in res.values():
        r[2][0, :2, 0, 0, 0] = 0.0
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=1e-10, atol=1e-10)
    for name, a, b in zip(("out", "value", "loc", "attn"), res["torch"], res["triton"]):
        torch.testing.assert_close(b, a, **tol, msg=lambda m: f"{name}: {m}")
        assert b.dtype == dtype
    assert all(t.abs().sum() > 0 for t in res["torch"])


def test_kernel_gradcheck_and_empty():
    rng = np.random.default_rng(4)
    value, loc, attn = _random_inputs(rng, bs=1, Q=1, NH=2, D=1, P=1, shapes=[(2, 2), (1, 2)])
    shapes, starts = _levels([(2, 2), (1, 2)])
    with torch.no_grad():  # keep the locations off the pixel grid's kinks
        loc.copy_(torch.tensor(rng.uniform(0.05, 0.95, size=loc.shape)))
    assert torch.autograd.gradcheck(lambda v, lo, a: ms_deform_attn(v, shapes, starts, lo, a, backend="triton"),
                                    (value, loc, attn))
    for be in BACKENDS:
        out = ms_deform_attn(value, shapes, starts, loc[:, :0], attn[:, :0], backend=be)
        assert out.shape == (1, 0, 2)


def test_env_switch_reaches_kernel_and_import_is_lazy(monkeypatch):
    code = "import sys, occ_core.ops, occ_core.ops.deform_attn; print('triton' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)})
    assert out.stdout.strip() == "False"
    rng = np.random.default_rng(5)
    value, loc, attn = _random_inputs(rng, bs=1, Q=3)
    shapes, starts = _levels()
    monkeypatch.setenv(ops_backend.BACKEND_ENV, "triton")
    sys.modules.pop("occ_core.ops.triton.deform_attn_kernel", None)
    via_env = ms_deform_attn(value, shapes, starts, loc, attn)
    assert "occ_core.ops.triton.deform_attn_kernel" in sys.modules
    torch.testing.assert_close(via_env, ms_deform_attn(value, shapes, starts, loc, attn, backend="torch"))


def test_bad_inputs_name_the_argument():
    rng = np.random.default_rng(6)
    value, loc, attn = _random_inputs(rng, bs=1, Q=2)
    shapes, starts = _levels()
    cases = [
        ((value[0], shapes, starts, loc, attn), "value"),
        ((value, shapes[:, :1], starts, loc, attn), "spatial_shapes"),
        ((value, shapes.float(), starts, loc, attn), "spatial_shapes"),
        ((value, torch.tensor([[3, 4], [2, 2]]), starts, loc, attn), "spatial_shapes"),  # 16 != 18 keys
        ((value, shapes, torch.tensor([0, 11]), loc, attn), "level_start_index"),
        ((value, shapes, starts[:1], loc, attn), "level_start_index"),
        ((value, shapes, starts, loc[..., :1], attn), "sampling_locations"),
        ((value, shapes, starts, loc[:, :, :1], attn), "sampling_locations"),
        ((value, shapes, starts, loc[:, :, :, :1], attn), "sampling_locations"),
        ((value, shapes, starts, loc, attn[..., :2]), "attention_weights"),
    ]
    for args, name in cases:
        for fn in (ms_deform_attn, ms_deform_attn_torch):
            with pytest.raises(ValueError, match=name):
                fn(*args)
