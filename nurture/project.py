"""Project directories: where the example content lives and how ``nurture init`` copies it."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from nurture.config import CONFIG_FILENAME
from nurture.errors import ProjectError

#: What a project holds, in the order ``init`` copies it.
PROJECT_ITEMS = (CONFIG_FILENAME, "scoring.yaml", "leads.csv", "sequences", "templates", "forms")


def example_dir() -> Path:
    """The example project shipped with nurture.

    An installed wheel carries it in ``nurture/_example``; a source checkout (an editable
    install) uses the repository root, where the examples are maintained.
    """
    packaged = Path(__file__).parent / "_example"
    if (packaged / CONFIG_FILENAME).is_file():
        return packaged
    checkout = Path(__file__).parent.parent
    if (checkout / CONFIG_FILENAME).is_file() and (checkout / "sequences").is_dir():
        return checkout
    raise ProjectError("the example project is missing from this installation of nurture")


def init_project(target: Path) -> list[Path]:
    """Copy the example project into *target*; return what was created.

    Refuses, before copying anything, when any project file is already there.
    """
    source = example_dir()
    existing = [target / item for item in PROJECT_ITEMS if (target / item).exists()]
    if existing:
        names = ", ".join(str(path) for path in existing)
        raise ProjectError(f"{target} already holds a project ({names}): nothing was changed")
    if target.exists() and not target.is_dir():
        raise ProjectError(f"{target} exists and is not a directory")
    target.mkdir(parents=True, exist_ok=True)
    created = []
    for item in PROJECT_ITEMS:
        origin, destination = source / item, target / item
        if origin.is_dir():
            shutil.copytree(origin, destination, ignore=shutil.ignore_patterns("__pycache__"))
        elif item == CONFIG_FILENAME:
            # Settings hold secrets (passwords, keys): readable by their owner only.
            descriptor = os.open(destination, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with open(descriptor, "wb") as handle:
                handle.write(origin.read_bytes())
            os.chmod(destination, 0o600)  # whatever the umask said
        else:
            shutil.copy2(origin, destination)
        created.append(destination)
    return created
