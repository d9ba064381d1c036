"""Maps the repository's data directories into the package, so the wheel carries them and the code
reads them with importlib.resources: templates/ becomes mailcase.templates, examples/ becomes
mailcase.examples and config.toml becomes mailcase/sample/config.toml. The repository's layout
stays the one source; nothing is copied by hand."""
import os

from setuptools import find_namespace_packages, setup

# Repository directory -> package it becomes inside the wheel.
DATA_DIRS = {"templates": "mailcase.templates", "examples": "mailcase.examples"}

packages = find_namespace_packages(include=["mailcase", "mailcase.*"], exclude=["*.__pycache__"])
package_dir = {"": "."}
package_data = {"mailcase.migrations": ["*.mako"]}
for top, name in DATA_DIRS.items():
    for dirpath, dirnames, _ in os.walk(top):
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
        rel = os.path.relpath(dirpath, top)
        package = name if rel == "." else f"{name}.{rel.replace(os.sep, '.')}"
        packages.append(package)
        package_dir[package] = dirpath
        package_data[package] = ["*"]

setup(packages=packages, package_dir=package_dir, package_data=package_data)
