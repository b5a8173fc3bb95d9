"""The suite's own layout: pytest imports test files by their base name (no __init__.py here), so two
files of one name in different folders stop the whole run at collection ("import file mismatch")."""
from collections import Counter
from pathlib import Path


def test_every_test_file_has_its_own_name():
    names = Counter(p.name for p in Path(__file__).parent.rglob("test_*.py"))
    assert not [name for name, count in names.items() if count > 1]
