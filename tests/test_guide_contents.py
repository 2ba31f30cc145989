"""The guide's table of contents lists every section, and every link inside it resolves."""

from __future__ import annotations

import importlib.util
import re

from tests.conftest import ROOT


def contents_module():
    spec = importlib.util.spec_from_file_location(
        "guide_contents", ROOT / "scripts" / "guide_contents.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_contents_list_every_section_in_order():
    module = contents_module()
    text = module.GUIDE.read_text(encoding="utf-8")
    assert module.rewrite(text) == text, "run: python scripts/guide_contents.py"


def test_every_link_to_a_section_resolves_in_the_guide_and_the_readme():
    module = contents_module()
    for path in (module.GUIDE, ROOT / "README.md"):
        text = path.read_text(encoding="utf-8")
        anchors = {module.anchor(title) for _, title in module.headings(text)} | {"contents"}
        for target in re.findall(r"\]\(#([^)]+)\)", text):
            assert target in anchors, (path.name, target)
