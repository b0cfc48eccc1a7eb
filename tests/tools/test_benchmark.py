"""tools/benchmark.py measures every case in its own process and reports it against the
baseline of the same run: each mode end to end on a tiny grid (CPU; CUDA where present)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / 'tools'))
import benchmark  # noqa: E402


def _run(tmp_path, capsys, *argv: str) -> tuple[list[dict], str]:
    """One timed run per case; one thread (tiny problems: threads only contend)."""
    out = tmp_path / 'bench.json'
    benchmark.main([*argv, '--repeats', '1', '--threads', '1', '--json', str(out)])
    return json.loads(out.read_text()), capsys.readouterr().out


def test_tiny_grid_end_to_end(tmp_path, capsys):
    benchmark.main(['--modes', 'op-train', 'forward', '--sizes', '24', '--maps', '4',
                    '--channels', '8', '--grid', 'full', '--backends', 'official', 'dense', 'cpp',
                    '--repeats', '1', '--threads', '1', '--traffic',
                    '--json', str(tmp_path / 'bench.json'), '--csv', str(tmp_path / 'bench.csv')])
    table = capsys.readouterr().out
    records = json.loads((tmp_path / 'bench.json').read_text())
    # official runs only the whole-model modes; every other case ran and was timed
    assert [(r['mode'], r['backend']) for r in records] == [
        ('op-train', 'dense'), ('op-train', 'cpp'),
        ('forward', 'official'), ('forward', 'dense'), ('forward', 'cpp')]
    assert all(r['status'] == 'ok' and r['best_s'] > 0 and r['peak_gb'] > 0 for r in records)
    # the peak after the repeated runs can only be higher than the first run's
    assert all(r['repeats_peak_gb'] >= r['peak_gb'] for r in records)
    # --traffic: one run's counted bytes (at least the output, written once) and operations,
    # and the rate at the median time
    output_bytes = 8 * 24 * 24 * 4
    assert all(r['moved_bytes'] > output_bytes and r['ops'] > 0 for r in records)
    assert all(r['tb_per_s'] == pytest.approx(r['moved_bytes'] / r['median_s'] / 1e12)
               for r in records)
    assert '| forward | 24 | 4 | 8 | 1 | official |' in table and '1.0x |' in table
    assert (tmp_path / 'bench.csv').read_text().startswith(
        'mode,backend,size,map,channels,device,precision,batch')


def test_train_and_throughput_under_each_precision(tmp_path, capsys):
    records, table = _run(tmp_path, capsys, '--modes', 'train', 'throughput', '--sizes', '24',
                          '--maps', '4', '--channels', '8', '--grid', 'full', '--backends', 'cpp',
                          '--batch', '2', '--bf16', '--fp16')
    assert [(r['mode'], r['precision'], r['batch']) for r in records] == [
        (mode, precision, batch) for mode, batch in (('train', 1), ('throughput', 2))
        for precision in ('fp32', 'bf16', 'fp16')]
    assert all(r['status'] == 'ok' and r['best_s'] > 0 for r in records)
    assert all(r['images_per_s'] == pytest.approx(2 / r['median_s'])
               for r in records if r['mode'] == 'throughput')
    assert '| throughput | 24 | 4 | 8 | 2 | cpp+fp16 |' in table
    assert '| train | 24 | 4 | 8 | 1 | cpp+bf16 |' in table


def test_op_modes_at_each_batch_and_precision(tmp_path, capsys):
    """--batches and the reduced dtypes reach the op modes (q, k, v made in the dtype);
    the C++ kernels' cases without such dtypes are skipped and say why."""
    grid = benchmark.parse_args(['--modes', 'op', 'op-train', '--sizes', '24', '--maps', '4',
                                 '--channels', '8', '--grid', 'full', '--backends', 'cpp',
                                 '--batches', '1', '2'])
    assert [(c.mode, c.batch) for c in benchmark.cases(grid)] == [
        ('op', 1), ('op', 2), ('op-train', 1), ('op-train', 2)]
    records, table = _run(tmp_path, capsys, '--modes', 'op', '--sizes', '24', '--maps', '4',
                          '--channels', '8', '--grid', 'full', '--backends', 'cpp', 'torch',
                          '--batches', '2', '--bf16')
    assert [(r['batch'], r['backend'], r['precision'], r['status']) for r in records] == [
        (2, backend, precision, 'skipped' if (backend, precision) == ('cpp', 'bf16') else 'ok')
        for backend in ('cpp', 'torch') for precision in ('fp32', 'bf16')]
    output_bytes = {r['precision']: r['output_gb'] * 1024 ** 3 for r in records
                    if r['backend'] == 'torch'}
    assert output_bytes == {'fp32': 2 * 8 * 24 * 24 * 4, 'bf16': 2 * 8 * 24 * 24 * 2}
    assert '| op | 24 | 4 | 8 | 2 | torch+bf16 |' in table
    assert 'skipped: the C++ kernels take float32/float64' in table


