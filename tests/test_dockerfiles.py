"""The Dockerfiles agree with the code: settings they set exist, the health
check and the exposed port are the service's."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from api.settings import ServiceSettings

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", ["Dockerfile.cuda", "Dockerfile.cpu"])
def test_dockerfile_matches_the_service(name: str) -> None:
    from api.main import app

    text = (ROOT / name).read_text()
    for var in re.findall(r"\bGPU_PRICER_([A-Z_]+)=", text):
        assert var.lower() in ServiceSettings.model_fields, var
    paths = {getattr(r, "path", None) for r in app.routes}
    for path in re.findall(r"http://127\.0\.0\.1:\d+(/\w+)", text):
        assert path in paths, path
    assert re.search(r"^EXPOSE 8000$", text, re.M)
    assert "GPU_PRICER_PORT=8000" in text
    assert re.search(r"^USER 10001", text, re.M)  # not root
    assert re.search(r"^HEALTHCHECK ", text, re.M)
