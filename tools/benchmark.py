"""Time and peak memory of the window-attention op and of AnyUp, per backend, against the
dense masked formulation of the official model measured in the same run.

    python tools/benchmark.py                        # default grid, table to stdout
    python tools/benchmark.py --sizes 448 --maps 32 --channels 384 --modes forward
    python tools/benchmark.py --json bench.json --csv bench.csv --device cuda

Modes: ``op`` (the op's forward), ``op-train`` (op forward + backward), ``forward`` (the whole
AnyUp forward without autograd, random weights), ``train`` (AnyUp forward + backward of a loss,
weights requiring grad). Backends: ``official`` (whole-model modes only; the baseline: the
official model's formulation, i.e. the independent reference implementation in
tests/reference.py: NCHW layers and the dense masked attention, O(H*W*h*w) memory; needs a
repository checkout), ``dense`` (this package's AnyUp with that dense masked attention; the op
modes' baseline), ``cpp``/``cuda`` (the compiled op), ``torch`` (tiled pure PyTorch),
``natten`` (approximation; needs natten). ``--bf16`` adds the whole-model modes under bfloat16
autocast.

Each case runs in its own process: one warm-up run, then timed runs (at least one, up to
``--repeats`` or until ``--max-seconds``); the table shows the fastest and the median. Peak
memory is the process's peak resident set (``ru_maxrss``, ``import torch`` included) on CPU,
and ``torch.cuda.max_memory_allocated`` on GPU, read when the first (warm-up) run has ended:
what one run costs. "above inputs" subtracts what the process held once its inputs (and model)
were built. "peak after repeats" is read at the end: with the tuned allocator below, which
never gives memory back, a process's heap can grow across repeated runs by fragmentation
alone (freed blocks too small for the next run's tensors). Cases whose estimated memory
exceeds ``--memory-gb`` are skipped, and the table says so.

Worker processes get the allocator settings that made CPU runs about 2x faster on the test
machine unless the caller set them (the Makefile exports the same): MALLOC_MMAP_MAX_=0,
MALLOC_TRIM_THRESHOLD_=100000000000, MALLOC_TOP_PAD_=1000000000; ``--malloc default`` drops
them (glibc's own settings). ONEDNN_MAX_CPU_ISA=AVX512_CORE_BF16 (bf16 autocast on CPU) too.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MALLOC_ENV = {'MALLOC_MMAP_MAX_': '0', 'MALLOC_TRIM_THRESHOLD_': '100000000000',
              'MALLOC_TOP_PAD_': '1000000000'}
MODES = ('op', 'op-train', 'forward', 'train')
#: (output size, feature map size) pairs of the default grid; --grid full crosses them all.
DEFAULT_PAIRS = ((224, 16), (448, 32), (896, 64), (2048, 64))
QK_DIM, HEADS, RATIO = 128, 4, 0.1
GB = 1024 ** 3


@dataclass
class Case:
    mode: str
    backend: str
    size: int
    map: int
    channels: int
    device: str = 'cpu'
    bf16: bool = False  # whole-model modes: run under bfloat16 autocast

    @property
    def label(self) -> str:
        return self.backend + ('+bf16' if self.bf16 else '')


@dataclass
class Result:
    case: Case
    status: str = 'ok'            # ok | skipped | failed
    note: str = ''
    times: list[float] = field(default_factory=list)
    peak_gb: float | None = None          # when the first run ended
    above_inputs_gb: float | None = None
    output_gb: float | None = None
    repeats_peak_gb: float | None = None  # when the last run ended

    @property
    def best(self) -> float | None:
        return min(self.times) if self.times else None


def estimate_gb(case: Case) -> float:
    """Peak memory of a case (to skip what cannot fit), in GB, from measured peaks: a
    full-size D-channel map is ``maps``, the output ``out``; the allocator keeps some slack."""
    pixels, keys = case.size ** 2, case.map ** 2
    maps = QK_DIM * pixels * 4
    out = case.channels * pixels * 4
    total = {'op': 3 * maps + out,
             'op-train': 3 * maps + 3 * out,
             'forward': 1.3 * max(4 * maps, 2 * maps + out),   # encoders; attention
             'train': 90 * maps + 4 * out}[case.mode]           # every activation is kept
    if case.backend in ('dense', 'official'):  # logits, masked logits, softmax, per head
        total += (8 if case.mode.endswith('train') else 3) * HEADS * pixels * keys * 4
    return 0.9 + total / GB


# --------------------------------------------------------------------------- worker process
def _rss_gb() -> float:
    with open('/proc/self/statm') as f:
        return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE') / GB


def _peak_gb(device) -> float:
    import torch
    if device.type == 'cuda':
        return torch.cuda.max_memory_allocated(device) / GB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GB


def _workload(case: Case):
    """(function running one iteration, output bytes) for a case."""
    import torch
    from anyup_neck import AnyUp, window_attention

    device = torch.device(case.device)
    gen = torch.Generator(device=device).manual_seed(0)
    size, fmap = (case.size, case.size), (case.map, case.map)
    train = case.mode.endswith('train')
    out_bytes = case.channels * case.size ** 2 * 4
    if case.mode.startswith('op'):
        q = torch.randn(1, QK_DIM, *size, device=device, generator=gen, requires_grad=train)
        k = torch.randn(1, QK_DIM, *fmap, device=device, generator=gen, requires_grad=train)
        v = torch.randn(1, case.channels, *fmap, device=device, generator=gen, requires_grad=train)

        def run():
            q.grad = k.grad = v.grad = None  # each run is one step
            with torch.set_grad_enabled(train):
                out = window_attention(q, k, v, num_heads=HEADS, window_ratio=RATIO,
                                       backend=case.backend)
                if train:
                    out.backward(torch.ones_like(out))
            return out
        return run, out_bytes
    torch.manual_seed(0)
    backend = 'dense' if case.backend == 'official' else case.backend
    model = AnyUp(qk_dim=QK_DIM, num_heads=HEADS, window_ratio=RATIO, backend=backend)
    model = model.to(device).requires_grad_(train)
    image = torch.randn(1, 3, *size, device=device, generator=gen)
    features = torch.randn(1, case.channels, *fmap, device=device, generator=gen)
    upsample = model
    if case.backend == 'official':
        from anyup_neck.ops import window_mask
        from tests import reference
        # The reference builds its mask with numpy loops; the official code builds it in torch.
        reference.window_allowed = lambda H, W, h, w, r: window_mask((H, W), (h, w), r, device)
        params = dict(model.named_parameters())

        def upsample(image, features):
            return reference.reference_anyup(params, image, features, size, HEADS, RATIO)

    def run():
        model.zero_grad(set_to_none=True)
        with torch.set_grad_enabled(train), torch.autocast(device.type, torch.bfloat16,
                                                           enabled=case.bf16):
            out = upsample(image, features)
            if train:
                out.float().square().mean().backward()
        return out
    return run, out_bytes


def worker(case: Case, repeats: int, max_seconds: float) -> dict:
    """Measure one case in this process; returns a JSON-able dict."""
    import torch
    device = torch.device(case.device)
    sync = torch.cuda.synchronize if device.type == 'cuda' else (lambda: None)
    run, out_bytes = _workload(case)
    before = torch.cuda.memory_allocated(device) / GB if device.type == 'cuda' else _rss_gb()
    if device.type == 'cuda':
        torch.cuda.reset_peak_memory_stats(device)
    run()  # warm-up
    first_peak = _peak_gb(device)
    times, start = [], time.perf_counter()
    while len(times) < repeats and (not times or time.perf_counter() - start < max_seconds):
        sync()
        t0 = time.perf_counter()
        out = run()
        sync()
        times.append(time.perf_counter() - t0)
        del out
    return {'times': times, 'peak_gb': first_peak, 'above_inputs_gb': first_peak - before,
            'repeats_peak_gb': _peak_gb(device), 'output_gb': out_bytes / GB}


# --------------------------------------------------------------------------- driver
def run_case(case: Case, args: argparse.Namespace) -> Result:
    estimate = estimate_gb(case)
    if case.device == 'cpu' and estimate > args.memory_gb:
        return Result(case, 'skipped', f'needs ~{estimate:.0f} GB > {args.memory_gb:.0f} GB')
    if args.malloc == 'tuned':
        env = {**MALLOC_ENV, **os.environ}
    else:
        env = {k: v for k, v in os.environ.items() if k not in MALLOC_ENV}
    env.setdefault('ONEDNN_MAX_CPU_ISA', 'AVX512_CORE_BF16')
    command = [sys.executable, str(Path(__file__).resolve()), '--worker', json.dumps(asdict(case)),
               '--repeats', str(args.repeats), '--max-seconds', str(args.max_seconds)]
    if args.threads:
        command += ['--threads', str(args.threads)]
    run = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True)
    if run.returncode != 0:
        lines = (run.stderr or run.stdout).strip().splitlines()
        reason = 'killed (out of memory?)' if run.returncode in (-9, 137) else \
            (lines[-1] if lines else f'exit code {run.returncode}')
        return Result(case, 'failed', reason[:120])
    data = json.loads(run.stdout.strip().splitlines()[-1])
    return Result(case, 'ok', '', data['times'], data['peak_gb'], data['above_inputs_gb'],
                  data['output_gb'], data['repeats_peak_gb'])


def merge(a: Result, b: Result) -> Result:
    """Two rounds of one case: all timings, the lower first-run peaks (the same work), the
    higher peak after repeats (the worse heap growth)."""
    if a.status != 'ok' or b.status != 'ok':
        return a if a.status == 'ok' else b

    def low(x: float | None, y: float | None) -> float | None:
        return min(x, y) if x is not None and y is not None else x if y is None else y
    return Result(a.case, 'ok', '', a.times + b.times, low(a.peak_gb, b.peak_gb),
                  low(a.above_inputs_gb, b.above_inputs_gb), a.output_gb,
                  max(a.repeats_peak_gb, b.repeats_peak_gb))


def cases(args: argparse.Namespace) -> list[Case]:
    pairs = [(s, m) for s in args.sizes for m in args.maps] if args.grid == 'full' else \
        [(s, m) for s, m in DEFAULT_PAIRS if s in args.sizes and m in args.maps]
    bf16 = (False, True) if args.bf16 else (False,)
    whole = ('forward', 'train')
    return [Case(mode, backend, size, fmap, channels, args.device, half)
            for mode in args.modes for size, fmap in pairs for channels in args.channels
            for backend in args.backends if backend != 'official' or mode in whole
            for half in (bf16 if mode in whole else (False,))]


def _fmt(value: float | None, digits: int = 3) -> str:
    return '-' if value is None else f'{value:.{digits}f}'


def table(results: list[Result]) -> str:
    """Markdown table; speedup = the baseline's best time / this backend's best time, the
    baseline being 'official' where measured, else 'dense'."""
    baseline = {}
    for name in ('dense', 'official'):  # official last: it wins where both were measured
        baseline.update({(r.case.mode, r.case.size, r.case.map, r.case.channels): r.best
                         for r in results if r.case.backend == name and not r.case.bf16
                         and r.best})
    rows = ['| mode | output | map | C | backend | best s | median s | peak GB | above inputs GB '
            '| x output | peak after repeats GB | vs baseline | note |', '|' + '---|' * 13]
    for r in results:
        c = r.case
        base = baseline.get((c.mode, c.size, c.map, c.channels))
        speedup = f'{base / r.best:.1f}x' if base and r.best else '-'
        ratio = (f'{r.above_inputs_gb / r.output_gb:.2f}' if r.above_inputs_gb is not None
                 and r.output_gb else '-')
        median = statistics.median(r.times) if r.times else None
        rows.append(f'| {c.mode} | {c.size} | {c.map} | {c.channels} | {c.label} '
                    f'| {_fmt(r.best)} | {_fmt(median)} | {_fmt(r.peak_gb, 2)} '
                    f'| {_fmt(r.above_inputs_gb, 2)} | {ratio} | {_fmt(r.repeats_peak_gb, 2)} '
                    f'| {speedup} '
                    f'| {r.status if r.status != "ok" else ""}{": " if r.note else ""}{r.note} |')
    return '\n'.join(rows)


def write_files(results: list[Result], args: argparse.Namespace) -> None:
    records = [{**asdict(r.case), 'status': r.status, 'note': r.note, 'times_s': r.times,
                'best_s': r.best, 'peak_gb': r.peak_gb, 'above_inputs_gb': r.above_inputs_gb,
                'output_gb': r.output_gb, 'repeats_peak_gb': r.repeats_peak_gb}
               for r in results]
    if args.json:
        Path(args.json).write_text(json.dumps(records, indent=2))
    if args.csv:
        with open(args.csv, 'w', newline='') as f:
            writer = csv.DictWriter(f, fieldnames=[k for k in records[0] if k != 'times_s'],
                                    extrasaction='ignore')
            writer.writeheader()
            writer.writerows(records)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--modes', nargs='+', choices=MODES, default=list(MODES))
    parser.add_argument('--backends', nargs='+', default=None,
                        help='default: official, dense, cpp (CPU) or cuda (GPU), torch')
    parser.add_argument('--sizes', nargs='+', type=int, default=[224, 448, 896, 2048])
    parser.add_argument('--maps', nargs='+', type=int, default=[16, 32, 64])
    parser.add_argument('--channels', nargs='+', type=int, default=[384, 1024])
    parser.add_argument('--grid', choices=('default', 'full'), default='default',
                        help=f'default: the pairs {DEFAULT_PAIRS}; full: every size x map')
    parser.add_argument('--device', choices=('cpu', 'cuda'), default='cpu')
    parser.add_argument('--bf16', action='store_true',
                        help='also run the whole-model modes under bfloat16 autocast')
    parser.add_argument('--rounds', type=int, default=1,
                        help='measure every case this many times, interleaved, keeping all '
                             'timings and the lowest peak (steadier on a shared machine)')
    parser.add_argument('--malloc', choices=('tuned', 'default'), default='tuned',
                        help="'default': run the workers with glibc's own allocator settings")
    parser.add_argument('--repeats', type=int, default=3, help='timed runs after the warm-up')
    parser.add_argument('--max-seconds', type=float, default=60.0,
                        help='stop repeating a case after this long (at least one timed run)')
    parser.add_argument('--memory-gb', type=float, default=20.0,
                        help='skip CPU cases estimated to need more')
    parser.add_argument('--threads', type=int, default=0, help='torch threads (default: torch)')
    parser.add_argument('--json', help='also write the results as JSON')
    parser.add_argument('--csv', help='also write the results as CSV')
    parser.add_argument('--worker', help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.backends is None:
        args.backends = ['official', 'dense', 'cuda' if args.device == 'cuda' else 'cpp', 'torch']
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.worker:
        import torch
        if args.threads:
            torch.set_num_threads(args.threads)
        sys.path.insert(0, str(REPO))
        result = worker(Case(**json.loads(args.worker)), args.repeats, args.max_seconds)
        print(json.dumps(result))
        return
    todo = cases(args)
    results: list[Result | None] = [None] * len(todo)
    for round_ in range(1, args.rounds + 1):
        for n, case in enumerate(todo):
            print(f'[{round_}:{n + 1}/{len(todo)}] {case.mode} {case.label} {case.size}<-{case.map} '
                  f'C={case.channels} ...', end=' ', file=sys.stderr, flush=True)
            start = time.perf_counter()
            result = run_case(case, args)
            results[n] = result if results[n] is None else merge(results[n], result)
            summary = (f'{result.best:.3f} s, peak {result.peak_gb:.2f} GB'
                       if result.status == 'ok' else f'{result.status}: {result.note}')
            print(f'{summary} ({time.perf_counter() - start:.0f} s)', file=sys.stderr, flush=True)
    print(table(results))
    write_files(results, args)


if __name__ == '__main__':
    main()
