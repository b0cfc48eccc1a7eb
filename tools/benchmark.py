"""Time and peak memory of the window-attention op, of AnyUp and of a downstream training
iteration, per backend, against the official model's formulation measured in the same run.

    python tools/benchmark.py                  # default grid, table to stdout
    python tools/benchmark.py --sizes 448 --maps 32 --channels 384 --modes forward
    python tools/benchmark.py --device cuda --bf16 --fp16 --json bench.json --csv bench.csv

Modes:

* ``op``, ``op-train``: the window-attention op's forward, and forward + backward; with
  ``--bf16`` / ``--fp16`` also with q, k, v in that dtype (on the CPU for the ``torch`` and
  ``dense`` backends: the C++ kernels have no such dtypes).
* ``forward``: the whole AnyUp forward without autograd (random weights).
* ``train``: AnyUp forward + backward of a loss, weights requiring grad.

These four run at each batch size of ``--batches`` (default 1). The op modes' table rows show
the arithmetic rate at the best time (TFLOP/s, from :func:`op_flops`: the window rule's
(pixel, key) pairs times the per-pair work), to compare with the card's peak.
* ``throughput``: the whole AnyUp forward at ``--batch`` images (default 8); images/s.
* ``downstream``: one training iteration of the headline segmentation config
  (configs/ade20k_dinov2_anyup.py: frozen DINOv2 ViT-S/14 -> frozen AnyUp neck -> linear
  head) with random weights on random ``--batch`` x 3 x size x size images and labels:
  mmseg's data preprocessor, forward, loss, backward and the AdamW step, through
  ``model.train_step`` as mmengine's Runner calls it. Its backends are the necks of
  ``--necks``: ``anyup`` and ``bilinear`` (configs/ade20k_dinov2_bilinear.py, the same model
  with bilinear upsampling). The feature map is size / 14, C = 384.

Backends of the AnyUp modes: ``official`` (whole-model modes only; the baseline: the official
model's formulation, anyup_neck.upsampler.official: NCHW layers and the dense masked
attention, O(H*W*h*w) memory), ``dense`` (this package's AnyUp with that dense masked
attention; the op modes' baseline), ``cpp``/``cuda`` (the compiled op), ``torch`` (tiled pure
PyTorch), ``natten`` (approximation; needs natten). ``--bf16`` / ``--fp16`` add the
whole-model modes under bfloat16 / float16 autocast (``downstream``: mmengine's
AmpOptimWrapper on GPUs, the package's CPUAmpOptimWrapper for bf16 on CPUs; fp16 training on
a CPU is not offered). ``--cuda-fused-kernels`` adds the AnyUp modes of the non-official
backends with the extension's CUDA kernels of the fused primitives switched on
(``anyup_neck.ops.fused.use_cuda_kernels``; label ``+fused``). ``--compile MODE...`` adds them
with the model under ``torch.compile(mode=MODE)`` (label ``+compile``, ``+compile:MODE``;
the first warm-up run compiles; ``reduce-overhead`` replays CUDA graphs, no launch cost per
operation; the fused kernels stand aside while compiling, so there is no ``+fused+compile``;
``--traffic`` counts eager operations only).

``--profile ROWS`` adds, per case, torch.profiler's table of one more run (the ops with the
most self time: GPU time on CUDA), printed after the results and kept in the JSON.

``--traffic`` adds, per case, the memory traffic of one more run, counted at the dispatcher
(tools/_traffic.py: the bytes each operation must read and write, and the operations, about
one kernel launch each on a GPU): "moved GB" (GB as in the memory columns, 1024^3 bytes),
"ops", and "TB/s", the counted bytes over the median time (10^12 bytes/s, as cards quote their
bandwidth): how close the run's operations come to the card's memory bandwidth.

Each case runs in its own process: warm-up runs (``--warmup``, default 1 on CPU, 3 on GPU),
then timed runs (at least one, up to ``--repeats`` or until ``--max-seconds``); the table shows
the fastest and the median. On GPU each run is timed with CUDA events. Peak memory is the
process's peak resident set (``ru_maxrss``, ``import anyup_neck`` included, with the mm
stack it registers) on CPU, and
``torch.cuda.max_memory_allocated`` (reset once the inputs are built) on GPU, read when the
first warm-up run has ended: what one run costs. "above inputs" subtracts what the process held
once its inputs (and model) were built. "peak after repeats" is read at the end: with the
tuned allocator, which never gives memory back, a process's heap can grow across repeated runs
by fragmentation alone (freed blocks too small for the next run's tensors). CPU cases whose
estimated memory exceeds ``--memory-gb`` are skipped, and the table says so.

Worker processes get the process settings of anyup_neck.runtime (glibc allocator settings
that made CPU runs about 2x faster, oneDNN's ISA cap) where the caller has not set them;
``--malloc default`` runs them with glibc's own allocator settings.
"""
from __future__ import annotations

