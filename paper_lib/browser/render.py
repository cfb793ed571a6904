"""The feature browser as a static, offline site: ``index.html`` and one page per model, from jinja2 templates
(``templates/``), written as a cached step of the run folder. Pages load nothing from the network; their only script
filters and sorts a page's features in place."""

from __future__ import annotations

import functools
import hashlib
import http.server
import json
from pathlib import Path
from typing import Any

import jinja2
import numpy as np
from markupsafe import Markup

from ..core.artifacts import cached_step, manifest, record_benchmark
from ..core.config import Config
from ..core.registry import REGISTRY
from ..plots.highlight import html_token, shade
from .collect import BROWSER_DOMAINS, browser_models, sparkline

TEMPLATES = Path(__file__).with_name("templates")


def context_html(tokens: list[str], acts: list[float], vmax: float) -> Markup:
    """A block's tokens as the case studies' HTML highlights write them (``plots.highlight``: escaped, newlines as ↵
    breaking the line), each with activation > 0 shaded by activation / ``vmax`` (value on hover), in fewer bytes:
    a site holds thousands of contexts."""
    alpha = shade(acts, vmax)
    return Markup("".join(f'<i style="--a:{a:.2f}" title="{act:.3f}">{html_token(t)}</i>' if act > 0 else html_token(t)
                          for t, act, a in zip(tokens, acts, alpha)))


def _prepared(data: dict[str, Any]) -> list[dict[str, Any]]:
    """The models with what the templates read precomputed: contexts as HTML, sparklines, search text, and each
    link's target state (listed on the partner's page or not) and the child's ceiling."""
    vocab, models = data["vocab"], data["models"]
    listed = {name: {f["id"] for f in model["features"]} for name, model in models.items()}
    out = []
    for name, model in models.items():
        for f in model["features"]:
            f["spark"] = sparkline(np.asarray(f["histogram"]))
            f["contexts"] = [dict(c, html=context_html([vocab[t] for t in c["tokens"]], c["acts"], f["max"]))
                             for c in f["contexts"]]
            for link in f["links"]:
                link["listed"] = link["feature"] in listed.get(link["other"], set())
                link["child"] = name if link["role"] == "child" else link["other"]
                link["ceiling"] = models.get(link["child"], {}).get("ceiling")
            rs = [link["r"] for link in f["links"] if link["r"] is not None]
            f["best_r"] = max(rs) if rs else -9
            words = [str(f["id"]), *(vocab[t] for t, _ in f["top_tokens"]), *(link["verdict"] for link in f["links"]),
                     (f["autointerp"] or {}).get("explanation", "")]
            f["search_text"] = " ".join(words).lower()
        out.append(model)
    return out


def _pair_rows(data: dict[str, Any]) -> list[dict[str, Any]]:
    """The index's pair table: each match's own persisting share over its live child features (notebook 05's)."""
    return [{"parent": REGISTRY.label(c["parent"]), "child": REGISTRY.label(c["child"]),
             "live": c["n_child"] - c["dead_child"], "share": c["persisting_share"] or 0.0,
             "ceiling": data["models"][c["child"]]["ceiling"]} for c in data["pair_counts"]]


def render_site(data: dict[str, Any], out: Path) -> dict[str, Any]:
    """Write ``index.html`` and ``<model>.html`` into ``out``; returns the page count, bytes and features."""
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True, trim_blocks=True,
                             lstrip_blocks=True, undefined=jinja2.StrictUndefined)
    models = _prepared(data)
    common = {"models": models, "labels": REGISTRY.labels, "profile": data["profile"], "mode": data["mode"],
              "threshold": data["threshold"], "domains": data["domains"], "context": data["context"],
              "vocab": data["vocab"]}
    pages = {"index.html": env.get_template("index.html.j2").render(
        **common, pair_rows=_pair_rows(data), n_positions=next(iter(data["models"].values()))["n_positions"])}
    for model in models:
        pages[f"{model['name']}.html"] = env.get_template("model.html.j2").render(**common, model=model)
    for page, text in pages.items():
        (out / page).write_text(text, encoding="utf-8")
    return {"pages": len(pages), "bytes": sum(len(t.encode("utf-8")) for t in pages.values()),
            "features": {m["name"]: len(m["features"]) for m in models}}


def _templates_hash() -> str:
    digest = hashlib.sha256()
    for path in sorted(TEMPLATES.glob("*.j2")):
        digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()[:16]


def site_dir(cfg: Config, k: int = 5) -> Path:
    """The browser's folder for ``cfg``'s run (a cached step, built on first use from the finished SAEs, matches,
    seed-ceiling SAEs and autointerp scores, building whatever of them is missing), and its cost in the
    benchmark file as ``browser``."""
    from ..matching.pairs import activation_sample_dir
    from .collect import site_data

    inputs = {"samples": [activation_sample_dir(cfg, n, BROWSER_DOMAINS).name for n in browser_models(cfg)], "k": k,
              "sae": cfg.sae.model_dump(mode="json"), "matching": cfg.matching.model_dump(mode="json"),
              "autointerp": cfg.autointerp.model_dump(mode="json"), "templates": _templates_hash()}

    def build(out: Path) -> dict:
        return render_site(site_data(cfg, k), out)

    code = ["paper_lib.browser.collect", "paper_lib.matching.pairs", "paper_lib.matching.controls",
            "paper_lib.autointerp.run", "paper_lib.data.vocab"]
    path = cached_step(cfg.profile, "browser", inputs, build, code=code)
    meta = manifest(path)
    record_benchmark(cfg.profile, "browser", {"build_seconds": meta["seconds"], **meta["meta"], "folder": path.name})
    return path


def serve(path: Path, port: int = 8000) -> None:
    """Serve the site on http://127.0.0.1:``port`` until interrupted."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(path))
    with http.server.ThreadingHTTPServer(("127.0.0.1", port), handler) as server:
        print(f"feature browser: http://127.0.0.1:{port}/index.html (Ctrl-C stops it)", flush=True)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass


def summary(path: Path) -> str:
    """One line about a built site, from its manifest."""
    meta = manifest(path)["meta"]
    return (f"{meta['pages']} pages, {meta['bytes'] / 2**20:.1f} MiB, {json.dumps(meta['features'])} features, "
            f"built in {manifest(path)['seconds']:.1f} s: {path / 'index.html'}")
