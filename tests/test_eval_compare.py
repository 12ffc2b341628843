"""`logclaw eval` says where the engine is weaker than each baseline, column by column (issue 11)."""

from __future__ import annotations

from udfs.evaluation.metrics import compare


def test_each_column_is_judged_in_its_own_direction_and_missing_columns_are_left_out() -> None:
    engine = {"recall": 0.889, "fault_free_incidents": 0, "precision": 0.971, "rc_top1_all": 0.889,
              "rc_top3": 1.0, "no_error_line_detected": 0, "ttd_median_s": 8.5}
    naive = {"recall": 0.852, "fault_free_incidents": 1, "precision": 0.971, "rc_top1_all": 0.852,
             "rc_top3": 1.0, "no_error_line_detected": 0, "ttd_median_s": 0.0}
    assert compare(engine, naive) == {
        "better": ["recall 0.889 vs 0.852", "fault_free_incidents 0 vs 1", "rc_top1_all 0.889 vs 0.852"],
        "weaker": ["ttd_median_s 8.5 vs 0.0"],
        "level": ["precision 0.971 vs 0.971", "rc_top3 1.0 vs 1.0", "no_error_line_detected 0 vs 0"],
    }
    assert compare({"recall": 0.5, "ttd_median_s": None}, {"recall": 0.9, "ttd_median_s": 3.0}) == {
        "better": [], "weaker": ["recall 0.5 vs 0.9"], "level": []
    }