import argparse
import contextlib
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
sys.path.insert(0, str(REPO))  # run from a checkout

OP_MODES = ('op', 'op-train')
ANYUP_MODES = ('forward', 'train', 'throughput')
MODES = OP_MODES + ANYUP_MODES + ('downstream',)
#: (output size, feature map size) pairs of the default grid; --grid full crosses them all.
DEFAULT_PAIRS = ((224, 16), (448, 32), (896, 64), (2048, 64))
QK_DIM, HEADS, RATIO = 128, 4, 0.1
#: downstream mode: the neck's config, and the backbone's (ViT-S/14) patch size and width
NECK_CONFIGS = {'anyup': 'ade20k_dinov2_anyup.py', 'bilinear': 'ade20k_dinov2_bilinear.py'}
PATCH, VIT_CHANNELS = 14, 384
AUTOCAST = {'bf16': 'bfloat16', 'fp16': 'float16'}
GB = 1024 ** 3


@dataclass
class Case:
    mode: str
    backend: str          # downstream mode: the neck
    size: int
    map: int
    channels: int
    device: str = 'cpu'
    precision: str = 'fp32'   # fp32 | bf16 | fp16 (autocast; not in the op modes)
    batch: int = 1
    cuda_fused: bool = False  # anyup_neck.ops.fused.use_cuda_kernels in the worker
    compile: str = ''         # AnyUp modes: torch.compile's mode for the model ('': eager)

    @property
    def label(self) -> str:
        compiled = {'': '', 'default': '+compile'}.get(self.compile, '+compile:' + self.compile)
        return (self.backend + ('' if self.precision == 'fp32' else '+' + self.precision)
                + ('+fused' if self.cuda_fused else '') + compiled)

    @property
    def title(self) -> str:
        """One line naming the case (progress, profiles)."""
        return (f'{self.mode} {self.label} {self.size}<-{self.map} C={self.channels} '
                f'batch {self.batch}')


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
    profile: str = ''                     # --profile: torch.profiler's table of one run
    moved_bytes: int | None = None        # --traffic: counted bytes read and written by one run
    ops: int | None = None                # --traffic: its operations that move data

    @property
    def best(self) -> float | None:
        return min(self.times) if self.times else None

    @property
    def median(self) -> float | None:
        return statistics.median(self.times) if self.times else None

    @property
    def tflops(self) -> float | None:
        """The op modes' arithmetic rate at the best time, in TFLOP/s (see :func:`op_flops`)."""
        if self.case.mode not in OP_MODES or not self.times:
            return None
        return op_flops(self.case) / self.best / 1e12

    @property
    def tb_per_s(self) -> float | None:
        """Counted traffic over the median time, in TB/s (10^12 bytes/s; see ``--traffic``)."""
        if self.moved_bytes is None or not self.times:
            return None
        return self.moved_bytes / self.median / 1e12

    @property
    def images_per_s(self) -> float | None:
        """Images per second at the median time (the batched modes)."""
        if self.case.mode not in ('throughput', 'downstream') or not self.times:
            return None
        return self.case.batch / self.median


