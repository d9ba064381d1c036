"""The files mailcase ships inside its package: notice and status-page templates, the sample
config and the example directory, found with importlib.resources wherever the package is installed.

It never looks relative to a source tree or the working directory, and reads nothing else.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

# The repository's top-level templates/ and examples/ directories become these packages in the
# wheel (setup.py maps them), so an installed mailcase and a checkout read the same files.
TEMPLATES_PACKAGE = "mailcase.templates"
EXAMPLES_PACKAGE = "mailcase.examples"


def packaged_templates() -> Path:
    """The directory of the templates shipped with mailcase (`<lang>/…`, `status/…`)."""
    root = resources.files(TEMPLATES_PACKAGE)
    # A wheel installs onto the file system, so this is a real directory that Jinja2's
    # FileSystemLoader can search; a zipped install is not supported and says so.
    path = Path(str(root))
    if not path.is_dir():
        raise RuntimeError(f"mailcase's templates are not a directory on disk: {root}")
    return path


def template_search_path(override_dir: str | Path | None) -> tuple[Path, ...]:
    """Where templates are looked up, first match wins: the operator's `[templates] dir`
    (overrides, file by file), then the packaged templates."""
    packaged = packaged_templates()
    if override_dir:
        return (Path(override_dir), packaged)
    return (packaged,)


def sample_config() -> str:
    """The commented sample `config.toml` (`mailcase config sample`)."""
    return resources.files(EXAMPLES_PACKAGE).joinpath("config.toml").read_text(encoding="utf-8")


def example_directory() -> str:
    """The example customer directory (`mailcase directory example`)."""
    return resources.files(EXAMPLES_PACKAGE).joinpath("directory.toml").read_text(encoding="utf-8")
