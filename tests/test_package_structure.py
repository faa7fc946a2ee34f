"""The package's structure: every module of ``mmcrossformer`` imports on its
own, its modules import each other without a cycle (imports inside
functions included), and none of them imports the tests.

The import graph is read from the source with :mod:`ast`: every ``import``
and ``from ... import`` anywhere in a module (in functions too, where a
cycle hides until the function runs), relative imports resolved, and
importing ``a.b.c`` counting as importing the packages ``a.b`` and ``a``
(which Python runs first) unless the importer is inside them.
"""
import ast
import json
import os
import os.path as osp
import subprocess
import sys
from typing import Dict, Iterator, List, Tuple

import pytest
from helpers.paths import REPO

PACKAGE = 'mmcrossformer'
# What the package must not import: the tests and their helpers.
TEST_MODULES = ('tests', 'helpers', 'conftest')

# Run in a fresh interpreter: imports the third-party modules the package
# imports at module level (so that each child starts fast; for ``from X
# import y`` both X and X.y are tried, y may not be a module), checks that no
# module of the package is loaded yet, then imports each module in a forked
# child, which starts from that state: nothing of the package imported.
# Prints {module: traceback} of the modules that failed, as JSON.
IMPORT_EACH_ALONE = r'''
import importlib, json, os, sys, traceback

package, modules, preload = json.loads(sys.argv[1])
for name in preload:
    try:
        importlib.import_module(name)
    except Exception:
        pass  # an optional dependency: the child will report it if needed
loaded = [m for m in sys.modules if m.split('.')[0] == package]
assert not loaded, f'{package} modules imported by the preload: {loaded}'
failures = {}
for name in modules:
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        try:
            importlib.import_module(name)
            message = ''
        except BaseException:
            message = traceback.format_exc()
        with os.fdopen(write, 'w') as f:
            f.write(message)
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as f:
        message = f.read()
    os.waitpid(pid, 0)
    if message:
        failures[name] = message
print(json.dumps(failures))
'''


def package_modules(root: str, package: str) -> Dict[str, str]:
    """``{dotted name: path}`` of every module of the regular package
    ``root/package`` (folders without ``__init__.py`` are not part of it)."""
    modules = {}
    top = osp.join(root, package)
    for folder, subfolders, files in os.walk(top):
        if not osp.isfile(osp.join(folder, '__init__.py')):
            subfolders[:] = []
            continue
        parts = osp.relpath(folder, root).split(os.sep)
        for file in sorted(files):
            if file.endswith('.py'):
                stem = file[:-3]
                name = parts if stem == '__init__' else [*parts, stem]
                modules['.'.join(name)] = osp.join(folder, file)
    return modules


def imported_names(name: str, path: str,
                   module_level_only: bool = False
                   ) -> Iterator[Tuple[str, int]]:
    """``(absolute dotted name, line)`` of what the module ``name`` (at
    ``path``) imports: for ``from X import y`` both ``X`` and ``X.y`` (``y``
    may be a submodule). With ``module_level_only``, only the imports that
    run when the module is imported (not those inside functions)."""
    with open(path) as f:
        tree = ast.parse(f.read(), path)
    package = name if path.endswith('__init__.py') else name.rpartition(
        '.')[0]

    def walk(node):
        for child in ast.iter_child_nodes(node):
            if module_level_only and isinstance(
                    child, (ast.FunctionDef, ast.AsyncFunctionDef,
                            ast.Lambda)):
                continue
            yield child
            yield from walk(child)

    for node in walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split('.')
                if node.level > len(parts):
                    raise ValueError(f'{path}:{node.lineno}: relative import '
                                     'beyond the top-level package')
                base = '.'.join(parts[:len(parts) - node.level + 1])
                source = f'{base}.{node.module}' if node.module else base
            else:
                source = node.module
            yield source, node.lineno
            for alias in node.names:
                yield f'{source}.{alias.name}', node.lineno


def import_graph(modules: Dict[str, str]) -> Dict[str, Dict[str, int]]:
    """``{module: {imported module: line}}`` within ``modules``."""
    graph = {}
    for name, path in modules.items():
        edges = graph.setdefault(name, {})
        for target, line in imported_names(name, path):
            parts = target.split('.')
            for i in range(1, len(parts) + 1):
                imported = '.'.join(parts[:i])
                # Importing a.b.c runs a and a.b first, except the packages
                # the importer is in (already being imported).
                inside = name == imported or name.startswith(imported + '.')
                if imported in modules and not inside:
                    edges.setdefault(imported, line)
    return graph