def op_flops(case: Case) -> float:
    """Floating-point operations of an op case, counted from the window rule: per (pixel, key
    in its window) pair, 2 D for the logits and 2 C for the weighted values in the forward;
    the backward adds 6 D + 4 C (the logits again, dq, dk, <g, v>, dv)."""
    from anyup_neck.ops.windows import window_bounds_1d
    start, stop = window_bounds_1d(case.size, case.map, RATIO)
    pairs = float((stop - start).sum()) ** 2                    # square maps: rows x columns
    per_pair = 2 * QK_DIM + 2 * case.channels
    if case.mode == 'op-train':
        per_pair += 6 * QK_DIM + 4 * case.channels
    return case.batch * pairs * per_pair


def estimate_gb(case: Case) -> float:
    """Peak memory of a case (to skip what cannot fit), in GB, from measured peaks: a
    full-size D-channel map is ``maps``, the output ``out``; the allocator keeps some slack."""
    pixels, keys = case.size ** 2, case.map ** 2
    maps = QK_DIM * pixels * 4
    out = case.channels * pixels * 4
    forward = 1.3 * max(4 * maps, 2 * maps + out)            # encoders; attention
    per_image = {'op': 3 * maps + out,
                 'op-train': 3 * maps + 3 * out,
                 'forward': forward,
                 'throughput': forward,
                 'train': 90 * maps + 4 * out,                  # every activation is kept
                 'downstream': (forward if case.backend == 'anyup' else 0) + 4 * out}[case.mode]
    if case.backend in ('dense', 'official'):  # logits, masked logits, softmax, per head
        per_image += (8 if case.mode.endswith('train') else 3) * HEADS * pixels * keys * 4
    return 0.9 + case.batch * per_image / GB


# --------------------------------------------------------------------------- worker process
def _rss_gb() -> float:
    with open('/proc/self/statm') as f:
        return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE') / GB


def _peak_gb(device) -> float:
    import torch
    if device.type == 'cuda':
        return torch.cuda.max_memory_allocated(device) / GB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GB


def _op_workload(case: Case, device, gen):
    """One call of the op (forward, or forward + backward) on ``case.batch`` images, with q,
    k, v in the case's precision."""
    import torch
    from anyup_neck import window_attention
    train = case.mode == 'op-train'
    dtype = getattr(torch, AUTOCAST.get(case.precision, 'float32'))

    def tensor(channels: int, size: int) -> torch.Tensor:
        t = torch.randn(case.batch, channels, size, size, device=device, generator=gen)
        return t.to(dtype).requires_grad_(train)
    q, k, v = tensor(QK_DIM, case.size), tensor(QK_DIM, case.map), tensor(case.channels, case.map)

    def run():
        q.grad = k.grad = v.grad = None  # each run is one step
        with torch.set_grad_enabled(train):
            out = window_attention(q, k, v, num_heads=HEADS, window_ratio=RATIO,
                                   backend=case.backend)
            if train:
                out.backward(torch.ones_like(out))
        return out
    return run


def _autocast(device, precision: str):
    """torch.autocast to bf16 / fp16, or nothing for fp32."""
    import torch
    if precision == 'fp32':
        return contextlib.nullcontext()
    return torch.autocast(device.type, getattr(torch, AUTOCAST[precision]))


