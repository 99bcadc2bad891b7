"""Pictures of an executed reasoning program: Mermaid source, and a self-contained HTML page.

Both are drawn from the program and its run's trace (`trace.jsonl`): each node shows its kind,
what it produced (shortened) and its status (done, skipped, failed, not reached); edges are the
dependencies, dashed into branch arms and labelled with the arm; a loop shows how many times its
body ran. The HTML page needs nothing from the network: the graph is an inline SVG laid out in
layers (a node one layer below the deepest node it waits for), followed by every model call with
its prompt, answer, tokens and seconds, and the retrieval citations.
Written by hand: Graphviz would need a binary, and Mermaid's renderer is a JavaScript bundle that
an offline page cannot fetch; a layered layout of a few dozen boxes is a few lines.
"""

from __future__ import annotations

import html
import json
from pathlib import Path

from loom.reason.program import Program

STATUS_COLOURS = {"done": "#d4edda", "skipped": "#eeeeee", "failed": "#f8d7da", "pending": "#fff3cd"}


def read_trace(path: str | Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


def node_summaries(program: Program, trace: list[dict]) -> dict[str, dict]:
    """Per top-level node: status, outputs (or the answer / branch taken), iterations."""
    out = {n.id: {"kind": n.kind, "status": "pending", "detail": ""} for n in program.nodes}
    failed = None
    for e in trace:
        node = str(e.get("node", ""))
        if e["event"] == "error":
            failed = e.get("message", "")
        if node not in out:
            continue
        if e["event"] == "node_end":
            out[node]["status"] = "done"
            out[node]["detail"] = _end_detail(e)
            if "iterations" in e:
                out[node]["detail"] = f"{e['iterations']} iterations; " + out[node]["detail"]
        elif e["event"] == "node_skipped":
            out[node]["status"] = "skipped"
    if failed:
        for node, info in out.items():
            if info["status"] == "pending" and f"'{node}" in failed:
                info["status"] = "failed"
                info["detail"] = _short(failed, 60)
    return out


def _short(value, width: int = 40) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _edges(program: Program) -> list[tuple[str, str, str]]:
    """(from, to, label) : dependencies, and branch -> arm members labelled with the arm."""
    arms = program.arms()
    edges = []
    for node_id, deps in program.dependencies().items():
        for d in sorted(deps):
            if arms.get(node_id, ("",))[0] != d:  # the branch edge is drawn below, with its arm
                edges.append((d, node_id, ""))
    for node_id, (branch, arm) in arms.items():
        edges.append((branch, node_id, arm))
    return edges


def mermaid(program: Program, trace: list[dict], max_iterations: int = 12) -> str:
    """The executed graph; a loop's body is drawn once per iteration that ran (up to
    `max_iterations`), as a box inside the loop's box."""
    ends = {str(e["node"]): e for e in trace if e["event"] == "node_end"}
    skipped = {str(e["node"]) for e in trace if e["event"] == "node_skipped"}
    info = node_summaries(program, trace)
    lines = ["flowchart TD"]

    def node_line(path: str, n, detail: str, status: str, indent: str) -> str:
        label = f"{n.id} ({n.kind})" + (f"<br/>{detail}" if detail else "")
        label = label.replace('"', "'")
        shape = ('{{"', '"}}') if n.kind == "branch" else (('(["', '"])') if n.kind == "answer" else ('["', '"]'))
        return f"{indent}{_mid(path)}{shape[0]}{label}{shape[1]}:::{status}"

    def body_lines(loop_path: str, body: Program, iterations: int, sequential: bool) -> None:
        for i in range(min(iterations, max_iterations)):
            prefix = f"{loop_path}[{i}]/"
            lines.append(f'    subgraph {_mid(prefix)}["iteration {i}"]')
            for n in body.nodes:
                path = prefix + n.id
                end = ends.get(path)
                status = "done" if end else ("skipped" if path in skipped else "pending")
                lines.append(node_line(path, n, _end_detail(end) if end else "", status, "        "))
            for a, b, label in _edges(body):
                arrow = f"-. {label} .->" if label else "-->"
                lines.append(f"        {_mid(prefix + a)} {arrow} {_mid(prefix + b)}")
            lines.append("    end")
            if i and sequential:  # carried variables chain the iterations; otherwise they are independent
                lines.append(f"    {_mid(f'{loop_path}[{i - 1}]/')} --> {_mid(prefix)}")
        if iterations > max_iterations:
            lines.append(f'    {_mid(loop_path + "_more")}["... {iterations - max_iterations} more"]')

    for n in program.nodes:
        lines.append(node_line(n.id, n, info[n.id]["detail"], info[n.id]["status"], "    "))
        if n.kind == "loop" and n.body is not None and n.id in ends:
            body_lines(n.id, n.body, int(ends[n.id].get("iterations", 0)),
                       bool(n.spec.get("carry")) or "for_each" not in n.spec)
            if ends[n.id].get("iterations"):
                lines.append(f"    {_mid(n.id)} -.-> {_mid(n.id + '[0]/')}")
    for a, b, label in _edges(program):
        arrow = f"-. {label} .->" if label else "-->"
        lines.append(f"    {_mid(a)} {arrow} {_mid(b)}")
    for status, colour in STATUS_COLOURS.items():
        lines.append(f"    classDef {status} fill:{colour},stroke:#555")
    return "\n".join(lines) + "\n"


def _end_detail(e: dict) -> str:
    if "answer" in e:
        return f"= {e['answer']}"
    if "taken" in e:
        return f"took {e['taken']}"
    return ", ".join(f"{k} = {_short(v)}" for k, v in (e.get("outputs") or {}).items())


def _mid(node_id: str) -> str:
    return "n_" + "".join(c if c.isalnum() else "_" for c in node_id)


def _layers(program: Program) -> dict[str, int]:
    deps = program.dependencies()
    layer: dict[str, int] = {}

    def depth(node_id: str) -> int:
        if node_id not in layer:
            layer[node_id] = 1 + max((depth(d) for d in deps[node_id]), default=-1)
        return layer[node_id]

    for n in program.nodes:
        depth(n.id)
    return layer


def svg(program: Program, trace: list[dict]) -> str:
    info = node_summaries(program, trace)
    layer = _layers(program)
    box_w, box_h, gap_x, gap_y = 220, 54, 30, 46
    rows: dict[int, list[str]] = {}
    for n in program.nodes:
        rows.setdefault(layer[n.id], []).append(n.id)
    widest = max(len(r) for r in rows.values())
    width = widest * (box_w + gap_x) + gap_x
    height = len(rows) * (box_h + gap_y) + gap_y
    pos = {}
    for row, ids in rows.items():
        offset = (width - len(ids) * (box_w + gap_x) + gap_x) / 2
        for i, node_id in enumerate(ids):
            pos[node_id] = (offset + i * (box_w + gap_x), gap_y + row * (box_h + gap_y))
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height:.0f}" '
             'font-family="sans-serif" font-size="12">',
             '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" '
             'orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" fill="#555"/></marker></defs>']
    for a, b, label in _edges(program):
        (xa, ya), (xb, yb) = pos[a], pos[b]
        x1, y1, x2, y2 = xa + box_w / 2, ya + box_h, xb + box_w / 2, yb
        dash = ' stroke-dasharray="5,4"' if label else ""
        parts.append(f'<line x1="{x1:.0f}" y1="{y1:.0f}" x2="{x2:.0f}" y2="{y2:.0f}" stroke="#555"{dash} '
                     'marker-end="url(#arrow)"/>')
        if label:
            parts.append(f'<text x="{(x1 + x2) / 2 + 4:.0f}" y="{(y1 + y2) / 2:.0f}" fill="#555">{label}</text>')
    for n in program.nodes:
        x, y = pos[n.id]
        status = info[n.id]["status"]
        rx = 22 if n.kind == "answer" else (2 if n.kind != "branch" else 12)
        parts.append(f'<rect x="{x:.0f}" y="{y:.0f}" width="{box_w}" height="{box_h}" rx="{rx}" '
                     f'fill="{STATUS_COLOURS[status]}" stroke="#555"><title>{html.escape(status)}</title></rect>')
        parts.append(f'<text x="{x + 8:.0f}" y="{y + 20:.0f}" font-weight="bold">'
                     f'{html.escape(_short(n.id, 22))} · {n.kind}</text>')
        parts.append(f'<text x="{x + 8:.0f}" y="{y + 40:.0f}">{html.escape(_short(info[n.id]["detail"], 32))}</text>')
    parts.append("</svg>")
    return "\n".join(parts)


