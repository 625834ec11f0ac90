"""Accessibility checks in the browser: axe-core (vendored, tests/web/vendor) run inside the page.

The script is injected through ``page.evaluate`` (the DevTools protocol), which the pages' Content-Security-Policy
does not govern, so the policy stays strict and no test-only exception is added to the server.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from playwright.sync_api import Page

AXE_SOURCE = (Path(__file__).parent / "vendor" / "axe-core-4.14.1.min.js").read_text(encoding="utf-8")
#: WCAG 2.1 A and AA rules (contrast included) and axe's best practices
AXE_TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "best-practice"]
BLOCKING = {"serious", "critical"}


def axe_violations(page: Page, *, context: str | None = None) -> list[dict[str, Any]]:
    """Every axe-core violation on the page as it is now (or inside the ``context`` CSS selector)."""
    if not page.evaluate("() => typeof window.axe === 'object'"):
        page.evaluate(AXE_SOURCE + "\n;undefined")
    result = page.evaluate(
        """async ([context, tags]) => {
             const found = await window.axe.run(context || document, {runOnly: {type: "tag", values: tags},
                                                                        resultTypes: ["violations"]});
             return found.violations.map((v) => ({id: v.id, impact: v.impact, help: v.help,
                                                  targets: v.nodes.map((n) => n.target.join(" ")).slice(0, 5)}));
           }""",
        [context, AXE_TAGS],
    )
    return list(result)


def assert_accessible(page: Page, *, context: str | None = None) -> None:
    """No serious or critical axe-core violation (WCAG 2.1 AA, contrast included) on the page."""
    blocking = [v for v in axe_violations(page, context=context) if v["impact"] in BLOCKING]
    assert not blocking, "axe-core found serious accessibility violations:\n" + "\n".join(
        f"- {v['id']} ({v['impact']}): {v['help']} at {v['targets']}" for v in blocking)
