"""Task-independent metrics: mode histogram, normalised entropy, KL to the data's modes, selection score."""

from __future__ import annotations

import math

import numpy as np
import pytest

from vdd_ros.tasks.metrics import behaviour_entropy, mode_histogram, mode_kl, selection_score


def test_entropy_known_distributions() -> None:
    assert behaviour_entropy(np.full(24, 5)) == pytest.approx(1.0)
    assert behaviour_entropy(np.full(4, 5)) == pytest.approx(1.0)  # normalised by log(#modes), any #modes
    one = np.zeros(24, dtype=int)
    one[3] = 17
    assert behaviour_entropy(one) == 0.0
    assert behaviour_entropy(np.zeros(24, dtype=int)) == 0.0
    two = np.zeros(24, dtype=int)
    two[[0, 9]] = 4
    assert behaviour_entropy(two) == pytest.approx(math.log(2) / math.log(24))
    assert behaviour_entropy(np.array([1, 3])) == pytest.approx(
        -(0.25 * math.log(0.25) + 0.75 * math.log(0.75)) / math.log(2)
    )
    assert behaviour_entropy(np.array([7])) == 0.0  # a single-mode task has no diversity to measure


def test_histogram_uses_the_given_number_of_modes_and_ignores_invalid_ids() -> None:
    counts = mode_histogram(np.array([0, 0, 23, -1, 5]), 24)
    assert counts.tolist() == [2, 0, 0, 0, 0, 1] + [0] * 17 + [1]
    counts = mode_histogram(np.array([0, 3, 3, 4, -1]), 4)  # 4 is outside a 4-mode task
    assert counts.tolist() == [1, 0, 0, 2]


def test_kl() -> None:
    assert mode_kl(np.full(24, 3)) == pytest.approx(0.0, abs=1e-9)
    one = np.zeros(24)
    one[0] = 10
    assert mode_kl(one) == pytest.approx(math.log(24), rel=1e-3)
    assert math.isnan(mode_kl(np.zeros(24)))
    ref = np.zeros(24)
    ref[1] = 1.0
    assert math.isfinite(mode_kl(one, ref))  # epsilon keeps modes missing from the data finite
    with pytest.raises(ValueError, match="one entry per mode"):
        mode_kl(one, np.ones(4))


def test_selection_score() -> None:
    assert selection_score(1.0, 0.5) == pytest.approx(0.9)
    assert selection_score(0.5, 1.0) == pytest.approx(0.6)


def test_bench_mode_table_and_chart_compare_each_policy_with_the_demonstrator(tmp_path) -> None:
    """The bench's Pushing figures: contexts a policy never solved are left out of its proportions."""
    from vdd_ros.cli.bench import _mean_proportions, modes_markdown, plot_mode_proportions

    expected = [[0.4875, 0.2625, 0.1625, 0.0875], [0.0875, 0.1625, 0.2625, 0.4875]]
    row = {
        "name": "VDD-MoE",
        "contexts": 2,
        "context_entropy": 0.4,
        "preference_gap": 0.2,
        "nearer_first_share": 0.75,
        "shorter_assignment_share": 0.5,
        "context_mode_proportions": [[0.5, 0.5, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]],
        "expert_mode_probabilities": expected,
    }
    never = {**row, "name": "teacher", "context_mode_proportions": [[0.0] * 4] * 2}
    never.update(preference_gap=None, nearer_first_share=None, shorter_assignment_share=None)
    assert _mean_proportions(row).tolist() == [0.5, 0.5, 0.0, 0.0]
    assert _mean_proportions(never).tolist() == [0.0] * 4
    report = {"task": "pushing", "rows": [never, row]}
    table = modes_markdown(report, tmp_path / "modes.png")
    assert "| VDD-MoE | 1/2 | 0.400 | 0.200 | 0.750 | 0.500 |" in table
    assert "| teacher | 0/2 | 0.400 | n/a | n/a | n/a |" in table
    plot_mode_proportions(report, tmp_path / "modes.png")
    assert (tmp_path / "modes.png").stat().st_size > 1000


def test_bench_docs_of_another_task_keep_the_default_tasks_plots(tmp_path) -> None:
    """bench update_docs=true for Pushing writes *_pushing plots and sections beside Avoiding's, never over them."""
    from vdd_ros.cli.bench import BenchConfig, _update_docs

    docs, out = tmp_path / "docs", tmp_path / "runs" / "bench_pushing"
    (docs / "img").mkdir(parents=True)
    out.mkdir(parents=True)
    (docs / "img" / "bench.png").write_bytes(b"avoiding")
    (docs / "results.md").write_text("# Results\n")
    (out / "bench.png").write_bytes(b"pushing")
    cfg = BenchConfig(output=str(out), docs=str(docs), update_docs=True)
    _update_docs(cfg, "pushing", {"bench": f"Plot: `{out / 'bench.png'}`."}, [out / "bench.png"])
    assert (docs / "img" / "bench.png").read_bytes() == b"avoiding"
    assert (docs / "img" / "bench_pushing.png").read_bytes() == b"pushing"
    text = (docs / "results.md").read_text()
    assert "Teacher vs EM-MoE vs VDD on Pushing (bench)" in text and f"`{docs / 'img' / 'bench_pushing.png'}`" in text
