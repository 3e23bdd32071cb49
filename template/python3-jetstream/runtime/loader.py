"""Find and import the function package.

In the image the handler is overlaid into ``function/`` beside ``index.py``; for a local run or
tests, ``handler_dir`` points at any folder (``queue-worker/``, say). Either way it is imported
as the package ``function``, so its modules may use relative imports.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from importlib.machinery import ModuleSpec
from pathlib import Path
from types import ModuleType

from .contract import UNNAMED, Function
from .errors import HandlerLoadError

#: The package name the handler folder is imported under, as in the image.
PACKAGE = "function"


def import_package(directory: Path, name: str = PACKAGE) -> ModuleType:
    """Import ``directory`` as package ``name`` (its ``__init__.py`` may be absent)."""
    init = directory / "__init__.py"
    spec: ModuleSpec | None
    if init.exists():
        spec = importlib.util.spec_from_file_location(name, init, submodule_search_locations=[str(directory)])
    else:
        spec = ModuleSpec(name, None, is_package=True)
        spec.submodule_search_locations = [str(directory)]
    if spec is None:
        raise HandlerLoadError(f"cannot import {directory} as a package")
    package = importlib.util.module_from_spec(spec)
    sys.modules[name] = package
    if spec.loader is not None:
        spec.loader.exec_module(package)
    return package


def load_function(directory: Path) -> Function:
    """Import ``handler.py`` from ``directory`` and return its entry points.

    Raises:
        HandlerLoadError: the folder or module is missing, fails to import, or has no ``handle``.
    """
    if not (directory / "handler.py").is_file():
        raise HandlerLoadError(f"no handler.py in {directory}")
    try:
        import_package(directory)
        module = importlib.import_module(f"{PACKAGE}.handler")
    except Exception as exc:
        raise HandlerLoadError(f"importing {directory / 'handler.py'} failed: {exc!r}") from exc
    handle = getattr(module, "handle", None)
    if not callable(handle):
        raise HandlerLoadError(f"{directory / 'handler.py'} defines no handle(event, context)")
    return Function(
        handle=handle,
        on_startup=getattr(module, "on_startup", None),
        on_connect=getattr(module, "on_connect", None),
        on_shutdown=getattr(module, "on_shutdown", None),
        http_routes=getattr(module, "http_routes", None),
        metrics_namespace=getattr(module, "METRICS_NAMESPACE", None),
        name=str(getattr(module, "NAME", "") or UNNAMED),
        env_defaults=dict(getattr(module, "ENV_DEFAULTS", {})),
    )
