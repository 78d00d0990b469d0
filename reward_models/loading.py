"""`from_pretrained` with one clear message when a hub id cannot be reached (this package and `ric`
load every hub model through it)."""

from __future__ import annotations

import os


def load_pretrained(cls, name_or_path: str, what: str, **kwargs):
    """`cls.from_pretrained(name_or_path, **kwargs)`; a hub id that cannot be reached raises one OSError
    that names the model and says to make it available locally."""
    try:
        return cls.from_pretrained(name_or_path, **kwargs)
    except OSError as err:
        if os.path.isdir(name_or_path):
            raise
        raise OSError(
            f"cannot load the {what} {name_or_path!r}: it is not a local folder and the Hugging Face hub "
            f"could not provide it ({type(err).__name__}). Make it available locally (download it on a machine "
            "with the hub and pass the folder's path) or run where the hub is reachable."
        ) from None