def _anyup_workload(case: Case, device, gen):
    """One AnyUp forward (``train``: and backward) at ``case.batch`` images, under autocast
    for bf16/fp16; ``official`` runs the official formulation on the same weights."""
    import torch
    from anyup_neck import AnyUp
    from anyup_neck.upsampler.official import official_anyup
    train = case.mode == 'train'
    size = (case.size, case.size)
    torch.manual_seed(0)
    backend = 'dense' if case.backend == 'official' else case.backend
    model = AnyUp(qk_dim=QK_DIM, num_heads=HEADS, window_ratio=RATIO, backend=backend)
    model = model.to(device).requires_grad_(train)
    image = torch.randn(case.batch, 3, *size, device=device, generator=gen)
    features = torch.randn(case.batch, case.channels, case.map, case.map, device=device,
                           generator=gen)
    upsample = torch.compile(model, mode=case.compile) if case.compile else model
    if case.backend == 'official':
        weights = model.state_dict(keep_vars=True)  # the parameters themselves

        def upsample(image, features):
            return official_anyup(weights, image, features, size, HEADS, RATIO)

    def run():
        model.zero_grad(set_to_none=True)
        with torch.set_grad_enabled(train), _autocast(device, case.precision):
            out = upsample(image, features)
            if train:
                out.float().square().mean().backward()
        return out
    return run


def _downstream_workload(case: Case, device, gen):
    """One training iteration of the headline config (neck ``case.backend``), random weights,
    random images and labels: ``model.train_step`` as mmengine's Runner calls it."""
    import torch
    from mmengine.config import Config
    from mmengine.model import revert_sync_batchnorm
    from mmengine.optim import build_optim_wrapper
    from mmengine.structures import PixelData
    from mmseg.registry import MODELS
    from mmseg.structures import SegDataSample
    from mmseg.utils import register_all_modules

    import anyup_neck.mm  # noqa: F401  (registers the package's modules)
    register_all_modules(init_default_scope=True)
    cfg = Config.fromfile(REPO / 'configs' / NECK_CONFIGS[case.backend])
    cfg.model.backbone.pretrained = None                   # random weights, nothing read
    if cfg.model.neck.get('init_cfg'):
        cfg.model.neck.init_cfg.checkpoint = None
    size = (case.size, case.size)
    cfg.model.data_preprocessor.size = size
    torch.manual_seed(0)
    model = revert_sync_batchnorm(MODELS.build(cfg.model))  # as the Runner does undistributed
    model.init_weights()
    model = model.to(device).train()
    # Mixed precision as tools/train.py --amp sets it up, at the case's precision.
    if case.precision != 'fp32' and device.type == 'cuda':
        cfg.optim_wrapper.update(type='AmpOptimWrapper', dtype=AUTOCAST[case.precision])
    elif case.precision != 'fp32':  # bf16 (run_case skips fp16 training on a CPU)
        cfg.optim_wrapper.type = 'CPUAmpOptimWrapper'
    optim_wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    num_classes = cfg.model.decode_head.num_classes
    samples = []
    for _ in range(case.batch):
        sample = SegDataSample(metainfo=dict(img_shape=size, ori_shape=size))
        sample.gt_sem_seg = PixelData(data=torch.randint(0, num_classes, (1, *size),
                                                         generator=gen))
        samples.append(sample)
    data = dict(inputs=[torch.randint(0, 256, (3, *size), dtype=torch.uint8, generator=gen)
                        for _ in range(case.batch)], data_samples=samples)

    def run():
        return model.train_step(data, optim_wrapper)
    return run


def _workload(case: Case):
    """(function running one iteration, output bytes) for a case."""
    import torch
    device = torch.device(case.device)
    reduced = case.mode in OP_MODES and case.precision != 'fp32'   # else float32 outputs
    out_bytes = case.batch * case.channels * case.size ** 2 * (2 if reduced else 4)
    if case.mode == 'downstream':  # data made on the CPU, as a data loader does
        return _downstream_workload(case, device, torch.Generator().manual_seed(0)), out_bytes
    workload = _op_workload if case.mode in OP_MODES else _anyup_workload
    return workload(case, device, torch.Generator(device=device).manual_seed(0)), out_bytes