def test_profile_of_one_run(tmp_path, capsys):
    """--profile prints torch.profiler's table of one run per case, after the results."""
    records, output = _run(tmp_path, capsys, '--modes', 'op', '--sizes', '24', '--maps', '4',
                           '--channels', '8', '--backends', 'cpp', '--grid', 'full',
                           '--profile', '5')
    [record] = records
    assert 'anyup_neck::window_attention_forward' in record['profile']
    assert 'Self CPU' in record['profile']
    assert output.index('profile of one run: op cpp 24<-4 C=8 batch 1') > output.index('| op |')


def test_op_flops_count_the_window_pairs():
    """The op modes' FLOP count is the dense mask's pairs times the per-pair work, per image;
    the table shows the rate at the best time."""
    from anyup_neck.ops.windows import window_mask
    pairs = int(window_mask((24, 24), (4, 4), benchmark.RATIO).sum())
    D = benchmark.QK_DIM
    forward = benchmark.Case('op', 'cpp', 24, 4, 8, batch=2)
    train = benchmark.Case('op-train', 'cpp', 24, 4, 8)
    assert benchmark.op_flops(forward) == 2 * pairs * (2 * D + 2 * 8)
    assert benchmark.op_flops(train) == pairs * (8 * D + 6 * 8)
    result = benchmark.Result(forward, times=[0.5, 0.25])
    assert result.tflops == benchmark.op_flops(forward) / 0.25 / 1e12
    assert benchmark.Result(benchmark.Case('forward', 'cpp', 24, 4, 8), times=[1.0]).tflops is None


def test_each_precision_is_compared_with_the_baseline_at_that_precision():
    def result(backend, precision, seconds):
        return benchmark.Result(benchmark.Case('forward', backend, 24, 4, 8, precision=precision),
                                times=[seconds])
    rows = benchmark.table([result('official', 'fp32', 4.0), result('official', 'bf16', 3.0),
                            result('cpp', 'fp32', 2.0), result('cpp', 'bf16', 0.5)]).splitlines()
    assert [row.split('|')[-3].strip() for row in rows[2:]] == ['1.0x', '1.0x', '2.0x', '6.0x']


def test_downstream_iteration_anyup_neck_against_bilinear(tmp_path, capsys):
    """The headline config's train step (ViT-S/14, random weights) at 28x28, batch 2, against
    the bilinear neck; fp16 training on a CPU is skipped with the reason."""
    records, table = _run(tmp_path, capsys, '--modes', 'downstream', '--sizes', '28',
                          '--batch', '2', '--fp16')
    assert [(r['backend'], r['precision'], r['status']) for r in records] == [
        ('anyup', 'fp32', 'ok'), ('anyup', 'fp16', 'skipped'),
        ('bilinear', 'fp32', 'ok'), ('bilinear', 'fp16', 'skipped')]
    assert all((r['map'], r['channels'], r['batch']) == (2, 384, 2) for r in records)
    assert all(r['images_per_s'] > 0 for r in records if r['status'] == 'ok')
    assert 'skipped: fp16 training needs a GPU' in table
    assert '| downstream | 28 | 2 | 384 | 2 | bilinear |' in table


#: Starts a worker in this fresh process and prints which of the package's modules it imported
#: (without a GPU a CUDA case stops at its first tensor, after the imports).
WORKER_IMPORTS = """
import json, sys
sys.path.insert(0, 'tools')
import benchmark
try:
    benchmark.main(['--worker', sys.argv[1], '--repeats', '1'])
except Exception as error:
    print(type(error).__name__, file=sys.stderr)
print(json.dumps(['anyup_neck' in sys.modules, 'anyup_neck.mm' in sys.modules]))
"""


@pytest.mark.parametrize('device, registers_mm', [('cuda', False), ('cpu', True)])
def test_gpu_workers_leave_the_mm_stack_out(device, registers_mm):
    """A GPU worker of a case outside the downstream mode imports the package without its mm
    modules (seconds of a GPU session per case); a CPU worker imports all of it, as the
    resident-set figures have always included."""
    case = json.dumps({'mode': 'op', 'backend': 'torch', 'size': 24, 'map': 4, 'channels': 8,
                       'device': device})
    run = subprocess.run([sys.executable, '-c', WORKER_IMPORTS, case], cwd=benchmark.REPO,
                         capture_output=True, text=True, check=True)
    assert json.loads(run.stdout.splitlines()[-1]) == [True, registers_mm], run.stderr


def test_defaults_per_device():
    cpu, gpu = benchmark.parse_args([]), benchmark.parse_args(['--device', 'cuda'])
    assert cpu.modes == ['op', 'op-train', 'forward', 'train']
    assert (cpu.warmup, cpu.repeats, cpu.backends[2]) == (1, 3, 'cpp')
    assert gpu.modes == list(benchmark.MODES)
    assert (gpu.warmup, gpu.repeats, gpu.backends[2:4]) == (3, 10, ['cuda', 'cuda_tiled'])
    downstream = [c for c in benchmark.cases(benchmark.parse_args(
        ['--device', 'cuda', '--sizes', '448', '--fp16'])) if c.mode == 'downstream']
    assert [(c.backend, c.precision, c.map, c.channels, c.batch) for c in downstream] == [
        ('anyup', 'fp32', 32, 384, 8), ('anyup', 'fp16', 32, 384, 8),
        ('bilinear', 'fp32', 32, 384, 8), ('bilinear', 'fp16', 32, 384, 8)]


