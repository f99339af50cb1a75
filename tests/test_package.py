"""The package's import surface: lazy public names, the timm registration, one home directory, atomic writes."""
import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

import fggp_hub
from fggp_hub import _io, constants

PACKAGE = Path(fggp_hub.__file__).parent


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)


def test_import_is_light_and_registers_models():
    proc = _run(
        "import sys, timm, fggp_hub\n"
        "assert 'datasets' not in sys.modules and 'pyarrow' not in sys.modules, 'eager datasets/pyarrow import'\n"
        "assert timm.list_models('fggp_*'), 'fggp_* architectures not registered with timm'\n"
    )
    assert proc.returncode == 0, proc.stderr


def test_public_names_import():
    proc = _run(
        "from fggp_hub import (CorruptCheckpointError, CubicSchedule, FggpHubError, Pruner, SparsityMismatchError,\n"
        "    UnknownModelError, __version__, evaluate_model, export, list_models, load, prune_step, pull, push,\n"
        "    sparsify_for_inference, sparsity_stats, to_onnx)\n"
        "import fggp_hub\n"
        "from fggp_hub.version import __version__ as v\n"
        "assert fggp_hub.__version__ == v\n"
        "assert fggp_hub.hub.load is fggp_hub.load and fggp_hub.pruning.Pruner is fggp_hub.Pruner\n"
        "ns = {}\n"
        "exec('from fggp_hub import *', ns)\n"
        "assert set(fggp_hub.__all__) <= set(ns)\n"
        "assert set(fggp_hub.__all__) == set(fggp_hub._ATTR_TO_SUBMOD) | {'__version__'}\n"
    )
    assert proc.returncode == 0, proc.stderr
    with pytest.raises(AttributeError, match="no attribute 'not_a_name'"):
        fggp_hub.not_a_name  # noqa: B018


def test_no_module_imports_the_package_init():
    """Modules import what they need from submodules (fggp_hub.version, ...), never names of fggp_hub/__init__.py."""
    submodules = {p.stem for p in PACKAGE.iterdir() if p.suffix == ".py" or (p / "__init__.py").is_file()}
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        if path == PACKAGE / "__init__.py":
            continue
        package = path.relative_to(PACKAGE.parent).parent.parts  # ("fggp_hub", "hub") for fggp_hub/hub/x.py
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                bad = [a.name for a in node.names if a.name == "fggp_hub"]
            elif isinstance(node, ast.ImportFrom):
                base = package[: len(package) - node.level + 1] if node.level else ()
                target = ".".join(base + tuple(filter(None, [node.module])))
                bad = [a.name for a in node.names if target == "fggp_hub" and a.name not in submodules]
            else:
                continue
            offenders += [f"{path.relative_to(PACKAGE)}:{node.lineno} imports {name}" for name in bad]
    assert not offenders


def test_the_hub_never_imports_eval():
    """One-way layering: eval builds on the hub (cards, load), the hub never reaches back into eval."""
    offenders = []
    for path in (PACKAGE / "hub").rglob("*.py"):
        package = path.relative_to(PACKAGE.parent).parent.parts
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = package[: len(package) - node.level + 1] if node.level else ()
                target = ".".join(base + tuple(filter(None, [node.module])))
                targets = [target] + [f"{target}.{a.name}" for a in node.names]
            else:
                continue
            offenders += [f"{path.relative_to(PACKAGE)}:{node.lineno} imports {t}" for t in targets
                          if t == "fggp_hub.eval" or t.startswith("fggp_hub.eval.")]
    assert not offenders