def _timed(run, device) -> float:
    """Seconds one run takes: CUDA events on GPU (recorded around the run's launches),
    the wall clock on CPU."""
    import torch
    if device.type == 'cuda':
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        run()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1000
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def _profile(run, device, rows: int) -> str:
    """torch.profiler's table of one run: the ``rows`` ops with the most self time on the GPU
    (CUDA; the CPU otherwise)."""
    import torch
    from torch.profiler import ProfilerActivity, profile
    gpu = device.type == 'cuda'
    with profile(activities=[ProfilerActivity.CPU] + [ProfilerActivity.CUDA] * gpu) as prof:
        run()
        if gpu:
            torch.cuda.synchronize(device)
    return prof.key_averages().table(
        sort_by='self_device_time_total' if gpu else 'self_cpu_time_total', row_limit=rows)


def _traffic(run, device) -> tuple[int, int]:
    """(bytes read and written, operations) of one run, counted by tools/_traffic.py."""
    import torch
    from _traffic import TrafficCounter
    with TrafficCounter() as counter:
        run()
    if device.type == 'cuda':
        torch.cuda.synchronize(device)
    return counter.bytes, counter.ops


def worker(case: Case, repeats: int, max_seconds: float, warmup: int = 1,
           profile_rows: int = 0, traffic: bool = False) -> dict:
    """Measure one case in this process; returns a JSON-able dict."""
    import torch
    from anyup_neck.ops import fused
    fused.use_cuda_kernels = case.cuda_fused
    device = torch.device(case.device)
    run, out_bytes = _workload(case)
    if device.type == 'cuda':
        torch.cuda.synchronize(device)
        before = torch.cuda.memory_allocated(device) / GB
        torch.cuda.reset_peak_memory_stats(device)
    else:
        before = _rss_gb()
    for n in range(max(warmup, 1)):
        run()
        if device.type == 'cuda':
            torch.cuda.synchronize(device)
        if n == 0:
            first_peak = _peak_gb(device)
    times, start = [], time.perf_counter()
    while len(times) < repeats and (not times or time.perf_counter() - start < max_seconds):
        times.append(_timed(run, device))
    result = {'times': times, 'peak_gb': first_peak, 'above_inputs_gb': first_peak - before,
              'repeats_peak_gb': _peak_gb(device), 'output_gb': out_bytes / GB,
              'profile': _profile(run, device, profile_rows) if profile_rows else ''}
    # counted after the peaks are read: the count's run is one more run; compiled code's
    # fused kernels are not the eager operations the counter sees
    counted = traffic and not case.compile
    result['moved_bytes'], result['ops'] = _traffic(run, device) if counted else (None, None)
    return result


# --------------------------------------------------------------------------- driver
def run_case(case: Case, args: argparse.Namespace) -> Result:
    estimate = estimate_gb(case)
    if case.device == 'cpu' and estimate > args.memory_gb:
        return Result(case, 'skipped', f'needs ~{estimate:.0f} GB > {args.memory_gb:.0f} GB')
    if case.mode == 'downstream' and case.device == 'cpu' and case.precision == 'fp16':
        return Result(case, 'skipped', 'fp16 training needs a GPU (AmpOptimWrapper)')
    if case.mode in OP_MODES and case.backend == 'cpp' and case.precision != 'fp32':
        return Result(case, 'skipped', 'the C++ kernels take float32/float64')
    from anyup_neck import runtime
    env = runtime.environment(malloc=args.malloc == 'tuned')
    command = [sys.executable, str(Path(__file__).resolve()), '--worker', json.dumps(asdict(case)),
               '--repeats', str(args.repeats), '--max-seconds', str(args.max_seconds),
               '--warmup', str(args.warmup)]
    if args.threads:
        command += ['--threads', str(args.threads)]
    if args.profile:
        command += ['--profile', str(args.profile)]
    if args.traffic:
        command += ['--traffic']
    run = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True)
    if run.returncode != 0:
        lines = (run.stderr or run.stdout).strip().splitlines()
        reason = 'killed (out of memory?)' if run.returncode in (-9, 137) else \
            (lines[-1] if lines else f'exit code {run.returncode}')
        return Result(case, 'failed', reason[:120])
    data = json.loads(run.stdout.strip().splitlines()[-1])
    return Result(case, 'ok', '', data['times'], data['peak_gb'], data['above_inputs_gb'],
                  data['output_gb'], data['repeats_peak_gb'], data['profile'],
                  data['moved_bytes'], data['ops'])


