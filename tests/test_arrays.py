"""SLURM array syntax, compaction, splitting beyond MaxArraySize, task -> items (pure: no SLURM)."""

import random

import pytest

from hpc.arrays import ArraySpecError, format_array, group, parse_array, split, task_items


@pytest.mark.parametrize("spec, indices, par", [
    ("0-7%2", list(range(8)), 2),
    ("3", [3], None),
    ("1,3,5-7", [1, 3, 5, 6, 7], None),
    ("0-15:4", [0, 4, 8, 12], None),
    ("9,1-3,2", [1, 2, 3, 9], None),  # unsorted and overlapping: SLURM accepts it
    (" 0-2 %1", [0, 1, 2], 1),
])
def test_parse(spec, indices, par):
    parsed = parse_array(spec)
    assert parsed.indices == indices
    assert parsed.parallelism == par


@pytest.mark.parametrize("spec", ["", "a", "5-3", "1-", "-1", "1,,2", "0-7%", "0-7%0", "0-9:0",
                                  "0-3%2%2", "1.5"])
def test_parse_rejects(spec):
    with pytest.raises(ArraySpecError):
        parse_array(spec)


def test_format_compacts_and_round_trips():
    assert format_array([0, 1, 2, 3, 7, 9, 10, 11]) == "0-3,7,9-11"
    assert format_array([5]) == "5"
    assert format_array([2, 1, 1, 0], parallelism=4) == "0-2%4"
    rng = random.Random(0)
    for _ in range(200):
        values = sorted(rng.sample(range(3000), rng.randint(1, 300)))
        assert parse_array(format_array(values)).indices == values
    with pytest.raises(ArraySpecError):
        format_array([])


def test_group():
    assert group([0, 1, 2, 3, 4], 2) == [[0, 1], [2, 3], [4]]
    assert group([7], 3) == [[7]]
    with pytest.raises(ValueError):
        group([1], 0)


def test_split_keeps_indices_below_max_array_size():
    chunks = split(2500, 1001, parallelism=64)
    assert [c.count for c in chunks] == [834, 833, 833]  # near-equal arrays
    assert [c.offset for c in chunks] == [0, 834, 1667]
    assert all(c.count <= 1001 for c in chunks)  # indices 0..count-1 < MaxArraySize
    assert sum(c.parallelism for c in chunks) == 64  # %P shared out, not multiplied
    assert chunks[0].spec == "0-833%22"
    covered = [c.offset + i for c in chunks for i in range(c.count)]
    assert covered == list(range(2500))  # every task exactly once


def test_split_small_and_edge_cases():
    (only,) = split(8, 1001, parallelism=2)
    assert (only.offset, only.count, only.parallelism, only.spec) == (0, 8, 2, "0-7%2")
    (one,) = split(5, 1001, parallelism=100)
    assert one.parallelism == 5  # never more than the array has
    assert [c.count for c in split(1001, 1001)] == [1001]
    assert [c.count for c in split(1002, 1001)] == [501, 501]
    assert split(0, 1001) == []
    many = split(10, 3, parallelism=2)  # fewer slots than arrays: one each
    assert [c.parallelism for c in many] == [1, 1, 1, 1]
    assert all(c.spec.endswith("%1") for c in many)
    with pytest.raises(ArraySpecError):
        split(3, 0)


def test_task_items_with_offset():
    tasks = [[0, 1], [2, 3], [4]]
    assert task_items(tasks, 0) == [0, 1]
    assert task_items(tasks, 0, offset=2) == [4]
    with pytest.raises(IndexError):
        task_items(tasks, 3)
    with pytest.raises(IndexError):
        task_items(tasks, 1, offset=2)
