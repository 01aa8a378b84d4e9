from engine.scorecard import perspective_status


def items(*statuses: str) -> list[dict[str, str]]:
    return [{"id": f"k{i}", "status": s} for i, s in enumerate(statuses)]


def test_worst_of_ignores_kpis_without_data() -> None:
    assert perspective_status(items("ok", "warning", "no_data"), "worst", {}) == "warning"
    assert perspective_status(items("no_data", "no_data"), "worst", {}) == "no_data"
    assert perspective_status(items("ok", "critical"), "worst", {}) == "critical"


def test_weighted_mean_of_severities() -> None:
    assert perspective_status(items("ok", "ok", "ok", "critical"), "weighted", {}) == "warning"  # 0.5
    assert perspective_status(items("ok", "ok", "ok", "ok", "critical"), "weighted", {}) == "ok"  # 0.4
    assert perspective_status(items("ok", "critical"), "weighted", {"k1": 3.0}) == "critical"  # 1.5
