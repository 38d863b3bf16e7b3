"""The end-of-day revaluation CronJob runs the bulk CLI with arguments the CLI
accepts, on the service's image, with its volume and settings in the same
overlay, and with a GPU in the gpu overlay."""

from __future__ import annotations

import shlex

import pytest

from api.settings import ServiceSettings

from .test_k8s import OVERLAYS, _kind, _render


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_cronjob_runs_the_cli_with_valid_arguments(overlay: str) -> None:
    from gpu_pricer import cli

    docs = _render(overlay)
    cron = _kind(docs, "CronJob", "gpu-pricer-eod-revaluation")
    pod = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    deployment = _kind(docs, "Deployment", "gpu-pricer")
    assert container["image"] == deployment["spec"]["template"]["spec"]["containers"][0]["image"]
    script = container["args"][0]
    command = script.split("exec ", 1)[1].replace('"$out', '"/data/out/2026-01-02')
    argv = shlex.split(command)
    assert argv[0] == "gpu-pricer"
    args = cli._parser().parse_args(argv[1:])  # exits (SystemExit) on a bad argument
    assert args.command == "price"
    assert str(args.book).startswith("/data/") and str(args.output).startswith("/data/out/")
    # every path it writes is on the books volume, mounted read-write
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    assert mounts["books"]["mountPath"] == "/data" and not mounts["books"].get("readOnly")
    claim = next(v for v in pod["volumes"] if v["name"] == "books")
    claim_name = claim["persistentVolumeClaim"]["claimName"]
    assert _kind(docs, "PersistentVolumeClaim", claim_name)
    # settings come from the service's ConfigMap, and each is a real setting
    config = _kind(docs, "ConfigMap", container["envFrom"][0]["configMapRef"]["name"])
    fields = {f"GPU_PRICER_{k.upper()}" for k in ServiceSettings.model_fields}
    assert set(config["data"]) <= fields
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    limits = container["resources"]["limits"]
    assert ("nvidia.com/gpu" in limits) == (overlay == "gpu")
