"""Assemble a function's build context the way ``faas-cli build --shrinkwrap`` does.

For each function in stack.yml: ``build/<fn>`` is made anew, the whole ``template/<lang>/``
is copied in, then every entry of the handler folder is copied over its ``handler_folder``
(entries named ``build`` or ``template`` are skipped). Run as
``python -m harness.shrinkwrap [stack.yml]``.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import yaml

#: Handler entries faas-cli never copies into the context.
SKIPPED = frozenset({"build", "template"})


def shrinkwrap(root: Path, name: str, function: dict[str, object], build_dir: Path | None = None) -> Path:
    """Write ``<build_dir>/<name>`` (``build/<name>`` by default) for one function of the stack."""
    language = str(function["lang"]).lower()
    template = root / "template" / language
    spec = yaml.safe_load((template / "template.yml").read_text())
    context = (build_dir or root / "build") / name
    shutil.rmtree(context, ignore_errors=True)
    shutil.copytree(template, context, ignore=shutil.ignore_patterns("__pycache__"))
    target = context / str(spec.get("handler_folder") or "function")
    target.mkdir(exist_ok=True)
    for entry in sorted((root / str(function["handler"])).iterdir()):
        if entry.name in SKIPPED or entry.name == "__pycache__":
            continue
        if entry.is_dir():
            shutil.copytree(entry, target / entry.name, dirs_exist_ok=True)
        else:
            shutil.copy2(entry, target / entry.name)
    return context


def main(argv: list[str]) -> int:
    stack_file = Path(argv[1] if len(argv) > 1 else "stack.yml").resolve()
    stack = yaml.safe_load(stack_file.read_text())
    for name, function in sorted(stack["functions"].items()):
        context = shrinkwrap(stack_file.parent, name, function)
        print(f"{name} shrink-wrapped to ./{context.relative_to(stack_file.parent)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
