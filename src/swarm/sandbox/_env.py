"""The training child's environment: an allow-list, never a block-list.

Only what training needs passes: locale and time zone, thread counts, the CUDA/NCCL
settings, ``LD_LIBRARY_PATH``, a few offline switches, and ``AUTORESEARCH_*`` (the
track's own knobs). Anything whose name looks like a credential is dropped even when
allowed (``AUTORESEARCH_API_TOKEN``), and a URL value loses its userinfo
(``https://user:pw@host/`` -> ``https://host/``). ``HOME``, ``TMPDIR``, ``USER`` and
``PATH`` are set by the sandbox, not inherited.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

__all__ = ["allowed_env", "strip_userinfo"]

_EXACT = frozenset(
    {
        "LANG", "LANGUAGE", "TZ", "LD_LIBRARY_PATH", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
        "OPENBLAS_NUM_THREADS", "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE",
        "PYTORCH_CUDA_ALLOC_CONF", "TORCH_CUDA_ARCH_LIST", "HF_HUB_OFFLINE",
        "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE", "NVIDIA_VISIBLE_DEVICES",
        "NVIDIA_DRIVER_CAPABILITIES",
    }
)  # fmt: skip
_PREFIXES = ("LC_", "AUTORESEARCH_", "CUDA_", "NCCL_")
_CREDENTIAL = re.compile(
    r"KEY|TOKEN|SECRET|PASS|CRED|AUTH|COOKIE|SESSION|PRIVATE|CERT", re.IGNORECASE
)
_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)[^/@\s]*@")


def strip_userinfo(value: str) -> str:
    """``value`` with the ``user:password@`` part of every URL in it removed."""
    return _USERINFO.sub(lambda m: m.group("scheme"), value)


def allowed_env(source: Mapping[str, str]) -> dict[str, str]:
    """The allow-listed part of ``source``, credentials dropped, URLs without userinfo."""
    out: dict[str, str] = {}
    for name, value in source.items():
        if name not in _EXACT and not name.startswith(_PREFIXES):
            continue
        if _CREDENTIAL.search(name):
            continue
        out[name] = strip_userinfo(value)
    return out
