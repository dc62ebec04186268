"""The layering rule, checked on every import in the package (module level and inside
functions): a module imports only from its own layer or the layers below it.

Product layers, top to bottom (``docs/layers.md``)::

    __main__ -> cli -> fs | bulk -> objects -> relay -> multipart -> esdk_objects -> kms_regions
    -> kms -> envelope | store -> aio -> errors | atomicfile | logsafe

``envelope`` and ``store`` are side by side and do not import each other; nor do ``errors``
and ``atomicfile``. ``oss2`` is imported only inside ``store``, the Alibaba Cloud SDK
(``aliyunsdkcore``, ``aliyunsdkkms``) only inside ``kms``. The ``emulator`` is a separate program: it imports nothing of the product
but ``atomicfile``, and only ``cli`` (the ``emulator`` command) imports it.

Inside ``fs``, the rooms of the model import only the rooms below them (``fs/model.py``).
There are no allow-listed violations.
"""
from __future__ import annotations

import ast
import pathlib

PKG = pathlib.Path(__file__).resolve().parents[2] / "ossencfs"

RANK = {"errors": 0, "atomicfile": 0, "checksums": 0, "logsafe": 0, "aio": 1, "credentials": 1,
        "credential_chain": 2, "envelope": 2, "store": 2, "kms": 3,
        "kms_regions": 3.3, "esdk_objects": 3.6, "multipart": 3.7, "relay": 3.8, "objects": 4, "fs": 5, "bulk": 5, "cli": 6,
        "__main__": 7, "__init__": 7}
EMULATOR_MAY_IMPORT = {"emulator", "atomicfile", "checksums"}

#: the rooms of fs/model.py, bottom to top; a room imports only rooms with a lower number
ROOMS = {"context": 0, "attrs": 1, "freshness": 2, "lifecycle": 3, "replay": 4, "metadata": 4,
         "namespace": 5, "rename": 6, "files": 6, "model": 7, "operations": 8, "mounter": 9}

#: (importing module, imported module) -> why it is allowed; empty: nothing to excuse
ALLOWED: dict[tuple[str, str], str] = {}


def _modules() -> list[tuple[str, pathlib.Path]]:
    out = []
    for path in sorted(PKG.rglob("*.py")):
        rel = path.relative_to(PKG.parent).with_suffix("")
        out.append((".".join(rel.parts), path))
    return out


def _imports(mod: str, path: pathlib.Path) -> set[str]:
    """Every ``ossencfs.*`` module ``mod`` imports, resolved to absolute names."""
    tree = ast.parse(path.read_text(), str(path))
    pkg = mod.split(".")[:-1] if path.name != "__init__.py" else mod.split(".")
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "ossencfs"}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg[:len(pkg) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "ossencfs":
                continue
            found.add(target)
            for a in node.names:        # ``from . import keymap`` names a module
                found.add(f"{target}.{a.name}")
    return found


def _group(mod: str) -> str:
    parts = mod.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def _exists(mod: str) -> bool:
    rel = pathlib.Path(*mod.split(".")[1:])
    return (PKG / rel).with_suffix(".py").exists() or (PKG / rel / "__init__.py").exists()


def test_every_group_has_a_layer() -> None:
    groups = {_group(m) for m, _ in _modules() if m != "ossencfs"}
    assert groups - set(RANK) - {"emulator"} == set(), "put new top-level modules in RANK"


def test_no_module_imports_a_layer_above_it() -> None:
    bad = []
    for mod, path in _modules():
        src = _group(mod) if mod != "ossencfs" else "__init__"
        for target in sorted(_imports(mod, path)):
            if not _exists(target) or target == "ossencfs":
                continue                # a name imported from a module, checked as its module
            dst = _group(target)
            if (mod, target) in ALLOWED or dst == src:
                continue
            if src == "emulator":
                ok = dst in EMULATOR_MAY_IMPORT
            elif dst == "emulator":
                ok = src == "cli"
            else:
                ok = RANK[dst] < RANK[src]
            if not ok:
                bad.append(f"{mod} imports {target}")
    assert bad == []


#: third-party SDK -> the one product package that may import it (the emulator is not counted)
SDK_HOME = {"oss2": "store", "aliyunsdkcore": "kms", "aliyunsdkkms": "kms"}


def test_sdks_are_imported_only_in_their_package() -> None:
    bad = []
    for mod, path in _modules():
        if _group(mod) == "emulator":
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                names = [node.module or ""]
            else:
                continue
            for name in names:
                home = SDK_HOME.get(name.split(".")[0])
                if home is not None and _group(mod) != home:
                    bad.append(f"{mod} imports {name}")
    assert bad == []


def test_model_rooms_import_only_rooms_below() -> None:
    bad = []
    for mod, path in _modules():
        parts = mod.split(".")
        if parts[1:2] != ["fs"] or parts[-1] not in ROOMS:
            continue
        for target in _imports(mod, path):
            tparts = target.split(".")
            if tparts[1:2] == ["fs"] and len(tparts) > 2 and tparts[2] in ROOMS \
                    and ROOMS[tparts[2]] >= ROOMS[parts[-1]]:
                bad.append(f"{mod} imports {target}")
    assert bad == []
