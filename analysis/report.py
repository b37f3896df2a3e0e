"""Write `summary.json`, `report.md` and `index.html` from one list of blocks.

The HTML page is the Markdown document rendered, so the two never say different things;
it links figures by relative path so the directory can be moved or logged as MLflow
artifacts as a whole. The report leads with the answer and the rule x cost table, then the
figures, then the details, and ends with the definitions.
"""

from __future__ import annotations

import html
import json
import math
import re
from pathlib import Path
from urllib.parse import quote

from markdown_it import MarkdownIt

from analysis import calibration_claims, sweeps, validation_noise
from analysis.figures import Figure
from analysis.rules import REFERENCE
from analysis.summary import Analysis, jsonable
from study.contract import SUMMARY_JSON

ACCURACY_RULE = "max_val_accuracy"

LOSS_DEFINITION = (
    "**Loss metric.** The primary loss is {loss}. For `val_loss` this is what Keras and the "
    "MLflow UI show, and it includes the L2 penalty; `val_crossentropy` is the pure form and "
    "gets the same statistics as a variant.")
# Table mode knows only the columns it was given: say that, not what Keras logs.
TABLE_LOSS_DEFINITION = (
    "**Loss and accuracy.** The loss is column {loss} and the accuracy column {accuracy} of "
    "{name} (lower loss and higher accuracy are better; accuracies are fractions in [0, 1]). "
    "What the loss contains (a penalty or not) is whatever the table's producer logged; there "
    "is no second loss variant.")

DEFINITIONS = [
    "**Trial level (per study).** Each trial is scored by its best value over its epochs "
    "(`--scoring final`: its last epoch). Only COMPLETE trials count unless `--include-pruned`. "
    "The *loss pick* is the trial with minimal validation loss; if several tie, the first "
    "(lowest trial number, or first in file order) is the *representative* loss pick. The "
    "*accuracy pick* is the trial with maximal validation accuracy. A study *agrees* when its "
    "loss pick is among the trials tied at maximal accuracy (the accuracy pick is then the loss "
    "pick); otherwise it *disagrees*. The *disagreement rate* is the mean over studies of each "
    "study's disagreement, where a study whose loss rule ties counts the share of its tied-loss "
    "trials that are not at maximal accuracy (the loss rule picks uniformly among its ties), so "
    "the rate does not depend on row order; the *lenient* bound counts such a study as agreeing "
    "if any tied-loss trial is at maximal accuracy, the *strict* bound as disagreeing if any is "
    "not. Tests and explanations use the representative pick.",
    "**Epoch level (per trial).** The same rule over the epochs of each trial analysed at trial "
    "level: the epoch of minimal loss (the earliest, on ties) against the epochs tied at maximal "
    "accuracy. A trial needs at least 2 epochs for a verdict (the rest are listed under "
    "Exclusions). The rate is disagreeing trials / trials. The *epoch gap* is the epoch of maximal "
    "accuracy minus the epoch of minimal loss, in epochs; positive means accuracy peaked later.",
    LOSS_DEFINITION,
    "**Intervals.** All intervals are 95%. *Wilson*: the Wilson score interval for a proportion "
    "k/n, treating units as independent. *Bootstrap*: a percentile bootstrap that resamples "
    "whole studies with replacement ({boot} resamples, seed {seed}); trials of one study share "
    "a sampler history and a data split, so at epoch level the cluster bootstrap accounts for "
    "that and Wilson does not; at trial level (one unit per study) it is an ordinary bootstrap. "
    "The bootstrap gives no interval (n/a, with the reason) with fewer than 4 studies (more than "
    "2.5% of resamples would repeat one study, so a bound would be one study's value) or when "
    "every unit has the same value (every resample would too: a zero-width interval).",
    "**Rank agreement.** Kendall τ-b and Spearman ρ between −loss and accuracy across a study's "
    "trials, one value per study: +1 means both rules order the trials identically, 0 means "
    "unrelated orders. The report gives the median and quartiles over studies.",
    "**Gain and regret** (in percentage points, pp, of test accuracy). Gain = test accuracy of "
    "the accuracy pick − test accuracy of the loss pick, each at the epoch its rule scored "
    "(what each rule would deploy), also where both rules pick the same trial but score it at "
    "different epochs; positive favours the accuracy pick. Gain = regret of the loss pick − "
    "regret of the accuracy pick, exactly. Its CI is a paired bootstrap: the per-study (epoch level: per-trial) differences are "
    "resampled by study. Regret = the best test accuracy any trial of the study reached at its "
    "scored epochs, minus the pick's; 0 means the rule found the test-best trial.",
    "**McNemar.** An exact McNemar test on the same test images classified by two models: *b* "
    "images only the loss rule's model got right, *c* images only the accuracy rule's model got "
    "right; the test asks whether b and c differ by more than chance. Trial level: the two "
    "picks of each disagreeing study (`test_predictions.npz`). Epoch level: the predictions of "
    "each disagreeing trial at its two epochs (rows of `per_epoch`). p < 0.05 counts as "
    "significant; no pooled p-value is given, because the trials share one test set.",
    "**Budget position.** Where an optimum falls as (epoch + 1) / epoch budget (epochs counted "
    "from 0; the budget is `train.epochs`, or in table mode `--epochs` or else the study's "
    "largest epoch count); the Tuning Playbook warns about optima in the first 10% (learning "
    "rate too high, or budget far too long) and the last 25% (budget too short) of the budget. "
    "Each window is exactly that share of the budget: epoch e spans [e, e + 1), and an optimum "
    "in an epoch that straddles a window's edge counts for the part inside (of 10 epochs, "
    "epochs 8 and 9 count fully for the last 25%, epoch 7 half).",
    "**Boundary check.** A pick's hyperparameter value is *at the edge* when it lies in the "
    "outer 10% of its range at either end (on a log scale for log-scale knobs; for numeric "
    "choices, the first or last choice). The range is the *searched* one from the study's "
    "`space/effective_space.json` when logged, else the *explored* one (min to max over the "
    "analysed trials); each check says which. A knob is flagged when more than half of the "
    "picks sit at its edge: the Playbook's sign to widen the range.",
]

TESTS = {"fisher_exact": "Fisher's exact test on the 2 × 2 table of disagreeing and agreeing "
                         "units per experiment",
         "chi2_contingency": "a chi-square test of homogeneity on the table of disagreeing and "
                             "agreeing units per experiment"}


