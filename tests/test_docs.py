"""The README and .env.example name every setting the runner reads."""

from __future__ import annotations

import pytest

from analytics_refresh.settings import SPECIAL_VARIABLES, VARIABLES
from tests.conftest import ROOT

DOCUMENTED = sorted({*VARIABLES, *SPECIAL_VARIABLES} - {"API_SECRET_KEY_FILE"})


@pytest.mark.parametrize("name", DOCUMENTED)
def test_every_setting_is_in_the_readme_and_env_example(name):
    assert f"`{name}`" in (ROOT / "README.md").read_text(encoding="utf-8")
    assert name in (ROOT / ".env.example").read_text(encoding="utf-8")


@pytest.mark.parametrize(
    ("package", "reader"), [("analytics_refresh", "settings.py"), ("dashboard_api", "config.py")]
)
def test_only_the_settings_module_reads_the_environment(package, reader):
    readers = sorted(
        path.name
        for path in (ROOT / package).glob("*.py")
        if any(word in path.read_text(encoding="utf-8") for word in ("os.environ", "os.getenv"))
    )
    assert readers in ([reader], [])
