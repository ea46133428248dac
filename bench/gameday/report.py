"""The game day report: markdown, and one self-contained HTML page with inline SVG charts."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

NO_INVESTIGATOR = ("Diagnosis is not measured yet: selfdrive has no investigator, so every "
                   "`diagnosis` count is 0 and the calibration curve is empty.")


def targets(card: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(target, measured, verdict) rows; a figure that misses says "falls short"."""
    lv = card["levels"]
    rows: list[tuple[str, str, str]] = []
    l4 = lv.get("L4")
    if l4:
        share = l4["resolved_without_human"] / l4["with_runbook"] if l4["with_runbook"] else 0
        rows.append(("L4: >= 90% of incidents with a runbook resolved without a human",
                     f"{share:.0%} ({l4['resolved_without_human']}/{l4['with_runbook']})",
                     "met" if share >= 0.9 else "falls short"))
        base = lv.get("none")
        if base and base["ttr_p50_s"] and l4["ttr_p50_s"] is not None:
            ratio = l4["ttr_p50_s"] / base["ttr_p50_s"]
            rows.append(("L4: time to resolve <= 1/10 of the no-automation baseline (p50)",
                         f"{l4['ttr_p50_s']}s vs {base['ttr_p50_s']}s ({ratio:.2f}x)",
                         "met" if ratio <= 0.1 else "falls short"))
        else:
            rows.append(("L4: time to resolve <= 1/10 of the no-automation baseline (p50)",
                         "needs levels none and L4", "not measured"))
        rows.append(("L4: right service and cause for >= 70% of incidents (investigator)",
                     "no investigator yet", "falls short (not built)"))
    else:
        rows.append(("L4 targets", "level L4 not run", "not measured"))
    for name in ("unsafe_actions", "lost_alerts"):
        worst = {k: v[name] for k, v in lv.items() if v[name]}
        rows.append((f"0 {name.replace('_', ' ')} at every level",
                     ", ".join(f"{k}: {v}" for k, v in worst.items()) or "0 everywhere",
                     "met" if not worst else "falls short"))
    return rows


