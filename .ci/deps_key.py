"""Print a short hash of the project's dependency list (or the list itself).

Used by .ci/run to key the cached virtual environment, so a new environment is
built only when pyproject.toml's dependencies change.
"""
import hashlib
import sys
import tomllib
from pathlib import Path

project = tomllib.loads(Path(__file__).resolve().parents[1].joinpath("pyproject.toml").read_text())["project"]
requirements = list(project["dependencies"]) + list(project.get("optional-dependencies", {}).get("dev", []))

if "--requirements" in sys.argv:
    print("\n".join(requirements))
else:
    blob = "\n".join(requirements + [sys.version.split()[0]]).encode()
    print(hashlib.sha256(blob).hexdigest()[:16])
