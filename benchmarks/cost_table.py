"""What the paper run costs: README's tables, computed from committed measurements only.

* ``benchmarks/results/paper_rates_h100.json`` (``paper_rates.py`` on an NVIDIA H100): rates and peak GPU memory at
  the paper profile's shapes, and the paper's token counts with their sources. The H100 column is measured; A100
  and Colab T4 are ESTIMATES, the H100 hours scaled by a ratio of datasheet peaks (``GPUS``), named in each row.
* ``benchmarks/results/paper_shapes_cpu.json`` (``--collect`` of a ``paper_shapes`` run): the whole pipeline at the
  paper's shapes with tiny token counts on a CPU: each notebook's wall time and peak resident memory, each cached
  step's seconds, throughput and size on disk. The sizes give the disk column (scaled as each row says) and the
  steps' relative costs place the controls and notebooks 05-10 beside the paper's own steps.

    python -m paper_lib.pipeline --profile paper_shapes                   # the CPU run (PAPER_RUNS_DIR=...)
    python benchmarks/cost_table.py --collect $PAPER_RUNS_DIR/paper_shapes  # -> results/paper_shapes_cpu.json
    python benchmarks/cost_table.py                                        # README's tables, as markdown
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
H100_FILE, CPU_FILE = RESULTS / "paper_rates_h100.json", RESULTS / "paper_shapes_cpu.json"

# Datasheet peaks: dense tensor TFLOPS by precision (no sparsity), memory bandwidth in TB/s, memory in GB.
# H100 SXM; A100 80GB SXM; T4 (no bf16: the project trains in float32 there, as `bf16` applies only where supported).
GPUS = {
    "H100": {"bf16": 989.0, "fp32": 67.0, "bandwidth": 3.35, "memory_gb": 80},
    "A100": {"bf16": 312.0, "fp32": 19.5, "bandwidth": 2.0, "memory_gb": 80},
    "T4": {"fp16": 65.0, "fp32": 8.1, "bandwidth": 0.32, "memory_gb": 15},
}
META_KEYS = ("n_tokens", "tokens", "train_tokens", "tokens_per_second", "d_sae", "d_in", "n_positions", "nnz",
             "mean_l0", "vocab_size", "parameters", "n_parameters")
PAPER_L0 = 45.0  # SAE features firing per token assumed at paper scale (the H100 matching benchmark's synthetic L0)


# ------------------------------------------------------------------------------------------------- collecting

def _step_meta(meta: dict) -> dict:
    return {k: meta[k] for k in META_KEYS if isinstance(meta.get(k), (int, float))}


def collect(run: Path) -> dict:
    """The run's benchmark file, plus every finished step's seconds, size on disk and a few numbers of its manifest."""
    bench = json.loads((run / "benchmarks.json").read_text())
    if "steps" in bench:  # rows of folders deleted since (a step rebuilt under another configuration) are dropped
        bench["steps"]["rows"] = [r for r in bench["steps"]["rows"] if (run / r["folder"] / "manifest.json").is_file()]
    steps = []
    for path in sorted(run.glob("*/manifest.json")):
        found = json.loads(path.read_text())
        steps.append({"folder": path.parent.name, "step": found.get("step"), "seconds": found.get("seconds"),
                      "bytes": int(sum(found.get("files", {}).values())), **_step_meta(found.get("meta") or {})})
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {
        "what": "the paper_shapes profile end to end on CPU: the paper's shapes, tiny token counts (paper_lib/profiles/"
                "paper_shapes.yaml); per-notebook wall time and peak resident memory, per-step seconds, throughput, "
                "size",
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(), "python": sys.version.split()[0],
                    "load_average_at_collect": load,
                    "note": "a shared 2-core machine: other jobs ran beside this one, so rates are lower bounds"},
        "collected_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "benchmarks": bench,
        "step_sizes": steps,
    }


# ------------------------------------------------------------------------------------------------- the tables

def _rate(h100: dict, name: str) -> dict:
    return h100["steps"][name]


def _ratio(gpu: str, precision: str) -> float:
    return GPUS["H100"][precision if precision != "fp16" else "bf16"] / GPUS[gpu][precision]


def _fmt_h(hours: float | None) -> str:
    if hours is None:
        return "-"
    return f"{hours:.2f}" if hours >= 0.1 else f"{hours:.3f}" if hours >= 0.001 else f"{hours * 3600:.1f} s"


def _fmt_gb(n_bytes: float) -> str:
    return f"{n_bytes / 1e9:.1f} GB" if n_bytes >= 1e9 else f"{n_bytes / 1e6:.0f} MB"


def _steps(cpu: dict, prefix: str, exact: bool = False) -> list[dict]:
    return [s for s in cpu["step_sizes"] if (s["step"] == prefix if exact else str(s["step"]).startswith(prefix))]


def _rows_by_notebook(cpu: dict) -> dict[str, list[dict]]:
    rows: dict[str, list[dict]] = {}
    for row in cpu["benchmarks"].get("steps", {}).get("rows", []):
        rows.setdefault(row["notebook"], []).append(row)
    return rows


def gpu_rows(h100: dict, cpu: dict) -> list[dict]:
    """One row per step of the paper run: tokens, hours on H100 (measured) / A100 / T4 (estimated), disk, memory."""
    counts = h100["token_counts"]
    train16, train32 = _rate(h100, "lm_train_trainer_bf16"), _rate(h100, "lm_train_trainer_fp32")
    eval32 = _rate(h100, "lm_eval_fp32")
    sae, collect_ = _rate(h100, "sae_train_fp32"), _rate(h100, "sae_collect_fp32")
    model = _steps(cpu, "model-babypython", exact=True)
    model_bytes = model[0]["bytes"] if model else 0
    checkpoint_bytes = cpu.get("trainer_checkpoint_bytes") or 0
    token_bytes = _bytes_per_token(cpu)
    rows = []
    for key, label, unique in (("base_pretrain", "BabyPython pretraining (01)", 1 / 3),
                               ("finetune_lua", "Lua fine-tune (02)", 1.0),
                               ("finetune_tinystories", "TinyStories fine-tune (02)", 1.0)):
        tokens = counts[key]["tokens"]
        h = tokens / train16["rate_median"] / 3600
        h32 = tokens / train32["rate_median"] / 3600
        rows.append({
            "step": label, "amount": f"{tokens / 1e6:,.0f}M tokens",
            "H100": h, "A100": h * _ratio("A100", "bf16"), "T4": h32 * _ratio("T4", "fp32"),
            "ratio": "bf16 peak (T4: fp32 peak, on the fp32 rate)",
            "disk": tokens * unique * token_bytes + model_bytes + 2 * checkpoint_bytes,
            "disk_how": "its tokens (unique, x bytes/token) + the model + 2 Trainer checkpoints (weights + AdamW)",
            "gpu_gib": max(train16["peak_reserved_gib"], train32["peak_reserved_gib"]),
        })
    tokens = counts["lm_evaluation"]["tokens"]
    h = tokens / eval32["rate_median"] / 3600
    merges = _steps(cpu, "model-luastories", exact=True) + _steps(cpu, "sweep-")
    rows.append({"step": "LM evaluation + SLERP sweep (01-03)", "amount": f"{tokens / 1e6:,.0f}M tokens",
                 "H100": h, "A100": h * _ratio("A100", "fp32"), "T4": h * _ratio("T4", "fp32"),
                 "ratio": "fp32 peak", "disk": sum(s["bytes"] for s in merges),
                 "disk_how": "the LuaStories merge and the sweep's tables (as measured: same shapes)",
                 "gpu_gib": eval32["peak_reserved_gib"]})
    tokens = counts["sae_per_model"]["tokens"]
    h_train, h_collect = tokens / sae["rate_median"] / 3600, tokens / collect_["rate_median"] / 3600
    saes = _steps(cpu, "sae-babypython", exact=True)
    rows.append({"step": "4 SAEs, 16,384 features (04)", "amount": f"4 x {tokens / 1e6:,.0f}M tokens",
                 "H100": 4 * (h_train + h_collect),
                 "A100": 4 * (h_train * _ratio("A100", "fp32") + h_collect * _ratio("A100", "bandwidth")),
                 "T4": 4 * (h_train * _ratio("T4", "fp32") + h_collect * _ratio("T4", "bandwidth")),
                 "ratio": "SAE step: fp32 peak; activation collection: bandwidth",
                 "disk": 4 * (saes[0]["bytes"] if saes else 0),
                 "disk_how": "4 SAE folders as measured (same shapes; SAELens checkpoints are removed when done)",
                 "gpu_gib": max(sae["peak_reserved_gib"], collect_["peak_reserved_gib"])})
    rows.append(matching_row(h100, cpu))
    return rows


def _bytes_per_token(cpu: dict) -> float:
    corpora = [s for s in _steps(cpu, "tokens-") if s.get("n_tokens")]
    return sum(s["bytes"] for s in corpora) / max(1, sum(s["n_tokens"] for s in corpora)) if corpora else 4.0


MODELS = ("babypython", "lua", "tinystories", "luastories")  # the paper's four models


def _main_matches(cpu: dict) -> list[dict]:
    """The paper's matches: each parent -> child pair, both modes, the profile's SAEs, the pair's sample, unpermuted."""
    rows = cpu["step_sizes"]  # every finished step folder, also of a notebook still running when collected
    names = {f"matching-{p}-{c}-{m}" for p, c in (("babypython", "lua"), ("babypython", "tinystories"),
                                                  ("lua", "luastories"), ("tinystories", "luastories"))
             for m in ("position", "token")}
    return [r for r in rows if r["step"] in names]


