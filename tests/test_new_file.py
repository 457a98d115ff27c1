"""Commands that read a trained run write only new files beside it (genzoo.io.run_layout.new_file)."""

from __future__ import annotations

from genzoo.io.run_layout import new_file


def test_new_file_takes_the_name_when_free_and_counts_up_when_taken(tmp_path):
    wanted = tmp_path / "grid_cli.png"
    first = new_file(wanted)
    assert first == wanted and first.exists()  # reserved, so that a concurrent caller moves on
    first.write_bytes(b"user's grid")
    second, third = new_file(wanted), new_file(wanted)
    assert (second.name, third.name) == ("grid_cli-1.png", "grid_cli-2.png")
    assert first.read_bytes() == b"user's grid"
