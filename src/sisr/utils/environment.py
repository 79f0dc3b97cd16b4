"""What a result was made with: ``environment()`` for the ``env.json`` of run and results folders.

sisr's version and git commit (when sisr runs from a git checkout: ``dirty`` when tracked files differ),
Python, torch, CUDA and cuDNN versions, the devices, the process count (``WORLD_SIZE``), the host and
the command line. Nothing here fails: an unknown value is ``None``.
"""

from __future__ import annotations

import os
import platform
import shlex
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

GIT_TIMEOUT_S = 5


def environment(world_size: int | None = None) -> dict[str, Any]:
    from .device import cpu_name

    cuda = torch.cuda.is_available()
    return {
        "sisr": getattr(sys.modules.get("sisr"), "__version__", None),  # the package, imported before this module
        "git": git_state(Path(__file__).resolve().parents[3]),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "cpu": cpu_name(),
        "cpu_threads": torch.get_num_threads(),
        "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if cuda else [],
        "world_size": world_size if world_size is not None else int(os.environ.get("WORLD_SIZE", "1")),
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "command": shlex.join([Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "python", *sys.argv[1:]]),
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def git_state(folder: Path) -> dict[str, Any] | None:
    """``{"commit": sha, "dirty": bool}`` of the git checkout holding ``folder``, None outside one."""
    if not any((p / ".git").exists() for p in (folder, *folder.parents)):
        return None

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", "-C", str(folder), *args], capture_output=True, text=True,
                                 timeout=GIT_TIMEOUT_S, check=True)
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout.strip()

    commit = git("rev-parse", "HEAD")
    if commit is None:
        return None
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": None if status is None else bool(status)}
