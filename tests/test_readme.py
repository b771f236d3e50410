"""The README's Python example runs as written."""

import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_readme_python_example_runs(tmp_path, monkeypatch):
    with open(os.path.join(ROOT, "README.md")) as f:
        text = f.read()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert blocks, "README has no python example"
    monkeypatch.chdir(tmp_path)
    namespace = {}
    exec(compile(blocks[0], "README.md", "exec"), namespace)
    model = namespace["model"]
    assert len(model.growth_history) == 1
    stage = model.growth_history[0]
    # It grew, within its budget of (1 + growth_ratio) times its MACs.
    assert stage["macs_before"] < stage["macs_after"] <= (1 + stage["growth_ratio"]) * stage[
        "macs_before"]
    assert (tmp_path / "grown.keras").exists()


def test_readme_starts_with_the_two_commands():
    with open(os.path.join(ROOT, "README.md")) as f:
        lines = f.read().splitlines()
    assert lines[0] == "```bash" and lines[3] == "```"
    assert "keras-split demo" in lines[1]
    assert "pytest" in lines[2]
