"""The groups scripts/test.sh's pytest-xdist workers run the tests by (tests/conftest.py): a
test of the SLURM cluster or of JuiceFS must never run beside another of its kind."""

from __future__ import annotations

import pytest

from tests.conftest import group_of


def test_a_test_is_grouped_with_its_file(request):
    assert group_of(request.node) == "tests/test_suite_groups.py"


@pytest.mark.parametrize("markers, group", [(("slurm",), "slurm"), (("juicefs",), "juicefs"),
                                            (("redis",), "juicefs"),
                                            (("juicefs", "slurm"), "slurm")])
def test_a_shared_service_test_is_grouped_by_its_service(request, markers, group):
    for name in markers:
        request.node.add_marker(name)
    assert group_of(request.node) == group


def test_xdist_sees_the_group(request):
    """pytest-xdist keeps a group in one worker only if the group reaches the node id it
    schedules by: with pytest 9.2 it did not, and every test was scheduled alone."""
    if not getattr(request.config.option, "loadgroup", False):  # set in xdist's workers only
        pytest.skip("not run by pytest-xdist's --dist loadgroup (scripts/test.sh)")
    assert request.node.nodeid.endswith("@tests/test_suite_groups.py")
