"""The import directions of DESIGN.md, checked on the source: stylefreq/ (the plugin library, also
loaded inside a stock upstream checkout) never imports the engine's training/ or metrics/; metrics/
never imports the command-line front ends; nothing imports across packages inside a function (the
dependency would hide from a reader of the file's head)."""

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGES = ('stylefreq', 'training', 'metrics', 'studies')
FRONT_ENDS = ('train', 'generate', 'calc_metrics', 'dataset_tool')


def sources(package):
    return sorted((ROOT / package).rglob('*.py'))


def imported_modules(path):
    """(module, line, inside a function) for every import statement of a file."""
    tree = ast.parse(path.read_text(encoding='utf-8'))
    local = {id(n) for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
             for n in ast.walk(f)}
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(alias.name, node.lineno, id(node) in local) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:                                  # relative: within the same package
                continue
            names = [node.module] + [f'{node.module}.{a.name}' for a in node.names]
            out += [(name, node.lineno, id(node) in local) for name in names]
    return out


def top(module):
    return module.split('.')[0]


@pytest.mark.parametrize('path', sources('stylefreq'), ids=lambda p: str(p.relative_to(ROOT)))
def test_stylefreq_imports_neither_training_nor_metrics(path):
    bad = [(m, line) for m, line, _ in imported_modules(path) if top(m) in ('training', 'metrics', 'studies')
           or top(m) in FRONT_ENDS]
    assert not bad, f'{path.relative_to(ROOT)} imports the engine: {bad}'


@pytest.mark.parametrize('path', sources('metrics') + sources('training'), ids=lambda p: str(p.relative_to(ROOT)))
def test_engine_does_not_import_front_ends(path):
    bad = [(m, line) for m, line, _ in imported_modules(path) if top(m) in FRONT_ENDS + ('studies',)]
    assert not bad, f'{path.relative_to(ROOT)} imports a front end: {bad}'


@pytest.mark.parametrize('path', [p for pkg in PACKAGES for p in sources(pkg)] +
                         [ROOT / f'{name}.py' for name in FRONT_ENDS], ids=lambda p: str(p.relative_to(ROOT)))
def test_no_function_local_imports_of_project_packages(path):
    here = path.relative_to(ROOT).parts[0].removesuffix('.py')
    bad = [(m, line) for m, line, local in imported_modules(path) if local and top(m) in PACKAGES + FRONT_ENDS]
    assert not bad, f'{path.relative_to(ROOT)} ({here}) imports project modules inside functions: {bad}'


def test_the_scanner_tells_local_from_module_imports(tmp_path):
    """Control: the checks above would catch what they forbid."""
    sample = tmp_path / 'sample.py'
    sample.write_text('import training.networks\nfrom metrics import plot\n\n'
                      'def f():\n    from training import loss\n    return loss\n')
    found = imported_modules(sample)
    assert ('training.networks', 1, False) in found and ('metrics.plot', 2, False) in found
    assert ('training.loss', 5, True) in found
