"""What the papers' recipes need (issue 23, item 1): SGDW, the exponential schedule, ELU-scaled
signed-constant weights, Xavier-scaled signed-supermask scores, model arguments; each pinned against the
paper's description."""

from __future__ import annotations

from pathlib import Path

import pytest

from supermask import cli

RECIPES = sorted((Path(__file__).resolve().parents[2] / "configs" / "papers").rglob("*.yaml"))


@pytest.mark.parametrize("recipe", RECIPES, ids=[p.stem for p in RECIPES])
def test_every_paper_recipe_names_its_source_and_resolves(recipe: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    text = recipe.read_text()
    assert "Published" in text and "%" in text  # the paper, its table and its figure, in the comment
    assert cli.main(["train", str(recipe), "--print-config"]) == 0