def matching_row(h100: dict, cpu: dict) -> dict:
    m = h100["steps"]["matching"]
    counts = h100["token_counts"]["matching"]
    one_to_one = m["one_to_one"]["one_to_one_s"]
    per_pair = m["position"]["total_s"] + m["token"]["total_s"] + counts["modes"] * one_to_one
    main = _main_matches(cpu)
    by_mode = {mode: [r["seconds"] for r in main if r["step"].endswith(f"-{mode}")] for mode in ("position", "token")}
    # each mode's mean over the pairs measured, times the pairs (all of them once the run has finished)
    cpu_hours = (sum(counts["pairs"] * sum(v) / len(v) for v in by_mode.values()) / 3600
                 if all(by_mode.values()) else None)
    measured = f"{len(main)} of {counts['pairs'] * counts['modes']} matches"
    # the four models' own samples and the main matches: not the controls' (second seeds, null, permuted) nor
    # notebook 08-09's (snapshots, the deeper family's narrower, denser per-layer SAEs)
    own = {f"matching-acts-{n}" for n in MODELS}
    acts = [a for a in cpu["step_sizes"] if a["step"] in own]
    l0 = [a["mean_l0"] for a in acts if a.get("mean_l0")]
    acts_bytes = sum(a["bytes"] for a in acts) / max(1, len(acts))
    match_bytes = sum(s["bytes"] for s in main) / max(1, len(main))
    scale = PAPER_L0 / (sum(l0) / len(l0)) if l0 else 1.0
    return {"step": "matching, 4 pairs x 2 modes (05)",
            "amount": f"{counts['positions']:,} positions, 16,384 x 16,384",
            "H100": counts["pairs"] * per_pair / 3600, "A100": counts["pairs"] * per_pair / 3600, "T4": cpu_hours,
            "ratio": "CPU (numba, scipy): H100 and A100 columns are the GPU machine's 16 cores on synthetic "
                     f"activations; T4 is the 2-core paper_shapes run (like Colab's 2 vCPUs) on real ones ({measured})",
            "disk": 8 * match_bytes + 8 * acts_bytes * scale,
            "disk_how": f"8 matching folders as measured + 8 activation samples scaled to L0 {PAPER_L0:.0f} (the "
                        f"tiny run's SAEs fire {sum(l0) / max(1, len(l0)):.0f} features a token)",
            "gpu_gib": None}


