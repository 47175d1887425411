"""docs/build.py (issue 26, item 4): the reference pages come from the code, and the checker fails on
what a reader would trip over."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]


def builder() -> ModuleType:
    spec = importlib.util.spec_from_file_location("docs_build", ROOT / "docs" / "build.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["docs_build"] = module
    spec.loader.exec_module(module)
    return module


def test_the_committed_reference_pages_are_what_the_code_generates() -> None:
    assert builder().main(["--check"]) == 0


def test_a_broken_link_or_anchor_is_an_error(tmp_path: Path) -> None:
    build = builder()
    (tmp_path / "other.md").write_text("# A heading, with `code`\n")
    page = tmp_path / "page.md"
    page.write_text(
        "[ok](other.md#a-heading-with-code) [file](missing.md) [anchor](other.md#nope) [web](https://x.org)\n"
        "```\n[in code](ignored.md)\n```\n"
    )
    build.ROOT = tmp_path
    problems: list[str] = []
    build.check_links([page], problems)
    assert problems == [
        "page.md: link missing.md: no such file",
        "page.md: link other.md#nope: no heading with that anchor",
    ]


def test_every_config_key_is_in_the_config_page_with_its_meaning() -> None:
    from supermask.runconfig import valid_keys

    problems: list[str] = []
    page = builder().config_page(problems)
    assert problems == []
    assert all(f"| `{key}` |" in page for key in valid_keys() if key != "supermask.options")
