"""Circuit scaling of N-digit MNIST-addition (logic/addition.logic), and circuit throughput.

For each N it compiles the knowledge from scratch (use_cache=False) and records the SDD
size (edges), node count, model count, compile seconds, the circuit depth (number of KLay
layers) and the throughput of the circuit alone: examples per second of a forward and
backward pass (log-softmax -> circuit with the sum digits as evidence -> semantic loss ->
gradient) on random concept logits at a given batch size, median of a few repetitions
after warm-up. No network, no images: this measures the reasoning layer only.

    python benchmarks/scaling.py                  # N = 1..15 -> benchmarks/results/scaling.json
    python benchmarks/scaling.py --n 1            # circuit throughput of N=1 at batch 1024
                                                  #   -> benchmarks/results/circuit_throughput_n1.json
    python benchmarks/scaling.py --device cuda --threads 1 --out /somewhere/scaling.json

Every JSON records the command, the machine and the date (`machine_info`, also used by the
other benchmarks in this folder). The machine may be shared: the load average at the start
is recorded too, since throughput on a busy CPU is lower.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, ROOT, machine_info, write_result  # noqa: E402

LOGIC = ROOT / "logic" / "addition.logic"

THROUGHPUT_TARGET = 100_000  # examples/s, forward + backward, N=1, batch 1024, one CPU thread


def sum_digit_labels(digits, n: int):
    """Concept digits [B, 2N] (a then b, leading digits first) -> sum digits [B, N+1]."""
    import torch

    powers = 10 ** torch.arange(n - 1, -1, -1, dtype=torch.long, device=digits.device)
    total = (digits[:, :n] * powers).sum(1) + (digits[:, n:] * powers).sum(1)
    out_powers = 10 ** torch.arange(n, -1, -1, dtype=torch.long, device=digits.device)
    return (total.unsqueeze(1) // out_powers) % 10


def _sync(device) -> None:
    import torch

    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def circuit_throughput(circuit, n: int, batch: int, reps: int, device, warmup: int = 2) -> dict:
    """Examples/s of forward+backward and of forward alone (median over `reps`)."""
    import torch
    import torch.nn.functional as F

    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(batch, 2 * n, 10, generator=generator).to(device).requires_grad_(True)
    digits = torch.randint(0, 10, (batch, 2 * n), generator=generator)
    labels = sum_digit_labels(digits, n).to(device)

    def step():
        log_probs = F.log_softmax(logits, dim=-1)
        loss = -circuit(log_probs, labels).mean()
        loss.backward()
        logits.grad = None
        return loss

    times = []
    for i in range(warmup + reps):
        _sync(device)
        start = time.perf_counter()
        loss = step()
        _sync(device)
        if i >= warmup:
            times.append(time.perf_counter() - start)
    if not torch.isfinite(loss):
        raise RuntimeError(f"N={n}: non-finite loss {float(loss)} with consistent labels")
    forward_times = []
    with torch.no_grad():
        for i in range(warmup + reps):
            _sync(device)
            start = time.perf_counter()
            circuit(F.log_softmax(logits, dim=-1), labels)
            _sync(device)
            if i >= warmup:
                forward_times.append(time.perf_counter() - start)
    median = statistics.median(times)
    return {
        "batch": batch,
        "repetitions": reps,
        "seconds_per_batch_median": median,
        "seconds_per_batch_min": min(times),
        "examples_per_second": batch / median,
        "examples_per_second_best": batch / min(times),
        "forward_examples_per_second": batch / statistics.median(forward_times),
    }


def measure(n: int, batch: int, reps: int, device, compile_module) -> dict:
    from nesy_gedi.circuit import KnowledgeCircuit
    from nesy_gedi.compiler import compile_file
    from nesy_gedi.decimal_text import decimal_string

    compiled = compile_file(LOGIC, {"N": n}, use_cache=False)
    if compiled.model_count != 10 ** (2 * n):
        raise RuntimeError(f"N={n}: model count {compiled.model_count}, expected 10**{2 * n}")
    start = time.perf_counter()
    circuit = KnowledgeCircuit(compiled, compile_module=compile_module).to(device)
    build_seconds = time.perf_counter() - start
    layers = circuit.module.layers
    row = {
        "N": n,
        "sdd_size": compiled.sdd_size,
        "sdd_nodes": compiled.sdd_node_count,
        "model_count": decimal_string(compiled.model_count),
        "compile_seconds": round(compiled.compile_seconds, 4),
        "klay_build_seconds": round(build_seconds, 4),
        "depth": len(layers),
        "circuit_edges": int(sum(layer.ix_in.numel() for layer in layers)),
        "literals": compiled.num_literals,
    }
    # torch.compile needs more warm-up calls (the first ones trace and compile).
    row.update(circuit_throughput(circuit, n, batch, reps, device, warmup=4 if compile_module else 2))
    return row


def print_table(rows: list) -> None:
    header = (f"{'N':>3} {'SDD size':>9} {'nodes':>7} {'compile s':>9} {'depth':>5} {'edges':>7} "
              f"{'fwd+bwd ex/s':>13} {'fwd ex/s':>10}")
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r['N']:>3} {r['sdd_size']:>9} {r['sdd_nodes']:>7} {r['compile_seconds']:>9.3f} {r['depth']:>5} "
              f"{r['circuit_edges']:>7} {r['examples_per_second']:>13,.0f} {r['forward_examples_per_second']:>10,.0f}")


def parse_compile(text: str):
    lowered = text.lower()
    if lowered in ("auto",):
        return "auto"
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError("expected auto, true or false")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, help="only this N (circuit throughput); default: N = 1..--n-max")
    parser.add_argument("--n-max", type=int, default=15)
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--reps", type=int, default=10, help="timed repetitions after warm-up")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (recorded)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N")
    parser.add_argument("--compile", type=parse_compile, default=False,
                        help="torch.compile KLay's module: false (default), true or auto (CUDA only)")
    parser.add_argument("--out", help="JSON path (default benchmarks/results/scaling.json, "
                                      "or circuit_throughput_n{N}.json with --n)")
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: CUDA is not available")
    ns = [args.n] if args.n is not None else list(range(1, args.n_max + 1))
    rows = []
    for n in ns:
        rows.append(measure(n, args.batch, args.reps, device, args.compile))
        print(f"N={n}: {rows[-1]['examples_per_second']:,.0f} examples/s", file=sys.stderr, flush=True)
    print_table(rows)
    result = {
        "benchmark": "circuit_throughput" if args.n is not None else "scaling",
        "machine": machine_info(str(device)),
        "threads": args.threads,
        "batch": args.batch,
        "repetitions": args.reps,
        "torch_compile": args.compile,
        "throughput_measures": "log_softmax -> circuit(log_probs, sum digits) -> mean -> backward, "
                               "random logits, consistent labels",
        "rows": rows,
    }
    if args.n == 1:
        eps = rows[0]["examples_per_second"]
        result["target_examples_per_second"] = THROUGHPUT_TARGET
        result["meets_target"] = eps >= THROUGHPUT_TARGET
        print(f"N=1 batch {args.batch}: {eps:,.0f} examples/s forward+backward "
              f"({'meets' if eps >= THROUGHPUT_TARGET else 'below'} the {THROUGHPUT_TARGET:,} target, "
              f"{args.threads} thread(s), {device})")
    default = (f"circuit_throughput_n{args.n}.json" if args.n is not None else "scaling.json")
    path = write_result(Path(args.out) if args.out else RESULTS / default, result)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