def merge(a: Result, b: Result) -> Result:
    """Two rounds of one case: all timings, the lower first-run peaks (the same work), the
    higher peak after repeats (the worse heap growth)."""
    if a.status != 'ok' or b.status != 'ok':
        return a if a.status == 'ok' else b

    def low(x: float | None, y: float | None) -> float | None:
        return min(x, y) if x is not None and y is not None else x if y is None else y
    return Result(a.case, 'ok', '', a.times + b.times, low(a.peak_gb, b.peak_gb),
                  low(a.above_inputs_gb, b.above_inputs_gb), a.output_gb,
                  max(a.repeats_peak_gb, b.repeats_peak_gb), a.profile, a.moved_bytes, a.ops)


def cases(args: argparse.Namespace) -> list[Case]:
    pairs = [(s, m) for s in args.sizes for m in args.maps] if args.grid == 'full' else \
        [(s, m) for s, m in DEFAULT_PAIRS if s in args.sizes and m in args.maps]
    precisions = ['fp32'] + ['bf16'] * args.bf16 + ['fp16'] * args.fp16
    todo = []
    for mode in args.modes:
        batches = [args.batch] if mode in ('throughput', 'downstream') else args.batches
        if mode == 'downstream':
            todo += [Case(mode, neck, size, size // PATCH, VIT_CHANNELS, args.device, p,
                          args.batch) for size in args.sizes for neck in args.necks
                     for p in precisions]
            continue
        anyup = mode in ANYUP_MODES
        fused = [False, True] if args.cuda_fused_kernels and anyup else [False]
        compiled = [''] + args.compile if anyup else ['']
        todo += [Case(mode, backend, size, fmap, channels, args.device, p, batch, on, how)
                 for size, fmap in pairs for channels in args.channels for batch in batches
                 for backend in args.backends if backend != 'official' or anyup
                 for p in precisions for on in fused if not (on and backend == 'official')
                 for how in compiled if not (how and (on or backend == 'official'))]
    return todo


def _fmt(value: float | None, digits: int = 3) -> str:
    return '-' if value is None else f'{value:.{digits}f}'


def table(results: list[Result]) -> str:
    """Markdown table; speedup = the baseline's best time / this case's best time, at the same
    precision, the baseline being 'official' where measured, else 'dense' (AnyUp modes), and
    'bilinear' (downstream mode: what the AnyUp neck costs over bilinear upsampling)."""
    baseline = {}
    for name in ('dense', 'official', 'bilinear'):  # official wins where both were measured
        baseline.update({(r.case.mode, r.case.size, r.case.map, r.case.channels, r.case.batch,
                          r.case.precision): r.best
                         for r in results if r.case.backend == name and r.best})
    rows = ['| mode | output | map | C | batch | backend | best s | median s | images/s '
            '| TFLOP/s | moved GB | TB/s | ops | peak GB | above inputs GB | x output '
            '| peak after repeats GB | vs baseline | note |', '|' + '---|' * 19]
    for r in results:
        c = r.case
        base = baseline.get((c.mode, c.size, c.map, c.channels, c.batch, c.precision))
        speedup = f'{base / r.best:.1f}x' if base and r.best else '-'
        ratio = (f'{r.above_inputs_gb / r.output_gb:.2f}' if r.above_inputs_gb is not None
                 and r.output_gb else '-')
        moved = None if r.moved_bytes is None else r.moved_bytes / GB
        rows.append(f'| {c.mode} | {c.size} | {c.map} | {c.channels} | {c.batch} | {c.label} '
                    f'| {_fmt(r.best)} | {_fmt(r.median)} | {_fmt(r.images_per_s, 1)} '
                    f'| {_fmt(r.tflops, 2)} | {_fmt(moved, 2)} | {_fmt(r.tb_per_s, 2)} '
                    f'| {r.ops if r.ops is not None else "-"} '
                    f'| {_fmt(r.peak_gb, 2)} | {_fmt(r.above_inputs_gb, 2)} | {ratio} '
                    f'| {_fmt(r.repeats_peak_gb, 2)} | {speedup} '
                    f'| {r.status if r.status != "ok" else ""}{": " if r.note else ""}{r.note} |')
    return '\n'.join(rows)