def _pp(x, signed: bool = True) -> str:
    """A difference of accuracies (fractions) in percentage points."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    return f"{x * 100:+.2f} pp" if signed else f"{x * 100:.2f} pp"


def _ci_pp(pair) -> str:
    if not pair or any(v is None or (isinstance(v, float) and math.isnan(v)) for v in pair):
        return "n/a"
    return f"[{_pp(pair[0])}, {_pp(pair[1])}]"


def _fmt(x, pct: bool = False) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    if isinstance(x, float):
        return f"{x:.1%}" if pct else f"{x:.3g}"
    return str(x)


def _ci(pair, pct: bool = True) -> str:
    if not pair or any(v is None or (isinstance(v, float) and math.isnan(v)) for v in pair):
        return "n/a"
    return f"[{_fmt(pair[0], pct)}, {_fmt(pair[1], pct)}]"


# A value from the data (an experiment, study, column or knob name, a tag, a reason) enters
# the text as a marked literal, escaped for Markdown where the document is written (the HTML
# page is that Markdown rendered): no name can open an HTML tag, a link, a list item or a
# table cell, and a newline in it is written as `\n` instead of starting a line of its own.
# Marks are private-use characters, which `_visible` escapes inside a value, so a value
# cannot close its own mark.
_MARK = re.compile("\ue000([lc])(.*?)\ue001", re.DOTALL)
_MD_SPECIAL = re.compile(r"([\\`*_\[\]<>|&#!~])")


def _visible(text: str) -> str:
    """Unprintable characters (newline, tab, controls, private use) as Python escapes."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def literal(value: object) -> str:
    """`value` shown exactly as written, in both documents."""
    return f"\ue000l{_visible(str(value))}\ue001"


def code(value: object) -> str:
    """`value` shown exactly as written, set as code."""
    return f"\ue000c{_visible(str(value))}\ue001"


# A value that would begin a list item where it starts a line (`- x`, `+ x`, `1. x`, `1) x`).
_LIST_MARKER = re.compile(r"^([-+])(?=\s|$)|^([0-9]{1,9})([.)])(?=\s|$)")


