"""The package's layout rules: Keras internals only in compat, packages that depend one
way, small modules and functions (in the tests too)."""

import ast
import pathlib
import re

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "keras_split"
BENCHMARKS = PACKAGE.parent / "benchmarks"
TESTS = pathlib.Path(__file__).resolve().parent

# Private Keras structures the package reads (each wrapped in keras_split/compat.py).
KERAS_PRIVATE = re.compile(
    r"keras\.src\b|\._nodes_by_depth\b|\._functional\b|\._tracker\b|\._compile_loss\b"
    r"|\.arguments\.(fill_in|args|kwargs)\b|_momentum\"")


def test_keras_internals_are_used_only_in_the_compat_module():
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "compat.py":
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if KERAS_PRIVATE.search(line):
                offenders.append(f"{path.relative_to(PACKAGE)}:{number}: {line.strip()}")
    assert not offenders, "\n".join(offenders)
    compat = (PACKAGE / "compat.py").read_text()
    for name in ("_nodes_by_depth", "_functional", "_tracker", "_compile_loss", "arguments"):
        assert name in compat


# The packages from the bottom up: a module may import from its own package and from
# packages of a lower rank only (the public façade, keras_split/__init__.py, is lazy).
RANKS = {"compat": 0, "data": 1, "models": 1, "graph": 2, "estimate": 3, "select": 3,
         "surgery": 4, "growing": 5, "apps": 6}
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60


def _package_of(module):
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "keras_split" else None


def _imports(tree):
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "keras_split":
                yield from (f"keras_split.{a.name}" for a in node.names)
            else:
                yield node.module
        elif isinstance(node, ast.Import):
            yield from (a.name for a in node.names)


def _modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE)
        if len(rel.parts) == 1 and rel.name in ("__init__.py", "__main__.py"):
            continue
        yield path, rel, ast.parse(path.read_text())


def test_packages_depend_one_way():
    wrong = []
    for path, rel, tree in _modules():
        own = rel.parts[0] if len(rel.parts) > 1 else rel.stem
        assert own in RANKS, f"{rel}: a package the layout does not rank"
        for module in _imports(tree):
            target = _package_of(module)
            if target is None or target == own:
                continue
            if target not in RANKS or RANKS[target] >= RANKS[own]:
                wrong.append(f"{rel} ({own}) imports {module} ({target})")
    assert not wrong, "\n".join(wrong)


def _too_long(path, rel, tree):
    lines = len(path.read_text().splitlines())
    if lines > MAX_MODULE_LINES:
        yield f"{rel}: {lines} lines"
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            n = node.end_lineno - node.lineno + 1
            if n > MAX_FUNCTION_LINES:
                yield f"{rel}:{node.lineno} {node.name}: {n} lines"


def test_modules_and_functions_are_small():
    long = [line for module in _modules() for line in _too_long(*module)]
    assert not long, "\n".join(long)


def test_test_and_benchmark_modules_and_functions_are_small():
    long = [line for folder in (TESTS, BENCHMARKS) for path in sorted(folder.rglob("*.py"))
            for line in _too_long(path, path.relative_to(TESTS.parent),
                                  ast.parse(path.read_text()))]
    assert not long, "\n".join(long)


def _is_private(name):
    return name.startswith("_") and not name.startswith("__")


def _private_reaches(tree):
    """``(line, text)`` of every private name this module takes from another object or
    module: ``obj._name`` where ``obj`` is not ``self``, ``cls`` or ``super()``, and
    ``from keras_split... import _name``."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _is_private(node.attr):
            owner = node.value
            if isinstance(owner, ast.Name) and owner.id in ("self", "cls"):
                continue
            if (isinstance(owner, ast.Call) and isinstance(owner.func, ast.Name)
                    and owner.func.id == "super"):
                continue
            yield node.lineno, ast.unparse(node)
        elif (isinstance(node, ast.ImportFrom) and node.module
              and (node.level or node.module.startswith("keras_split"))):
            yield from ((node.lineno, f"import {a.name}") for a in node.names
                        if _is_private(a.name))


def test_no_module_reaches_another_objects_private_names():
    """The package, its benchmarks and its tests go through public API only (Keras'
    own internals: in compat.py, checked above)."""
    folders = (PACKAGE, BENCHMARKS, TESTS)
    reaches = [f"{path.relative_to(PACKAGE.parent)}:{line}: {text}"
               for folder in folders for path in sorted(folder.rglob("*.py"))
               if path.name != "compat.py"
               for line, text in _private_reaches(ast.parse(path.read_text()))]
    assert not reaches, "\n".join(reaches)


def test_the_private_name_check_sees_what_it_must():
    tree = ast.parse("model._graph\nself._graph\nsuper()._x\nfrom keras_split.a import _b\n"
                     "obj.__class__\n")
    assert sorted(text for _, text in _private_reaches(tree)) == ["import _b", "model._graph"]


# Where a layer's type may decide what keras_split does with it: the handler classes
# (one per type, in one table), the model builders, BatchNorm recalibration (about
# BatchNormalization itself) and compat.
TYPE_TESTS_ALLOWED = {"graph/handlers.py", "graph/producers.py", "graph/handler_registry.py",
                      "growing/batchnorm_statistics.py", "compat.py"}
GENERIC_TYPES = {"Layer", "Model", "InputLayer"}


def _layer_type_tests(tree):
    """``isinstance(x, ...)`` calls that name a concrete Keras layer class."""
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                and node.func.id == "isinstance" and len(node.args) == 2):
            continue
        if any(isinstance(part, ast.Attribute) and part.attr[:1].isupper()
               and part.attr not in GENERIC_TYPES
               and ast.unparse(part.value).split(".")[-1] in ("L", "layers")
               for part in ast.walk(node.args[1])):
            yield node.lineno, ast.unparse(node)


def test_only_handler_classes_decide_by_a_layers_type():
    found = [f"{rel}:{line}: {text}" for path, rel, tree in _modules()
             if rel.as_posix() not in TYPE_TESTS_ALLOWED and rel.parts[0] != "models"
             for line, text in _layer_type_tests(tree)]
    assert not found, "\n".join(found)
    sample = ast.parse("isinstance(x, (L.Dense, keras.layers.Conv2D))\n"
                       "isinstance(x, keras.layers.Layer)\nisinstance(x, int)\n")
    assert [line for line, _ in _layer_type_tests(sample)] == [1]