def gpu_table(h100: dict, cpu: dict) -> str:
    lines = ["| step (notebook) | at paper scale | H100 h (measured) | A100 h (est.) | T4 h (est.) | scaled by | "
             "disk | peak GPU memory |", "|---|---|---|---|---|---|---|---|"]
    total = {"H100": 0.0, "A100": 0.0, "T4": 0.0}
    for r in gpu_rows(h100, cpu):
        for gpu in total:
            total[gpu] += r[gpu] or 0.0
        memory = "CPU" if r["gpu_gib"] is None else f"{r['gpu_gib']:.1f} GiB"
        lines.append(f"| {r['step']} | {r['amount']} | {_fmt_h(r['H100'])} | {_fmt_h(r['A100'])} | "
                     f"{_fmt_h(r['T4'])} | {r['ratio']} | {_fmt_gb(r['disk'])} | {memory} |")
    lines.append(f"| **the paper's run** | | **{_fmt_h(total['H100'])}** | **{_fmt_h(total['A100'])}** | "
                 f"**{_fmt_h(total['T4'])}** | | | |")
    return "\n".join(lines)


def disk_notes(h100: dict, cpu: dict) -> str:
    return "\n".join(f"- {r['step']}: {r['disk_how']}." for r in gpu_rows(h100, cpu))


