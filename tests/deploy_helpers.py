"""Read deploy/ (Kubernetes manifests, compose file, Dockerfile) for the tests."""

from __future__ import annotations

import ast
import re
import shlex
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
K8S = DEPLOY / "k8s"


def k8s_objects(*, include_examples: bool = True) -> list[dict[str, Any]]:
    """Every object of every manifest under deploy/k8s/ (kustomization.yaml excluded)."""
    out = []
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        if not include_examples and ".example." in path.name:
            continue
        out.extend(doc for doc in yaml.safe_load_all(path.read_text()) if doc)
    return out


def k8s_object(kind: str, name: str | None = None) -> dict[str, Any]:
    """The one object of ``kind`` (and ``name``)."""
    found = [
        o
        for o in k8s_objects()
        if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)
    ]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def pod_spec(obj: dict[str, Any]) -> dict[str, Any]:
    """The pod spec of a Deployment or Job."""
    return obj["spec"]["template"]["spec"]


def kustomization() -> dict[str, Any]:
    return yaml.safe_load((K8S / "kustomization.yaml").read_text())


def compose() -> dict[str, Any]:
    """deploy/compose.yaml with its YAML anchors resolved."""
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())


def option(args: list[str], name: str) -> str | None:
    """The value of ``--name=value`` or ``--name value`` in ``args``."""
    for i, arg in enumerate(args):
        if arg == name and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


def dockerfile() -> list[tuple[str, str]]:
    """``(INSTRUCTION, arguments)`` of deploy/Dockerfile, continuation lines joined."""
    text = re.sub(r"\\\n", " ", (DEPLOY / "Dockerfile").read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def exec_form(arguments: str) -> list[str]:
    """A Dockerfile JSON (exec-form) argument list, or the shell form split."""
    arguments = arguments.strip()
    return (
        list(ast.literal_eval(arguments)) if arguments.startswith("[") else shlex.split(arguments)
    )


def env_names_read_by_promptcal() -> set[str]:
    """Environment variable names promptcal's source reads (string literals passed to
    ``os.environ.get``/``os.getenv``/``os.environ[...]``)."""
    names = set()
    pattern = re.compile(
        r"""(?:environ\.get|getenv|environ\.setdefault|environ\[)\(?\s*["']([A-Z0-9_]+)["']"""
    )
    for path in (REPO / "src" / "promptcal").rglob("*.py"):
        names.update(pattern.findall(path.read_text(encoding="utf-8")))
    return names


def env_names_read_by_numba() -> set[str]:
    """``NUMBA_*`` names that the installed Numba's configuration reads."""
    import numba.core.config

    text = Path(numba.core.config.__file__).read_text(encoding="utf-8")
    return set(re.findall(r"""["'](NUMBA_[A-Z0-9_]+)["']""", text))