def test_home_dir_precedence(monkeypatch, tmp_path):
    monkeypatch.delenv(constants.ENV_HOME, raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    assert constants.home_dir() == Path("~/.cache/fggp_hub").expanduser()
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert constants.home_dir() == tmp_path / "xdg" / "fggp_hub"
    monkeypatch.setenv(constants.ENV_HOME, str(tmp_path / "home"))
    assert constants.home_dir() == tmp_path / "home"


def test_one_home_for_hub_data_and_native(monkeypatch, tmp_path):
    from fggp_hub.data.cache import default_cache_dir
    from fggp_hub.hub.hubs import default_local_root
    from fggp_hub.hub.zoo import user_index_path
    from fggp_hub.inference.native import _cache_dir

    for name in (constants.ENV_DATA_CACHE, constants.ENV_NATIVE_CACHE, constants.ENV_ZOO_INDEX):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(constants.ENV_HOME, str(tmp_path))
    assert default_local_root() == tmp_path / "hub"
    assert user_index_path() == tmp_path / "zoo_index.json"
    assert default_cache_dir() == tmp_path / "data"
    assert _cache_dir() == tmp_path / "native"


def test_every_environment_variable_is_a_constant():
    """Every FGGP_* variable named in the package's code is defined in constants.py."""
    defined = {v for k, v in vars(constants).items() if k.startswith("ENV_")}
    used = set()
    for path in PACKAGE.rglob("*.py"):
        if path.name != "constants.py":
            used |= set(re.findall(r"[\"'](FGGP_[A-Z0-9_]+)[\"']", path.read_text(encoding="utf-8")))
    assert used <= defined


def test_write_text_atomic(tmp_path):
    target = tmp_path / "out.json"
    _io.write_text_atomic(target, "one\n")
    _io.write_text_atomic(target, "two\n", fsync=False)
    assert target.read_text(encoding="utf-8") == "two\n"
    with pytest.raises(RuntimeError):
        with _io.atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("writer failed")
    assert target.read_text(encoding="utf-8") == "two\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]  # no temporary file left behind


def test_one_error_root_keeps_the_builtin_bases():
    """Every error fggp-hub raises on purpose derives from fggp_hub.errors.FggpHubError, and keeps the
    builtin base older ``except`` clauses rely on; the root carries optional repo_id / path / key."""
    from fggp_hub.cli import CliError
    from fggp_hub.data.cache import CacheCorruptedError
    from fggp_hub.data.errors import DatasetFormatError, DatasetUnavailableError
    from fggp_hub.errors import FggpHubError
    from fggp_hub.eval.errors import CardError, EvalError
    from fggp_hub.hub import errors as hub_errors
    from fggp_hub.onnx import OnnxExportError
    from fggp_hub.recipes import RecipeError, RunError

    assert fggp_hub.FggpHubError is FggpHubError is hub_errors.FggpHubError
    assert CardError is hub_errors.CardError is fggp_hub.eval.CardError is fggp_hub.hub.CardError  # the card module's, re-exported
    pairs = [(CliError, Exception), (CacheCorruptedError, RuntimeError), (DatasetUnavailableError, OSError),
             (DatasetFormatError, ValueError), (CardError, ValueError), (EvalError, ValueError),
             (OnnxExportError, RuntimeError), (RecipeError, ValueError), (RunError, RuntimeError),
             (hub_errors.NotInCacheError, FileNotFoundError), (hub_errors.UnknownModelError, LookupError),
             (hub_errors.CorruptCheckpointError, ValueError), (hub_errors.RepoExistsError, FileExistsError)]
    for cls, builtin in pairs:
        assert issubclass(cls, FggpHubError) and issubclass(cls, builtin), cls
    err = hub_errors.RepoNotFoundError("repo  'a/b'\n not found", repo_id="a/b", path=Path("x"), key="k")
    assert str(err) == "repo 'a/b' not found" and (err.repo_id, err.path, err.key) == ("a/b", "x", "k")
    plain = RecipeError("train.epochs: bad")
    assert (plain.repo_id, plain.path, plain.key) == (None, None, None)


def test_the_runner_raises_typed_errors_not_system_exit():
    text = (PACKAGE.parent / "recipes" / "prune.py").read_text(encoding="utf-8")
    assert "SystemExit(" not in text and "raise RunError(" in text
