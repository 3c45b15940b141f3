"""Any teacher combines with any strategy and any student: every pair runs end to end on tiny data."""

from __future__ import annotations

import numpy as np
import pytest

from method_helpers import run_tiny


TEACHERS = ["features", "cvh", "djsrh", "jdsh", "dgcpn", "ugach", "ucch", "dsah"]
STRATEGIES = ["ukd", "sakdh", "codes"]
STUDENTS = ["dcmh", "ssah", "dadh", "linear"]
# Few epochs: this checks that the pieces fit together; the learning tests live in test_methods/test_zoo_*.
QUICK = {
    "djsrh": ["teacher.epochs=2"], "jdsh": ["teacher.epochs=2"], "dgcpn": ["teacher.epochs=2"],
    "ugach": ["teacher.epochs=1", "teacher.pretrain_epochs=1"], "ucch": ["teacher.epochs=2", "teacher.hidden=64"],
    "dsah": ["teacher.epochs=2", "teacher.hidden=64"],
    "dcmh": ["student.epochs=2"], "linear": ["student.epochs=2"], "dadh": ["student.epochs=2"],
    "ssah": ["student.epochs=1", "student.paired_epochs=1"],
}


def run(tmp_path, teacher, strategy, student):
    sets = [x for name in (teacher, student) for item in QUICK.get(name, []) for x in ("--set", item)]
    data, codes = run_tiny(tmp_path, "--teacher", teacher, "--strategy", strategy, "--student", student, "--bits", "8", *sets)
    assert (data["key"]["teacher"], data["key"]["strategy"], data["key"]["student"]) == (teacher, strategy, student)
    for name in ("query_image_codes", "query_text_codes", "db_image_codes", "db_text_codes"):
        assert codes[name].shape[1] == 8 and set(np.unique(codes[name])) <= {-1, 1}
    assert 0 < data["metrics"]["i2t"]["map"] <= 1 and 0 < data["metrics"]["t2i"]["map"] <= 1


@pytest.mark.parametrize("teacher", TEACHERS)
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_every_teacher_with_every_strategy(tmp_path, test_plugins, teacher, strategy):
    run(tmp_path, teacher, strategy, "linear")


@pytest.mark.parametrize("student", STUDENTS)
def test_every_student_after_a_teacher_and_after_labels(tmp_path, test_plugins, student):
    run(tmp_path / "ucch", "ucch", "ukd", student)
    run(tmp_path / "labels", "none", "labels", student)