def write_files(results: list[Result], args: argparse.Namespace) -> None:
    records = [{**asdict(r.case), 'status': r.status, 'note': r.note, 'times_s': r.times,
                'best_s': r.best, 'median_s': r.median, 'images_per_s': r.images_per_s,
                'tflops': r.tflops, 'moved_bytes': r.moved_bytes, 'tb_per_s': r.tb_per_s,
                'ops': r.ops,
                'peak_gb': r.peak_gb, 'above_inputs_gb': r.above_inputs_gb,
                'output_gb': r.output_gb, 'repeats_peak_gb': r.repeats_peak_gb,
                'profile': r.profile}
               for r in results]
    if args.json:
        Path(args.json).write_text(json.dumps(records, indent=2))
    if args.csv:
        with open(args.csv, 'w', newline='') as f:
            writer = csv.DictWriter(f, fieldnames=[k for k in records[0]
                                                   if k not in ('times_s', 'profile')],
                                    extrasaction='ignore')
            writer.writeheader()
            writer.writerows(records)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--modes', nargs='+', choices=MODES, default=None,
                        help=f'default: {" ".join(OP_MODES + ANYUP_MODES[:2])} on CPU, '
                             f'every mode on GPU')
    parser.add_argument('--backends', nargs='+', default=None,
                        help="default: official, dense, cpp (CPU) or cuda and cuda_tiled (GPU), torch")
    parser.add_argument('--necks', nargs='+', choices=sorted(NECK_CONFIGS),
                        default=['anyup', 'bilinear'], help='the downstream mode\'s necks')
    parser.add_argument('--sizes', nargs='+', type=int, default=[224, 448, 896, 2048])
    parser.add_argument('--maps', nargs='+', type=int, default=[16, 32, 64])
    parser.add_argument('--channels', nargs='+', type=int, default=[384, 1024])
    parser.add_argument('--grid', choices=('default', 'full'), default='default',
                        help=f'default: the pairs {DEFAULT_PAIRS}; full: every size x map')
    parser.add_argument('--batch', type=int, default=8,
                        help='images per iteration of the throughput and downstream modes')
    parser.add_argument('--batches', nargs='+', type=int, default=[1],
                        help='batch sizes of the op, op-train, forward and train modes')
    parser.add_argument('--device', choices=('cpu', 'cuda'), default='cpu')
    parser.add_argument('--bf16', action='store_true',
                        help='also run the whole-model modes under bfloat16 autocast, the op '
                             'modes in bfloat16')
    parser.add_argument('--fp16', action='store_true',
                        help='also run the whole-model modes under float16 autocast, the op '
                             'modes in float16')
    parser.add_argument('--compile', nargs='+', default=[],
                        choices=('default', 'reduce-overhead', 'max-autotune'),
                        help='also run the AnyUp modes of the non-official backends with the '
                             'model under torch.compile(mode=...) (label +compile; the first '
                             'warm-up run compiles; reduce-overhead replays CUDA graphs)')
    parser.add_argument('--cuda-fused-kernels', action='store_true',
                        help='also run the AnyUp modes with the fused CUDA kernels switched on')
    parser.add_argument('--rounds', type=int, default=1,
                        help='measure every case this many times, interleaved, keeping all '
                             'timings and the lowest peak (steadier on a shared machine)')
    parser.add_argument('--malloc', choices=('tuned', 'default'), default='tuned',
                        help="'default': run the workers with glibc's own allocator settings")
    parser.add_argument('--warmup', type=int, default=None,
                        help='untimed runs first (default: 1 on CPU, 3 on GPU)')
    parser.add_argument('--repeats', type=int, default=None,
                        help='timed runs after the warm-up (default: 3 on CPU, 10 on GPU)')
    parser.add_argument('--max-seconds', type=float, default=60.0,
                        help='stop repeating a case after this long (at least one timed run)')
    parser.add_argument('--memory-gb', type=float, default=20.0,
                        help='skip CPU cases estimated to need more')
    parser.add_argument('--threads', type=int, default=0, help='torch threads (default: torch)')
    parser.add_argument('--profile', type=int, default=0, metavar='ROWS',
                        help='after the timed runs, profile one run with torch.profiler and '
                             'print its ROWS ops with the most self time (GPU time on CUDA)')
    parser.add_argument('--traffic', action='store_true',
                        help='after the timed runs, count the bytes one run reads and writes, '
                             'and its operations (tools/_traffic.py), and show the rate')
    parser.add_argument('--json', help='also write the results as JSON')
    parser.add_argument('--csv', help='also write the results as CSV')
    parser.add_argument('--worker', help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    gpu = args.device == 'cuda'
    if args.cuda_fused_kernels and not gpu:
        parser.error('--cuda-fused-kernels: expected --device cuda, got --device cpu')
    if args.modes is None:
        args.modes = list(MODES) if gpu else list(OP_MODES + ANYUP_MODES[:2])
    if args.backends is None:
        compiled = ['cuda', 'cuda_tiled'] if gpu else ['cpp']
        args.backends = ['official', 'dense', *compiled, 'torch']
    if args.warmup is None:
        args.warmup = 3 if gpu else 1
    if args.repeats is None:
        args.repeats = 10 if gpu else 3
    return args


def _leave_out_mm_stack_unless_needed(case: Case) -> None:
    """Block mmseg's import in a fresh GPU worker (``None`` in ``sys.modules`` makes it fail),
    so that ``import anyup_neck`` registers no mm modules: only the downstream mode uses them,
    and importing them costs every case seconds of a GPU session. (The GPU figures come from
    the CUDA allocator, which imports do not touch. On the CPU the measure is the process's
    resident set, whose heap the import also shapes, so CPU workers import the whole package,
    as a user's mmseg process does, and their figures stay comparable.)"""
    fresh = 'anyup_neck' not in sys.modules
    if fresh and case.device != 'cpu' and case.mode != 'downstream':
        sys.modules['mmseg'] = None


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.worker:
        case = Case(**json.loads(args.worker))
        _leave_out_mm_stack_unless_needed(case)
        import torch
        if args.threads:
            torch.set_num_threads(args.threads)
        result = worker(case, args.repeats, args.max_seconds, args.warmup, args.profile,
                        args.traffic)
        print(json.dumps(result))
        return
    todo = cases(args)
    results: list[Result | None] = [None] * len(todo)
    for round_ in range(1, args.rounds + 1):
        for n, case in enumerate(todo):
            print(f'[{round_}:{n + 1}/{len(todo)}] {case.title} ...', end=' ',
                  file=sys.stderr, flush=True)
            start = time.perf_counter()
            result = run_case(case, args)
            results[n] = result if results[n] is None else merge(results[n], result)
            summary = (f'median {result.median:.3f} s, peak {result.peak_gb:.2f} GB'
                       if result.status == 'ok' else f'{result.status}: {result.note}')
            print(f'{summary} ({time.perf_counter() - start:.0f} s)', file=sys.stderr, flush=True)
    print(table(results))
    for r in results:
        if r.profile:
            print(f'\nprofile of one run: {r.case.title}\n{r.profile}')
    write_files(results, args)


if __name__ == '__main__':
    main()
