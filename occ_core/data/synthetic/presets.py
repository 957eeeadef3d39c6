"""Named synthetic worlds: the demo's and the learning benchmark's (issue 16).

The benchmark trains on one world and scores on scenes of other seeds, so a model is judged on
roads, buildings, vegetation and traffic it never saw. Each preset is a :class:`SynthConfig`,
so the same name gives byte-identical files on every machine (``occ-synth --preset NAME``).

==================  =======================================  ======================================
preset              what                                     used by
==================  =======================================  ======================================
``demo``            5 scenes x 10 keyframes, seed 0,         ``make demo`` (scene-0005 held out)
                    640x360 images, 4 train / 1 val
``bench-train``     24 scenes x 20 keyframes, seed 100,      ``bench/learning.py``,
                    352x198 images, all 24 in train         ``make train-demo`` (the shipped model)
``bench-heldout``   4 scenes x 20 keyframes, seed 900,       ``bench/learning.py`` (scores),
                    352x198 images, all 4 in val             training-time validation
==================  =======================================  ======================================

352x198 keeps the demo world's 16:9 aspect at twice the models' 176x96 input (the loader then
decodes JPEGs at 1/2 exactly); it renders about 5x faster than 640x360.
"""

from __future__ import annotations

from occ_core.data.synthetic.dataset import SynthConfig
from occ_core.errors import OccDataError

PRESETS: dict[str, SynthConfig] = {
    "demo": SynthConfig(scenes=5, samples_per_scene=10, seed=0),
    "bench-train": SynthConfig(scenes=24, samples_per_scene=20, seed=100, image_size=(352, 198), val_scenes=0),
    "bench-heldout": SynthConfig(scenes=4, samples_per_scene=20, seed=900, image_size=(352, 198), val_scenes=4),
}


def preset(name: str) -> SynthConfig:
    """The :class:`SynthConfig` of a named preset; an unknown name raises OccDataError listing the known ones."""
    try:
        return PRESETS[name]
    except KeyError:
        raise OccDataError(f"preset: unknown synthetic world {name!r}; expected one of {', '.join(PRESETS)}") from None
