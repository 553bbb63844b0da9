"""Plain tables (issue #9): columns line up in terminal cells, with CJK and emoji."""

from __future__ import annotations

from rich.cells import cell_len  # the oracle: Rich's own width tables, independent of tables.cell_width

from localassist.cli.tables import fit_cells, print_table


def test_columns_align_in_display_cells_with_cjk_and_emoji(capsys):
    print_table(
        ["NAME", "SIZE"],
        [["ascii-model", "1"], ["日本語のモデル", "2"], ["🙂 smile 🚀", "3"], ["café", "4"]],
    )
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 5
    # the last column starts at the same screen column on every line
    starts = {cell_len(line[: line.rindex(" ") + 1]) for line in lines}
    assert starts == {cell_len("日本語のモデル  ")}


def test_long_text_is_cut_to_a_width_in_cells():
    cut = fit_cells("漢字" * 30, 40)
    assert cut.endswith("…") and cell_len(cut) <= 40 and cell_len(cut) >= 39
    assert fit_cells("short", 40) == "short"
    assert fit_cells("🙂" * 5, 10) == "🙂" * 5