def html_page(program: Program, trace: list[dict], title: str = "") -> str:
    calls = [e for e in trace if e["event"] == "model_call"]
    end = next((e for e in reversed(trace) if e["event"] == "run_end"), {})
    rows = "\n".join(
        f"<tr><td>{html.escape(str(e.get('node')))}</td><td><pre>{html.escape(str(e.get('prompt')))}</pre></td>"
        f"<td><pre>{html.escape(str(e.get('response')))}</pre></td>"
        f"<td>{'cache' if e.get('cached') else e.get('prompt_tokens', '')} / {e.get('completion_tokens', '')}</td>"
        f"<td>{e.get('seconds', '')}</td></tr>" for e in calls)
    cites = [e for e in trace if e["event"] == "retrieval"]
    cite_html = "".join(f"<li>{html.escape(str(e['node']))}: {html.escape(e['query'])} → "
                        f"{html.escape(', '.join(map(str, e['citations'])))}</li>" for e in cites)
    title = title or program.name
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;margin:2em}} td{{vertical-align:top;border-top:1px solid #ddd;padding:4px}}
pre{{white-space:pre-wrap;margin:0;max-width:40em}}</style></head><body>
<h1>{html.escape(title)}</h1>
<p>Status <b>{html.escape(str(end.get('status', 'unfinished')))}</b>;
answer <b>{html.escape(str(end.get('answer')))}</b>; {end.get('model_calls', len(calls))} model calls,
{end.get('tokens', '?')} tokens, {end.get('seconds', '?')} s.</p>
{svg(program, trace)}
<details><summary>Mermaid source of the executed graph (loop iterations expanded)</summary>
<pre>{html.escape(mermaid(program, trace))}</pre></details>
<h2>Model calls</h2>
<table><tr><th>node</th><th>prompt</th><th>answer</th><th>tokens in / out</th><th>s</th></tr>
{rows}
</table>
{f"<h2>Retrieval</h2><ul>{cite_html}</ul>" if cites else ""}
</body></html>
"""


def write_pictures(program: Program, workdir: str | Path) -> tuple[Path, Path]:
    """Writes WORKDIR/graph.mmd and WORKDIR/graph.html from WORKDIR/trace.jsonl."""
    from loom.util import atomic_write_text

    workdir = Path(workdir)
    trace = read_trace(workdir / "trace.jsonl")
    mmd, page = workdir / "graph.mmd", workdir / "graph.html"
    atomic_write_text(mmd, mermaid(program, trace))
    atomic_write_text(page, html_page(program, trace))
    return mmd, page
