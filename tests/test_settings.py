"""One typed settings object: every knob is documented in README, and a bad
value names its variable."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from api.settings import ServiceSettings

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def test_every_setting_is_in_readme() -> None:
    for name in ServiceSettings.model_fields:
        assert f"GPU_PRICER_{name.upper()}" in README, name


def test_bad_value_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GPU_PRICER_MAX_BATCH_OPTIONS", "-5")
    with pytest.raises(ValidationError, match="max_batch_options"):
        ServiceSettings()
