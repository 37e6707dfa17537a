"""InitCheckReport rendered by rich: the same cells as the text table, problem rows in red."""

from __future__ import annotations

import io
import re

import torch
from rich.console import Console
from torch import nn

from lightning_init import check_init


def test_rich_rendering_has_the_text_tables_rows_and_marks_problem_layers_red() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 16), nn.Tanh())
    with torch.no_grad():
        net[2].weight.mul_(50.0)  # saturates the second tanh
    report = check_init(net, torch.randn(64, 16))
    # the saturated tanh, and the Linear whose gain (std(W) * sqrt(fan_in) = 29.5) causes it
    assert sorted((p.kind, p.layers) for p in report.problems) == [
        ("gain", ("2",)), ("saturation", ("3",))]
    problem = next(p for p in report.problems if p.kind == "saturation")

    console = Console(file=io.StringIO(), width=200, force_terminal=True, color_system="standard")
    console.print(report)
    text = Console(file=io.StringIO(), width=200)
    text.print(report)
    plain = text.file.getvalue()
    for layer in report.layers:
        assert f"{layer.index} │ {layer.name}" in plain
    assert "init check: 2 problem(s)" in plain and problem.message[:60] in plain
    red_lines = [re.sub(r"\x1b\[[0-9;]*m", "", line)
                 for line in console.file.getvalue().splitlines() if "\x1b[31m" in line]
    assert any(line.startswith("│ 3 │ 3 ") and "Tanh" in line for line in red_lines)
    assert not any(line.startswith("│ 1 │") for line in red_lines)  # the first tanh is fine
