"""The project's shape: recorder/ works without Prefect; prefect.yaml points at real flows."""

from __future__ import annotations

import importlib
import pkgutil
import subprocess
import sys
from pathlib import Path

import yaml
from prefect import Flow

ROOT = Path(__file__).resolve().parents[1]


def test_recorder_package_never_imports_prefect() -> None:
    code = (
        "import importlib, pkgutil, sys, recorder\n"
        "for m in pkgutil.walk_packages(recorder.__path__, 'recorder.'):\n"
        "    importlib.import_module(m.name)\n"
        "print(sorted(n for n in sys.modules if n.split('.')[0] == 'prefect'))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "[]"


def test_prefect_yaml_deployments_point_at_flows() -> None:
    config = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    assert config["deployments"]
    for deployment in config["deployments"]:
        path, name = deployment["entrypoint"].split(":")
        module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
        assert isinstance(getattr(module, name), Flow), deployment["name"]
        assert deployment["work_pool"]["name"]


def test_every_task_module_defines_a_prefect_task() -> None:
    from prefect import Task

    import tasks

    # The pipeline's steps, the previews beside each file, and stopping the TRTC relays a
    # run started.
    steps = {"join", "record", "transcode", "upload", "previews", "callback", "cleanup", "relays"}
    found = set()
    for module_info in pkgutil.iter_modules(tasks.__path__):
        module = importlib.import_module(f"tasks.{module_info.name}")
        if any(isinstance(value, Task) for value in vars(module).values()):
            found.add(module_info.name)
    assert found == steps