def test_fused_cuda_kernels_are_cases_of_their_own():
    """--cuda-fused-kernels adds each AnyUp mode's non-official backends with the kernels on,
    labelled; the op modes and the official formulation stay as they are; GPU only."""
    args = benchmark.parse_args(['--device', 'cuda', '--modes', 'op', 'forward', '--sizes', '448',
                                 '--maps', '32', '--channels', '384', '--backends', 'official',
                                 'torch', '--cuda-fused-kernels'])
    assert [(c.mode, c.label) for c in benchmark.cases(args)] == [
        ('op', 'torch'), ('forward', 'official'), ('forward', 'torch'),
        ('forward', 'torch+fused')]
    with pytest.raises(SystemExit):
        benchmark.parse_args(['--cuda-fused-kernels'])


def test_compiled_models_are_cases_of_their_own(monkeypatch):
    """--compile adds each AnyUp mode's non-official, kernel-less backends under
    torch.compile(mode=...), labelled; the worker compiles the model with that mode and
    counts no traffic for it (the compiled kernels are not the eager operations)."""
    args = benchmark.parse_args(['--device', 'cuda', '--modes', 'op', 'forward', '--sizes', '448',
                                 '--maps', '32', '--channels', '384', '--backends', 'official',
                                 'torch', '--cuda-fused-kernels', '--compile', 'default',
                                 'reduce-overhead'])
    assert [(c.mode, c.label) for c in benchmark.cases(args)] == [
        ('op', 'torch'), ('forward', 'official'), ('forward', 'torch'),
        ('forward', 'torch+compile'), ('forward', 'torch+compile:reduce-overhead'),
        ('forward', 'torch+fused')]
    modes = []

    def compile_(model, mode):
        modes.append(mode)
        return model
    monkeypatch.setattr(torch, 'compile', compile_)
    case = benchmark.Case('forward', 'torch', 32, 4, 8, compile='reduce-overhead')
    result = benchmark.worker(case, repeats=1, max_seconds=10, traffic=True)
    assert modes == ['reduce-overhead'] and len(result['times']) == 1
    assert result['moved_bytes'] is None
    with pytest.raises(SystemExit):
        benchmark.parse_args(['--compile', 'fastest'])


def test_cases_that_cannot_fit_are_skipped_and_said_so():
    args = benchmark.parse_args(['--modes', 'op', '--sizes', '2048', '--maps', '64',
                                 '--channels', '1024', '--backends', 'dense',
                                 '--memory-gb', '20'])
    [case] = benchmark.cases(args)
    result = benchmark.run_case(case, args)
    assert result.status == 'skipped' and 'GB > 20 GB' in result.note
    assert 'skipped: needs' in benchmark.table([result])


def test_rounds_keep_the_lower_first_peak_and_the_higher_repeats_peak():
    case = benchmark.Case('op', 'cpp', 24, 4, 8)
    a = benchmark.Result(case, 'ok', '', [0.2], 1.0, 0.5, 0.1, 1.4)
    b = benchmark.Result(case, 'ok', '', [0.1], 1.1, 0.4, 0.1, 1.6)
    merged = benchmark.merge(a, b)
    assert merged.times == [0.2, 0.1] and merged.best == 0.1
    assert (merged.peak_gb, merged.above_inputs_gb, merged.repeats_peak_gb) == (1.0, 0.4, 1.6)


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device')
def test_modes_on_cuda(tmp_path, capsys):
    """CUDA events, max_memory_allocated, autocast, the official formulation, the fused CUDA
    kernels and the downstream step (AmpOptimWrapper) on a GPU. (throughput is forward at a
    larger batch.)"""
    records, table = _run(tmp_path, capsys, '--device', 'cuda', '--modes', 'op-train',
                          'forward', 'train', 'downstream', '--backends', 'official', 'cuda',
                          '--sizes', '28', '--maps', '4', '--channels', '8', '--grid', 'full',
                          '--batch', '2', '--bf16', '--fp16', '--warmup', '1',
                          '--cuda-fused-kernels')
    assert len(records) == 1 + 3 * 3 + 3 * 3 + 3 * 2
    assert all(r['status'] == 'ok' and r['best_s'] > 0 and r['peak_gb'] > 0 for r in records), \
        [(r['mode'], r['backend'], r['precision'], r['note']) for r in records
         if r['status'] != 'ok']
    assert '| forward | 28 | 4 | 8 | 1 | official+bf16 |' in table
    assert '| train | 28 | 4 | 8 | 1 | cuda+bf16+fused |' in table
    assert '| downstream | 28 | 2 | 384 | 2 | anyup+fp16 |' in table
