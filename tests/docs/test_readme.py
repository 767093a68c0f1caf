"""The README's instructions stay true to the project (pins, public API names)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
README = (REPO / "README.md").read_text("utf-8")


def _pins() -> dict[str, str]:
    deps = tomllib.loads((REPO / "pyproject.toml").read_text("utf-8"))["project"]["dependencies"]
    return dict(d.split("==") for d in deps if "==" in d)


def test_cpu_only_torch_install_uses_the_pinned_versions():
    pins = _pins()
    line = next(ln for ln in README.splitlines() if "download.pytorch.org/whl/cpu" in ln)
    assert f"torch=={pins['torch']}" in line
    assert f"torchvision=={pins['torchvision']}" in line
    # the CPU wheels go in before the project, so pip keeps them
    assert README.index("whl/cpu") < README.index("pip install -e .\n```", README.index("whl/cpu"))


def test_python_api_section_names_predict_many_and_the_hypothesis_keys():
    assert "predict_many(" in README
    assert re.search(r"\{province, province_id, cell, lat, lon,\s+probability\}", README)
