"""Write `summary.json`, `report.md` and `index.html` from one list of blocks.

Both documents render the same blocks, so the Markdown and the HTML never say different
things; the HTML links figures by relative path so the directory can be moved or logged
as MLflow artifacts as a whole.
"""

from __future__ import annotations

import html
import json
import math
from pathlib import Path

from analysis.figures import Figure
from analysis.summary import Analysis, jsonable

DEFINITIONS = [
    "**Trial level (per study).** Each trial is scored by its best value over its epochs "
    "(`--scoring final`: its last epoch). Only COMPLETE trials count unless `--include-pruned`. "
    "The *loss pick* is the trial with minimal validation loss; if several tie, the first "
    "(lowest trial number, or first in file order). The *accuracy pick* is the trial with "
    "maximal validation accuracy. A study *agrees* when its loss pick is among the trials tied "
    "at maximal accuracy; otherwise it *disagrees*.",
    "**Epoch level (per trial).** The same rule over the epochs of each trial analysed at trial "
    "level: the epoch of minimal loss against the epochs tied at maximal accuracy (earliest "
    "epoch wins a loss tie). The *epoch gap* is the accuracy epoch minus the loss epoch.",
    "**Loss metric.** The primary loss is `{loss}`. For `val_loss` this is what Keras and the "
    "MLflow UI show, and it includes the L2 penalty; `val_crossentropy` is the pure form and "
    "gets the same statistics as a variant.",
    "**Intervals.** Wilson 95% intervals for proportions; a cluster bootstrap over studies "
    "({boot} resamples, seed {seed}), since trials of one study are not independent.",
    "**Rank agreement.** Kendall τ-b and Spearman ρ between −loss and accuracy across a study's "
    "trials: +1 means both order the trials identically.",
    "**Gain and regret.** Gain = test accuracy of the accuracy pick − test accuracy of the loss "
    "pick, each at the epoch its rule scored, 0 where the picks agree; its CI is a paired "
    "bootstrap over studies. Regret = the best test accuracy any trial of the study reached at "
    "its scored epochs, minus the pick's. McNemar's exact test compares the two picks' test "
    "predictions in each disagreeing study.",
    "**Budget position.** Where an optimum falls as (epoch + 1) / epoch budget; the Tuning "
    "Playbook warns about optima in the first 10% and the last 25% of the budget.",
]


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


class Doc:
    """A tiny block list rendered to both Markdown and HTML."""

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
                out.append("#" * b[1] + " " + b[2])
            elif b[0] == "p":
                out.append(b[1])
            elif b[0] == "ul":
                out.append("\n".join(f"- {i}" for i in b[1]))
            elif b[0] == "table":
                out.append("\n".join(["| " + " | ".join(b[1]) + " |",
                                      "|" + "---|" * len(b[1]),
                                      *["| " + " | ".join(r) + " |" for r in b[2]]]))
            elif b[0] == "fig":
                out.append(f"![{b[1].title}]({b[1].file})\n\n*{b[1].caption}*")
        return "\n\n".join(out) + "\n"

    def html(self, title: str) -> str:
        def inline(text: str) -> str:
            # Only the Markdown this module writes: **bold** and `code`.
            parts, out = html.escape(text).split("**"), []
            for i, part in enumerate(parts):
                out.append(f"<strong>{part}</strong>" if i % 2 else part)
            code = "".join(out).split("`")
            return "".join(f"<code>{c}</code>" if i % 2 else c for i, c in enumerate(code))

        body = []
        for b in self.blocks:
            if b[0] == "h":
                body.append(f"<h{b[1]}>{inline(b[2])}</h{b[1]}>")
            elif b[0] == "p":
                body.append(f"<p>{inline(b[1])}</p>")
            elif b[0] == "ul":
                body.append("<ul>" + "".join(f"<li>{inline(i)}</li>" for i in b[1]) + "</ul>")
            elif b[0] == "table":
                head = "".join(f"<th>{inline(c)}</th>" for c in b[1])
                rows = "".join("<tr>" + "".join(f"<td>{inline(c)}</td>" for c in r) + "</tr>"
                               for r in b[2])
                body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
            elif b[0] == "fig":
                f = b[1]
                body.append(f'<figure><img src="{html.escape(f.file)}" alt="{html.escape(f.title)}">'
                            f"<figcaption>{inline(f.caption)}</figcaption></figure>")
        style = ("body{font-family:sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;"
                 "line-height:1.45}table{border-collapse:collapse;margin:1rem 0}"
                 "td,th{border:1px solid #ccc;padding:.25rem .5rem;text-align:left}"
                 "img{max-width:100%}figure{margin:1.5rem 0}figcaption{font-style:italic}"
                 "code{background:#f3f3f3;padding:0 .2rem}")
        return (f"<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
                f"<title>{html.escape(title)}</title><style>{style}</style></head>\n<body>\n"
                + "\n".join(body) + "\n</body></html>\n")


