"""The package's shape: layers without import cycles, small modules, and lazy imports only of leaves.

The import graph counts every import of a bnncompress module, at module level, under
``if TYPE_CHECKING:`` (a circle for the type checker is one for a reader too) or inside a
function (importing ``a.b.c`` also imports the packages ``a.b``; the root package is left
out, since every module is imported through it). A cycle is a strongly connected set of
more than one module.

    python tests/test_architecture.py /path/to/bnncompress   # prints modules, edges, cycles
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "bnncompress"
#: numba kernel modules: imported inside functions so that ``import bnncompress`` does not import numba.
LAZY_LEAVES = {
    "bnncompress._ans",
    "bnncompress._rows_kernels",
    "bnncompress._vbq_cpu",
    "bnncompress._ecsq_cpu",
    "bnncompress._exactsum_kernels",
    "bnncompress._pipeline_kernels",
    "bnncompress._pickle_kernels",
    "bnncompress._transform_cpu",
    "bnncompress._skipgram_kernels",
    "bnncompress._skipgram_torch",
    "bnncompress.serving",
}
MAX_MODULE_LINES = 400


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _kernel_name(name: str) -> str:
    """``bnncompress.quantizers._vbq_cpu`` and ``bnncompress._vbq_cpu`` are the same kind of leaf."""
    return "bnncompress." + name.rsplit(".", 1)[-1]


def imports(root: Path = PACKAGE) -> dict[str, list[tuple[str, bool]]]:
    """module -> [(imported package module, inside a function?)] for every module under ``root``."""
    modules = {_module_name(p, root): p for p in root.rglob("*.py")}
    graph: dict[str, list[tuple[str, bool]]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        found = []
        tree = ast.parse(path.read_text())
        local = {
            id(n) for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef)) for n in ast.walk(f)
        }
        for node in ast.walk(tree):
            if not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names if a.name.startswith("bnncompress")]
            else:
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                if not base.startswith("bnncompress"):
                    continue
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            for target in targets:
                while target not in modules and "." in target:
                    target = target.rpartition(".")[0]
                parts = target.split(".")
                for i in range(2, len(parts) + 1):  # the packages on the way are imported too ...
                    step = ".".join(parts[:i])
                    ancestor = name.startswith(step + ".")  # ... but the importer's own are already there
                    if step != name and step in modules and (step == target or not ancestor):
                        found.append((step, id(node) in local))
        graph[name] = sorted(set(found))
    return graph


def cycles(graph: dict[str, list[tuple[str, bool]]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), over all imports."""
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w, _ in graph.get(v, []):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_no_import_cycles():
    assert cycles(imports()) == []


def test_type_checking_imports_count_towards_cycles(tmp_path):
    package = tmp_path / "bnncompress"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "reader.py").write_text("from .writer import write\n")
    (package / "writer.py").write_text(
        "from typing import TYPE_CHECKING\n\nif TYPE_CHECKING:\n    from .reader import Reader\n"
    )
    assert cycles(imports(package)) == [["bnncompress.reader", "bnncompress.writer"]]


def test_function_local_imports_are_only_of_numba_kernel_leaves():
    graph = imports()
    lazy = {(m, t) for m, edges in graph.items() for t, inside in edges if inside}
    assert {(m, t) for m, t in lazy if _kernel_name(t) not in LAZY_LEAVES} == set()
    helpers = {"bnncompress._ans", "bnncompress.forksafe", "bnncompress.numbaenv", "bnncompress.quantizers"}
    for leaf in {t for _, t in lazy}:  # the leaves import no other package module (but the coder's helpers)
        assert {t for t, _ in graph[leaf]} <= helpers, leaf


def test_modules_stay_small():
    long = {p.name: n for p in PACKAGE.rglob("*.py") if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES}
    assert long == {}


