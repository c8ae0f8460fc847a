"""The README's model table is the generator's output, not typed by hand."""

import importlib.util
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_model_table_is_current():
    spec = importlib.util.spec_from_file_location("model_table", ROOT / "benchmarks" / "model_table.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    readme = (ROOT / "README.md").read_text()
    block = re.search(re.escape(mod.BEGIN) + r"\n(.*?)\n" + re.escape(mod.END), readme, re.S)
    assert block, "README lacks the model-table markers"
    assert block.group(1) == mod.table(), "README table is stale: run `make readme-table`"
