"""The benchmark scripts run end to end and report what the README quotes."""
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_bench_writes_every_workload_with_rates_and_memory(tmp_path):
    out = tmp_path / "bench.json"
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench.py"), "--sizes", "20", "--seconds", "0.1",
                           "--repeats", "2",
                           "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    report = json.loads(out.read_text())
    rows = {row["workload"]: row for row in report["results"]}
    assert set(rows) == {"dict", "core", "train", "trade"}
    for kind in ("dict", "core", "train"):
        assert 0 < rows[kind]["steps_per_sec"] <= rows[kind]["best_steps_per_sec"], rows[kind]
        assert rows[kind]["repeats"] == 2 and len(rows[kind]["window_rates"]) == 10  # both runs' windows pooled
        assert rows[kind]["best_steps_per_sec"] == max(rows[kind]["window_rates"])
    assert rows["trade"]["seconds_per_clear"] > 0 and rows["trade"]["ir_violation"] <= 1e-7
    assert all(row["peak_rss_mb"] > 50 for row in rows.values())
    assert {"cpu", "cores", "torch", "python"} <= set(report["machine"])
    assert "| core  |     20 |" in done.stdout


def test_profile_step_attributes_the_step_to_its_stages():
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "profile_step.py"), "--workload", "core",
                           "--num-agents", "20", "--steps", "20"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    table = done.stdout
    assert "| economy.py:step | 1.0 |" in table
    assert ":clear_market |" in table and "lifecycle.py:reproduce |" in table
