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


def choose_kernel(nb, requested: str | None = None, language: str | None = None) -> tuple[str, str]:
    """The kernel to run ``nb`` with, and the language of its code: ``(name, language)``.

    ``requested`` (``-k``) must be installed. Otherwise the notebook's own kernel is used
    when installed, else an installed kernel of the same language (with a warning); with
    no same-language kernel the run fails, naming the kernel and what is installed.
    ``language`` (``-l``) replaces the notebook's language, as papermill's ``-l`` does.
    """
    kernels = installed_kernels()
    name, own_language = notebook_kernel(nb)
    language = (language or "").lower() or None
    if requested:
        if requested not in kernels:
            raise UsageError(
                f"kernel {requested!r} (-k) is not installed; installed kernels: {sorted(kernels)}"
            )
        return requested, language or own_language or kernels[requested] or "python"
    if name and name in kernels:
        return name, language or own_language or kernels[name] or "python"
    language = language or own_language or "python"
    same = sorted(k for k, lang in kernels.items() if lang == language)
    if not same:
        asked = f"kernel {name!r} ({language})" if name else f"a {language} kernel"
        raise UsageError(
            f"the notebook needs {asked}, and no such kernel is installed: no installed "
            f"kernel runs {language} (installed: {sorted(kernels)}); install one, or pass "
            "-k KERNEL to run it with another"
        )
    chosen = "python3" if "python3" in same else same[0]
    if name:
        log.warning(
            "kernel %r is not installed: running with %r, the installed %s kernel",
            name,
            chosen,
            language,
        )
    return chosen, language
