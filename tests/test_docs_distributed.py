"""docs/distributed.md, tested as far as this machine allows: its TF_CONFIG passes edgekit's
checks, the Kubernetes manifests parse and their shell line builds a valid TF_CONFIG for every
index, and the Ray example compiles (Ray itself is not installed)."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import yaml

from edgekit.stages.distribute import check_tf_config

DOC = (Path(__file__).resolve().parents[1] / "docs" / "distributed.md").read_text()


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", DOC, flags=re.S)


def test_the_tf_config_example_is_valid_for_the_chief():
    (example,) = _blocks("json")
    cluster = check_tf_config(example)
    assert cluster == {"worker": ["10.0.0.1:12345", "10.0.0.2:12345"]}
    (shell,) = _blocks("bash")
    exported = re.search(r"export TF_CONFIG='(.*?)'", shell).group(1)
    assert json.loads(exported) == json.loads(example)
    assert "--set distill.distribute=multi_worker" in shell


def test_the_kubernetes_job_builds_a_tf_config_per_index():
    (manifests,) = _blocks("yaml")
    service, job = list(yaml.safe_load_all(manifests))
    assert service["kind"] == "Service" and service["spec"]["clusterIP"] == "None"
    spec = job["spec"]
    assert job["kind"] == "Job" and spec["completionMode"] == "Indexed"
    assert spec["completions"] == spec["parallelism"] == 2
    assert spec["template"]["spec"]["subdomain"] == service["metadata"]["name"]
    (container,) = spec["template"]["spec"]["containers"]
    line = container["args"][0]
    setup = line[: line.index("&&")]  # the export, without running edgekit
    for index in (0, 1):
        out = subprocess.run(
            ["/bin/sh", "-c", f'{setup} && printf %s "$TF_CONFIG"'],
            env={"JOB_COMPLETION_INDEX": str(index), "PATH": "/usr/bin:/bin"},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        config = json.loads(out)
        assert config["task"] == {"type": "worker", "index": index}
        assert check_tf_config(out) == {"worker": ["mw-0.mw:12345", "mw-1.mw:12345"]}
    assert "edgekit compress" in line and "distill.distribute=multi_worker" in line


def test_the_ray_example_compiles():
    (example,) = _blocks("python")
    compile(example, "docs/distributed.md (Ray)", "exec")
    assert 'overrides=["distill.distribute=multi_worker"]' in example