def _level_rows(name: str, block: dict) -> list[list]:
    rows = []
    for level, unit in (("trial_level", "studies"), ("epoch_level", "trials")):
        if level in block:
            b = block[level]
            rows.append([name, level.replace("_", " "), f"{b['disagreements']} / {b[unit]} {unit}",
                         _fmt(b["rate"], True), _ci(b["ci95_wilson"]), _ci(b["ci95_bootstrap"])])
    return rows


def build(analysis: Analysis, figures: list[Figure], title: str) -> Doc:
    s = analysis.summary
    loss = s["loss_metric"]
    boot = s["source"]["bootstrap"]
    t = s["trial_level"]
    doc = Doc()
    doc.h(1, title)
    doc.p(f"**Answer.** In {t['disagreements']} of {t['studies']} studies "
          f"({_fmt(t['rate'], True)}, Wilson 95% CI {_ci(t['ci95_wilson'])}, cluster bootstrap "
          f"{_ci(t['ci95_bootstrap'])}) the trial with minimal `{loss}` was not among the trials "
          f"with maximal `val_accuracy` (scoring: {s['scoring']}).")
    if "epoch_level" in s:
        e = s["epoch_level"]
        doc.p(f"Within trials, the epoch of minimal `{loss}` was not an epoch of maximal "
              f"`val_accuracy` in {e['disagreements']} of {e['trials']} trials "
              f"({_fmt(e['rate'], True)}, Wilson {_ci(e['ci95_wilson'])}, bootstrap over studies "
              f"{_ci(e['ci95_bootstrap'])}).")
    if s["notes"] or s["warnings"]:
        doc.h(2, "Read this first")
        doc.bullets(s["notes"] + s["warnings"])
    doc.h(2, "Definitions")
    doc.bullets([d.format(loss=loss, boot=boot["resamples"], seed=boot["seed"]) for d in DEFINITIONS])

    doc.h(2, "Disagreement rates")
    rows = _level_rows("all", s)
    if len(s["by_experiment"]) > 1:
        for name, block in s["by_experiment"].items():
            rows += _level_rows(name, block)
    doc.table(["experiment", "level", "disagreements", "rate", "Wilson 95% CI", "bootstrap 95% CI"], rows)
    doc.p(f"Ties: {t['accuracy_tie_studies']} studies had several trials tied at maximal accuracy "
          f"and {t['loss_tie_studies']} at minimal loss"
          + (f"; {s['epoch_level']['accuracy_tie_trials']} trials had several epochs tied at "
             "maximal accuracy." if "epoch_level" in s else "."))
    for level, cmp in s.get("experiment_comparison", {}).items():
        if cmp:
            doc.p(f"Difference between experiments ({level.replace('_', ' ')}): {cmp['test']}, "
                  f"p = {_fmt(cmp['p_value'])}.")
    if "l2_changes_loss_pick" in s:
        l2 = s["l2_changes_loss_pick"]
        doc.p(f"**L2 penalty alone.** In {l2['changed']} of {l2['studies']} studies "
              f"({_fmt(l2['rate'], True)}, Wilson {_ci(l2['ci95_wilson'])}) the minimal-`val_loss` "
              "trial differs from the minimal-`val_crossentropy` trial.")
        rows = _level_rows("val_crossentropy", s["variants"]["val_crossentropy"])
        doc.table(["loss metric", "level", "disagreements", "rate", "Wilson 95% CI",
                   "bootstrap 95% CI"], rows)

    doc.h(2, "Rank agreement")
    k, r = t["kendall_tau_b"], t["spearman_rho"]
    doc.p(f"Kendall τ-b over {k['studies']} studies: median {_fmt(k['median'])} "
          f"(quartiles {_fmt(k['q25'])} to {_fmt(k['q75'])}); Spearman ρ: median "
          f"{_fmt(r['median'])} (quartiles {_fmt(r['q25'])} to {_fmt(r['q75'])}).")

    if "test_accuracy_gain_of_accuracy_pick" in t:
        doc.h(2, "Cost on held-out data")
        g, reg = t["test_accuracy_gain_of_accuracy_pick"], t["test_regret"]
        rows = [["trial level, all studies", _fmt(g["mean"]), _ci(g["ci95"], False)],
                ["trial level, disagreeing studies", _fmt(g["mean_when_disagree"]),
                 _ci(g["ci95_when_disagree"], False)]]
        if "test_accuracy_gain_of_accuracy_pick" in s.get("epoch_level", {}):
            ge = s["epoch_level"]["test_accuracy_gain_of_accuracy_pick"]
            rows += [["epoch level, all trials", _fmt(ge["mean"]), _ci(ge["ci95"], False)],
                     ["epoch level, disagreeing trials", _fmt(ge["mean_when_disagree"]),
                      _ci(ge["ci95_when_disagree"], False)]]
        doc.table(["test-accuracy gain of the accuracy pick", "mean", "95% CI"], rows)
        doc.p(f"Mean test regret: loss pick {_fmt(reg['loss_pick'])}, accuracy pick "
              f"{_fmt(reg['accuracy_pick'])} (positive gain favours the accuracy pick).")
        if "mcnemar" in t:
            m = t["mcnemar"]
            doc.p(f"McNemar (exact) in {m['studies_tested']} disagreeing studies: "
                  f"{m['significant_at_0.05']} significant at 0.05, median p {_fmt(m['median_p'])}; "
                  f"the accuracy pick was right on more discordant images in {m['accuracy_pick_better']}.")

    if "epoch_level" in s:
        e = s["epoch_level"]
        doc.h(2, "Epoch level")
        gap = e["epoch_gap"]
        doc.p(f"Epoch gap: mean {_fmt(gap['mean'])}, median {_fmt(gap['median'])}, mean absolute "
              f"{_fmt(gap['mean_abs'])} epochs.")
        pos = e["optimum_position"]
        doc.table(["optimum", "in first 10% of budget", "in last 25% of budget", "median position"],
                  [[f"minimal {loss}", _fmt(pos["loss"]["first_10pct"], True),
                    _fmt(pos["loss"]["last_25pct"], True), _fmt(pos["loss"]["median_fraction_of_budget"], True)],
                   ["maximal val_accuracy", _fmt(pos["accuracy"]["first_10pct"], True),
                    _fmt(pos["accuracy"]["last_25pct"], True),
                    _fmt(pos["accuracy"]["median_fraction_of_budget"], True)]])

    _explanations(doc, s)
    edges = [b for b in s.get("boundary_checks", []) if b["at_edge"]]
    if edges:
        doc.h(2, "Boundary check")
        doc.bullets([f"`{b['param']}`: {b['picks_at_edge']} of {b['picks']} {b['pick'].replace('_', ' ')}s "
                     f"lie in the outer 10% of the explored range {_ci(b['explored_range'], False)}"
                     for b in edges])

    doc.h(2, "Exclusions")
    if s["exclusions"]:
        doc.table(["what", "why", "count"], [[x["what"], x["why"], str(x["count"])] for x in s["exclusions"]])
    else:
        doc.p("Nothing was left out.")

    doc.h(2, "Figures")
    for f in figures:
        doc.h(3, f.title)
        doc.figure(f)
    doc.p("Machine-readable numbers: [summary.json](summary.json).")
    return doc


