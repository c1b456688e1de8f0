"""The hostile-pickle corpus through the command-line front ends: generate.py, calc_metrics.py
and `train.py --resume` each refuse every file with one 'Error: ...' line naming it, no traceback, no marker, within an
address-space limit.

One subprocess per front end runs its click command over the whole corpus (importing torch once);
one file also goes through a real `python generate.py` process end to end.
"""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from security import corpus

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ADDRESS_SPACE = 2 << 30

DRIVER = textwrap.dedent('''
    import contextlib, io, json, resource, sys
    resource.setrlimit(resource.RLIMIT_AS, (int(sys.argv[1]), int(sys.argv[1])))
    sys.path.insert(0, sys.argv[2])
    import importlib
    front_end = importlib.import_module(sys.argv[3])
    command = getattr(front_end, sys.argv[4])
    results = {}
    for name, args in json.loads(sys.argv[5]).items():
        out, err = io.StringIO(), io.StringIO()
        code = 0
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                command.main(args=args, prog_name=sys.argv[3], standalone_mode=True)
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else 1
            except BaseException as e:
                code, err = 'UNCAUGHT', io.StringIO(f'{type(e).__name__}: {e}')
        results[name] = dict(code=code, output=out.getvalue() + err.getvalue())
    print(json.dumps(results))
''')


@pytest.fixture(scope='module')
def hostile(tmp_path_factory):
    directory = tmp_path_factory.mktemp('hostile_front')
    marker = directory / 'MARKER'
    return corpus.build(directory, marker), marker, directory


def run_front_end(module, command, arg_sets):
    proc = subprocess.run([sys.executable, '-c', DRIVER, str(ADDRESS_SPACE), ROOT, module, command,
                           json.dumps(arg_sets)], capture_output=True, text=True, timeout=600, cwd=ROOT,
                          env=dict(os.environ, OMP_NUM_THREADS='1'))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def assert_refused(result, case):
    output = result['output']
    assert result['code'] not in (0, 'UNCAUGHT'), output
    assert 'Traceback' not in output, output
    errors = [line for line in output.splitlines() if line.startswith('Error: ')]
    assert len(errors) == 1, output
    assert os.path.basename(case.path) in errors[0], errors[0]


def test_generate_refuses_the_corpus(hostile):
    cases, marker, directory = hostile
    arg_sets = {name: [f'--network={case.path}', '--seeds=0', f'--outdir={directory / "out"}']
                for name, case in cases.items()}
    results = run_front_end('generate', 'main', arg_sets)
    for name, case in cases.items():
        assert_refused(results[name], case)
    assert not marker.exists() and not (directory / 'out').exists()


def test_calc_metrics_refuses_the_corpus(hostile):
    cases, marker, directory = hostile
    arg_sets = {name: [f'--network={case.path}', '--metrics=specdisc1k'] for name, case in cases.items()}
    results = run_front_end('calc_metrics', 'calc_metrics', arg_sets)
    for name, case in cases.items():
        assert_refused(results[name], case)
    assert not marker.exists()


def test_train_resume_refuses_the_corpus(hostile):
    """Resuming (fine-tuning) from a hostile file ends before training, with no run directory left."""
    cases, marker, directory = hostile
    arg_sets = {name: [f'--outdir={directory / "runs"}', '--data=builtin:blobs16', f'--resume={case.path}',
                       '--kimg=1', '--cbase=1024', '--cmax=32', '--workers=0']
                for name, case in cases.items()}
    results = run_front_end('train', 'main', arg_sets)
    for name, case in cases.items():
        assert_refused(results[name], case)
    assert not marker.exists()
    assert not (directory / 'runs').exists() or not os.listdir(directory / 'runs')


def test_generate_process_end_to_end(hostile, tmp_path):
    cases, marker, _ = hostile
    case = cases['stealth_extra_key']
    res = subprocess.run([sys.executable, 'generate.py', f'--network={case.path}', '--seeds=0',
                          f'--outdir={tmp_path / "out"}'], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert res.returncode == 1 and 'Traceback' not in res.stderr
    assert res.stderr.strip().splitlines()[-1].startswith(f'Error: {case.path}: refusing to construct')
    assert not marker.exists() and not (tmp_path / 'out').exists()
