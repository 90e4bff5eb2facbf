"""Only the package list, which pyproject.toml cannot compute: the plugin (plugins/) and the
checks (checks/) ship in one wheel, so an image's catalog and the checks naming its ids cannot
drift apart. checks/ installs as ``unibazzar_health_checks`` (an unambiguous name); its service
folders are namespace packages, imported by path by pytest. Everything else: pyproject.toml."""

from setuptools import find_namespace_packages, find_packages, setup

CHECKS = "unibazzar_health_checks"

setup(
    package_dir={"": "plugins", CHECKS: "checks"},
    packages=[
        *find_packages("plugins"),
        CHECKS,
        *(f"{CHECKS}.{name}"
          for name in find_namespace_packages("checks", exclude=["*__pycache__*"])),
    ],
)