def _code_span(text: str) -> str:
    """A code span shows its text raw; its fence outgrows any run of backticks inside."""
    fence = "`" * (max((len(run) for run in re.findall("`+", text)), default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def _markdown_value(mark: re.Match) -> str:
    if mark[1] == "c":
        return _code_span(mark[2])
    escaped = _MD_SPECIAL.sub(r"\\\1", mark[2])
    return _LIST_MARKER.sub(lambda m: f"\\{m[1]}" if m[1] else f"{m[2]}\\{m[3]}", escaped)


def _cell_value(mark: re.Match) -> str:
    # Inside a table row `\|` keeps a pipe from ending the cell, in code spans too (the
    # table parser removes the backslash before the span is read); elsewhere it would show.
    return _markdown_value(mark).replace("|", "\\|") if mark[1] == "c" else _markdown_value(mark)


def _markdown(text: str) -> str:
    return _MARK.sub(_markdown_value, text)


def _markdown_cell(text: str) -> str:
    return _MARK.sub(_cell_value, text)


def _plain(text: str) -> str:
    return _MARK.sub(lambda mark: mark[2], text)


# CommonMark with tables and raw HTML off: the page is the Markdown document rendered, so
# emphasis, code and tables read the same in both, and any `<` that reaches the renderer is
# text. Values are escaped for Markdown before they get here (see `literal`).
_RENDERER = MarkdownIt("commonmark", {"html": False}).enable("table")
STYLE = ("body{font-family:sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;"
         "line-height:1.45}table{border-collapse:collapse;margin:1rem 0}"
         "td,th{border:1px solid #ccc;padding:.25rem .5rem;text-align:left}"
         "img{max-width:100%}"
         "code{background:#f3f3f3;padding:0 .2rem}")


class Doc:
    """A tiny block list written as Markdown; the HTML page is that Markdown rendered."""

    def __init__(self) -> None:
        self.blocks: list[tuple] = []

    def h(self, level: int, text: str) -> None:
        self.blocks.append(("h", level, text))

    def p(self, text: str) -> None:
        self.blocks.append(("p", text))

    def bullets(self, items: list[str]) -> None:
        if items:
            self.blocks.append(("ul", items))

    def table(self, header: list[str], rows: list[list]) -> None:
        if rows:
            self.blocks.append(("table", header, [[_fmt(c) if not isinstance(c, str) else c
                                                   for c in r] for r in rows]))

    def figure(self, fig: Figure) -> None:
        self.blocks.append(("fig", fig))

    def markdown(self) -> str:
        out = []
        for b in self.blocks:
            if b[0] == "h":
                out.append("#" * b[1] + " " + _markdown(b[2]))
            elif b[0] == "p":
                out.append(_markdown(b[1]))
            elif b[0] == "ul":
                out.append("\n".join(f"- {_markdown(i)}" for i in b[1]))
            elif b[0] == "table":
                out.append("\n".join(["| " + " | ".join(map(_markdown_cell, b[1])) + " |",
                                      "|" + "---|" * len(b[1]),
                                      *["| " + " | ".join(map(_markdown_cell, r)) + " |"
                                        for r in b[2]]]))
            elif b[0] == "fig":
                fig = b[1]
                out.append(f"![{_markdown(literal(fig.title))}]({quote(fig.file)})\n\n"
                           f"*{_markdown(literal(fig.caption.strip()))}*")
        return "\n\n".join(out) + "\n"

    def html(self, title: str) -> str:
        return (f"<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
                f"<title>{html.escape(_plain(title))}</title><style>{STYLE}</style></head>\n"
                f"<body>\n{_RENDERER.render(self.markdown())}</body></html>\n")


def _boot(block: dict, key: str = "ci95_bootstrap", pct: bool = True) -> str:
    """A bootstrap interval, or n/a with the reason it has none."""
    why = block.get(f"{key}_missing")
    return f"n/a ({why})" if why else _ci(block[key], pct)


def _boot_pp(block: dict, key: str) -> str:
    why = block.get(f"{key}_missing")
    return f"n/a ({why})" if why else _ci_pp(block[key])


def _count(x) -> str:
    return f"{x:g}" if isinstance(x, float) else str(x)


def _level_rows(name: str, block: dict) -> list[list]:
    rows = []
    for level, unit in (("trial_level", "studies"), ("epoch_level", "trials")):
        if level in block:
            b = block[level]
            rows.append([literal(name), level.replace("_", " "),
                         f"{_count(b['disagreements'])} / {b[unit]} {unit}",
                         _fmt(b["rate"], True), _ci(b["ci95_wilson"]), _boot(b)])
    return rows


def build(analysis: Analysis, figures: list[Figure], title: str) -> Doc:
    """The report in reading order: answer, rule x cost, figures, details, definitions."""
    summary = analysis.summary
    quoted = _quoted_names(summary)
    doc = Doc()
    doc.h(1, title)
    _sweep(doc, summary)
    _pool(doc, summary)
    _answer(doc, summary, quoted)
    _rule_cost(doc, summary, quoted)
    if summary["notes"] or summary["warnings"]:
        doc.h(2, "Read this first")
        doc.bullets([literal(line) for line in summary["notes"] + summary["warnings"]])
    _figures(doc, figures)
    doc.h(2, "Exclusions")
    if summary["exclusions"]:
        doc.table(["what", "why", "count"],
                  [[literal(item["what"]), literal(item["why"]), str(item["count"])]
                   for item in summary["exclusions"]])
    else:
        doc.p("Nothing was left out.")
    _rates(doc, summary)
    _rank_agreement(doc, summary)
    _cost(doc, summary, quoted)
    _epoch_level(doc, summary, quoted)
    if analysis.noise is not None:
        validation_noise.render(doc, analysis.noise)
    _calibration(doc, summary)
    _study_size(doc, summary)
    _explanations(doc, summary)
    _boundary(doc, summary)
    _definitions(doc, summary, quoted)
    doc.p("Machine-readable numbers: [summary.json](summary.json).")
    return doc


def _quoted_names(summary: dict) -> dict:
    """The metric and source names the text quotes, each marked as code."""
    source, boot = summary["source"], summary["source"]["bootstrap"]
    return {"loss": code(summary["loss_metric"]),  # a CSV column name in table mode
            "accuracy": code(source.get("columns", {}).get("accuracy-col", "val_accuracy")),
            "name": code(source.get("name")), "boot": boot["resamples"], "seed": boot["seed"]}


def _pool(doc: Doc, summary: dict) -> None:
    """One study's pool (a campaign): the rates and costs at study size k, first."""
    block = summary.get("pool")
    if not block:
        return
    doc.h(2, f"The pool: a study of k trials drawn from these {block['trials']} trials")
    doc.p("Exact averages over all k-subsets of the pool, with 95% percentile bootstrap intervals "
          f"over its trials ({block['bootstrap']} resamples, paired across columns). They are "
          "rates for studies of k trials when the pool's trials are i.i.d. draws: random sampling "
          "and no pruning, as in `make campaign`. *Disagree*: the loss rule's pick is not among "
          "the subset's trials of maximal val_accuracy (ties at minimal loss shared out). "
          "*L2 effect*: the rate by val_loss minus the rate by val_crossentropy (Keras adds the "
          "L2 penalty to val_loss only). *Gain*: the test accuracy of the val_accuracy pick minus "
          "that of the loss pick.")
    rows = [row for row in block["curve"] if not math.isnan(row.get("disagree_val_loss_lo", math.nan))]
    doc.table(["k", "P(disagree), val_loss", "P(disagree), val_crossentropy", "L2 effect",
               "test acc., val_loss pick", "test acc., val_accuracy pick", "gain over val_loss pick"],
              [[str(row["k"]), _with_ci(row, "disagree_val_loss", True),
                _with_ci(row, "disagree_val_crossentropy", True), _with_ci(row, "l2_effect", False),
                _with_ci(row, "test_val_loss", True), _with_ci(row, "test_val_accuracy", True),
                _with_ci(row, "gain_over_val_loss", False)] for row in rows])


def _with_ci(row: dict, name: str, share: bool) -> str:
    """`value [lo, hi]`: a share in percent, or a difference in percentage points."""
    if name not in row:
        return "n/a"
    pair = [row.get(f"{name}_lo"), row.get(f"{name}_hi")]
    if share:
        return f"{_fmt(row[name], True)} {_ci(pair)}"
    return f"{_pp(row[name])} {_ci_pp(pair)}"


def _one_pool(summary: dict) -> bool:
    """The input is one pool of trials (a campaign): rates come from its k-subsets, and any
    count of studies counts that one pool."""
    return summary["trial_level"]["studies"] == 1 and bool(_quoted_pool_rows(summary))


def _quoted_pool_rows(summary: dict) -> dict[str, dict]:
    """The pool's rows at the quoted study sizes that have an interval."""
    return {k: row for k, row in summary.get("pool", {}).get("at_k", {}).items()
            if not math.isnan(row.get("disagree_val_loss_lo", math.nan))}


def _pool_answer(doc: Doc, summary: dict, quoted: dict) -> None:
    """The answer of one pool: P(disagree) at the quoted study sizes, then the whole pool as
    the single study of N trials it also is."""
    trial, at_k = summary["trial_level"], _quoted_pool_rows(summary)
    rates = "; ".join(f"for a study of {k} trials, {_with_ci(row, 'disagree_val_loss', True)}"
                      for k, row in at_k.items())
    doc.p(f"**Answer.** Drawn from this pool, a study's trial of minimal {quoted['loss']} is not "
          f"among its trials of maximal {quoted['accuracy']} with probability: {rates} (95% "
          f"bootstrap intervals over the pool's trials; every k in the table above; rates only if the "
          f"trials are i.i.d. draws, as a campaign's are). The whole pool "
          f"is also one study of {trial['trials']} trials, a single draw at that size: "
          f"{_whole_pool_verdict(trial['disagreements'])}")


def _whole_pool_verdict(share: float) -> str:
    """The whole pool as one study. A tie at minimal loss makes the loss rule pick uniformly
    among the tied trials, so its count of disagreements is the share of them outside the
    accuracy picks, strictly between 0 and 1."""
    rest = "Sections below that count studies count that one study, so their rates are "
    if share in (0, 1):
        return (f"its loss pick {'is not' if share else 'is'} among its trials of maximal accuracy. "
                f"{rest}0 or 1, with wide intervals or none.")
    return ("its trials tie at minimal loss, and the loss rule, picking uniformly among them, picks one "
            f"not among its trials of maximal accuracy with probability {share:.1%}. {rest}that "
            f"probability ({share:.3g} of 1 study), with wide intervals or none.")


def _answer(doc: Doc, summary: dict, quoted: dict) -> None:
    if _one_pool(summary):
        _pool_answer(doc, summary, quoted)
        _epoch_answer(doc, summary, quoted)
        return
    trial, loss, accuracy = summary["trial_level"], quoted["loss"], quoted["accuracy"]
    doc.p(f"**Answer.** In {_count(trial['disagreements'])} of {trial['studies']} studies "
          f"({_fmt(trial['rate'], True)}; 95% CI: Wilson {_ci(trial['ci95_wilson'])}, bootstrap over "
          f"studies {_boot(trial)}) the trial with minimal {loss} was not among the "
          f"trials with maximal {accuracy} (trials scored by their {summary['scoring']} epoch; "
          f"{trial['trials']} trials in all; with ties at minimal loss counted leniently "
          f"{_fmt(trial['rate_lenient'], True)}, strictly {_fmt(trial['rate_strict'], True)}).")
    _epoch_answer(doc, summary, quoted)


def _epoch_answer(doc: Doc, summary: dict, quoted: dict) -> None:
    if "epoch_level" in summary:
        epoch = summary["epoch_level"]
        doc.p(f"Within trials, the epoch of minimal {quoted['loss']} was not an epoch of maximal "
              f"{quoted['accuracy']} in {epoch['disagreements']} of {epoch['trials']} trials "
              f"({_fmt(epoch['rate'], True)}; 95% CI: Wilson {_ci(epoch['ci95_wilson'])}, cluster "
              f"bootstrap over studies {_boot(epoch)}).")
    doc.p("The terms (*loss pick*, *disagrees*, the intervals) are defined in the *Definitions* "
          "section at the end.")


# The rule x cost table's test metrics: summary key, column header, how a difference prints.
COST_COLUMNS = (("test_accuracy", "test accuracy", True), ("test_crossentropy", "test NLL", False),
                ("test_ece", "test ECE", False), ("test_brier", "test Brier", False))


def _rule_cost(doc: Doc, summary: dict, quoted: dict) -> None:
    """Each selection rule: how often its pick is another trial than the loss rule's, and
    what its pick costs on the test set against the loss rule's (paired per study)."""
    if "rules" not in summary:
        return
    rules, costs = summary["rules"], summary["rule_costs"]
    versus_loss = {pair["rules"][1]: pair["trial_level"] for pair in summary["rule_pairs"]
                   if pair["rules"][0] == REFERENCE}
    doc.h(2, "Selection rules and their test cost")
    doc.p("One pick per study and rule, each rule over every epoch of every trial unless its "
          "definition says otherwise; ties go to the first trial (trial number, or file order) "
          "and its earliest epoch. *Differs*: studies whose pick is another trial than the loss "
          "rule's (Wilson 95% CI). Test columns: the rule's pick minus the loss rule's pick on "
          "the test set, per study, mean and 95% paired bootstrap CI over studies; accuracy in "
          "percentage points (pp, positive favours the rule), NLL, ECE and Brier score lower is "
          "better (negative favours the rule). Because a tie goes to the first trial here, the "
          "accuracy rule's row can exceed the answer's rate, which counts a study as agreeing "
          "when the loss pick is among the trials tied at maximal accuracy.")
    if _one_pool(summary):
        doc.p("This input is one pool, so each row compares the two rules' picks over the whole "
              f"pool, one study of {summary['trial_level']['trials']} trials: 0 or 1 of 1, and no "
              "interval over studies. The pool table above gives the loss and accuracy picks' test "
              "accuracy at every study size k.")
    rows = []
    for name, rule in rules.items():
        if not rule["available"]:
            continue
        label = _rule_label(name, quoted)
        if name == REFERENCE:
            rows.append([label, "reference", *["reference"] * len(COST_COLUMNS)])
            continue
        rows.append([label, _differs(versus_loss.get(name)),
                     *[_cost_cell(costs.get(name, {}).get(metric, {}), in_pp)
                       for metric, _, in_pp in COST_COLUMNS]])
    doc.table(["rule", "differs from the loss rule's trial [Wilson 95% CI]",
               *[f"{header} − loss rule's [95% CI]" for _, header, _ in COST_COLUMNS]], rows)
    missing_columns = {metric: costs[REFERENCE][metric]["missing"] for metric, _, _ in COST_COLUMNS
                       if "missing" in costs.get(REFERENCE, {}).get(metric, {})}
    if missing_columns:
        doc.p("n/a: " + "; ".join(f"{code(metric)}: {literal(reason)}"
                                  for metric, reason in missing_columns.items()) + ".")
    absent = [(name, rule["unavailable_reason"]) for name, rule in rules.items()
              if not rule["available"]]
    if absent:
        doc.p("Not available from this input: " + "; ".join(
            f"{code(name)} ({literal(reason)})" for name, reason in absent) + ".")


def _rule_label(name: str, quoted: dict) -> str:
    if name == REFERENCE:
        return f"minimal {quoted['loss']} (the loss rule)"
    if name == ACCURACY_RULE:
        return f"maximal {quoted['accuracy']} (the accuracy rule)"
    return code(name)


def _differs(block: dict | None) -> str:
    if not block or not block["studies"]:
        return "n/a (no study where both rules pick)"
    return (f"{block['disagreements']} of {block['studies']} studies "
            f"({_fmt(block['rate'], True)}) {_ci(block['ci95_wilson'])}")


def _cost_cell(cost: dict, in_pp: bool) -> str:
    """A paired difference and its interval, or n/a with the reason."""
    if "mean" not in cost:
        return "n/a"
    mean = _pp(cost["mean"]) if in_pp else _signed(cost["mean"])
    why = cost.get("ci95_bootstrap_missing")
    if why:  # its first clause; summary.json and the Definitions give the whole reason
        return f"{mean} (no interval: {literal(why.split(':')[0].split(', so')[0])})"
    low, high = cost["ci95_bootstrap"]
    return (f"{mean} [{_pp(low)}, {_pp(high)}]" if in_pp
            else f"{mean} [{_signed(low)}, {_signed(high)}]")


def _signed(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:+.4f}"


def _figures(doc: Doc, figures: list[Figure]) -> None:
    if not figures:
        return
    doc.h(2, "Figures")
    for f in figures:
        doc.h(3, literal(f.title))
        doc.figure(f)


def _rates(doc: Doc, s: dict) -> None:
    t = s["trial_level"]
    doc.h(2, "Disagreement rates")
    doc.p("Disagreements / units: studies at trial level, trials at epoch level. Wilson and "
          "bootstrap are the two 95% intervals defined under Definitions.")
    rows = _level_rows("all", s)
    if len(s["by_experiment"]) > 1:
        for name, block in s["by_experiment"].items():
            rows += _level_rows(name, block)
    doc.table(["experiment", "level", "disagreements", "rate", "Wilson 95% CI", "bootstrap 95% CI"], rows)
    doc.p(f"Ties: {t['accuracy_tie_studies']} studies had several trials tied at maximal accuracy "
          f"and {t['loss_tie_studies']} at minimal loss"
          + (f"; {s['epoch_level']['accuracy_tie_trials']} trials had several epochs tied at "
             "maximal accuracy" if "epoch_level" in s else "")
          + ". The tie rules are in the definitions.")
    for level, cmp in s.get("experiment_comparison", {}).items():
        if cmp:
            counts = ", ".join(f"{literal(g)}: {k}/{n}" for g, k, n in
                               zip(cmp["groups"], cmp["disagreements"], cmp["units"]))
            doc.p(f"**Do the experiments differ?** ({level.replace('_', ' ')}: {counts}) "
                  f"{TESTS.get(cmp['test'], cmp['test'])}: p = {_fmt(cmp['p_value'])}; a small p "
                  "(below 0.05) means the rates differ by more than chance"
                  + (", though trials clustered in studies make this p too small" if level == "epoch_level"
                     else "") + ".")
    if "l2_changes_loss_pick" in s:
        l2 = s["l2_changes_loss_pick"]
        doc.p(f"**L2 penalty alone.** In {l2['changed']} of {l2['studies']} studies "
              f"({_fmt(l2['rate'], True)}, Wilson 95% CI {_ci(l2['ci95_wilson'])}) the "
              "minimal-`val_loss` trial differs from the minimal-`val_crossentropy` trial: there "
              "the L2 penalty, not the fit to the data, decided the loss pick. The same rates "
              "with `val_crossentropy` as the loss:")
        rows = _level_rows("val_crossentropy", s["variants"]["val_crossentropy"])
        doc.table(["loss metric", "level", "disagreements", "rate", "Wilson 95% CI",
                   "bootstrap 95% CI"], rows)


def _rank_agreement(doc: Doc, s: dict) -> None:
    k, r = s["trial_level"]["kendall_tau_b"], s["trial_level"]["spearman_rho"]
    doc.h(2, "Rank agreement")
    doc.p(f"Over {k['studies']} studies with a ranking (one value per study; studies with a "
          f"constant metric have none): Kendall τ-b median {_fmt(k['median'])} (quartiles "
          f"{_fmt(k['q25'])} to {_fmt(k['q75'])}); Spearman ρ median {_fmt(r['median'])} "
          f"(quartiles {_fmt(r['q25'])} to {_fmt(r['q75'])}). +1 means −loss and accuracy order a "
          "study's trials identically; values well below 1 mean the rules disagree about more "
          "than the top trial.")


def _cost(doc: Doc, s: dict, names: dict) -> None:
    t = s["trial_level"]
    if "test_accuracy_gain_of_accuracy_pick" not in t:
        return
    doc.h(2, "Cost on held-out data")
    g, reg = t["test_accuracy_gain_of_accuracy_pick"], t["test_regret"]
    doc.p("Gain = test accuracy of the accuracy pick − that of the loss pick, in percentage "
          "points (pp); positive favours the accuracy pick. 95% CI: paired bootstrap "
          "resampling studies.")
    rows = [["trial level, all studies", _pp(g["mean"]), _boot_pp(g, "ci95")],
            ["trial level, disagreeing studies only", _pp(g["mean_when_disagree"]),
             _boot_pp(g, "ci95_when_disagree")]]
    if "test_accuracy_gain_of_accuracy_pick" in s.get("epoch_level", {}):
        ge = s["epoch_level"]["test_accuracy_gain_of_accuracy_pick"]
        rows += [["epoch level, all trials (0 where the epochs agree)", _pp(ge["mean"]),
                  _boot_pp(ge, "ci95")],
                 ["epoch level, disagreeing trials only", _pp(ge["mean_when_disagree"]),
                  _boot_pp(ge, "ci95_when_disagree")]]
    doc.table(["mean test-accuracy gain of the accuracy pick", "mean", "95% CI"], rows)
    doc.p(f"Mean test regret over all studies (how far the pick's test accuracy falls short "
          f"of the study's test-best trial; 0 is perfect, no interval): loss pick "
          f"{_pp(reg['loss_pick'], False)}, accuracy pick {_pp(reg['accuracy_pick'], False)}.")
    if "mcnemar" in t:
        _mcnemar_trials(doc, t["mcnemar"])
    if "mcnemar" in s.get("epoch_level", {}):
        _mcnemar_epochs(doc, s["epoch_level"]["mcnemar"], names)


def _mcnemar_trials(doc: Doc, m: dict) -> None:
    doc.p(f"**McNemar, trial level** (exact; loss pick vs accuracy pick on the same test "
          f"images, in {m['studies_tested']} disagreeing studies with predictions): "
          f"{m['significant_at_0.05']} of {m['studies_tested']} significant at p < 0.05 "
          f"(median p {_fmt(m['median_p'])}). The accuracy pick was right on more of the "
          f"images the two picks classified differently in {m['accuracy_pick_better']} "
          f"studies, the loss pick in {m['loss_pick_better']}; summed over those studies, "
          f"{m['discordant_accuracy_pick_only_right']} images were right only for the "
          f"accuracy pick (c) and {m['discordant_loss_pick_only_right']} only for the "
          "loss pick (b).")


def _mcnemar_epochs(doc: Doc, m: dict, names: dict) -> None:
    doc.p(f"**McNemar, epoch level** (exact; each disagreeing trial's test predictions at "
          f"its epoch of minimal {names['loss']} vs at its epoch of maximal {names['accuracy']}): "
          f"{m['trials_tested']} of {m['disagreeing_trials']} disagreeing trials had "
          f"per-epoch predictions; {m['significant_at_0.05']} of them "
          f"({_fmt(m['share_significant'], True)}, Wilson 95% CI "
          f"{_ci(m['share_significant_ci95_wilson'])}) differ significantly at p < 0.05 "
          f"(median p {_fmt(m['median_p'])}). The accuracy epoch was right on more "
          f"discordant images in {m['accuracy_epoch_better']} trials, the loss epoch in "
          f"{m['loss_epoch_better']}. Pooled over the tested trials "
          f"({m['test_images_per_trial']} test images each): "
          f"{m['discordant_accuracy_epoch_only_right']} images right only at the accuracy "
          f"epoch (c), {m['discordant_loss_epoch_only_right']} only at the loss epoch (b), "
          f"so {_fmt(m['share_of_discordant_favouring_accuracy_epoch'], True)} of the "
          "discordant images favour the accuracy epoch.")


def _epoch_level(doc: Doc, s: dict, names: dict) -> None:
    if "epoch_level" not in s:
        return
    e, loss, accuracy = s["epoch_level"], names["loss"], names["accuracy"]
    doc.h(2, "Epoch level")
    gap = e["epoch_gap"]
    doc.p(f"Epoch gap (epoch of maximal {accuracy} − epoch of minimal {loss}, over all "
          f"{e['trials']} trials): mean {_fmt(gap['mean'])}, median {_fmt(gap['median'])}, mean "
          f"absolute {_fmt(gap['mean_abs'])} epochs; over disagreeing trials only, mean "
          f"{_fmt(gap['mean_when_disagree'])} epochs.")
    pos = e["optimum_position"]
    doc.p("Share of trials whose optimum falls in the first 10% / last 25% of the epoch budget, "
          "and the median position ((epoch + 1) / budget; 100% is the last epoch):")
    doc.table(["optimum", "in first 10% of budget", "in last 25% of budget", "median position"],
              [[f"minimal {loss}", _fmt(pos["loss"]["first_10pct"], True),
                _fmt(pos["loss"]["last_25pct"], True), _fmt(pos["loss"]["median_fraction_of_budget"], True)],
               [f"maximal {accuracy}", _fmt(pos["accuracy"]["first_10pct"], True),
                _fmt(pos["accuracy"]["last_25pct"], True),
                _fmt(pos["accuracy"]["median_fraction_of_budget"], True)]])


def _calibration(doc: Doc, s: dict) -> None:
    if "calibration_of_picks" not in s:
        return
    c = s["calibration_of_picks"]
    doc.h(2, "Calibration of the picks")
    doc.p(f"Mean validation ECE (expected calibration error: the gap between confidence and "
          f"accuracy, lower is better) at each pick's scored epoch, over all studies: loss pick "
          f"{_fmt(c['val_ece_loss_pick_mean'])}, accuracy pick "
          f"{_fmt(c['val_ece_accuracy_pick_mean'])}; mean confidence "
          f"{_fmt(c.get('val_confidence_loss_pick_mean'))} and "
          f"{_fmt(c.get('val_confidence_accuracy_pick_mean'))}.")
    paired = [(m, c[f"{m}_accuracy_minus_loss_pick"]) for m in ("val_ece", "val_confidence")
              if f"{m}_accuracy_minus_loss_pick" in c]
    if paired:
        doc.p("Paired per study, accuracy pick minus loss pick (0 where they agree; bootstrap "
              "95% CI over studies). A positive ECE difference means the accuracy pick is the "
              "worse calibrated one, the overconfidence that lets it win on accuracy while "
              "losing on loss:")
        doc.table(["metric", "mean difference", "95% CI"],
                  [[f"`{m}`", _fmt(d["mean"]), _boot(d, pct=False)] for m, d in paired])


def _study_size(doc: Doc, s: dict) -> None:
    if not s.get("study_size"):
        return
    sizes = s["study_size"]
    first, last = sizes[0], sizes[-1]
    doc.h(2, "Study size")
    band = (lambda row: f"95% CI {_ci([row['lo'], row['hi']])}" if row.get("lo") is not None
            else f"no interval: {row.get('ci_missing')}")
    doc.p(f"P(disagree) for a study of k trials, computed exactly over all k-subsets of each "
          f"study's trials (same tie rule as the rate) and averaged over one fixed set of "
          f"{first['studies']} studies, those with at least {last['k']} trials "
          f"({first['left_out']} smaller studies left out), so every k uses the same studies: "
          f"{_fmt(first['rate'], True)} at k = {first['k']} ({band(first)}), "
          f"{_fmt(last['rate'], True)} at k = {last['k']} ({band(last)}); intervals are a "
          "bootstrap over the studies. The study-size figure shows the whole curve.")


def _boundary(doc: Doc, s: dict) -> None:
    checks = s.get("boundary_checks", [])
    if not checks:
        return
    doc.h(2, "Boundary check")
    doc.p("Picks whose value lies in the outer 10% of the range at either end (first or last "
          "choice for numeric choices); the range is the searched one when the study logged "
          "its search space, else the explored one. Flagged: more than half of the picks at "
          "the edge.")
    doc.table(["hyperparameter", "pick", "range used", "range", "picks at edge", "flagged"],
              [[code(b["param"]), b["pick"].replace("_", " "), b["range_source"], literal(b["range"]),
                f"{b['picks_at_edge']} of {b['picks']}", "⚠ yes" if b["at_edge"] else "no"]
               for b in checks])


def _definitions(doc: Doc, summary: dict, quoted: dict) -> None:
    """Last: a reader who needs a term looks it up; the others reach the numbers first."""
    doc.h(2, "Definitions")
    loss_definition = (TABLE_LOSS_DEFINITION if summary["source"].get("kind") in ("csv", "parquet")
                       else LOSS_DEFINITION)
    items = [(loss_definition if text is LOSS_DEFINITION else text).format(**quoted)
             for text in DEFINITIONS]
    if "rules" in summary:
        items.append("**Selection rules** (the rule x cost table; `docs/analysis.md` cites where "
                     "each comes from): " + "; ".join(
                         f"{code(name)}: {literal(rule['description'])}"
                         for name, rule in summary["rules"].items() if rule["available"]) + ".")
    doc.bullets(items)


def _explanations(doc: Doc, s: dict) -> None:
    ex = s.get("explanations", {})
    names = ex.get("features", {})
    groups = ex.get("epoch_level", {}).get("grouped_rates", []) + ex.get("trial_level", {}).get("grouped_rates", [])
    logit = ex.get("epoch_level", {}).get("logistic")
    study_logit = ex.get("trial_level", {}).get("logistic")
    if not groups and not logit and not study_logit:
        return
    doc.h(2, "What goes with disagreement")
    if names:
        doc.p("Features: " + "; ".join(f"{code(f)} = {literal(d)}" for f, d in names.items()) + ".")
    epoch_groups = ex.get("epoch_level", {}).get("grouped_rates", [])
    if epoch_groups:
        doc.p("Epoch-level disagreement rate per feature bin: continuous features are cut into "
              "tertiles (three bins of about equal size, named by their value range), others "
              "grouped by value; Wilson 95% CIs treat trials as independent, so they are too "
              "narrow when trials cluster in studies.")
        doc.table(["feature", "bin", "trials", "rate", "Wilson 95% CI"],
                  [[literal(g["feature"]), literal(g["group"]), str(g["n"]), _fmt(g["rate"], True),
                    _ci(g["ci95_wilson"])] for g in epoch_groups])
    trial_groups = ex.get("trial_level", {}).get("grouped_rates", [])
    if trial_groups:
        doc.p("Trial-level disagreement rate per study group (one unit per study):")
        doc.table(["feature", "group", "studies", "rate", "Wilson 95% CI"],
                  [[literal(g["feature"]), literal(g["group"]), str(g["n"]), _fmt(g["rate"], True),
                    _ci(g["ci95_wilson"])] for g in trial_groups])
    if logit:
        _logistic(doc, logit, "feature", "No logistic regression",
                  f"Logistic regression of epoch-level disagreement on standardised features "
                  f"(features spanning ≥ 10× are log10-transformed first; {logit.get('n')} trials, "
                  f"{logit.get('events')} disagreements, standard errors {logit.get('standard_errors')} "
                  f"over {logit.get('clusters')} studies). "
                  "An odds ratio above 1 means disagreement grows more likely as the feature rises "
                  "by one standard deviation, the others held fixed; 95% CI and p are Wald:")
    if study_logit:
        _logistic(doc, study_logit, "feature (study mean)", "No study-level logistic regression",
                  f"Logistic regression of trial-level disagreement (one unit per study; "
                  f"{study_logit.get('n')} studies, {study_logit.get('events')} disagreeing) on the "
                  "study means of the causes above, standardised the same way:")


def _logistic(doc: Doc, fit: dict, feature_header: str, missing: str, intro: str) -> None:
    """One fitted model as a table of odds ratios, or the reason there is none."""
    if "terms" not in fit:
        doc.p(f"{missing}: {fit['error']}.")
        return
    doc.p(intro)
    doc.table([feature_header, "odds ratio / SD", "95% CI", "p"],
              [[literal(f), _fmt(v["odds_ratio_per_sd"]), _ci(v["ci95"], False), _fmt(v["p_value"])]
               for f, v in fit["terms"].items()])


def write(analysis: Analysis, figures: list[Figure], out: Path, title: str) -> list[Path]:
    """Write the three documents; returns every file of the report."""
    out.mkdir(parents=True, exist_ok=True)
    (out / SUMMARY_JSON).write_text(json.dumps(jsonable(analysis.summary), indent=2,
                                                 allow_nan=False) + "\n")
    doc = build(analysis, figures, title)
    (out / "report.md").write_text(doc.markdown())
    (out / "index.html").write_text(doc.html(title))
    return [out / SUMMARY_JSON, out / "report.md", out / "index.html", *(out / f.file for f in figures)]


# ------------------------------------------------------------------ paired sweeps (issue 11)

def _sweep(doc: Doc, summary: dict) -> None:
    """A sweep's answer first: per factor and level, the paired effect beside its A/A floor."""
    sweep = summary.get("sweep")
    if not sweep:
        return
    doc.h(2, "The sweep: what each factor changes")
    doc.p("Each pair is one base configuration trained once per arm with the same seed, data order "
          "and shared initial weights: the *reference* (the factor's first level), a *treatment* per "
          "other level, and a *replicate* (the reference again: the A/A control). Every number below "
          "is a treatment minus its own pair's reference, averaged over pairs, with a 95% percentile "
          f"bootstrap over pairs ({sweep['bootstrap']['resamples']} resamples, seed "
          f"{sweep['bootstrap']['seed']}); the *A/A floor* beside it is the replicate minus the "
          "reference, what training the same thing again changes. An effect is *clear* when its "
          "interval excludes 0 and does not overlap the floor's interval. Rules: the epoch of minimal "
          "`val_loss` (or `val_crossentropy`) against the epochs of maximal `val_accuracy` in each "
          "trial, ties as in the epoch level; P(disagree | k) pools each arm's trials (one per pair, "
          f"scored by their best epoch) and is exact over all k-subsets (k = {sweep['k']}). The rates "
          "in the rest of this report pool every arm of the sweep as if one search had drawn them.")
    doc.table(["factor", "reference level", "other levels", "pairs", "A/A replicate",
               "replicates bit-identical to their reference"],
              [[literal(f["factor"]), literal(f["reference_level"]), literal(", ".join(f["levels"])),
                str(f["pairs"]), "yes" if f["replicate"] else "no (no floor, so no effect is called clear)",
                _replicate_agreement(f.get("replicate_agreement"))]
               for f in sweep["factors"]])
    _sweep_verdict(doc, sweep)
    _calibration_claims(doc, sweep.get("calibration_claims", []))
    for outcome in sweeps.OUTCOMES:
        rows = [c for c in sweep["comparisons"] if c["outcome"] == outcome.name]
        if rows:
            doc.h(3, f"Sweep: {literal(outcome.label)}")
            _sweep_table(doc, outcome, rows)
    if sweep["columns_missing"]:
        doc.p("Not computed (the table has no such column): outcomes from "
              + ", ".join(code(c) for c in sweep["columns_missing"]) + ".")
    if sweep["pairs_running"]:
        named = "; ".join(f"{r['factor']} pair {r['pair']} (lacks {', '.join(r['lacking'])})"
                          for r in sweep["pairs_running"])
        doc.p(f"Left out, pairs lacking arms (a sweep still running trains them later: the current "
              f"pair, and arms cut before they logged): {literal(named)}. Re-run the sweep to finish them.")
    if sweep.get("trials_superseded"):
        named = "; ".join(f"{t['factor']} pair {t['pair']} {t['arm']} {t['level']} (study {t['study']}, trial {t['trial']})"
                          for t in sweep["trials_superseded"])
        doc.p(f"Trained again (the arm was cut, FAIL, and the sweep re-queued it): the later trial stands, "
              f"the cut one is left out of the pairs: {literal(named)}.")
    if sweep.get("pairs_mixed"):
        named = "; ".join(sweeps.mixed_text(m) for m in sweep["pairs_mixed"])
        doc.p(f"Kept, but trained on different threads or CPUs across their arms (a pair cut and resumed "
              f"elsewhere; the A/A floor does not hold this difference): {literal(named)}.")
    if sweep["trials_not_analysed"]:
        doc.p(f"{len(sweep['trials_not_analysed'])} trials of the sweep have no usable epochs (see "
              "Exclusions) and are left out of every difference they belong to; the pairs column "
              "counts the pairs used.")


def _replicate_agreement(agreement: dict | None) -> str:
    """'18 of 43 (median largest |Δ val_loss| 0.0065)': how often training the same pair again
    gave the same curve, and how far apart the others landed."""
    if not agreement or not agreement["pairs"]:
        return "n/a"
    return (f"{agreement['identical']} of {agreement['pairs']} (median largest |Δ {code(agreement['loss'])}| "
            f"over the epochs {_fmt(agreement['median_max_gap'])})")


def _sweep_verdict(doc: Doc, sweep: dict) -> None:
    """The paragraph a reader needs: per factor and level, which effects are clear (with
    their size by each rule) and which are not."""
    labels = {o.name: o for o in sweeps.OUTCOMES}
    by_arm: dict[tuple, dict[str, list[dict]]] = {}
    for c in sweep["comparisons"]:
        by_arm.setdefault((c["factor"], c["level"], c["reference_level"]), {}).setdefault(c["outcome"], []).append(c)
    clear_parts, unclear_parts = [], []
    for (factor, level, reference), outcomes in by_arm.items():
        arm = f"{literal(factor)} = {literal(level)} (against {literal(reference)})"
        effects, unclear = [], []
        for name, rows in outcomes.items():
            outcome, clear = labels[name], [c for c in rows if c["clear"]]
            if clear:
                sizes = ", ".join(f"min {code(c['loss'])} {_sweep_value(c['effect'], outcome)}" for c in clear)
                effects.append(f"{'raises' if clear[0]['effect']['difference'] > 0 else 'lowers'} "
                               f"{outcome.label} ({sizes})")
            if len(clear) < len(rows):
                rules = "" if not clear else " by " + ", ".join(
                    f"min {code(c['loss'])}" for c in rows if not c["clear"])
                unclear.append(outcome.label + rules)
        if effects:
            clear_parts.append(f"{arm} " + "; ".join(effects))
        if unclear:
            unclear_parts.append(f"{arm}: " + ", ".join(unclear))
    total, n_clear = len(sweep["comparisons"]), sum(c["clear"] for c in sweep["comparisons"])
    doc.p(f"**Clear effects** ({n_clear} of {total} differences, each rule counted apart): "
          + (". ".join(clear_parts) if clear_parts else "none") + ".")
    if unclear_parts:
        doc.p("**Not clear** (the interval includes 0, overlaps the A/A floor's, or there is none): "
              + ". ".join(unclear_parts) + ".")


def _calibration_claims(doc: Doc, claims: list[dict]) -> None:
    """Guo et al. 2017's two calibration claims (analysis/calibration_claims.py): the verdict
    on each, with the numbers it rests on, or why the sweep cannot test it."""
    doc.h(3, "Guo et al. 2017 (Fig. 2) on this data")
    titles = {calibration_claims.BATCH_NORM: "Batch norm raises ECE while accuracy barely moves",
              calibration_claims.WEIGHT_DECAY: "ECE keeps falling with more weight decay past the accuracy optimum"}
    parts = []
    for claim in claims:
        head = f"*{titles[claim['claim']]}* ({literal(claim['factor'])}"
        if "floor" not in claim:  # untested: `calibration_claims.untestable`
            parts.append(f"{head}): **not testable**: {literal(claim['reason'])}.")
        elif claim["claim"] == calibration_claims.BATCH_NORM:
            parts.append(f"{head} {literal(claim['on'])} − {literal(claim['off'])}, {claim['ece']['pairs']} pairs): "
                         f"**{claim['verdict']}**, on the ECE sign. {_batch_norm_numbers(claim)}")
        else:
            parts.append(f"{head}, {claim['pairs']} pairs with every level): **{claim['verdict']}**"
                         + (f": {literal(claim['reason'])}" if claim.get("reason") else "")
                         + f". {_weight_decay_numbers(claim)}")
    for name, title in titles.items():
        if not any(claim["claim"] == name for claim in claims):
            needs = ("`batch_norm` factor" if name == calibration_claims.BATCH_NORM
                     else "`l2` factor with 4 levels or more (`make sweep`'s dose-response)")
            parts.append(f"*{title}*: not tested, the sweep has no {needs}.")
    doc.p("Both at the accuracy pick (each trial's epoch of best val accuracy). A verdict *reproduces* "
          "where every difference the claim needs is clear in its direction (interval beyond 0 and "
          "beyond the A/A floor's), *reversed* where one is clear the other way, *not clear* "
          "otherwise. " + " ".join(parts))


def _ece_outcome() -> sweeps.Outcome:
    """The sweep outcome both claims read: val ECE at the accuracy pick."""
    return next(outcome for outcome in sweeps.OUTCOMES if outcome.name == calibration_claims.ECE)


def _batch_norm_numbers(claim: dict) -> str:
    ece = _ece_outcome()
    accuracy = sweeps.Outcome(calibration_claims.ACCURACY, "val accuracy at the accuracy pick", "share", "val_accuracy")
    return (f"Val ECE {_sweep_value(claim['ece'], ece)} (A/A floor {_sweep_value(claim['floor'], ece)}); "
            f"val accuracy {_sweep_value(claim['accuracy'], accuracy)} (shown, not tested: the claim "
            "gives no threshold for \"barely\").")


def _weight_decay_numbers(claim: dict) -> str:
    ece = _ece_outcome()
    means = ", ".join(f"{literal(level)} {_fmt(mean, True)}" for level, mean in zip(claim["levels"], claim["accuracy_means"]))
    steps = "; ".join(f"{literal(step['from'])} → {literal(step['level'])}: {_sweep_value(step['ece'], ece)}"
                      for step in claim["steps"])
    return (f"Mean val accuracy: {means}; the optimum, {literal(claim['optimum'])}, has the highest mean in "
            f"{_fmt(claim['optimum_share'], True)} of the bootstrap resamples of pairs (the steps below take "
            f"it as given). Val ECE change at each step past it: {steps or 'none'} (A/A floor "
            f"{_sweep_value(claim['floor'], ece)}).")


def _sweep_value(block: dict | None, outcome) -> str:
    """A paired difference and its interval in the outcome's unit, or n/a with the reason."""
    if block is None:
        return "n/a (no replicate)"
    show = ((lambda x: _pp(x)) if outcome.unit == "share"
            else (lambda x: "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:+.3g}"))
    why = block.get("ci95_missing")
    interval = f"no interval: {literal(why)}" if why else f"[{show(block['ci95'][0])}, {show(block['ci95'][1])}]"
    return f"{show(block['difference'])} {interval}"


def _sweep_level(x, outcome) -> str:
    return _fmt(x, True) if outcome.unit == "share" else _fmt(x)


def _sweep_table(doc: Doc, outcome, rows: list[dict]) -> None:
    mcnemar = outcome.name == "epoch_disagree"
    header = ["factor = level", "rule", "pairs", "reference", "level", "level − reference [95% CI]",
              "A/A floor [95% CI]", *(["McNemar b / c, p", "A/A McNemar p"] if mcnemar else []), "clear"]
    body = []
    for c in rows:
        e, floor = c["effect"], c["floor"]
        line = [f"{literal(c['factor'])} = {literal(c['level'])}", code(c["loss"]), str(e["pairs"]),
                _sweep_level(e["reference_mean"], outcome), _sweep_level(e["arm_mean"], outcome),
                _sweep_value(e, outcome), _sweep_value(floor, outcome)]
        if mcnemar:
            m = e["mcnemar"]
            line += [f"{m['b']} / {m['c']}, p = {_fmt(m['p_value'])}",
                     _fmt(floor["mcnemar"]["p_value"]) if floor else "n/a"]
        body.append(line + ["yes" if c["clear"] else "no"])
    doc.table(header, body)
