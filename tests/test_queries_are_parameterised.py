"""SECURITY V1.2.4: the portal's SQL comes from the ORM or is written out whole.

Outside the reviewed trigger migrations, no code of the portal calls .raw(),
.extra() or RawSQL, and no statement given to a cursor is built with an
f-string, % or + : values travel as bound parameters, names as psycopg
identifiers.
"""

import ast
from pathlib import Path

import pytest

REPOSITORY = Path(__file__).resolve().parent.parent
APPS = ("accounts", "audit", "records", "ehr_portal")
RAW_SQL_CALLS = {"raw", "extra", "RawSQL"}
CURSOR_CALLS = {"execute", "executemany", "send_query"}


def _portal_sources() -> list[Path]:
    return sorted(
        path
        for app in APPS
        for path in (REPOSITORY / app).rglob("*.py")
        if "migrations" not in path.parts
    )


def _called_name(call: ast.Call) -> str | None:
    function = call.func
    if isinstance(function, ast.Attribute):
        return function.attr
    if isinstance(function, ast.Name):
        return function.id
    return None


def _built_from_strings(node: ast.expr) -> bool:
    if isinstance(node, ast.JoinedStr):
        return True
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mod | ast.Add):
        return True
    return isinstance(node, ast.Call) and _called_name(node) == "format"


def _names_built_from_strings(tree: ast.AST) -> set[str]:
    """Names given a value built from strings anywhere in the module."""
    built = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and _built_from_strings(node.value):
            built.update(t.id for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.AugAssign) and isinstance(node.target, ast.Name):
            built.add(node.target.id)
    return built


def _findings(source: Path) -> list[str]:
    tree = ast.parse(source.read_text(), str(source))
    built_names = _names_built_from_strings(tree)
    findings = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = _called_name(node)
        where = f"{source.name}:{node.lineno}"
        if name in RAW_SQL_CALLS:
            findings.append(f"{where} calls {name}()")
        if name in CURSOR_CALLS and node.args:
            statement = node.args[0]
            if _built_from_strings(statement) or (
                isinstance(statement, ast.Name) and statement.id in built_names
            ):
                findings.append(f"{where} builds the statement given to {name}()")
    return findings


def test_no_statement_is_built_from_strings():
    sources = _portal_sources()

    findings = [finding for source in sources for finding in _findings(source)]

    assert len(sources) > 40
    assert findings == []


@pytest.mark.parametrize(
    "code",
    [
        'cursor.execute(f"SELECT {column} FROM t")',
        'cursor.executemany("UPDATE t SET a = " + value, rows)',
        'cursor.execute("SELECT * FROM t WHERE id = %s" % pk)',
        "Patient.objects.raw('SELECT 1')",
        "Patient.objects.extra(where=['1=1'])",
        'statement = f"UPDATE {table} SET a = %s"\ncursor.executemany(statement, rows)',
        'query = "SELECT * FROM t"\nquery += " WHERE " + where\ncursor.execute(query)',
    ],
)
def test_the_scan_catches_each_kind_of_built_statement(tmp_path, code):
    probe = tmp_path / "probe.py"
    probe.write_text(code + "\n")

    assert len(_findings(probe)) == 1