if __name__ == "__main__":
    root = Path(sys.argv[1]) if len(sys.argv) > 1 else PACKAGE
    g = imports(root)
    edges = sum(len(v) for v in g.values())
    lazy = sum(inside for v in g.values() for _, inside in v)
    found = cycles(g)
    print(f"{len(g)} modules, {edges} import edges ({lazy} inside functions), {len(found)} cycles")
    for c in found:
        print(f"  cycle of {len(c)}: {' '.join(c)}")


def imported_kernels() -> dict[str, list]:
    """Per module of the package, the numba kernels it takes from another module (sorted by name)."""
    import importlib
    import pkgutil

    from numba.core.registry import CPUDispatcher

    import bnncompress

    found = {}
    for info in pkgutil.walk_packages(bnncompress.__path__, "bnncompress."):
        if info.name.endswith("__main__"):  # (runs the command line)
            continue
        module = importlib.import_module(info.name)
        taken = [k for k in vars(module).values() if isinstance(k, CPUDispatcher) and k.py_func.__module__ != info.name]
        if taken:
            found[info.name] = sorted(taken, key=lambda k: k.py_func.__qualname__)
    return found


def names_read(func) -> set[str]:
    """The global names ``func`` reads, in nested code objects too."""
    import types

    names, codes = set(), [func.__code__]
    while codes:
        code = codes.pop()
        names.update(code.co_names)
        codes.extend(c for c in code.co_consts if isinstance(c, types.CodeType))
    return names


def constants_read(kernel) -> str:
    """The numbers and arrays of its module ``kernel`` reads (numba compiles them in as constants; by their bytes,
    not repr: numpy 1 and 2 print np.uint64 apart)."""
    import numpy as np

    func, out = kernel.py_func, []
    for name in sorted(names_read(func)):
        value = func.__globals__.get(name)
        if isinstance(value, (bool, int, float, np.generic, np.ndarray)):
            out.append(f"{name}={np.asarray(value).dtype.str}{np.asarray(value).tobytes().hex()}")
    return "".join(out)


def compiled_in(kernel, seen: set | None = None) -> str:
    """What numba compiles into a caller of ``kernel``: its source, the constants it reads, and the same of the
    kernels it calls, recursively."""
    import inspect

    from numba.core.registry import CPUDispatcher

    seen = set() if seen is None else seen
    if id(kernel) in seen:
        return ""
    seen.add(id(kernel))
    func = kernel.py_func
    called = [func.__globals__.get(n) for n in sorted(names_read(func))]
    inner = "".join(compiled_in(k, seen) for k in called if isinstance(k, CPUDispatcher))
    return inspect.getsource(func) + constants_read(kernel) + inner


def test_a_kernel_module_changes_with_the_kernels_it_takes_from_another():
    """numba's on-disk cache of a kernel notices changes to the kernel's own file only: one that inlines or calls a
    kernel of another module keeps the old code in every checkout whose cache predates a change to it (acd15e5
    changed _ans.pop_symbol and not _rows_kernels.py, whose lookups kept the linear scan in such checkouts until an
    unrelated edit). So such a module quotes a digest of those kernels' sources: changing one edits it too."""
    import hashlib
    import inspect

    from numba.core.registry import CPUDispatcher

    for name, kernels in imported_kernels().items():
        own = [k for k in vars(sys.modules[name]).values() if isinstance(k, CPUDispatcher) and k not in kernels]
        # the imported kernels as compiled in, and the constants the module's own kernels read (OK, WORDS_LEFT, ...
        # imported from the other module are frozen into them too; the module's own source changes with its own)
        text = "".join(compiled_in(k) for k in kernels) + "".join(constants_read(k) for k in own)
        digest = hashlib.sha256(text.encode()).hexdigest()[:16]
        source = inspect.getsource(sys.modules[name])
        assert f"kernels taken from other modules: digest {digest}" in source, (
            f"{name} takes {', '.join(k.py_func.__name__ for k in kernels)}, which changed: put "
            f"'kernels taken from other modules: digest {digest}' in its docstring"
        )
