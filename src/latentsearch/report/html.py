"""Renders a report dict (the content of ``report.json``) as one self-contained HTML page.

No external CSS, scripts or fonts: the page opens from disk in any browser, offline. Every
metric cell carries its exact value in ``data-value`` and shows it rounded to three decimals.
"""

from __future__ import annotations

import html
import json
from collections.abc import Mapping, Sequence
from typing import Any

from latentsearch.metrics import CLUSTERING_METRICS, RETRIEVAL_METRICS

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif;
       margin: 0 auto; max-width: 1200px; padding: 1.5rem; color: #1d1d1f; line-height: 1.45; }
h1 { font-size: 1.6rem; margin-bottom: 0.2rem; }
h2 { font-size: 1.25rem; margin-top: 2.2rem; border-bottom: 1px solid #ddd;
     padding-bottom: 0.2rem; }
.sub { color: #555; margin-top: 0; }
table { border-collapse: collapse; margin: 0.6rem 0; font-size: 0.95rem; }
th, td { border: 1px solid #ddd; padding: 0.3rem 0.7rem; text-align: left; vertical-align: top; }
th { background: #f4f5f7; }
td.num { text-align: right; font-variant-numeric: tabular-nums; font-family: ui-monospace,
         SFMono-Regular, Menlo, Consolas, monospace; }
td.better { font-weight: 700; }
tr.group th { background: #e8ecf4; }
td.what { color: #555; font-size: 0.88rem; }
figure { margin: 1rem 0 2rem 0; }
figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { color: #444; font-size: 0.92rem; max-width: 60rem; }
.note { color: #555; font-size: 0.9rem; max-width: 60rem; }
code { background: #f4f5f7; padding: 0 0.25rem; border-radius: 3px; }
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _num(value: Any, *, better: bool = False) -> str:
    """A metric cell: three decimals shown, the exact value in ``data-value``."""
    if value is None:
        return '<td class="num">—</td>'
    v = float(value)
    cls = "num better" if better else "num"
    return f'<td class="{cls}" data-value="{v!r}">{v:.3f}</td>'


def _kv_table(rows: Sequence[tuple[str, Any]]) -> str:
    body = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in rows)
    return f"<table>{body}</table>"


def _duration(seconds: float) -> str:
    s = round(seconds)
    h, rest = divmod(s, 3600)
    m, s = divmod(rest, 60)
    return f"{h} h {m:02d} min {s:02d} s" if h else f"{m} min {s:02d} s" if m else f"{s} s"


def metrics_table(
    metrics: Mapping[str, Any], published: Mapping[str, Any] | None, data_name: str
) -> str:
    """The run's metrics beside raw pixels (and the study's numbers where they exist)."""
    baseline = metrics.get("baseline") or {}
    head = "<tr><th>metric</th><th>this run</th><th>raw pixels</th>"
    if published is not None:
        head += f"<th>published ({_e(published['variant'])}, CIFAR-10)</th>"
    head += "<th>what it measures</th></tr>"
    cols = 5 if published is not None else 4
    rows = [head]
    groups = (
        (
            f"Clustering: KMeans (k = number of classes, seed 0) on the "
            f"{metrics.get('n_cluster', '?')} cluster-set images",
            CLUSTERING_METRICS,
        ),
        (
            f"Retrieval: {metrics.get('n_query', '?')} queries against "
            f"{metrics.get('n_database', '?')} database images (squared Euclidean distance)",
            RETRIEVAL_METRICS,
        ),
    )
    for title, names in groups:
        rows.append(f'<tr class="group"><th colspan="{cols}">{_e(title)}</th></tr>')
        for info in names:
            key, label, what = info.key, info.label, info.description
            if key not in metrics:
                continue
            value, base = metrics[key], baseline.get(key)
            better = base is not None and value is not None and float(value) > float(base)
            cells = _num(value, better=better) + _num(base)
            if published is not None:
                cells += _num(published.get(key))
            rows.append(
                f'<tr data-metric="{_e(key)}"><th>{_e(label)}</th>{cells}'
                f'<td class="what">{_e(what)}</td></tr>'
            )
    note = (
        "Bold: the run beats raw pixels. Raw pixels: the same scoring on the flattened pixel "
        "values of the same images."
    )
    if published is not None:
        note += (
            " Published: Gosthipaty &amp; Chakraborty (2020), CIFAR-10 under the same "
            "protocol; they reported NMI and RI only."
        )
        if data_name != "cifar10":
            note += f" This run used {_e(data_name)}, so the comparison is indicative only."
    return f'<table class="metrics">{"".join(rows)}</table><p class="note">{note}</p>'


def render_html(report: Mapping[str, Any]) -> str:
    """The report page.

    Args:
        report: What ``build_report`` writes to ``report.json``.

    Returns:
        A complete HTML document; images are referenced by file name, beside it.
    """
    data = report["data"]
    cfg = report["config"]
    dates = report["dates"]
    parts: list[str] = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(report['title'])}</title><style>{_CSS}</style></head><body>",
        f"<h1>{_e(report['title'])}</h1>",
        f'<p class="sub">Run <code>{_e(report["run"])}</code> · {_e(report["epochs"])} epochs · '
        f"report made {_e(dates['report'])} · latentsearch {_e(report['latentsearch_version'])}"
        "</p>",
        "<h2>Metrics</h2>",
    ]
    metrics = report.get("metrics")
    if metrics:
        parts.append(metrics_table(metrics, report.get("published"), str(data["name"])))
    else:
        parts.append(
            '<p class="note">These images carry no labels, so clustering and retrieval cannot '
            "be scored and no neighbour is marked right or wrong (a run trained without labels "
            "reads folder names as places, not classes). The pictures below show what is true "
            "without them: distances between neighbours, near-duplicate groups and, when the run "
            "has a cluster head, its clusters.</p>"
        )
    parts.append("<h2>Pictures</h2>")
    unavailable = report.get("unavailable") or []
    if unavailable:
        listed = ", ".join(f"{_e(name)} ({_e(status)})" for name, status in unavailable)
        parts.append(
            f'<p class="note unavailable">Drawn as placeholders ({len(unavailable)}): files gone, '
            f"changed or unreadable since the images were loaded: {listed}.</p>"
        )
    for fig in report["figures"]:
        parts.append(
            f'<figure id="{_e(fig["file"].rsplit(".", 1)[0])}"><h3>{_e(fig["title"])}</h3>'
            f'<img src="{_e(fig["file"])}" alt="{_e(fig["title"])}">'
            f"<figcaption>{_e(fig['caption'])}</figcaption></figure>"
        )
    counts = data["counts"]
    h, w, c = data["image_shape"]
    parts += [
        "<h2>Data</h2>",
        _kv_table(
            [
                (
                    "source",
                    f"{data['name']} ({data['source']})" if data["source"] else data["name"],
                ),
                ("protocol", cfg["protocol"]),
                ("images", f"{h}×{w}, {c} channel{'s' if c != 1 else ''}"),
                ("classes", ", ".join(map(str, data["class_names"])) or "none (unlabelled)"),
                ("fit / validation images", f"{counts['fit']} / {counts['val']}"),
                ("cluster-set images", counts["cluster"]),
                ("query / database images", f"{counts['query']} / {counts['database']}"),
            ]
        ),
        "<h2>Training</h2>",
        _kv_table(
            [
                ("time taken", _duration(float(report["train_seconds"]))),
                ("epochs", report["epochs"]),
                ("trained (last checkpoint)", dates["trained"] or "unknown"),
                ("machine (this report's)", report["machine"]),
            ]
        ),
        "<h2>Config</h2>",
        _kv_table(
            [
                (k, "—" if v is None else json.dumps(v) if isinstance(v, dict | list) else v)
                for k, v in cfg.items()
            ]
        ),
        '<p class="note">All numbers on this page are in <a href="report.json">report.json</a>.'
        f" Report settings: {_e(json.dumps(report['settings']))}.</p>",
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"