def _bars(title: str, data: list[tuple[str, float | None]], unit: str,
          width: int = 560) -> str:
    """A horizontal bar chart as inline SVG."""
    top = max([v for _, v in data if v is not None] + [1e-9])
    row, left = 22, 170
    h = row * len(data) + 40
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{h}" '
             f'role="img" aria-label="{html.escape(title)}">',
             f'<text x="0" y="16" font-size="14" font-weight="bold">{html.escape(title)}</text>']
    for i, (label, v) in enumerate(data):
        y = 30 + i * row
        parts.append(f'<text x="{left - 6}" y="{y + 14}" font-size="12" '
                     f'text-anchor="end">{html.escape(label)}</text>')
        if v is None:
            parts.append(f'<text x="{left}" y="{y + 14}" font-size="12" fill="#888">n/a</text>')
            continue
        w = max(1.0, (width - left - 80) * v / top)
        parts.append(f'<rect x="{left}" y="{y + 3}" width="{w:.1f}" height="{row - 6}" '
                     f'fill="#3b7dd8"/>')
        parts.append(f'<text x="{left + w + 4:.1f}" y="{y + 14}" font-size="12">'
                     f'{v:g}{unit}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _calibration() -> str:
    return ('<svg xmlns="http://www.w3.org/2000/svg" width="320" height="240" role="img" '
            'aria-label="diagnosis calibration">'
            '<text x="0" y="16" font-size="14" font-weight="bold">Diagnosis calibration</text>'
            '<rect x="40" y="30" width="260" height="170" fill="none" stroke="#999"/>'
            '<line x1="40" y1="200" x2="300" y2="30" stroke="#ccc" stroke-dasharray="4"/>'
            '<text x="170" y="225" font-size="11" text-anchor="middle">stated confidence</text>'
            '<text x="170" y="120" font-size="12" text-anchor="middle" fill="#888">'
            'no data: no investigator yet</text></svg>')


def _ttr_rows(details: dict[str, Any]) -> list[tuple[str, float | None]]:
    out = []
    for lv, d in details["levels"].items():
        for cls, c in d["by_class"].items():
            out.append((f"{cls} @ {lv}", c["ttr_p50_s"]))
    return out


def write(out: Path, card: dict[str, Any], details: dict[str, Any]) -> None:
    lv = card["levels"]
    names = ["incidents", "with_runbook", "resolved_without_human", "ttr_p50_s", "ttr_p90_s",
             "human_touches", "approvals_asked", "unsafe_actions", "lost_alerts",
             "guardrail_trips"]
    rerun = (f"python bench/gameday/run.py --seed {card['seed']} --scenario "
             f"{card['scenario']} --levels {','.join(lv)} --out DIR")
    md = [f"# Game day: seed {card['seed']}, scenario {card['scenario']}", "",
          f"Rerun: `{rerun}` (wall time this run: {details['wall_seconds']}s; load: "
          f"{details['load']['ok']} requests answered, {details['load']['failed']} failed).",
          "", "## Targets", "", "| target | measured | verdict |", "|---|---|---|"]
    md += [f"| {t} | {m} | **{v}** |" for t, m, v in targets(card)]
    md += ["", "## Scorecard", "", "| level | " + " | ".join(names) + " |",
           "|---" * (len(names) + 1) + "|"]
    for name, row in lv.items():
        md.append(f"| {name} | " + " | ".join(str(row[n]) for n in names) + " |")
    md += ["", NO_INVESTIGATOR, "", "## Time to resolve per class (p50, seconds)", "",
           "| class | " + " | ".join(lv) + " |", "|---" * (len(lv) + 1) + "|"]
    classes = sorted({c for d in details["levels"].values() for c in d["by_class"]})
    for cls in classes:
        cells = [str(details["levels"][name]["by_class"].get(cls, {}).get("ttr_p50_s"))
                 for name in lv]
        md.append(f"| {cls} | " + " | ".join(cells) + " |")
    md += ["", "## Unsafe actions, lost alerts, incidents never healed", ""]
    for name, d in details["levels"].items():
        for u in d["unsafe"]:
            md.append(f"- {name}: run {u['run_id']} ({u['runbook']} on {u['host']}): "
                      + "; ".join(u["why"]))
        for a in d["lost"]:
            md.append(f"- {name}: lost {a['alertname']} {a['status']} ({a['fingerprint']})")
        for inc in d["unresolved"]:
            md.append(f"- {name}: incident {inc} never healed within the level's time")
    if md[-1] == "":
        md.append("None.")
    md += ["", "## Schedule (the same at every level)", "",
           "| id | class | at (s) | hosts | variant | fixed by hand after (s) |",
           "|---|---|---|---|---|---|"]
    md += [f"| {f['id']} | {f['cls']} | {f['at']} | {', '.join(f['hosts'])} | "
           f"{f['variant'] or f['duration'] or ''} | {f['fix_delay']} |"
           for f in details["schedule"]]
    text = "\n".join(md) + "\n"
    (out / "report.md").write_text(text)

    share = [(name, float(row["resolved_without_human"])) for name, row in lv.items()]
    charts = [_bars("Resolved without a human, per level", share, ""),
              _bars("Time to resolve p50 per level", [(n, r["ttr_p50_s"])
                                                      for n, r in lv.items()], "s"),
              _bars("Time to resolve p50 per class and level", _ttr_rows(details), "s"),
              _calibration()]
    body: list[str] = []
    in_table = False
    for line in md:
        if line.startswith("|"):
            if "---" in line:
                continue
            if not in_table:
                body.append("<table>")
                in_table = True
            cells = [html.escape(c.strip()).replace("**", "") for c in line.strip("|").split("|")]
            body.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
            continue
        if in_table:
            body.append("</table>")
            in_table = False
        if line.startswith("# "):
            body.append(f"<h1>{html.escape(line[2:])}</h1>")
        elif line.startswith("## "):
            body.append(f"<h2>{html.escape(line[3:])}</h2>")
        elif line:
            body.append(f"<p>{html.escape(line).replace('`', '')}</p>")
    if in_table:
        body.append("</table>")
    page = ("<!doctype html><html><head><meta charset='utf-8'><title>Game day, seed "
            f"{card['seed']}</title><style>body{{font-family:sans-serif;max-width:1000px;"
            "margin:2em auto}td{border:1px solid #ddd;padding:2px 6px;font-size:13px}"
            "table{border-collapse:collapse;margin:1em 0}</style></head><body>"
            + "\n".join(body) + "<h2>Charts</h2>"
            + "".join(f"<div>{c}</div>" for c in charts) + "</body></html>\n")
    (out / "report.html").write_text(page)
