"""Maps the top-level folders (engine/, ipc/, ...) under the ``pycorosync.`` import namespace.

pyproject.toml holds the metadata; this file only computes the package list, which
setuptools cannot express declaratively for a folder-to-namespace mapping.
"""

from setuptools import find_packages, setup

MAPPED = ("engine", "ipc", "transports", "services", "monitoring")


package_dir = {"pycorosync": "pycorosync"}
packages = ["pycorosync"] + [p for p in find_packages(".", include=["pycorosync.*"])]
for top in MAPPED:
    package_dir[f"pycorosync.{top}"] = top
    packages.append(f"pycorosync.{top}")
    packages += [f"pycorosync.{top}.{sub}" for sub in find_packages(top)]

setup(packages=packages, package_dir=package_dir)