def _explanations(doc: Doc, s: dict) -> None:
    ex = s.get("explanations", {})
    groups = ex.get("epoch_level", {}).get("grouped_rates", []) + ex.get("trial_level", {}).get("grouped_rates", [])
    logit = ex.get("epoch_level", {}).get("logistic")
    if not groups and not logit:
        return
    doc.h(2, "What goes with disagreement")
    epoch_groups = ex.get("epoch_level", {}).get("grouped_rates", [])
    if epoch_groups:
        doc.p("Epoch-level disagreement rate per feature bin (tertiles for continuous features):")
        doc.table(["feature", "bin", "trials", "rate", "Wilson 95% CI"],
                  [[g["feature"], g["group"], str(g["n"]), _fmt(g["rate"], True), _ci(g["ci95_wilson"])]
                   for g in epoch_groups])
    trial_groups = ex.get("trial_level", {}).get("grouped_rates", [])
    if trial_groups:
        doc.p("Trial-level disagreement rate per study group:")
        doc.table(["feature", "group", "studies", "rate", "Wilson 95% CI"],
                  [[g["feature"], g["group"], str(g["n"]), _fmt(g["rate"], True), _ci(g["ci95_wilson"])]
                   for g in trial_groups])
    if logit:
        if "terms" in logit:
            doc.p(f"Logistic regression of epoch-level disagreement on standardised features "
                  f"({logit['n']} trials, {logit['events']} disagreements, standard errors "
                  f"{logit['standard_errors']}); odds ratio per standard deviation:")
            doc.table(["feature", "odds ratio / SD", "95% CI", "p"],
                      [[f, _fmt(v["odds_ratio_per_sd"]), _ci(v["ci95"], False), _fmt(v["p_value"])]
                       for f, v in logit["terms"].items()])
        else:
            doc.p(f"No logistic regression: {logit['error']}.")


def write(analysis: Analysis, figures: list[Figure], out: Path, title: str) -> list[Path]:
    """Write the three documents; returns every file of the report."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(jsonable(analysis.summary), indent=2,
                                                 allow_nan=False) + "\n")
    doc = build(analysis, figures, title)
    (out / "report.md").write_text(doc.markdown())
    (out / "index.html").write_text(doc.html(title))
    return [out / "summary.json", out / "report.md", out / "index.html", *(out / f.file for f in figures)]
