"""gradscope.io: all-or-nothing writes, the NaN/Inf JSON codec and clear read errors, on real files."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from gradscope.errors import OutputError, RecordFormatError
from gradscope.io import (
    RenderedFile,
    from_json_value,
    json_text,
    read_json_file,
    to_json_value,
    write_all,
    write_file,
    write_into_folder,
)


def test_a_failed_write_removes_the_files_this_call_created_and_keeps_older_ones(tmp_path):
    older = tmp_path / "older.json"
    older.write_text("old")
    blocker = tmp_path / "a-file"
    blocker.write_text("in the way")
    files = [
        RenderedFile(tmp_path / "new.html", b"<html>", "HTML report"),
        RenderedFile(older, b"new", "JSON run record"),
        RenderedFile(blocker / "figure.png", b"png", "PNG figure"),  # its folder is a file: this write fails
    ]
    with pytest.raises(OutputError, match=r"Cannot write the PNG figure to .*a-file/figure\.png.*left behind"):
        write_all(files)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file", "older.json"]  # no new.html, no temp files
    assert older.read_text() == "new"  # replaced before the failure, and not deleted after it
    assert blocker.read_text() == "in the way"


def test_write_file_and_write_into_folder(tmp_path):
    assert write_file(tmp_path / "deep" / "page.html", b"x", "HTML report").read_bytes() == b"x"
    written = write_into_folder(tmp_path / "figs", {"a.png": b"1", "b.png": b"2"}, "figure")
    assert [p.read_bytes() for p in written] == [b"1", b"2"]
    with pytest.raises(OutputError, match="is a file, not a folder"):
        write_into_folder(tmp_path / "deep" / "page.html", {"a.png": b"1"}, "figure")


def test_non_finite_floats_survive_strict_json():
    data = {"loss": [1.5, math.nan, math.inf, -math.inf, None], "name": "inf", "pair": (1, 2)}
    text = json_text(to_json_value(data))
    assert "NaN" not in text and "Infinity" not in text
    back = json.loads(text)
    assert back["name"] == "inf" and back["pair"] == [1, 2]
    loss = from_json_value(back["loss"])
    assert loss[0] == 1.5 and math.isnan(loss[1]) and loss[2:] == [math.inf, -math.inf, None]
    assert json_text({"a": [1, 2]}, compact=True) == '{"a":[1,2]}'


def test_scalars_become_numbers_and_unknown_objects_are_refused_unless_stringified():
    assert to_json_value({"n": np.float32(0.5), "t": torch.tensor(3), 1: np.int64(2)}) == {"n": 0.5, "t": 3, "1": 2}
    with pytest.raises(TypeError):
        json_text(to_json_value({"x": object()}))
    assert to_json_value({"x": {1, 2}}, stringify_unknown=True) == {"x": "{1, 2}"}
    with pytest.raises(ValueError):
        json_text({"x": math.nan})  # a NaN that skipped the codec is a bug, not a file


@pytest.mark.parametrize(
    "content, message",
    [(None, "does not exist"), ("{trunc", r"not valid JSON \(line 1, column 2"), (b"\xff\xfe", "Cannot read run file")],
)
def test_read_json_file_says_what_is_wrong(tmp_path, content, message):
    path = tmp_path / "run.json"
    if isinstance(content, str):
        path.write_text(content)
    elif isinstance(content, bytes):
        path.write_bytes(content)
    with pytest.raises(RecordFormatError, match=message):
        read_json_file(path, "Run file", "Re-create it.")
