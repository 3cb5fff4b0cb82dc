"""Where results, figures and data live, whatever the caller's working directory.

A relative path is ambiguous: ``"../results"`` in a notebook means one folder when
Jupyter runs the notebook from ``notebooks/`` and another when papermill is started
from the repository root.  Every default here is therefore absolute:

* :func:`repo_root` -- the clone this package was imported from (an editable install),
  or ``None`` for a package installed into site-packages;
* :func:`results_root` -- ``$ADAPT_RESULTS`` if set, else ``<repo>/results``, else
  ``./results``;
* :func:`figures_root` -- ``$ADAPT_FIGURES`` if set, else ``<repo>/figures``, else
  ``./figures``;
* :func:`resolve` -- an explicit relative path is taken relative to the repository
  (the notebooks' convention), an absolute one as is.

The command line (``adapt run``, ``python -m adapt grid``) resolves relative paths
against the shell's working directory before it calls the library, as any command
does.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Union

__all__ = ["RESULTS_ENV", "FIGURES_ENV", "repo_root", "base_dir", "results_root", "figures_root", "resolve", "display"]

RESULTS_ENV = "ADAPT_RESULTS"
FIGURES_ENV = "ADAPT_FIGURES"

PathLike = Union[str, os.PathLike]


def repo_root() -> Optional[Path]:
    """The repository this package was imported from, or ``None`` when it is installed."""
    here = Path(__file__).resolve().parents[1]
    if (here / "pyproject.toml").is_file() and (here / "adapt").is_dir() and (here / "notebooks").is_dir():
        return here
    return None


def base_dir() -> Path:
    """What relative paths are taken relative to: the repository, else the working directory."""
    return repo_root() or Path.cwd()


def resolve(path: Optional[PathLike], default: Optional[Path] = None) -> Path:
    """``path`` made absolute: relative to the repository (else the cwd); ``None`` gives ``default``."""
    if path is None or str(path) == "":
        if default is None:
            raise ValueError("no path given and no default")
        return default
    p = Path(path).expanduser()
    return p if p.is_absolute() else (base_dir() / p).resolve()


def env_path(name: str) -> Optional[Path]:
    value = os.environ.get(name, "").strip()
    if not value:
        return None
    p = Path(value).expanduser()
    if p.exists() and not p.is_dir():
        raise ValueError(f"${name}={value!r} is a file, not a folder: point ${name} at a directory "
                         f"(it is created when missing) or unset it")
    return p if p.is_absolute() else (Path.cwd() / p).resolve()


def results_root(path: Optional[PathLike] = None) -> Path:
    """The results folder: ``path`` (see :func:`resolve`), else ``$ADAPT_RESULTS``, else ``<repo>/results``."""
    return resolve(path, env_path(RESULTS_ENV) or base_dir() / "results")


def figures_root(path: Optional[PathLike] = None) -> Path:
    """The figures folder: ``path`` (see :func:`resolve`), else ``$ADAPT_FIGURES``, else ``<repo>/figures``."""
    return resolve(path, env_path(FIGURES_ENV) or base_dir() / "figures")


def display(path: PathLike) -> str:
    """``path`` relative to the repository when it lies inside it, so printed lines and executed
    notebooks carry no machine-specific prefix; otherwise as given."""
    p = Path(path)
    root = repo_root()
    if root is not None:
        try:
            return p.resolve().relative_to(root).as_posix()
        except ValueError:
            pass
    return str(p)
