"""The bundled zoo: published repo folders that ship with the project, so zoo names load offline.

Each published entry is committed as a complete Hub repo folder under ``model_cards/<name>/``
(config.json, model.sparse.safetensors, card, plots, eval results, recipe), without the
dense ``model.safetensors``: ``load`` rebuilds the model from the compact file. The zoo
index pins the sha256 of every bundled file, so a bundled copy is verified like any other
source and is never written to.

Where the folders are found: ``$FGGP_BUNDLED_ZOO``, else the ``model_cards/`` folder of the
checkout this package runs from (a clone, or an editable install). A wheel does not carry
them (they would make it ~6 MB); there, zoo names come from the user's local hub or the
Hugging Face Hub, and :func:`missing_hint` says in one line how to get the bundled copies.
"""
from __future__ import annotations

import os
from pathlib import Path

from ..constants import ENV_BUNDLED_ZOO
from .errors import CorruptCheckpointError
from .integrity import sha256_file, validate_filename

__all__ = ["ENV_BUNDLED_ZOO", "bundled_root", "bundled_folder", "missing_hint"]

_CHECKOUT_ZOO = Path(__file__).resolve().parents[2] / "model_cards"
_MARKER = "ZOO.md"  # model_cards/ of a checkout has it; a random folder named model_cards does not


def bundled_root() -> Path | None:
    """The folder holding the bundled repo folders, or None (a wheel install without ``$FGGP_BUNDLED_ZOO``)."""
    env = os.environ.get(ENV_BUNDLED_ZOO)
    if env:
        path = Path(env).expanduser()
        return path if path.is_dir() else None
    return _CHECKOUT_ZOO if (_CHECKOUT_ZOO / _MARKER).is_file() else None


def bundled_folder(name: str, pins: dict[str, str] | None) -> Path | None:
    """The verified bundled folder of zoo entry ``name``, or None when this install has none.

    Every file pinned in the index must be there with that sha256; anything else means the
    copy was changed, and it is refused rather than loaded.
    """
    root = bundled_root()
    if not pins or root is None:
        return None
    folder = root / name
    if not folder.is_dir():
        return None
    for filename, expected in sorted(pins.items()):
        validate_filename(filename, where=f"the zoo index entry {name}")
        path = folder / filename
        if not path.is_file() or path.is_symlink():
            raise CorruptCheckpointError(f"bundled zoo copy {folder} lacks {filename}: restore it "
                                         f"(git checkout -- model_cards/{name}) or unset {ENV_BUNDLED_ZOO}")
        if sha256_file(path) != expected:
            raise CorruptCheckpointError(f"bundled zoo copy {path} does not match the sha256 pinned in the zoo index: "
                                         f"restore it (git checkout -- model_cards/{name})")
    return folder


def missing_hint(name: str, repo_id: str) -> str:
    """One line: where the weights of a zoo entry can come from when none of the sources has them."""
    return (f"zoo model {name!r} is not in your local hub and this install has no bundled zoo "
            f"(a wheel does not carry model_cards/): clone the fggp-hub repository and set {ENV_BUNDLED_ZOO}="
            f"<clone>/model_cards, or go online (unset HF_HUB_OFFLINE) to download {repo_id} from the Hugging Face Hub")
