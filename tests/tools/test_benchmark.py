"""tools/benchmark.py measures every case in its own process and reports it against the
dense baseline of the same run."""
from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / 'tools'))
import benchmark  # noqa: E402


def test_tiny_grid_end_to_end(tmp_path, capsys):
    out = tmp_path / 'bench.json'
    benchmark.main(['--modes', 'op-train', 'forward', '--sizes', '24', '--maps', '4',
                    '--channels', '8', '--grid', 'full', '--backends', 'official', 'dense', 'cpp',
                    '--repeats', '1', '--json', str(out), '--csv', str(tmp_path / 'bench.csv')])
    table = capsys.readouterr().out
    records = json.loads(out.read_text())
    # official runs only the whole-model modes; every other case ran and was timed
    assert [(r['mode'], r['backend']) for r in records] == [
        ('op-train', 'dense'), ('op-train', 'cpp'),
        ('forward', 'official'), ('forward', 'dense'), ('forward', 'cpp')]
    assert all(r['status'] == 'ok' and r['best_s'] > 0 and r['peak_gb'] > 0 for r in records)
    # the peak after the repeated runs can only be higher than the first run's
    assert all(r['repeats_peak_gb'] >= r['peak_gb'] for r in records)
    assert '| forward | 24 | 4 | 8 | official |' in table and '1.0x |' in table
    assert (tmp_path / 'bench.csv').read_text().startswith('mode,backend,size,map,channels')


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