def utilisation(h100: dict) -> str:
    """How close the H100 came to its datasheet peak on LM training (6 FLOPs per parameter and token)."""
    train = _rate(h100, "lm_train_trainer_bf16")
    tflops = 6 * _rate(h100, "lm_train_loop_bf16")["params"] * train["rate_median"] / 1e12
    return (f"LM training on the H100 ran at {tflops:.0f} TFLOPS, {tflops / GPUS['H100']['bf16']:.0%} of its bf16 "
            "peak (6 FLOPs per parameter and token): a small model leaves a large GPU mostly idle, and a smaller GPU "
            "usually runs closer to its own peak, so scaling by peak ratios likely overstates the A100 and T4 hours.")


def cpu_table(cpu: dict) -> str:
    """Each notebook of the CPU run: wall time, peak resident memory, the steps it built and their throughput."""
    bench, by_notebook = cpu["benchmarks"], _rows_by_notebook(cpu)
    lines = ["| notebook | wall s | peak RSS (kernel tree) | steps built | of which slowest | tokens/s |",
             "|---|---|---|---|---|---|"]
    for key in sorted(k for k in bench if k.startswith("notebook_")):
        record, stem = bench[key], key.removeprefix("notebook_")
        rows = by_notebook.get(stem, [])
        slowest = max(rows, key=lambda r: r["seconds"] or 0, default=None)
        rates = sorted({f"{r['step']} {r['tokens_per_second']:,.0f}" for r in rows if r.get("tokens_per_second")})
        peak = record.get("peak_rss_mib")
        peak_text = "-" if peak is None else f"{peak / 1024:.1f} GiB"
        slowest_text = "-" if slowest is None else f"{slowest['step']} ({slowest['seconds']:,.0f} s)"
        built = f"{len(rows)} ({sum(r['seconds'] or 0 for r in rows):,.0f} s)"
        lines.append(f"| {stem} | {record['wall_seconds']:,.0f} | {peak_text} | {built} | {slowest_text} | "
                     f"{'; '.join(rates) or '-'} |")
    if "make_paper" in bench:
        run = bench["make_paper"]  # the last run that built steps (a later re-check from the cache builds none)
        lines.append(f"| **all** | **{run.get('building_wall_seconds', run['wall_seconds']):,.0f}** | | | | |")
    return "\n".join(lines)


