"""Which kubeconfig context a run uses, read as the Kubernetes client reads it (KUBECONFIG's
list merged, the in-cluster service account), checked before any probe runs.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from unibazzar_health.config.errors import NO_VALUE, EnvironmentFileError
from unibazzar_health.config.platform import KubernetesTarget

# Where a pod's service-account token is mounted: in-cluster mode cannot work without it.
SERVICE_ACCOUNT_TOKEN = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")


def _check_kubernetes(path: Path, kube: KubernetesTarget,
                      environ: Mapping[str, str]) -> str | None:
    """A [kubernetes] that cannot be used is the file's error, named once before any probe,
    not a ConfigException in each of the Kubernetes checks."""
    if kube.mode == "url":
        if kube.api_url is None:
            raise EnvironmentFileError(path, "kubernetes.api_url", NO_VALUE,
                                       "required when kubernetes.mode is 'url'")
    elif kube.mode == "in-cluster":
        # What kubernetes.config.load_incluster_config needs.
        unset = [name for name in ("KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT")
                 if not environ.get(name)]
        if unset:
            raise EnvironmentFileError(
                path, "kubernetes.mode", kube.mode,
                f"not inside a Kubernetes pod: {' and '.join(unset)} "
                f"{'is' if len(unset) == 1 else 'are'} not set")
        if not os.access(SERVICE_ACCOUNT_TOKEN, os.R_OK):
            raise EnvironmentFileError(
                path, "kubernetes.mode", kube.mode,
                f"the service-account token ({SERVICE_ACCOUNT_TOKEN}) is not readable: "
                "is a service account mounted in this pod?")
    else:
        return _check_kubeconfig(path, kube, environ)
    return None


def _kubeconfig_paths(environ: Mapping[str, str]) -> tuple[str, list[Path]]:
    """Where the Kubernetes client looks, as it does: KUBECONFIG (a list), else ~/.kube/config."""
    home = environ.get("HOME")

    def expanded(entry: str) -> Path:
        if home and (entry == "~" or entry.startswith("~/")):
            return Path(home) / entry[2:]
        return Path(entry).expanduser()

    if environ.get("KUBECONFIG"):
        listed = [entry for entry in environ["KUBECONFIG"].split(os.pathsep) if entry]
        return f"KUBECONFIG={environ['KUBECONFIG']}", [expanded(entry) for entry in listed]
    default = expanded("~/.kube/config")
    return str(default), [default]


def _check_kubeconfig(path: Path, kube: KubernetesTarget,
                      environ: Mapping[str, str]) -> str | None:
    where, candidates = _kubeconfig_paths(environ)
    # Like the client: files of the list that do not exist are passed over.
    files = [candidate for candidate in candidates if candidate.is_file()]
    if not files:
        lacking = ("names no file that exists" if where.startswith("KUBECONFIG=")
                   else "does not exist and KUBECONFIG is not set")
        raise EnvironmentFileError(
            path, "kubernetes.mode", kube.mode,
            f"no kubeconfig file: {where} {lacking} (without one: mode 'in-cluster' or "
            "'url', or no [kubernetes] section to skip its checks)")
    contexts: dict[str, None] = {}  # ordered, without repeats
    current: str | None = None
    for file in files:
        config = _read_kubeconfig(path, kube, file)
        contexts |= {str(c["name"]): None for c in config.get("contexts") or []
                     if isinstance(c, dict) and "name" in c}
        # The client lets a later file's current-context win; so do we.
        current = str(config["current-context"]) if config.get("current-context") else current
    shown = ", ".join(str(file) for file in files)
    if kube.context is None:
        if current is None:
            raise EnvironmentFileError(
                path, "kubernetes.context", NO_VALUE,
                f"required: the kubeconfig ({shown}) sets no current-context")
    elif kube.context not in contexts:
        raise EnvironmentFileError(
            path, "kubernetes.context", kube.context,
            f"the kubeconfig ({shown}) defines no such context "
            f"(it has: {', '.join(contexts) or 'none'})")
    return kube.context or current


def _read_kubeconfig(path: Path, kube: KubernetesTarget, file: Path) -> dict[str, Any]:
    # Imported here: only a kubeconfig-mode run pays for it (PyYAML comes with kubernetes,
    # without type hints: the project does not add types-PyYAML for one call).
    import yaml  # type: ignore[import-untyped]

    try:
        config = yaml.safe_load(file.read_text(encoding="utf-8"))
    except OSError as exc:
        raise EnvironmentFileError(path, "kubernetes.mode", kube.mode,
                                   f"cannot read the kubeconfig {file} ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        # Only the position: YAML's own message quotes the line, and a kubeconfig holds tokens.
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        raise EnvironmentFileError(path, "kubernetes.mode", kube.mode,
                                   f"the kubeconfig {file} is not valid YAML{at}") from None
    if not isinstance(config, dict):
        raise EnvironmentFileError(path, "kubernetes.mode", kube.mode,
                                   f"the kubeconfig {file} is not a kubeconfig (no mapping)")
    return config