def import_cycles(graph: Dict[str, Dict[str, int]]) -> List[str]:
    """One cycle per strongly connected component of ``graph`` with more
    than one module, as ``a (line 3) -> b (line 7) -> a``."""
    index, low, stack, on_stack, components = {}, {}, [], set(), []

    def connect(node):  # Tarjan's algorithm
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph[node]:
            if nxt not in index:
                connect(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(set(component))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    cycles = []
    for component in components:
        start = min(component)
        # Breadth-first within the component: the shortest way back.
        paths, seen = [[start]], {start}
        while paths:
            path = paths.pop(0)
            nexts = sorted(n for n in graph[path[-1]] if n in component)
            if start in nexts:
                path.append(start)
                break
            for nxt in nexts:
                if nxt not in seen:
                    seen.add(nxt)
                    paths.append(path + [nxt])
        cycles.append(' -> '.join(
            f'{a} (line {graph[a][b]})' for a, b in zip(path, path[1:]))
            + f' -> {start}')
    return cycles


def test_every_module_imports_alone():
    if not hasattr(os, 'fork'):
        pytest.skip('needs os.fork to start each import from a fresh state')
    modules = package_modules(REPO, PACKAGE)
    preload = sorted({
        target for name, path in modules.items()
        for target, _ in imported_names(name, path, module_level_only=True)
        if target.split('.')[0] != PACKAGE
    })
    proc = subprocess.run(
        [sys.executable, '-c', IMPORT_EACH_ALONE,
         json.dumps([PACKAGE, sorted(modules), preload])],
        capture_output=True, text=True, cwd=REPO, timeout=600,
        env=dict(os.environ, PYTHONWARNINGS='ignore'))
    assert proc.returncode == 0, proc.stderr[-6000:]
    failures = json.loads(proc.stdout.splitlines()[-1])
    assert not failures, '\n'.join(
        f'`import {name}` in a fresh interpreter fails:\n{message}'
        for name, message in failures.items())
    assert len(modules) > 10 and 'mmcrossformer.models.crossformer' in modules


def test_no_import_cycles():
    graph = import_graph(package_modules(REPO, PACKAGE))
    assert 'mmcrossformer.models' in graph['mmcrossformer']
    cycles = import_cycles(graph)
    assert not cycles, (
        'import cycles between the modules of mmcrossformer (move what both '
        'need into a module that imports neither):\n' + '\n'.join(cycles))


def test_package_does_not_import_the_tests():
    found = [
        f'{path}:{line}: imports {target}'
        for name, path in package_modules(REPO, PACKAGE).items()
        for target, line in imported_names(name, path)
        if target.split('.')[0] in TEST_MODULES
    ]
    assert not found, 'the package must not need the tests:\n' + '\n'.join(
        sorted(set(found)))


def test_import_graph_finds_hidden_cycles(tmp_path):
    """The checks above can fail: a cycle through a function-level relative
    import and a package ``__init__`` is found and named, and an import of
    a submodule from its own package is not taken for one."""
    files = {
        'pkg/__init__.py': 'from . import b\n',
        'pkg/b.py': 'import os\nfrom pkg.sub import thing\n',
        'pkg/sub/__init__.py': 'from .a import thing\n',
        'pkg/sub/a.py': ('thing = 1\n\n\ndef later():\n'
                         '    from ..b import thing\n    return thing\n'),
        'pkg/sub/c.py': 'from pkg.sub.a import thing\n',
        'pkg/notes/readme.py': 'import pkg.b\n',  # no __init__: not a module
    }
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    modules = package_modules(str(tmp_path), 'pkg')
    assert sorted(modules) == ['pkg', 'pkg.b', 'pkg.sub', 'pkg.sub.a',
                               'pkg.sub.c']
    graph = import_graph(modules)
    assert graph['pkg.sub.c'] == {'pkg.sub.a': 1}
    assert graph['pkg.sub.a'] == {'pkg.b': 5}
    assert import_cycles(graph) == [
        'pkg.b (line 2) -> pkg.sub (line 1) -> pkg.sub.a (line 5) -> pkg.b']
    assert dict(imported_names('pkg.sub.a', modules['pkg.sub.a'],
                               module_level_only=True)) == {}
