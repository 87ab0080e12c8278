"""Source hygiene (issue 12): public APIs only (no private torch functions or aten operators, which
change without notice between torch releases), and the code clean under the ruff configuration."""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PRIVATE_TORCH = re.compile(r"\btorch\._[A-Za-z]|\btorch\.ops\.aten\b")


def test_no_private_torch_apis_outside_the_tests():
    sources = [path for folder in ("homoecon_env", "agents", "homoecon_lab", "benchmarks")
               for path in (ROOT / folder).rglob("*.py")] + [ROOT / "train.py", ROOT / "evaluate.py"]
    found = [f"{path.relative_to(ROOT)}:{number}: {line.strip()}" for path in sources
             for number, line in enumerate(path.read_text().splitlines(), 1) if PRIVATE_TORCH.search(line)]
    assert len(sources) > 30 and not found, found


def test_the_code_is_clean_under_the_projects_ruff_configuration():
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "."], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
