"""Pick the Jupyter kernel for a notebook, falling back to an installed one of the same language."""

from __future__ import annotations

import logging

from jobcommon.errors import UsageError

log = logging.getLogger(__name__)


def installed_kernels() -> dict[str, str]:
    """Installed kernel names and their languages (lower case)."""
    from jupyter_client.kernelspec import KernelSpecManager

    specs = KernelSpecManager().get_all_specs()
    return {name: str(info["spec"].get("language", "")).lower() for name, info in specs.items()}


def notebook_kernel(nb) -> tuple[str | None, str | None]:
    """The kernel name and language a notebook asks for (either may be None)."""
    spec = nb.metadata.get("kernelspec", {}) or {}
    language = spec.get("language") or (nb.metadata.get("language_info", {}) or {}).get("name")
    return spec.get("name"), (str(language).lower() if language else None)


def choose_kernel(nb, requested: str | None = None) -> str:
    """The kernel to run ``nb`` with.

    ``requested`` (``-k``) must be installed. Otherwise the notebook's own kernel is used
    when installed, else an installed kernel of the same language (with a warning); with
    no same-language kernel the run fails with the list of what is installed.
    """
    kernels = installed_kernels()
    if requested:
        if requested not in kernels:
            raise UsageError(
                f"kernel {requested!r} (-k) is not installed; installed kernels: {sorted(kernels)}"
            )
        return requested
    name, language = notebook_kernel(nb)
    if name and name in kernels:
        return name
    language = language or (kernels.get(name) if name else None) or "python"
    same = sorted(k for k, lang in kernels.items() if lang == language)
    if not same:
        raise UsageError(
            f"the notebook asks for kernel {name!r} ({language}), which is not installed, and "
            f"no installed kernel runs {language}: installed {kernels}; install one or pass -k"
        )
    chosen = "python3" if "python3" in same else same[0]
    if name:
        log.warning(
            "kernel %r is not installed: running with %r, the installed %s kernel",
            name,
            chosen,
            language,
        )
    return chosen
