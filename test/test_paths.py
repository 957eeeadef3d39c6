"""occ_core.paths: names from data never escape their folder."""

import pytest

from occ_core.errors import OccDataError
from occ_core.paths import checked_join, safe_component, safe_relative


@pytest.mark.parametrize("bad", ["", ".", "..", "../PWNED", "a/b", "a\\b", "/abs", "x\x00y", "x\ny", "x" * 256, 7])
def test_safe_component_refuses(bad):
    with pytest.raises(OccDataError, match="sample.token"):
        safe_component(bad, "sample.token")


@pytest.mark.parametrize("good", ["e93e98b63d3b40209056d129dc53ceee", "scene-0001", "CAM_FRONT", "a.b-c_d"])
def test_safe_component_accepts(good):
    assert safe_component(good, "f") == good


@pytest.mark.parametrize("bad", ["../x.jpg", "samples/../../x.jpg", "/etc/passwd", "\\x", "C:x", "a//b", "a/./b", ""])
def test_safe_relative_refuses(bad):
    with pytest.raises(OccDataError, match="sample_data.filename"):
        safe_relative(bad, "sample_data.filename")


def test_checked_join_inside_and_symlink_escape(tmp_path):
    assert checked_join(tmp_path, "samples/CAM_FRONT/x.jpg", field="f") == tmp_path / "samples/CAM_FRONT/x.jpg"
    (tmp_path / "link").symlink_to(tmp_path.parent)
    with pytest.raises(OccDataError, match="leads outside"):
        checked_join(tmp_path, "link/other", field="f")
