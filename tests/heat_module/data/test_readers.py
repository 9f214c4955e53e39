"""json_lines, the one tolerant JSON-lines reader of the result files."""

from __future__ import annotations

from heat_module.data.readers import json_lines


def test_json_lines_numbers_lines_and_marks_damage_as_none(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_bytes(b'{"id": 1}\n\n  \n\xff\xfe\n\x00\x00\x00\n[1, 2]\n{"id": 2, "cu')
    got = [(k, value) for k, _, value in json_lines(path)]
    assert got == [(1, {"id": 1}), (4, None), (5, None), (6, [1, 2]), (7, None)]
    raw = [line for _, line, _ in json_lines(path)]
    assert raw[-1] == '{"id": 2, "cu' and raw[0] == '{"id": 1}\n'  # the raw line keeps its newline, if any
