"""The shape of the package, measured: what a newcomer meets at the top, how often code asks
which kind of data it holds, imports hidden in functions, long functions, long parameter lists.

    python benchmarks/layout_metrics.py                 # this checkout
    python benchmarks/layout_metrics.py --root ../old   # another checkout, to compare

Prints one figure per line; nothing is imported, the source is parsed.
"""

from __future__ import annotations

import argparse
import ast
import os
import re

HERE = os.path.dirname(os.path.abspath(__file__))
DATA_KINDS = {"Streams", "FileImages", "DiskFeatures", "ImageSet", "Splits"}
# The implementations of the data kinds themselves (and of the feature stores), where asking
# which kind is the point; everywhere else it is a branch a caller should not need. The flat
# names (data.py, streaming.py, training/cache.py, ...) are where they lived before 2026-12-06,
# so that an older checkout is measured by the same rule.
IMPLEMENTATIONS = ("data/", "data.py", "streaming.py", "training/cache.py", "training/disk_cache.py",
                   "training/feature_cache.py", "training/_disk_cache.py")
LONG = 40
DATA_NAMES = re.compile(r"\b(x_\w+|base_\w+|features|images|first|train|val)\b")


def _names(node) -> set[str]:
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name)} | {
        n.attr for n in ast.walk(node) if isinstance(n, ast.Attribute)}


def _files(package: str):
    for folder, _, files in os.walk(package):
        for name in sorted(files):
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                yield os.path.relpath(path, package).replace(os.sep, "/"), path


def measure(root: str) -> dict:
    package = os.path.join(root, "keras_transfer")
    top = sorted(e for e in os.listdir(package) if not e.startswith(("__pycache__", ".")) and e != "__init__.py"
                 and e != "__main__.py")
    kind_checks, in_function, long_functions, long_code, params = [], 0, [], [], []
    for rel, path in _files(package):
        tree = ast.parse(open(path).read())
        inside = not rel.startswith(IMPLEMENTATIONS)
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "isinstance" and len(node.args) == 2:
                kinds = _names(node.args[1])
                # a list of per-view arrays: a list/tuple check on something named as data
                per_view = kinds & {"list", "tuple"} and DATA_NAMES.search(ast.unparse(node.args[0]))
                if inside and (kinds & DATA_KINDS or per_view):
                    kind_checks.append(f"{rel}:{node.lineno}")
            if isinstance(node, ast.Attribute) and node.attr == "streamed" and inside:
                kind_checks.append(f"{rel}:{node.lineno}")
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > LONG:
                    long_functions.append((length, f"{rel}:{node.name}"))
                first = node.body[0]
                doc = first.end_lineno - first.lineno + 1 if isinstance(first, ast.Expr) and isinstance(
                    getattr(first, "value", None), ast.Constant) and isinstance(first.value.value, str) else 0
                if length - doc > LONG:
                    long_code.append((length - doc, f"{rel}:{node.name}"))
                args = node.args
                n = len(args.posonlyargs) + len(args.args) + len(args.kwonlyargs) - (
                    1 if args.args and args.args[0].arg in ("self", "cls") else 0)
                params.append((n, f"{rel}:{node.name}"))
                for inner in ast.walk(node):
                    if isinstance(inner, (ast.Import, ast.ImportFrom)):
                        in_function += 1
    modules = [e for e in top if e.endswith(".py")]
    return {"top_entries": len(top), "top_modules": len(modules), "top": top,
            "data_kind_checks": len(kind_checks), "where": kind_checks,
            "imports_in_functions": in_function,
            "functions_over_40_lines": len(long_functions), "longest": sorted(long_functions, reverse=True)[:12],
            "functions_over_40_code_lines": len(long_code),
            "longest_parameter_list": max(params), "seven_or_more_parameters": sum(n >= 7 for n, _ in params)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--root", default=os.path.dirname(HERE), help="a checkout of keras-transfer")
    p.add_argument("--verbose", action="store_true", help="also list where each figure comes from")
    args = p.parse_args()
    m = measure(args.root)
    print(f"entries under keras_transfer/ (besides __init__/__main__): {m['top_entries']} "
          f"({m['top_modules']} modules)")
    print(f"data-kind isinstance/.streamed checks outside the data implementations: {m['data_kind_checks']}")
    print(f"imports inside functions: {m['imports_in_functions']}")
    print(f"functions over {LONG} lines: {m['functions_over_40_lines']} "
          f"({m['functions_over_40_code_lines']} over {LONG} lines besides their docstrings)")
    print(f"longest parameter list: {m['longest_parameter_list'][0]} ({m['longest_parameter_list'][1]}); "
          f"functions with 7 or more: {m['seven_or_more_parameters']}")
    if args.verbose:
        print("top:", " ".join(m["top"]))
        print("data-kind checks:", " ".join(m["where"]))
        print("longest functions:", ", ".join(f"{name} {n}" for n, name in m["longest"]))


if __name__ == "__main__":
    main()
