"""The report as a reader meets it: the answer and the rule x cost table first, then the
figures, the definitions last, and Markdown emphasis shown as emphasis in the HTML page."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
from markdown_it import MarkdownIt

from study.contract import SUMMARY_JSON
from tests.analysis.conftest import run_analysis
from tests.analysis.tables import trial_table
from tests.browser import chromium

RULE_TABLE = "Selection rules and their test cost"


def _h2(markdown: str) -> list[str]:
    return re.findall(r"(?m)^## (.+)$", markdown)


def test_page_leads_with_answer_and_rule_table_and_ends_with_definitions(mlflow_report, tmp_path):
    """Real headless Chromium: what is on screen, in which order, and in which type."""
    driver = chromium(tmp_path / "profile")
    try:
        driver.set_window_size(1280, 2000)
        driver.get((mlflow_report["out"] / "index.html").resolve().as_uri())
        body = driver.find_element("tag name", "body").text
        emphasis = driver.execute_script(
            "return Array.from(document.querySelectorAll('em')).map(e => e.textContent)")
        assert {"loss pick", "accuracy pick", "disagrees"} <= set(emphasis)
        assert "*" not in body  # no Markdown emphasis left as text
        codes = driver.execute_script(
            "return Array.from(document.querySelectorAll('code')).map(e => e.textContent)")
        assert "val_loss" in codes and "val_accuracy" in codes
        # The first table on screen is the rule x cost table, one row per available rule.
        first_cells = driver.execute_script(
            "return Array.from(document.querySelector('table').querySelectorAll('tbody tr'))"
            ".map(row => row.cells[0].textContent)")
        assert first_cells[:2] == ["minimal val_loss (the loss rule)",
                                   "maximal val_accuracy (the accuracy rule)"]
        assert {"min_val_crossentropy", "last5_avg_val_loss", "last5_avg_val_accuracy",
                "accuracy_within_noise_then_loss", "max_val_accuracy_then_min_val_loss",
                "early_stopping_val_loss_p5", "early_stopping_val_loss_p5_restore",
                "early_stopping_val_accuracy_p5_restore"} <= set(first_cells[2:])
        assert "min_val_calibrated_nll" not in first_cells and "min_val_calibrated_nll" in body
        # Where each part sits on the rendered page, top to bottom.
        top = driver.execute_script("""
            const y = el => el.getBoundingClientRect().top + window.scrollY;
            const h2 = Array.from(document.querySelectorAll('h2'));
            const heading = text => y(h2.find(h => h.textContent === text));
            const answer = Array.from(document.querySelectorAll('p'))
                .find(p => p.textContent.startsWith('Answer.'));
            return {answer: y(answer), rules: heading(arguments[0]), table: y(document.querySelector('table')),
                    figure: y(document.images[0]), exclusions: heading('Exclusions'),
                    definitions: heading('Definitions'), last_h2: h2[h2.length - 1].textContent};
            """, RULE_TABLE)
        assert (top["answer"] < top["rules"] < top["table"] < top["figure"] < top["exclusions"]
                < top["definitions"]), top
        assert top["last_h2"] == "Definitions"
        shot = tmp_path / "report.png"  # looked at by hand once; not kept
        assert driver.save_screenshot(str(shot)) and shot.stat().st_size > 0
    finally:
        driver.quit()


def test_rule_table_gives_each_rules_disagreement_and_test_cost(mlflow_report):
    out = mlflow_report["out"]
    markdown = (out / "report.md").read_text()
    summary = json.loads((out / SUMMARY_JSON).read_text())
    headings = _h2(markdown)
    assert headings[0] == RULE_TABLE and headings[-1] == "Definitions"
    assert headings.index("Figures") < headings.index("Exclusions") < headings.index("Disagreement rates")
    rows = markdown.split(f"## {RULE_TABLE}")[1].split("\n## ")[0]
    assert "| minimal `val_loss` (the loss rule) | reference | reference |" in rows
    pairs = {tuple(pair["rules"]): pair["trial_level"] for pair in summary["rule_pairs"]}
    for name, rule in summary["rules"].items():
        if not rule["available"] or name == "min_val_loss":
            continue
        label = "maximal `val_accuracy` (the accuracy rule)" if name == "max_val_accuracy" else f"`{name}`"
        differs = pairs[("min_val_loss", name)]
        accuracy = summary["rule_costs"][name]["test_accuracy"]
        nll = summary["rule_costs"][name]["test_crossentropy"]
        # The row: the disagreement count, the accuracy cost in pp, the NLL cost, and n/a
        # for the ECE and Brier columns the synthetic store does not log.
        assert (f"| {label} | {differs['disagreements']} of {differs['studies']} studies "
                f"({differs['rate']:.1%}) ") in rows, name
        row = next(line for line in rows.splitlines() if line.startswith(f"| {label} |"))
        assert f"| {accuracy['mean'] * 100:+.2f} pp " in row and f"| {nll['mean']:+.4f} " in row
        assert row.endswith("| n/a | n/a |")
    # Rules the store cannot feed are named, with what they need.
    assert "Not available from this input:" in rows and "`min_val_calibrated_nll`" in rows
    page = (out / "index.html").read_text()
    assert "<em>loss pick</em>" in page and "*loss pick*" not in page


def test_table_mode_names_its_columns_and_puts_definitions_last(tmp_path: Path):
    """Without test accuracies the rule x cost table still gives each rule's disagreement,
    its cost cells n/a; the answer quotes the columns the user named, and a pipe in a name
    shows as a pipe in prose and in table cells."""
    path = tmp_path / "runs.csv"
    trial_table().rename(columns={"val_loss": "loss|xent", "val_accuracy": "acc",
                                  "test_accuracy": "held_out"}).to_csv(path, index=False)
    plain = tmp_path / "plain"
    proc = run_analysis("report", "--csv", str(path), "--out", str(plain), "--loss-col", "loss|xent",
                        "--accuracy-col", "acc", "--bootstrap", "50")
    assert proc.returncode == 0, proc.stderr
    markdown = (plain / "report.md").read_text()
    assert _h2(markdown)[0] == RULE_TABLE and _h2(markdown)[-1] == "Definitions"
    assert "n/a: `test_accuracy`: no test\\_accuracy column in the input" in markdown
    answer = MarkdownIt("commonmark").enable("table").render(markdown.split("\n\n")[1])
    assert "maximal <code>acc</code>" in answer and "val_accuracy" not in answer
    assert "minimal <code>loss|xent</code>" in answer  # no stray backslash before the pipe

    costed = tmp_path / "costed"
    proc = run_analysis("report", "--csv", str(path), "--out", str(costed), "--loss-col", "loss|xent",
                        "--accuracy-col", "acc", "--test-accuracy-col", "held_out", "--bootstrap", "50")
    assert proc.returncode == 0, proc.stderr
    page = (costed / "index.html").read_text()
    rules = page.split(RULE_TABLE)[1].split("</table>")[0]
    assert "<td>minimal <code>loss|xent</code> (the loss rule)</td>" in rules
    assert "<td>maximal <code>acc</code> (the accuracy rule)</td>" in rules
    assert {row.count("<td>") for row in rules.split("<tr>")[2:]} == {6}


def test_a_value_cannot_start_a_list_or_emphasis():
    """A note that begins like a list item stays one item; asterisks in a value stay text."""
    from analysis.report import Doc, literal

    doc = Doc()
    doc.bullets([literal("1. first"), literal("- second"), literal("+ third *not em*")])
    for page in (MarkdownIt("commonmark").enable("table").render(doc.markdown()), doc.html("t")):
        assert page.count("<li>") == 3 and "<ol>" not in page and page.count("<ul>") == 1
        assert "<li>1. first</li>" in page and "<li>- second</li>" in page
        assert "<li>+ third *not em*</li>" in page and "<em>" not in page