KINDS = {  # the steps of a notebook that are placed against the paper's own steps, by name
    "lm": lambda s: s.startswith(("model-", "trajectory-")),
    "sae": lambda s: "sae" in s or s == "stitch-flops",
    "matching": lambda s: s.startswith(("matching-", "layerwise-cross-")) and not s.startswith("matching-acts-"),
}


def relative_table(h100: dict, cpu: dict) -> str:
    """Notebooks 05-10 (controls and the beyond-the-paper sections) at paper scale, by their CPU cost relative to the
    paper's steps of the same kind: LM training against notebooks 01-02's three models, SAE training (and its
    diagnostics) against notebook 04's four SAEs, matching against the eight main matches. Every other step
    (evaluations, activation samples, similarity, probes) is shown in CPU seconds only."""
    by_notebook, rows = _rows_by_notebook(cpu), gpu_rows(h100, cpu)
    gpus = ("H100", "A100", "T4")
    main_matches = _main_matches(cpu)
    reference = {
        "lm": (sum(r["seconds"] for nb in ("01_training", "02_finetuning") for r in by_notebook.get(nb, [])
                   if KINDS["lm"](r["step"])), {g: sum(r[g] for r in rows[:3]) for g in gpus}),
        "sae": (sum(r["seconds"] for r in by_notebook.get("04_sae_training", []) if KINDS["sae"](r["step"])),
                {g: rows[4][g] for g in gpus}),
        "matching": (sum(r["seconds"] for r in main_matches), {g: rows[5][g] for g in gpus}),
    }
    lines = ["| notebook | CPU s: LM training / SAEs / matching (x the paper's step) / other | H100 h | A100 h | T4 h |",
             "|---|---|---|---|---|"]
    main_folders = {r["folder"] for r in main_matches}
    for stem in sorted(nb for nb in by_notebook if nb >= "05"):
        steps = [r for r in by_notebook[stem] if r["folder"] not in main_folders]  # the paper's matches: own row
        hours, parts = dict.fromkeys(gpus, 0.0), []
        for kind, test in KINDS.items():
            seconds = sum(r["seconds"] for r in steps if test(r["step"]))
            ref_seconds, ref_hours = reference[kind]
            share = seconds / ref_seconds if ref_seconds else 0.0
            parts.append(f"{seconds:,.0f} (x{share:.2f})")
            for gpu in gpus:
                hours[gpu] = None if hours[gpu] is None or (share and ref_hours[gpu] is None) else (
                    hours[gpu] + share * (ref_hours[gpu] or 0.0))
        other = sum(r["seconds"] for r in steps if not any(test(r["step"]) for test in KINDS.values()))
        lines.append(f"| {stem} | {' / '.join(parts)} / {other:,.0f} | {_fmt_h(hours['H100'])} | "
                     f"{_fmt_h(hours['A100'])} | {_fmt_h(hours['T4'])} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--collect", type=Path, help="a paper_shapes run folder: write results/paper_shapes_cpu.json")
    parser.add_argument("--checkpoint-bytes", type=int, help="size of one Trainer checkpoint seen during the run")
    args = parser.parse_args(argv)
    if args.collect:
        found = collect(args.collect)
        if args.checkpoint_bytes:
            found["trainer_checkpoint_bytes"] = args.checkpoint_bytes
        CPU_FILE.write_text(json.dumps(found, indent=2) + "\n")
        print(f"wrote {CPU_FILE}")
        return 0
    h100, cpu = json.loads(H100_FILE.read_text()), json.loads(CPU_FILE.read_text())
    print(gpu_table(h100, cpu), "", utilisation(h100), "", "Disk, at paper scale:", disk_notes(h100, cpu), "",
          relative_table(h100, cpu), "", cpu_table(cpu), sep="\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
